"""``sekisho audit search`` and ``GET /audit/search``: records by person, table, time and decision.

The filters become one parameterized query over the audit table's search columns; rows stream
through a server-side cursor in time order, so a search over years costs memory for one page, and
the caller can show progress as the time of the records passes through the searched range.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.audit.database import TABLE

DECISIONS = ("allowed", "cut", "refused", "failed")


class SearchError(ValueError):
    """A filter that cannot be searched on (a bad time, an unknown decision)."""


@dataclass(frozen=True, slots=True)
class Filters:
    person: str | None = None
    table: str | None = None  # schema.table; a bare name means public.name
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    kind: str | None = None  # statement, connection, alarm, policy_change, ...
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise SearchError(f"decision: expected one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise SearchError("since must not be after until")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise SearchError("times must carry a time zone (for example 2026-12-01T00:00:00+09:00)")
        if self.limit is not None and self.limit < 1:
            raise SearchError("limit: expected at least 1")

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if self.person is not None:
            add("person = ?", self.person)
        if self.table is not None:
            add("tables @> ARRAY[?]::text[]", self.table if "." in self.table else f"public.{self.table}")
        if self.since is not None:
            add("at >= ?", self.since)
        if self.until is not None:
            add("at < ?", self.until)
        if self.decision is not None:
            add("decision = ?", self.decision)
        if self.kind is not None:
            add("kind = ?", self.kind)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time with a zone (a date alone means its midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SearchError(
            f"{what}: expected an ISO 8601 time such as 2026-12-01T09:00:00+09:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        if len(text) == 10:
            return datetime.fromisoformat(text + "T00:00:00+00:00")
        raise SearchError(f"{what}: add a time zone (+09:00 or Z) to {text!r}")
    return moment


async def bounds(conn: asyncpg.Connection, filters: Filters) -> tuple[datetime | None, datetime | None]:
    """The first and last record time the search covers (for a progress bar)."""
    where, args = filters.where()
    row = await conn.fetchrow(f"SELECT min(at) AS lo, max(at) AS hi FROM {TABLE}{where}", *args)  # noqa: S608
    return (row["lo"], row["hi"]) if row is not None else (None, None)


async def search(
    conn: asyncpg.Connection, filters: Filters, prefetch: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Matching records, oldest first, each the stored record plus its chain, seq and hash."""
    where, args = filters.where()
    limit = f" LIMIT {int(filters.limit)}" if filters.limit is not None else ""
    query = f"SELECT chain, seq, hash, body FROM {TABLE}{where} ORDER BY at, chain, seq{limit}"  # noqa: S608
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(query, *args, prefetch=prefetch):
            record = json.loads(row["body"])
            record["audit_chain"], record["audit_seq"] = row["chain"], row["seq"]
            record["audit_hash"] = bytes(row["hash"]).hex()
            yield record
