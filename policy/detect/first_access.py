"""first_access: the first time a person reads or writes a protected table.

Low severity by default: it is how a reviewer learns that someone's work has reached a table it
never touched before (a new person's first day shows up too, which is the point). Refused attempts
are not access; repeated ones are the probing rule's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule
from policy.events import StatementEvent
from policy.model import AlarmSettings

_MAX_TABLES = 4096  # past this many tables, a person's first reads are no longer news


class FirstAccess(PersonRule):
    name = "first_access"

    def __init__(self, tables: set[str] | None = None) -> None:
        self._tables = tables if tables is not None else set()

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.first_access.enabled

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if not ev.allowed or not ev.tables or len(self._tables) >= _MAX_TABLES:
            return []
        out: list[Finding] = []
        for table in ev.tables:
            if table in self._tables:
                continue
            self._tables.add(table)
            out.append(
                Finding(
                    rule=self.name,
                    severity=ctx.settings.first_access.severity,
                    key=table,
                    summary=f"{ev.user} accessed {table} for the first time",
                    action="Check that the person's work includes this table.",
                    evidence={
                        "table": table,
                        "command": ev.command,
                        "rows": ev.rows,
                        "session": ev.session,
                        "statement": ev.fingerprint[:500],
                    },
                )
            )
        return out

    def to_dict(self) -> dict[str, Plain]:
        return {"tables": list[Plain](sorted(self._tables))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls({str(t) for t in data.get("tables", [])})
