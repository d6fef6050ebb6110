"""The PostgreSQL audit database: its table, batched inserts, and the queries verify and search run.

One row per record, keyed by (chain, seq). ``body`` is the record's canonical JSON exactly as it was
sealed (text, so a verifier hashes the same bytes); ``at``, ``kind``, ``person``, ``decision`` and
``tables`` are copies taken from it for searching, and are not trusted by verification.

Inserts are idempotent (``ON CONFLICT DO NOTHING``): after a crash between storing a batch and
acknowledging it, the deliverer sends the batch again. A row already there with other content is
not overwritten; ``sekisho audit verify`` reports it as a break.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

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


async def insert(conn: asyncpg.Connection, chain: str, batch: Sequence[Sealed]) -> None:
    """Store one batch of one chain in a single statement."""
    records = [s.record() for s in batch]
    await conn.execute(
        _INSERT,
        chain,
        [s.seq for s in batch],
        [datetime.fromisoformat(str(r["at"])) for r in records],
        [str(r.get("kind", "")) for r in records],
        [_text(r.get("person")) for r in records],
        [_text(r.get("decision")) for r in records],
        # text[][] cannot be ragged: tables travel as JSON text and are split by PostgreSQL.
        [json.dumps(list(r.get("tables") or [])) for r in records],
        [s.body.decode() for s in batch],
        [s.prev for s in batch],
        [s.hash for s in batch],
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
