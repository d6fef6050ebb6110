"""The PostgreSQL audit database: its table, batched inserts, and the queries verify and search run.

One row per record, keyed by (chain, seq). ``body`` is the record's canonical JSON exactly as it was
sealed (text, so a verifier hashes the same bytes); ``at``, ``kind``, ``person``, ``decision`` and
``tables`` are copies taken from it for searching, and are not trusted by verification.

Batches go in with binary COPY, the cheapest way into PostgreSQL for both sides (the audit
database often shares a machine with something busier). Storing is idempotent: after a crash
between storing a batch and acknowledging it, the deliverer sends the batch again, the COPY fails
on the primary key, and the batch goes in again with ``INSERT ... ON CONFLICT DO NOTHING``. A row
already there with other content is not overwritten; ``sekisho audit verify`` reports it as a break.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.audit.record import Sealed

TABLE = "sekisho_audit"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    chain    text        NOT NULL,
    seq      bigint      NOT NULL,
    at       timestamptz NOT NULL,
    kind     text        NOT NULL,
    person   text,
    decision text,
    tables   text[]      NOT NULL DEFAULT '{{}}',
    body     text        NOT NULL,
    prev     bytea       NOT NULL,
    hash     bytea       NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE} (at);
CREATE INDEX IF NOT EXISTS {TABLE}_person_at ON {TABLE} (person, at);
CREATE INDEX IF NOT EXISTS {TABLE}_tables ON {TABLE} USING gin (tables);
"""

# TABLE is a constant, never input.
_INSERT = f"""
INSERT INTO {TABLE} (chain, seq, at, kind, person, decision, tables, body, prev, hash)
SELECT $1, r.seq, r.at, r.kind, r.person, r.decision,
       ARRAY(SELECT jsonb_array_elements_text(r.tables::jsonb)), r.body, r.prev, r.hash
FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::bytea[], $10::bytea[]) AS r(seq, at, kind, person, decision, tables, body, prev, hash)
ON CONFLICT (chain, seq) DO NOTHING
"""  # noqa: S608


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Create the audit table and its indexes if they are missing (idempotent, concurrent-safe)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sekisho_audit_schema'))")
        await conn.execute(SCHEMA)


_COLUMNS = ("chain", "seq", "at", "kind", "person", "decision", "tables", "body", "prev", "hash")
# One row of the table, chain first (as _COLUMNS).
Row = tuple[str, int, datetime, str, str | None, str | None, list[str], str, bytes, bytes]


def row(chain: str, sealed: Sealed, record: Mapping[str, Any] | None = None) -> Row:
    """The table row of a sealed record. ``record`` is what was sealed, when the caller still has
    it (the search columns are then copied from it instead of parsing the body again)."""
    r = sealed.record() if record is None else record
    return (
        chain,
        sealed.seq,
        datetime.fromisoformat(str(r["at"])),
        str(r.get("kind", "")),
        _text(r.get("person")),
        _text(r.get("decision")),
        [str(t) for t in r.get("tables") or ()],
        sealed.body.decode(),
        sealed.prev,
        sealed.hash,
    )


async def insert(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """Store one batch (see the module docstring on a batch sent again)."""
    try:
        await conn.copy_records_to_table(TABLE, records=rows, columns=_COLUMNS)
    except asyncpg.UniqueViolationError:
        await conn.execute(
            _INSERT,
            rows[0][0],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
            # text[][] cannot be ragged: tables travel as JSON text and are split by PostgreSQL.
            [json.dumps(r[6]) for r in rows],
            [r[7] for r in rows],
            [r[8] for r in rows],
            [r[9] for r in rows],
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    chain: str
    seq: int
    body: bytes
    prev: bytes
    hash: bytes


async def chains(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(f"SELECT DISTINCT chain FROM {TABLE} ORDER BY chain")  # noqa: S608
    return [r["chain"] for r in rows]


async def chain_records(
    conn: asyncpg.Connection, chain: str, prefetch: int = 2000
) -> AsyncIterator[StoredRecord]:
    """A chain's records in sequence order, streamed (call inside a transaction)."""
    query = f"SELECT seq, body, prev, hash FROM {TABLE} WHERE chain = $1 ORDER BY seq"  # noqa: S608
    async for row in conn.cursor(query, chain, prefetch=prefetch):
        yield StoredRecord(chain, row["seq"], row["body"].encode(), bytes(row["prev"]), bytes(row["hash"]))
