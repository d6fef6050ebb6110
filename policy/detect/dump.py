"""dump_tool and dump_pattern: sessions that look like a database dump.

``dump_tool``: the client says it is pg_dump or pg_dumpall (``application_name``, which both set).
``dump_pattern``: the session does what a dump does whatever it calls itself. pg_dump opens a
repeatable-read (or serializable) transaction, or imports a snapshot (``SET TRANSACTION SNAPSHOT``,
parallel dumps), enumerates the catalog (pg_class, pg_namespace, pg_attribute, information_schema),
then locks and reads table after table whole (``LOCK TABLE``, ``COPY ... TO STDOUT``, ``SELECT``
with neither WHERE nor LIMIT). A session with the snapshot, the enumeration, and then ``tables``
different tables locked or read whole, in one transaction, raises the alarm. Refused statements
count: a dump the policy stops is still an attempt to dump. psql's ``\\d`` enumerates the catalog
too, but ordinary work does not then read table after table whole inside a snapshot.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, touch
from policy.events import ConnectionEvent, StatementEvent
from policy.model import AlarmSettings

_MAX_SESSIONS = 32  # sessions followed per person (only those with a snapshot or catalog query)
_MAX_TARGETS = 64
_SCANNED = 8192  # characters of a statement's text searched for the signals

_SNAPSHOT = re.compile(
    r"\bSET\s+TRANSACTION\s+SNAPSHOT\b|\bISOLATION\s+LEVEL\s+(?:REPEATABLE\s+READ|SERIALIZABLE)\b"
    r"|\bpg_export_snapshot\s*\(",
    re.IGNORECASE,
)
_CATALOG = re.compile(
    r"\b(?:pg_class|pg_namespace|pg_attribute|pg_tables|pg_inherits)\b"
    r"|\binformation_schema\s*\.\s*(?:tables|columns)\b",
    re.IGNORECASE,
)
_END = re.compile(r"\s*(?:COMMIT|ROLLBACK|END|ABORT)\b", re.IGNORECASE)
_COPY_OUT = re.compile(r"\s*COPY\b.*\bTO\s+STDOUT\b", re.IGNORECASE | re.DOTALL)
_COPY_TARGET = re.compile(r'\s*COPY\s+([\w."$]+)', re.IGNORECASE)
_LOCK = re.compile(r"\s*LOCK\s+(?:TABLE\s+)?(?:ONLY\s+)?(.+?)(?:\s+IN\s|\s+NOWAIT\b|\s*;|\s*$)", re.I | re.S)
_FILTERED = re.compile(r"\b(?:WHERE|LIMIT|FETCH\s+(?:FIRST|NEXT))\b", re.IGNORECASE)


@dataclass(slots=True)
class _Session:
    snapshot: bool = False
    catalog: int = 0
    targets: list[str] = field(default_factory=list)
    tool: bool = False  # dump_tool already reported for this session
    alarmed: bool = False


class Dump(PersonRule):
    name = "dump"

    def __init__(self, sessions: OrderedDict[str, _Session] | None = None) -> None:
        self._sessions: OrderedDict[str, _Session] = sessions if sessions is not None else OrderedDict()

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.dump.enabled

    def connection(self, ev: ConnectionEvent, ctx: Context) -> list[Finding]:
        application = _dump_tool(ev.application_name, ctx)
        if application is None:
            return []
        return [_tool_finding(ev.user, application, ev.address, ctx, accepted=ev.accepted, session=None)]

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        session = self._sessions.get(ev.session)
        application = _dump_tool(ev.application_name, ctx)
        if application is not None and (session is None or not session.tool):
            session = session or _Session()
            session.tool = True
            touch(self._sessions, ev.session, session, _MAX_SESSIONS)
            out.append(
                _tool_finding(ev.user, application, ev.address, ctx, accepted=True, session=ev.session)
            )
        text = ev.sql[:_SCANNED]
        if _END.match(text):
            if session is not None:  # a new transaction starts from scratch; the tool stays reported
                session.snapshot, session.catalog, session.targets = False, 0, []
            return out
        snapshot = _SNAPSHOT.search(text) is not None
        catalog = _CATALOG.search(text) is not None
        if session is None:
            if not (snapshot or catalog):
                return out
            session = _Session()
        touch(self._sessions, ev.session, session, _MAX_SESSIONS)
        session.snapshot |= snapshot
        if catalog:
            session.catalog += 1
        elif session.catalog:
            for target in _targets(ev, text):
                if target not in session.targets and len(session.targets) < _MAX_TARGETS:
                    session.targets.append(target)
        rule = ctx.settings.dump
        if session.alarmed or not session.snapshot or len(session.targets) < rule.tables:
            return out
        session.alarmed = True
        out.append(
            Finding(
                rule="dump_pattern",
                severity=rule.severity,
                key=ev.session,
                summary=f"{ev.user}'s session {ev.session} behaves like a dump: a snapshot transaction, "
                f"catalog enumeration, then {len(session.targets)} tables read whole",
                action="End the session and ask the person what it was for; a copy of whole tables "
                "needs an approved elevation, not a dump through the gateway.",
                evidence={
                    "session": ev.session,
                    "application_name": ev.application_name,
                    "address": ev.address,
                    "catalog_queries": session.catalog,
                    "tables": list(session.targets),
                    "refused": not ev.allowed,
                },
            )
        )
        return out

    def to_dict(self) -> dict[str, Plain]:
        return {
            "sessions": [
                [k, [s.snapshot, s.catalog, list(s.targets), s.tool, s.alarmed]]
                for k, s in self._sessions.items()
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        sessions: OrderedDict[str, _Session] = OrderedDict()
        for key, (snapshot, catalog, targets, tool, alarmed) in data.get("sessions", []):
            sessions[str(key)] = _Session(
                bool(snapshot), int(catalog), [str(t) for t in targets], bool(tool), bool(alarmed)
            )
        return cls(sessions)


def _dump_tool(application: str, ctx: Context) -> str | None:
    name = application.strip().lower()
    rule = ctx.settings.dump
    for tool in rule.applications:
        if name.startswith(tool.lower()):
            return name
    return None


def _tool_finding(
    user: str, application: str, address: str, ctx: Context, *, accepted: bool, session: str | None
) -> Finding:
    return Finding(
        rule="dump_tool",
        severity=ctx.settings.dump.severity,
        key=application,
        summary=f"{user} is running {application} through Sekisho from {address}"
        + ("" if accepted else " (the connection was refused)"),
        action="Ask the person what the dump is for; copies of protected tables are refused unless an "
        "elevation is approved, and a dump attempt by a restricted person deserves an explanation.",
        evidence={"application_name": application, "address": address, "session": session},
    )


def _targets(ev: StatementEvent, text: str) -> list[str]:
    """Tables this statement locks or reads whole, by name."""
    if _COPY_OUT.match(text):
        if ev.tables:
            return list(ev.tables)
        match = _COPY_TARGET.match(text)
        return [_name(match.group(1))] if match else [ev.fingerprint[:200]]
    lock = _LOCK.match(text)
    if lock is not None:
        return list(ev.tables) or [_name(part) for part in lock.group(1).split(",") if part.strip()]
    if ev.command == "select" and ev.tables and not _FILTERED.search(text):
        return list(ev.tables)
    return []


def _name(text: str) -> str:
    """A table name as written, unquoted and folded, qualified with public when it is bare."""
    parts = [p[1:-1] if p.startswith('"') and p.endswith('"') else p.lower() for p in text.strip().split(".")]
    return ".".join(parts) if len(parts) > 1 else f"public.{parts[0]}"
