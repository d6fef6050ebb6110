"""Writes, DDL and view access on protected tables."""

from __future__ import annotations

from policy.facts import Access, StatementFacts
from policy.rules.base import WRITES, RuleContext, Violation, show


def protected_writes(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    writable = ctx.permissions.writable
    for use in stmt.tables:
        if use.access in WRITES and ctx.policy.is_protected(use.relation):
            not_listed = writable is not None and use.relation not in writable
            what = f"{use.access.value.upper()} on {show(use.relation)}"
            return Violation("protected_writes", what, regardless=not_listed)
    return None


def protected_ddl(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for use in stmt.tables:
        if use.access in (Access.DDL, Access.LOCK) and ctx.policy.is_protected(use.relation):
            verb = "locking" if use.access == Access.LOCK else "changing the definition of"
            return Violation("protected_ddl", f"{verb} {show(use.relation)}")
    return None


def views_over_protected(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for use in stmt.tables:
        view = use.via_view
        if view is not None and ctx.policy.is_protected(use.relation) and not ctx.policy.is_protected(view):
            return Violation(
                "views_over_protected", f"reading {show(use.relation)} through the view {show(view)}"
            )
    return None
