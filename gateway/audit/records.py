"""What each audit record says: plain functions from what happened to a JSON-ready dict.

Every record has ``kind`` and ``at`` (UTC, ISO 8601 with microseconds); records about a person
have ``person``; statement records have ``decision`` (allowed, cut or refused) and ``tables``
(every table the statement touched, schema.table), which the audit database copies into columns
for searching. Statement text is kept as the client sent it, or, when the policy's ``audit``
section says ``statement_text: redacted``, as its normalized form with every literal replaced by
``$n`` (text that does not parse is then left out, with its length and SHA-256 kept instead).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from policy.decision import Allow, Decision
from policy.facts import Analysis
from policy.masking import ResultMask

Record = dict[str, Any]


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text (one per second)


def timestamp(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (now by default) as the records' ISO 8601 UTC form, with
    microseconds (truncated). On every statement's path: the date and time of
    the current second are formatted once per second."""
    if seconds is None:
        seconds = time.time()
    whole = int(seconds)
    if _second[0] != whole:
        _second[0], _second[1] = whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((seconds - whole) * 1_000_000):06d}+00:00"


def statement_text(sql: str, fingerprint: str | None, redact: bool) -> dict[str, Any]:
    """The ``sql`` field (and, redacted but unparseable, the text's size and digest instead)."""
    if not redact:
        return {"sql": sql}
    if fingerprint is not None:
        return {"sql": fingerprint, "sql_redacted": True}
    return {
        "sql": None,
        "sql_redacted": True,
        "sql_bytes": len(sql.encode()),
        "sql_sha256": hashlib.sha256(sql.encode()).hexdigest(),
    }


def touched_tables(analysis: Analysis | None) -> list[str]:
    """Every table the statement reads or writes (views' base tables included), schema.table."""
    return [] if analysis is None else list(analysis.tables)


def masks_applied(decision: Decision) -> dict[str, str]:
    """Masked PII columns of the result (schema.table.column) and the mask kind each got."""
    if not isinstance(decision, Allow):
        return {}
    plans: Iterable[ResultMask | None] = (decision.mask, *decision.masks)
    return {c.source: c.mask.kind for plan in plans if plan is not None for c in plan.columns}


def decision_of(decision: Decision, cut: bool, sqlstate: str | None) -> str:
    if not isinstance(decision, Allow):
        return "refused"
    if cut:
        return "cut"
    return "failed" if sqlstate is not None else "allowed"


def connection(
    *,
    person: str | None,
    session: str,
    address: str,
    application_name: str,
    database: str | None,
    accepted: bool,
    reason: str | None,
    tls: bool,
) -> Record:
    return {
        "kind": "connection",
        "at": timestamp(),
        "person": person,
        "session": session,
        "address": address,
        "application_name": application_name,
        "database": database,
        "accepted": accepted,
        "reason": reason,
        "tls": tls,
        "decision": "allowed" if accepted else "refused",
    }


def session_end(*, person: str, session: str, address: str, started: float, statements: int) -> Record:
    return {
        "kind": "session_end",
        "at": timestamp(),
        "person": person,
        "session": session,
        "address": address,
        "seconds": round(time.time() - started, 3),
        "statements": statements,
    }


def policy_change(
    *, changed_by: str, path: str, version: int, sha256: str, diff: str, loaded: bool, problems: list[str]
) -> Record:
    return {
        "kind": "policy_change",
        "at": timestamp(),
        "person": changed_by,
        "path": path,
        "version": version,
        "sha256": sha256,
        "diff": diff,
        "decision": "allowed" if loaded else "refused",
        "problems": problems,
    }


def alarm(alarm_fields: Mapping[str, Any]) -> Record:
    fields = dict(alarm_fields)
    return {
        "kind": "alarm",
        "at": timestamp(),
        "person": fields.get("user"),
        "alarm": fields,
    }


def clearance(fields: Mapping[str, Any]) -> Record:
    """A compliance person lifted someone's suspension or tightening (who, whom, why)."""
    data = dict(fields)
    return {"kind": "clearance", "at": timestamp(), "person": data.get("user"), "clearance": data}


ELEVATION_EVENTS = ("requested", "approved", "denied", "revoked", "expired", "used")


def elevation(
    event: str, request: Mapping[str, Any], *, by: str | None, session: str | None = None
) -> Record:
    """An elevation request's life (``event``: requested, approved, denied, revoked, expired) and
    its first use in a session (``used``). ``person`` is the requester; ``by`` who acted (the
    requester, the approver, the revoker; None for an expiry); ``request`` is the whole request as
    stored (``policy.elevation.Request.to_dict``) after the event."""
    assert event in ELEVATION_EVENTS, event
    data = dict(request)
    record: Record = {
        "kind": "elevation",
        "at": timestamp(),
        "person": data.get("person"),
        "event": event,
        "id": data.get("id"),
        "elevation": data.get("elevation"),
        "by": by,
        "request": data,
    }
    if session is not None:
        record["session"] = session
    return record


def restriction(
    *, person: str, max_rows: int | None, suspended: bool, until: str | None, alarms: list[str]
) -> Record:
    return {
        "kind": "restriction",
        "at": timestamp(),
        "person": person,
        "max_rows": max_rows,
        "suspended": suspended,
        "until": until,
        "alarms": alarms,
    }


class Who:
    """The session's part of every statement record, built once per session."""

    __slots__ = ("fields",)

    def __init__(
        self, *, person: str, roles: Iterable[str], session: str, address: str, application_name: str
    ) -> None:
        self.fields: Record = {
            "person": person,
            "roles": sorted(roles),
            "session": session,
            "address": address,
            "application_name": application_name,
        }


def statement(
    who: Who,
    *,
    kind: str = "statement",
    started: float,
    sql: str,
    fingerprint: str | None,
    redact: bool,
    command: str,
    analysis: Analysis | None,
    decision: Decision,
    rows: int = 0,
    size: int = 0,
    cut: bool = False,
    cut_by: str | None = None,
    duration: float | None = None,
    sqlstate: str | None = None,
    error: str | None = None,
    elevation: str | None = None,
) -> Record:
    """One statement (a simple-protocol string or an extended-protocol Execute): who, what, what
    policy did, what came back. ``kind`` is ``statement_begin`` for the record written before a
    protected read reaches the database (no outcome yet) and ``statement`` for the canonical one.
    ``elevation`` is the id of the grant it was allowed under (without it, it would have been
    refused or shaped more strictly)."""
    protected = sorted(".".join(t) for t in decision.protected) if isinstance(decision, Allow) else []
    record: Record = {
        "kind": kind,
        "at": timestamp(started),
        **who.fields,
        **statement_text(sql, fingerprint, redact),
        "fingerprint": fingerprint,
        "command": command,
        "tables": touched_tables(analysis),
        "protected_tables": protected,
        "pii_columns": masks_applied(decision),
        "decision": decision_of(decision, cut, sqlstate) if kind == "statement" else "allowed",
        "rule": cut_by if isinstance(decision, Allow) else decision.rule,
    }
    if isinstance(decision, Allow) and decision.audited:
        record["break_glass"] = sorted(set(decision.audited))
    if elevation is not None and isinstance(decision, Allow):
        record["elevation"] = elevation
    if kind == "statement":
        record.update(
            rows=rows,
            bytes=size,
            cut=cut,
            duration_ms=None if duration is None else round(duration * 1000, 3),
            sqlstate=sqlstate,
            error=error,
        )
    return record
