"""The ``sekisho`` console database: people ask Sekisho itself about their quotas, in SQL.

Connecting to the database named ``sekisho`` (as PgBouncer's ``pgbouncer`` database) reaches no
upstream: the session answers a few commands itself over the simple query protocol.

    SHOW QUOTA;    your own quotas: window, budget, used, remaining, when it frees up
    SHOW QUOTAS;   everyone's, for people who approve elevations or are unrestricted
    SHOW HELP;

``answer`` is a plain function from a command to the backend messages that answer it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.quota_store import QuotaStore, StoreUnavailable
from gateway.wire import messages as m
from policy.model import Policy
from policy.permissions import permissions_for
from policy.quota import Usage, limits_of

DATABASE = "sekisho"
_COMMAND = re.compile(r"^\s*show\s+(quota|quotas|help)\s*;?\s*$", re.IGNORECASE)
_COLUMNS = ("person", "window", "limit_on", "budget", "used", "remaining", "frees_up_at")
_HELP = (
    ("SHOW QUOTA", "your own volume quotas"),
    ("SHOW QUOTAS", "everyone's (approvers of elevations and unrestricted people)"),
    ("SHOW HELP", "this list"),
)


def may_see_everyone(policy: Policy, user: str) -> bool:
    """Compliance: people who approve elevations, or who are unrestricted."""
    roles = policy.roles_of(user)
    approvers = {r for e in policy.elevations.values() for r in e.approvers}
    return any(not r.restricted or r.name in approvers for r in roles)


async def answer(sql: str, user: str, policy: Policy, store: QuotaStore) -> list[bytes]:
    """The messages answering one console Query, ReadyForQuery included."""
    match = _COMMAND.match(sql)
    if match is None:
        return _error("42601", f"the Sekisho console does not know {sql.strip()[:80]!r}", "Try SHOW HELP;")
    command = match.group(1).lower()
    if command == "help":
        return _table(("command", "what it shows"), [list(row) for row in _HELP], "SHOW")
    people = [user]
    if command == "quotas":
        if not may_see_everyone(policy, user):
            return _error(
                "42501", "SHOW QUOTAS is for people who approve elevations", "SHOW QUOTA; shows yours."
            )
        people = sorted(set(policy.users) | set(await _people(store)))
    now = time.time()
    rows: list[list[str | None]] = []
    try:
        for person in people:
            limits = limits_of(permissions_for(policy, person).quotas)
            if limits:
                rows += [_row(person, usage) for usage in await store.usage(person, limits, now)]
    except StoreUnavailable as exc:
        return _error(
            "SK002", f"Sekisho cannot read the quota store right now ({exc})", "Try again in a moment."
        )
    return _table(_COLUMNS, rows, "SHOW")


async def _people(store: QuotaStore) -> Sequence[str]:
    try:
        return await store.people()
    except StoreUnavailable:
        return []


def _row(person: str, usage: Usage) -> list[str | None]:
    limit = usage.limit
    frees = None if usage.frees_at is None else datetime.fromtimestamp(usage.frees_at, UTC).isoformat()
    on = (
        ("rows of " + (".".join(limit.table) if limit.table else "protected tables"))
        if limit.metric == "rows"
        else "bytes"
    )
    return [person, f"{limit.window}s", on, str(limit.budget), str(usage.used), str(usage.remaining), frees]


def _table(columns: Sequence[str], rows: list[list[str | None]], tag: str) -> list[bytes]:
    out = [m.RowDescription(tuple(m.FieldDescription(c) for c in columns)).encode()]
    out += [m.DataRow(tuple(None if v is None else v.encode() for v in row)).encode() for row in rows]
    out += [m.CommandComplete(f"{tag} {len(rows)}").encode(), m.ReadyForQuery("I").encode()]
    return out


def _error(sqlstate: str, message: str, hint: str) -> list[bytes]:
    fields = m.error_fields("ERROR", sqlstate, message, None, hint)
    return [m.ErrorResponse(fields).encode(), m.ReadyForQuery("I").encode()]
