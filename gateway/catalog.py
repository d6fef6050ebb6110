"""The live catalog snapshot: what policy analysis resolves names against, read from PostgreSQL.

Five queries in one read-only repeatable-read transaction, so that the snapshot is consistent:
relations with their columns and estimated row counts, view dependencies, row keys, functions (with
their OID, language and C entry point, so that analysis can judge a function by what it runs), and
schemas. View dependencies come from the rewrite rule of each view and materialized view
(``pg_rewrite`` → ``pg_depend``); the transitive closure over views nested in views is computed
here, not in SQL. Views made by initdb (in pg_catalog and information_schema) have no pg_depend
rows, as initdb pins its objects, so their ``reads`` are empty; they read only system catalogs,
never a user's table.

Row keys and row counts are for the coverage alarm (the share of a protected table one person has
seen); row keys and inheritance children also bound the rows of a key lookup
(policy/analysis/bounds.py). A table's key is its primary key, else its narrowest unique index
over NOT NULL columns (not partial, no expressions). Its row count is PostgreSQL's estimate,
``pg_class.reltuples``, which VACUUM and ANALYZE (and autovacuum) keep current; a table never
vacuumed nor analyzed has -1 there, and for protected ones Sekisho counts the rows itself when the
table is small (``_COUNT_BYTES``). A larger such table has no row count, so coverage is not
measured for it until it is analyzed (``load_catalog`` reports which).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

import asyncpg
import structlog

from gateway.config import UpstreamConfig
from policy.catalog import MATVIEW, PARTITIONED, TABLE, VIEW, Catalog, Function, QualifiedName, Relation

log = structlog.get_logger("sekisho.catalog")
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text AS relkind, c.reltuples::float8 AS reltuples,
       c.relhassubclass,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL),
                '{}') AS columns
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.reltuples, c.relhassubclass
"""

# Each user table's row key: the primary key, else the unique index over the fewest NOT NULL
# columns (valid, not partial, no expressions; INCLUDE columns are not part of it). Types are a
# domain's base type, as RowDescription reports them.
_KEYS = """
SELECT DISTINCT ON (i.indrelid) i.indrelid AS oid,
       array_agg(a.attname::text ORDER BY k.n) AS columns,
       array_agg(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END::int8 ORDER BY k.n) AS types
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid AND c.relkind IN ('r', 'p')
JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
  AND k.n <= i.indnkeyatts
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
GROUP BY i.indrelid, i.indexrelid, i.indisprimary, i.indnkeyatts
HAVING i.indisprimary OR bool_and(a.attnotnull)
ORDER BY i.indrelid, i.indisprimary DESC, i.indnkeyatts, i.indexrelid
"""

# For each view or materialized view, the relations its SELECT rule references directly.
_VIEW_READS = """
SELECT DISTINCT r.ev_class AS view, d.refobjid AS reads
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
 AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
"""

# Every function with what it runs: the C entry point of 'internal' and 'c' functions and the library
# of 'c' ones (other languages' prosrc is a body, which can be large and is not needed here).
_FUNCTIONS = """
SELECT p.oid, n.nspname, p.proname, l.lanname,
       CASE WHEN l.lanname IN ('internal', 'c') THEN p.prosrc END AS symbol,
       CASE WHEN l.lanname = 'c' THEN p.probin END AS library
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
"""

_SCHEMAS = "SELECT nspname FROM pg_catalog.pg_namespace"

# A protected table PostgreSQL has no row estimate for is counted when it is at most this large on
# disk (a count of 16 MB takes tens of milliseconds, once per catalog refresh); larger ones wait
# for VACUUM or ANALYZE.
_COUNT_BYTES = 16 * 1024 * 1024
_COUNT_SECONDS = 5.0


class CatalogUnavailable(Exception):
    """The upstream catalog could not be read; the message says where and why (no credentials)."""

    code = "catalog_unavailable"


