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


# Writing the system catalog directly (as the superuser service account may) changes the
# definition of anything, protected tables included, without any DDL statement: renaming
# customers in pg_class, deleting its row-level security policies from pg_policy, rewriting a
# built-in SQL function's body in pg_proc so that it runs SQL analysis never saw.
# pg_settings is the exception: a view whose UPDATE rule is set_config, the documented SQL way to
# change a setting (the gateway watches the settings that matter as the server reports them).
# Objects created in, or locks taken on, the system schemas are changes too: a table created in
# information_schema would be taken for a catalog relation (no row cap), and an exclusive lock on
# pg_class stops every other session and Sekisho's own catalog refresh.
CATALOG_CHANGES = WRITES | {Access.DDL, Access.LOCK}
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
SETTINGS_VIEW = ("pg_catalog", "pg_settings")


def protected_ddl(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for use in stmt.tables:
        if use.access in (Access.DDL, Access.LOCK) and ctx.policy.is_protected(use.relation):
            verb = "locking" if use.access == Access.LOCK else "changing the definition of"
            return Violation("protected_ddl", f"{verb} {show(use.relation)}")
        catalog = use.relation[0] in SYSTEM_SCHEMAS and use.relation != SETTINGS_VIEW
        if catalog and use.access in CATALOG_CHANGES:
            return Violation("protected_ddl", f"changing the system catalog {show(use.relation)}")
    return None


def views_over_protected(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for use in stmt.tables:
        view = use.via_view
        if view is not None and ctx.policy.is_protected(use.relation) and not ctx.policy.is_protected(view):
            return Violation(
                "views_over_protected", f"reading {show(use.relation)} through the view {show(view)}"
            )
    return None
