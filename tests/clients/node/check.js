'use strict';
// node-postgres driven through Sekisho (or directly, for comparison): prints one JSON document.
// Usage: node check.js CONNECTION_URL. The test runs this against Sekisho and against the upstream
// and compares the two documents, so nothing here may depend on which server answered.

const { Client } = require('pg');

async function main(url) {
  const client = new Client({ connectionString: url });
  const out = {};
  await client.connect();
  try {
    // Simple query protocol: no parameters, one Query message.
    const simple = await client.query('SELECT id, name, created_at FROM customers ORDER BY id LIMIT 25');
    out.simple = { command: simple.command, rowCount: simple.rowCount, rows: simple.rows,
      fields: simple.fields.map((f) => [f.name, f.dataTypeID]) };

    // Several statements in one simple Query: one result each.
    const multi = await client.query('SELECT 1 AS one; SELECT 2 AS two');
    out.multi = multi.map((r) => r.rows);

    // Extended protocol with parameters (unnamed statement).
    const param = await client.query(
      'SELECT id, email, phone FROM customers WHERE id BETWEEN $1 AND $2 AND name <> $3 ORDER BY id',
      [100, 180, 'nobody']);
    out.parameterized = param.rows;

    // A named prepared statement: parsed once, then Bind/Execute only.
    out.prepared = [];
    for (let i = 1; i <= 8; i++) {
      const r = await client.query({
        name: 'customer-by-id',
        text: 'SELECT id, name, card_number, created_at FROM customers WHERE id = $1',
        values: [i * 37],
      });
      out.prepared.push(r.rows);
    }
    const named = await client.query(
      "SELECT name, statement FROM pg_prepared_statements WHERE name = 'customer-by-id'");
    out.preparedOnServer = named.rows;

    // Row mode (arrays) over many rows.
    const all = await client.query({ text: 'SELECT * FROM customers ORDER BY id', rowMode: 'array' });
    out.allCount = all.rowCount;
    out.all = all.rows;

    // Errors: one in a transaction, the transaction is then aborted until ROLLBACK.
    await client.query('BEGIN');
    out.errors = [];
    for (const sql of ['SELECT 1 / 0', 'SELECT 1']) {
      try {
        await client.query(sql);
      } catch (e) {
        out.errors.push([e.code, e.message]);
      }
    }
    await client.query('ROLLBACK');
    out.afterRollback = (await client.query('SELECT $1::int + 1 AS n', [41])).rows;
  } finally {
    await client.end();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main(process.argv[2]).catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