async def load_catalog(conn: asyncpg.Connection, protected: Iterable[QualifiedName] = ()) -> Catalog:
    """A snapshot of every relation, its columns, row key and estimated rows, view dependencies,
    functions and schemas. ``protected`` tables without an estimate are counted when small.

    Takes an open connection and leaves it open; reads the snapshot in its own read-only
    transaction, and counts after it (a count that fails or times out only leaves that table
    without rows).
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        relation_rows = await conn.fetch(_RELATIONS)
        dependency_rows = await conn.fetch(_VIEW_READS)
        key_rows = await conn.fetch(_KEYS)
        function_rows = await conn.fetch(_FUNCTIONS)
        schema_rows = await conn.fetch(_SCHEMAS)
    names: dict[int, QualifiedName] = {}
    kinds: dict[int, str] = {}
    columns: dict[int, tuple[str, ...]] = {}
    rows: dict[int, int] = {}
    children: set[int] = set()
    for row in relation_rows:
        oid = int(row["oid"])
        names[oid] = (str(row["nspname"]), str(row["relname"]))
        kinds[oid] = str(row["relkind"])
        columns[oid] = tuple(str(c) for c in row["columns"])
        if row["relhassubclass"]:
            children.add(oid)
        if kinds[oid] in (TABLE, PARTITIONED) and row["reltuples"] >= 0:
            rows[oid] = round(row["reltuples"])
    keys = {
        int(r["oid"]): (tuple(str(c) for c in r["columns"]), tuple(int(t) for t in r["types"]))
        for r in key_rows
    }
    wanted = set(protected)
    for oid, name in names.items():
        if name in wanted and kinds[oid] == TABLE and oid not in rows:
            counted = await _count_if_small(conn, oid, name)
            if counted is not None:
                rows[oid] = counted
    direct: dict[int, set[int]] = {}
    for row in dependency_rows:
        if int(row["reads"]) in names:
            direct.setdefault(int(row["view"]), set()).add(int(row["reads"]))
    reads = _closure(direct)
    relations = [
        Relation(
            schema=names[oid][0],
            name=names[oid][1],
            kind=kinds[oid],
            columns=columns[oid],
            reads=frozenset(names[r] for r in reads.get(oid, ()))
            if kinds[oid] in (VIEW, MATVIEW)
            else frozenset(),
            key=keys.get(oid, ((), ()))[0],
            key_types=keys.get(oid, ((), ()))[1],
            rows=rows.get(oid),
            children=oid in children,
        )
        for oid in names
    ]
    functions = [
        Function(
            str(r["nspname"]),
            str(r["proname"]),
            str(r["lanname"]),
            oid=int(r["oid"]),
            symbol=None if r["symbol"] is None else str(r["symbol"]),
            library=None if r["library"] is None else str(r["library"]),
        )
        for r in function_rows
    ]
    catalog = Catalog.of(relations, functions)
    schemas = frozenset(str(r["nspname"]) for r in schema_rows) | catalog.schemas
    return Catalog(catalog.relations, catalog.functions, schemas)


async def _count_if_small(conn: asyncpg.Connection, oid: int, name: QualifiedName) -> int | None:
    """The rows of a table PostgreSQL has no estimate for, counted when it is small; None when it
    is too large or cannot be counted now (a lock, a timeout): coverage waits for an estimate."""
    try:
        size = await conn.fetchval("SELECT pg_catalog.pg_relation_size($1::oid)", oid, timeout=_COUNT_SECONDS)
        if size is None or size > _COUNT_BYTES:
            return None
        table = ".".join('"' + part.replace('"', '""') + '"' for part in name)
        query = f"SELECT count(*) FROM {table}"  # noqa: S608  identifiers quoted, no values
        counted = await conn.fetchval(query, timeout=_COUNT_SECONDS)
    except (TimeoutError, asyncpg.PostgresError) as exc:
        log.info("catalog_count_failed", table=".".join(name), error=str(exc))
        return None
    return int(counted)


def table_rows(catalog: Catalog) -> dict[str, int]:
    """Row counts of the user tables that have one, by ``schema.table`` (what the detector's
    coverage rule measures against)."""
    return {
        f"{schema}.{name}": relation.rows
        for (schema, name), relation in catalog.relations.items()
        if relation.rows is not None and schema not in _SYSTEM_SCHEMAS
    }


def _closure(direct: Mapping[int, Iterable[int]]) -> dict[int, set[int]]:
    """Every relation each view reads, through views it reads (cycles cannot loop forever)."""
    out: dict[int, set[int]] = {}
    for view in direct:
        seen: set[int] = set()
        stack = list(direct[view])
        while stack:
            oid = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            stack.extend(direct.get(oid, ()))
        seen.discard(view)
        out[view] = seen
    return out


def _ssl(cfg: UpstreamConfig) -> str | ssl.SSLContext:
    if cfg.sslmode in ("verify-ca", "verify-full") and cfg.sslrootcert:
        ctx = ssl.create_default_context(cafile=cfg.sslrootcert)
        ctx.check_hostname = cfg.sslmode == "verify-full"
        return ctx
    return cfg.sslmode


async def fetch_catalog(upstream: UpstreamConfig, protected: Iterable[QualifiedName] = ()) -> Catalog:
    """Connect to the upstream with the service account, read the catalog, and close.
    ``protected`` tables without a row estimate are counted when small (``load_catalog``).

    Raises ``CatalogUnavailable`` when the database cannot be reached, refuses the login, or the
    catalog cannot be read.
    """
    where = upstream.describe()
    try:
        conn = await asyncpg.connect(
            host=upstream.host,
            port=upstream.port,
            user=upstream.user,
            password=upstream.password,
            database=upstream.database,
            ssl=_ssl(upstream),
            timeout=upstream.connect_timeout,
            command_timeout=60,
            server_settings={"application_name": "sekisho catalog"},
        )
    except (OSError, TimeoutError, ssl.SSLError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CatalogUnavailable(f"cannot connect to the database at {where}: {_reason(exc)}") from exc
    try:
        return await load_catalog(conn, protected)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CatalogUnavailable(
            f"cannot read the catalog of the database at {where}: {_reason(exc)}"
        ) from exc
    finally:
        try:
            await conn.close(timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
