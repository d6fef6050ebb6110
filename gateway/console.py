"""The ``sekisho`` console database: people ask Sekisho itself about their quotas, in SQL.

Connecting to the database named ``sekisho`` (as PgBouncer's ``pgbouncer`` database) reaches no
upstream: the session answers a few commands itself over the simple query protocol.

    SHOW QUOTA;    your own quotas: window, budget, used, remaining, when it frees up
    SHOW QUOTAS;   everyone's, for people who approve elevations or are unrestricted
    SHOW ALARMS;   recent alarms, newest first, with what each person is under now (compliance)
    SHOW HOLDS;    who is tightened or suspended now, and until when (compliance)
    CLEAR name 'reason';   lift a person's suspension or tightening after review (compliance,
                   never one's own), in every Sekisho process; recorded with who, when and why
    REQUEST ELEVATION name FOR '2h' REASON 'why';   ask for one of the policy's elevations
    SHOW ELEVATIONS;   your requests (everyone's, for approvers and compliance)
    APPROVE ELEVATION id;   DENY ELEVATION id REASON 'why';   (members of its approver roles,
                   never the requester)
    REVOKE ELEVATION id;   end a request or grant early (the requester or an approver)
    SHOW HELP;

``answer`` is a plain function from a command to the backend messages that answer it; what it
needs of the server's alarms is the ``Desk`` protocol.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.elevation_store import Elevations, UnknownRequest
from gateway.quota_store import QuotaStore, StoreUnavailable
from gateway.wire import messages as m
from policy.detect import Alarm, Clearance, ClearanceRefused, Tightening
from policy.elevation import ElevationRefused, Request, parse_duration
from policy.model import Policy
from policy.permissions import permissions_for
from policy.quota import Usage, limits_of

DATABASE = "sekisho"
_COMMAND = re.compile(r"^\s*show\s+(quota|quotas|alarms|holds|help)\s*;?\s*$", re.IGNORECASE)
# CLEAR name 'reason': the name as SQL writes an identifier (bare, or "quoted"), the reason a string.
_CLEAR = re.compile(
    r"""^\s*clear\s+(?:"(?P<quoted>(?:[^"]|"")+)"|(?P<bare>[A-Za-z0-9_.@-]+))\s+'(?P<reason>(?:[^']|'')*)'\s*;?\s*$""",
    re.IGNORECASE | re.DOTALL,
)
_COLUMNS = ("person", "window", "limit_on", "budget", "used", "remaining", "frees_up_at")
_ALARM_COLUMNS = ("at", "severity", "rule", "person", "summary", "person_now", "id")
_HOLD_COLUMNS = ("person", "suspended", "max_rows", "until", "alarms")
SHOWN_ALARMS = 100  # the newest alarms SHOW ALARMS lists (the admin feed and the log have more)
_HELP = (
    ("SHOW QUOTA", "your own volume quotas"),
    ("SHOW QUOTAS", "everyone's (approvers of elevations and unrestricted people)"),
    ("SHOW ALARMS", f"the newest {SHOWN_ALARMS} alarms and what each person is under now (the same people)"),
    ("SHOW HOLDS", "who is tightened or suspended now, and until when (the same people)"),
    ("CLEAR name 'reason'", "lift a person's suspension or tightening after review (the same people; "
     "never yourself)"),
    ("REQUEST ELEVATION name FOR '2h' REASON 'why'", "ask for one of the policy's elevations"),
    ("SHOW ELEVATIONS", "your elevation requests (everyone's for approvers and compliance)"),
    ("APPROVE ELEVATION id", "approve a request (its approver roles; never your own)"),
    ("DENY ELEVATION id REASON 'why'", "deny a request (the same people)"),
    ("REVOKE ELEVATION id", "end a request or grant early (the requester or an approver)"),
    ("SHOW HELP", "this list"),
)  # fmt: skip


class Desk(Protocol):
    """What the console needs of the server's alarms (``gateway.server.Server`` provides it)."""

    def recent_alarms(self) -> list[Alarm]: ...

    def tightenings(self) -> dict[str, Tightening]: ...

    async def clear(self, user: str, by: str, reason: str) -> Clearance: ...


def may_see_everyone(policy: Policy, user: str) -> bool:
    """Compliance: people who approve elevations, or who are unrestricted."""
    roles = policy.roles_of(user)
    approvers = {r for e in policy.elevations.values() for r in e.approvers}
    return any(not r.restricted or r.name in approvers for r in roles)


