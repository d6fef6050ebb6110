"""COPY: bulk export and import, the fastest way to move a whole table."""

from __future__ import annotations

from policy.facts import CopyTarget, StatementFacts
from policy.rules.base import RuleContext, Violation, show


def copy_server(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    copy = stmt.copy
    if copy is not None and copy.target in (CopyTarget.FILE, CopyTarget.PROGRAM):
        place = "a server program" if copy.target == CopyTarget.PROGRAM else "a server file"
        return Violation("copy_server", f"COPY {copy.direction} {place}")
    return None


def copy_protected(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.copy is None:
        return None
    touched = ctx.protected_touched(stmt)
    if touched:
        return Violation("copy_protected", f"COPY of protected data ({', '.join(map(show, touched))})")
    return None
