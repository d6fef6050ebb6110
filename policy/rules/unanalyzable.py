"""Fail closed: a statement whose effect analysis could not establish."""

from __future__ import annotations

from policy.facts import StatementFacts
from policy.rules.base import RuleContext, Violation


def decide(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.unanalyzable:
        return Violation("unanalyzable", stmt.unanalyzable)
    return None
