"""Objects created from protected data outlive the statement and escape its row cap and masks."""

from __future__ import annotations

from policy.facts import StatementFacts
from policy.rules.base import RuleContext, Violation, show


def decide(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if not (stmt.creates_object or stmt.writes_from_query):
        return None
    read = ctx.protected_reads(stmt)
    if read:
        what = "creating an object" if stmt.creates_object else "copying rows into another table"
        return Violation("derived_objects", f"{what} from protected data ({', '.join(map(show, read))})")
    return None
