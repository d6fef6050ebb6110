"""`sekisho explain`: what Sekisho sees in a statement and what it decides, in words people tune by.

Pure formatting over an Analysis, a Decision and the person's Permissions, so the same text can be
shown by the CLI, the admin API and tests.
"""

from __future__ import annotations

from collections import defaultdict

from policy.decision import Allow, Decision
from policy.facts import Analysis, Equality, StatementFacts
from policy.model import PII_CHANNELS, RULE_CLASSES, Policy
from policy.permissions import Permissions

# How a plain column is compared (the exact lookups pii_inference lets through where it is told to).
_EQUALITY = {Equality.NONE: "", Equality.VALUE: " (exact value)", Equality.COLUMN: " (equal column)"}


def _name(relation: tuple[str, str]) -> str:
    return f"{relation[0]}.{relation[1]}" if relation[0] else f"{relation[1]} (not in the catalog)"


def _statement(index: int, stmt: StatementFacts, policy: Policy) -> list[str]:
    lines = [f"Statement {index}: {' '.join(stmt.text.split())[:200]}"]
    lines.append(
        f"  kind:       {stmt.command} ({stmt.node})" + ("" if stmt.executes else ", does not run it")
    )
    tables: dict[tuple[str, str], list[str]] = defaultdict(list)
    for use in stmt.tables:
        how = use.access.value + (f" via view {_name(use.via_view)}" if use.via_view else "")
        if how not in tables[use.relation]:
            tables[use.relation].append(how)
    if tables:
        first = True
        for relation, hows in sorted(tables.items()):
            mark = "  [protected]" if policy.is_protected(relation) else ""
            label = "  tables:     " if first else "              "
            lines.append(f"{label}{_name(relation)} ({', '.join(hows)}){mark}")
            first = False
    else:
        lines.append("  tables:     -")
    by_clause: dict[str, list[str]] = defaultdict(list)
    for col in stmt.columns:
        shown = f"{_name(col.relation)}.{col.column}{_EQUALITY[col.equality]}"
        if shown not in by_clause[col.clause.value]:
            by_clause[col.clause.value].append(shown)
    if by_clause:
        first = True
        for clause, cols in by_clause.items():
            label = "  columns:    " if first else "              "
            lines.append(f"{label}{clause + ':':<10} {', '.join(cols)}")
            first = False
    if stmt.outputs:
        first = True
        for out in stmt.outputs:
            sources = ", ".join(".".join(s) for s in sorted(out.sources)) or "(no column)"
            how = "direct" if out.direct else "derived"
            if out.whole_row:
                how += ", whole row"
            label = "  output:     " if first else "              "
            lines.append(f"{label}{out.name} <- {sources} ({how})")
            first = False
    if stmt.functions:
        lines.append(f"  functions:  {', '.join(sorted(set(stmt.functions)))}")
    if stmt.function_classes:
        lines.append(f"  classes:    {', '.join(sorted(c.value for c in stmt.function_classes))}")
    if stmt.copy is not None:
        source = _name(stmt.copy.relation) if stmt.copy.relation else "a query"
        lines.append(f"  copy:       {stmt.copy.direction} {stmt.copy.target.value}, of {source}")
    if stmt.fetch is not None:
        count = "all" if stmt.fetch.count is None else stmt.fetch.count
        lines.append(f"  {stmt.command + ':':<11} {stmt.fetch.direction.value} {count}")
    flags = [
        name
        for name, on in (
            ("creates an object", stmt.creates_object),
            ("copies rows into a table", stmt.writes_from_query),
            ("switches role", stmt.role_switch),
            ("DO block", stmt.do_block),
            ("returns rows", stmt.returns_rows),
        )
        if on
    ]
    if flags:
        lines.append(f"  effects:    {', '.join(flags)}")
    if stmt.max_rows is not None:
        lines.append(f"  rows:       at most {stmt.max_rows} (proven: sent as written under a larger cap)")
    if stmt.settings:
        lines.append(
            "  settings:   "
            + ", ".join(f"{k} = {v if v is not None else 'DEFAULT'}" for k, v in stmt.settings)
        )
    if stmt.unanalyzable:
        lines.append(f"  UNANALYZABLE: {stmt.unanalyzable}")
    lines += [f"  note:       {note}" for note in stmt.notes]
    return lines


def render(analysis: Analysis, decision: Decision, policy: Policy, permissions: Permissions) -> str:
    """The whole explanation, ending with the decision and the rule that made it."""
    lines: list[str] = []
    if analysis.error is not None:
        lines.append(f"Not valid SQL by PostgreSQL's grammar: {analysis.error}")
    for i, stmt in enumerate(analysis.statements, start=1):
        lines += _statement(i, stmt, policy)
        lines.append("")
    roles = ", ".join(permissions.roles) or "no role"
    kind = "restricted" if permissions.restricted else "unrestricted"
    lines.append(f"Decision for {permissions.user} (roles: {roles}; {kind}):")
    if permissions.pii_use:
        settings = ", ".join(
            f"{channel} {permissions.pii_use[channel]}"
            for channel in PII_CHANNELS
            if channel in permissions.pii_use
        )
        others = "" if len(permissions.pii_use) == len(PII_CHANNELS) else "; other channels allow"
        lines.append(f"  masked PII: {settings} (pii_use{others})")
    if isinstance(decision, Allow):
        cap = (
            f", at most {decision.row_cap} rows ({decision.cap_rule})" if decision.row_cap is not None else ""
        )
        lines.append(f"  ALLOW{cap}")
        if decision.audited:
            lines.append(
                f"  audited as: {', '.join(sorted(set(decision.audited)))} (allowed for this person)"
            )
        if decision.counted:
            lines.append(f"  counted:    {', '.join(map(str, decision.counted))} (pii_use: count)")
        if decision.protected:
            lines.append(
                f"  protected tables touched: {', '.join(_name(r) for r in sorted(decision.protected))}"
            )
    else:
        lines.append(f"  DENY {decision.sqlstate} (rule {decision.rule})")
        lines.append(f"  message: {decision.message}")
        if decision.rule in RULE_CLASSES:
            lines.append(f"  rule:    {RULE_CLASSES[decision.rule]}")
        if decision.hint:
            lines.append(f"  hint:    {decision.hint}")
    return "\n".join(lines)
