"""The live catalog snapshot: what policy analysis resolves names against, read from PostgreSQL.

Four queries in one read-only repeatable-read transaction, so that the snapshot is consistent:
relations with their columns, view dependencies, functions (with their OID, language and C entry
point, so that analysis can judge a function by what it runs), and schemas. View dependencies come
from the rewrite rule of each view and materialized view (``pg_rewrite`` → ``pg_depend``); the
transitive closure over views nested in views is computed here, not in SQL. Views made by initdb
(in pg_catalog and information_schema) have no pg_depend rows, as initdb pins its objects, so their
``reads`` are empty; they read only system catalogs, never a user's table.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

import asyncpg

from gateway.config import UpstreamConfig
from policy.catalog import MATVIEW, VIEW, Catalog, Function, QualifiedName, Relation

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text AS relkind,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL),
                '{}') AS columns
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
GROUP BY c.oid, n.nspname, c.relname, c.relkind
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


class CatalogUnavailable(Exception):
    """The upstream catalog could not be read; the message says where and why (no credentials)."""

    code = "catalog_unavailable"


async def load_catalog(conn: asyncpg.Connection) -> Catalog:
    """A snapshot of every relation, its columns, view dependencies, functions and schemas.

    Takes an open connection and leaves it open; runs in its own read-only transaction.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        relation_rows = await conn.fetch(_RELATIONS)
        dependency_rows = await conn.fetch(_VIEW_READS)
        function_rows = await conn.fetch(_FUNCTIONS)
        schema_rows = await conn.fetch(_SCHEMAS)
    names: dict[int, QualifiedName] = {}
    kinds: dict[int, str] = {}
    columns: dict[int, tuple[str, ...]] = {}
    for row in relation_rows:
        oid = int(row["oid"])
        names[oid] = (str(row["nspname"]), str(row["relname"]))
        kinds[oid] = str(row["relkind"])
        columns[oid] = tuple(str(c) for c in row["columns"])
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


async def fetch_catalog(upstream: UpstreamConfig) -> Catalog:
    """Connect to the upstream with the service account, read the catalog, and close.

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
        return await load_catalog(conn)
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
