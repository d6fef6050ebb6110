"""Calls to functions that reach past the statement: files, programs, other servers, hidden SQL."""

from __future__ import annotations

from policy.facts import FunctionClass, StatementFacts
from policy.rules.base import RuleContext, Violation


def _calls(stmt: StatementFacts, *classes: FunctionClass) -> bool:
    return any(c in stmt.function_classes for c in classes)


def _named(stmt: StatementFacts) -> str:
    """The functions named in the message, or nothing when there are none (ALTER SYSTEM, LOAD)."""
    shown = [f for f in stmt.functions if not f.startswith("pg_catalog.")] or list(stmt.functions)
    return f" ({', '.join(sorted(set(shown))[:3])})" if shown else ""


def dynamic_sql(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _calls(stmt, FunctionClass.DYNAMIC_SQL, FunctionClass.REMOTE):
        return Violation("dynamic_sql", f"a statement hidden in a string or sent elsewhere{_named(stmt)}")
    return None


def server_files(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _calls(stmt, FunctionClass.SERVER_FILES, FunctionClass.SERVER_PROGRAM):
        return Violation("server_files", f"server file or program access{_named(stmt)}")
    return None


def large_objects(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _calls(stmt, FunctionClass.LARGE_OBJECTS):
        return Violation("large_objects", f"large object access{_named(stmt)}")
    return None


def admin_functions(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _calls(stmt, FunctionClass.ADMIN):
        return Violation("admin_functions", f"server administration{_named(stmt)}")
    return None


def user_functions(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _calls(stmt, FunctionClass.USER_DEFINED):
        return Violation("user_functions", f"a function whose body Sekisho does not analyze{_named(stmt)}")
    return None