async def answer(
    sql: str, user: str, policy: Policy, store: QuotaStore, desk: Desk | None = None
) -> list[bytes]:
    """The messages answering one console Query, ReadyForQuery included."""
    elevations = getattr(desk, "elevations", None)
    if isinstance(elevations, Elevations) and (
        handled := await elevation_command(sql, user, policy, elevations)
    ):
        return handled
    cleared = _CLEAR.match(sql)
    if cleared is not None:
        person = cleared["quoted"].replace('""', '"') if cleared["quoted"] else cleared["bare"]
        return await _clear(person, cleared["reason"].replace("''", "'"), user, policy, desk)
    match = _COMMAND.match(sql)
    if match is None:
        return _error("42601", f"the Sekisho console does not know {sql.strip()[:80]!r}", "Try SHOW HELP;")
    command = match.group(1).lower()
    if command == "help":
        return _table(("command", "what it shows"), [list(row) for row in _HELP], "SHOW")
    if command in ("alarms", "holds"):
        if not may_see_everyone(policy, user):
            return _error("42501", f"SHOW {command.upper()} is for people who approve elevations", "")
        if desk is None:
            return _error("55000", "alarms are not kept by this Sekisho process", "")
        holds = desk.tightenings()
        if command == "holds":
            return _table(_HOLD_COLUMNS, [_hold_row(p, t) for p, t in sorted(holds.items())], "SHOW")
        alarms = desk.recent_alarms()[-SHOWN_ALARMS:]
        return _table(_ALARM_COLUMNS, [_alarm_row(a, holds) for a in reversed(alarms)], "SHOW")
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


async def _clear(person: str, reason: str, user: str, policy: Policy, desk: Desk | None) -> list[bytes]:
    if not may_see_everyone(policy, user):
        return _error("42501", "CLEAR is for people who approve elevations", "Ask your compliance lead.")
    if desk is None:
        return _error("55000", "alarms are not kept by this Sekisho process", "")
    try:
        clearance = await desk.clear(person, user, reason)
    except ClearanceRefused as exc:
        return _error(
            "42501" if exc.code == "self_clearance" else "55000", str(exc), "SHOW HOLDS; lists who is held."
        )
    except StoreUnavailable as exc:  # a clearance is recorded for every process, or not at all
        return _error(
            "SK002",
            f"the detection store is unreachable, so {person} was not cleared anywhere ({exc})",
            "Try again when the store is back.",
        )
    return [
        m.NoticeResponse(m.error_fields("NOTICE", "00000", f"{person} cleared by {user}: {reason}")).encode(),
        m.CommandComplete(f"CLEAR {clearance.user}").encode(),
        m.ReadyForQuery("I").encode(),
    ]


def _until(tightening: Tightening) -> str:
    return "cleared" if tightening.until is None else tightening.until.isoformat()


def _now(tightening: Tightening | None) -> str:
    if tightening is None:
        return ""
    what = "suspended" if tightening.suspend else f"max {tightening.max_rows} rows"
    return f"{what} until {'cleared' if tightening.until is None else tightening.until.isoformat()}"


def _alarm_row(alarm: Alarm, holds: Mapping[str, Tightening]) -> list[str | None]:
    at = alarm.at.isoformat()
    return [at, alarm.severity, alarm.rule, alarm.user, alarm.summary, _now(holds.get(alarm.user)), alarm.id]


def _hold_row(person: str, tightening: Tightening) -> list[str | None]:
    rows = None if tightening.max_rows is None else str(tightening.max_rows)
    suspended = "yes" if tightening.suspend else "no"
    return [person, suspended, rows, _until(tightening), ", ".join(tightening.alarms)]


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


# ---------------------------------------------------------------------- elevations

_NAME = r"""(?:"(?P<quoted>(?:[^"]|"")+)"|(?P<bare>[A-Za-z0-9_.@-]+))"""
_TEXT = r"'(?P<{}>(?:[^']|'')*)'"
_ID = r"""(?:'(?P<qid>[0-9A-Za-z]+)'|(?P<id>[0-9A-Za-z]+))"""
_END = r"\s*;?\s*$"
_ELEVATION_COMMANDS = (
    ("request", re.compile(
        rf"^\s*request\s+elevation\s+{_NAME}\s+for\s+{_TEXT.format('duration')}\s+reason\s+"
        rf"{_TEXT.format('reason')}{_END}", re.IGNORECASE | re.DOTALL)),
    ("show", re.compile(rf"^\s*show\s+elevations{_END}", re.IGNORECASE)),
    ("approve", re.compile(rf"^\s*approve\s+elevation\s+{_ID}{_END}", re.IGNORECASE)),
    ("deny", re.compile(rf"^\s*deny\s+elevation\s+{_ID}\s+reason\s+{_TEXT.format('reason')}{_END}",
                        re.IGNORECASE | re.DOTALL)),
    ("revoke", re.compile(rf"^\s*revoke\s+elevation\s+{_ID}{_END}", re.IGNORECASE)),
)  # fmt: skip
_ELEVATION_WORDS = re.compile(r"^\s*(request|approve|deny|revoke)\s+elevation\b", re.IGNORECASE)
_ELEVATION_COLUMNS = (
    "id", "person", "elevation", "state", "duration", "requested_at", "approved_at", "expires_at",
    "approver", "reason", "note",
)  # fmt: skip
_SYNTAX = {
    "request": "REQUEST ELEVATION name FOR '2h' REASON 'why';",
    "approve": "APPROVE ELEVATION id;",
    "deny": "DENY ELEVATION id REASON 'why';",
    "revoke": "REVOKE ELEVATION id;",
}
STORE_UNAVAILABLE = "58000"  # system_error: the elevation store cannot be reached


async def elevation_command(sql: str, user: str, policy: Policy, desk: Elevations) -> list[bytes] | None:
    """The answer to an elevation command, or None when ``sql`` is not one."""
    found = [(verb, match) for verb, pattern in _ELEVATION_COMMANDS if (match := pattern.match(sql))]
    if found:
        verb, match = found[0]
    else:
        misspelt = _ELEVATION_WORDS.match(sql)
        if misspelt is None:
            return None
        verb = misspelt.group(1).lower()
        return _error("42601", f"cannot read {sql.strip()[:80]!r}", f"Write it as {_SYNTAX[verb]}")
    try:
        if verb == "show":
            everyone = may_see_everyone(policy, user)
            listed = await desk.listing(None if everyone else user)
            return _table(_ELEVATION_COLUMNS, [_request_row(r) for r in listed], "SHOW")
        if verb == "request":
            return await _request(match, user, desk)
        id = match["qid"] or match["id"]
        reason = (match.groupdict().get("reason") or "").replace("''", "'")
        decided = await desk.decide(id, user, verb, reason)
    except ElevationRefused as exc:
        return _error(exc.sqlstate, str(exc), "SHOW ELEVATIONS; lists the requests.")
    except UnknownRequest as exc:
        return _error("42704", str(exc), "SHOW ELEVATIONS; lists the requests.")
    except StoreUnavailable as exc:
        return _error(STORE_UNAVAILABLE, f"Sekisho cannot reach the elevation store right now ({exc})",
                      "Nothing was recorded; try again in a moment.")  # fmt: skip
    past = {"approve": "approved", "deny": "denied", "revoke": "revoked"}[verb]
    notice = f"elevation {decided.id} ({decided.elevation} for {decided.person}) {past} by {user}"
    if verb == "approve" and decided.expires_at is not None:
        notice += f", in force until {decided.expires_at.isoformat(timespec='seconds')}"
    return _done(notice, f"{verb.upper()} ELEVATION")


async def _request(match: re.Match[str], user: str, desk: Elevations) -> list[bytes]:
    name = match["quoted"].replace('""', '"') if match["quoted"] else match["bare"]
    duration = parse_duration(match["duration"].replace("''", "'"))
    if duration is None:
        return _error(
            "22023", f"{match['duration']!r} is not a duration", "Write it as '30m', '2h' or '1d12h'."
        )
    created = await desk.request(user, name, duration, match["reason"].replace("''", "'"))
    expires = created.expires_at.isoformat(timespec="seconds") if created.expires_at else "never"
    return _done(
        f"elevation {created.id} requested: {created.elevation} for {_show(created.duration)}; an approver "
        f"must APPROVE ELEVATION {created.id}; the request lapses at {expires} otherwise",
        "REQUEST ELEVATION",
    )


def _request_row(request: Request) -> list[str | None]:
    def when(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat(timespec="seconds")

    state = request.state_at(datetime.now(UTC))
    approved = request.decided_at if request.state in ("approved", "expired", "revoked") else None
    return [
        request.id, request.person, request.elevation, state, _show(request.duration),
        when(request.requested_at), when(approved), when(request.expires_at), request.approver,
        request.reason, request.note or (f"revoked by {request.ended_by}" if request.ended_by else None),
    ]  # fmt: skip


def _show(amount: timedelta) -> str:
    seconds, parts = int(amount.total_seconds()), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _done(notice: str, tag: str) -> list[bytes]:
    return [
        m.NoticeResponse(m.error_fields("NOTICE", "00000", notice)).encode(),
        m.CommandComplete(tag).encode(),
        m.ReadyForQuery("I").encode(),
    ]
