"""evaluate(): the decision for one client string, from its analysis and the person's permissions.

Every statement in the string meets every rule (``policy.rules.RULES``); the first refusal decides
for the whole string, because a multi-statement string runs as one implicit transaction and a
partial run would be harder to reason about than none. Otherwise the string is allowed with the
smallest row cap among its statements: rows are counted across the whole string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from policy.decision import (
    POLICY_REFUSED,
    SYNTAX_ERROR,
    UNANALYZABLE,
    Allow,
    Decision,
    Deny,
    InferenceUse,
)
from policy.facts import Access, Analysis, StatementFacts, TableUse
from policy.masking import NO_MASKING, Masking, ResultMask
from policy.masking import plan as masking_plan
from policy.model import RULE_CLASSES, Policy
from policy.permissions import Permissions
from policy.rules import RULES, RuleContext, Violation, pii_inference
from policy.rules.base import show

CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
NAMED_ROW_SOURCES = frozenset({"execute", "fetch"})  # rows come from a prepared statement or cursor


def evaluate(
    analysis: Analysis,
    policy: Policy,
    permissions: Permissions,
    named: Named | None = None,
) -> Decision:
    """Decide on a whole client string. ``named`` holds the prepared statements and cursors known
    to the session with the allowance each was created with (EXECUTE and FETCH inherit it); those
    the string itself creates before using them count too."""
    if analysis.error is not None:
        if not permissions.restricted:
            return Allow()  # PostgreSQL will report its own syntax error to a break-glass DBA
        return Deny("syntax", SYNTAX_ERROR, f"Sekisho could not parse this statement: {analysis.error}")
    ctx = RuleContext(policy, permissions)
    allowance = Allow(on_cap=permissions.on_row_cap)
    protected: set[tuple[str, str]] = set()
    audited: list[str] = []
    counted: dict[InferenceUse, None] = {}
    named = named or Named()
    masks: list[ResultMask | None] = []
    redact = False
    for stmt in analysis.statements:
        decision = decide_statement(stmt, ctx, named)
        if isinstance(decision, Deny):
            return decision
        named = named.created_by(stmt, decision)
        allowance = allowance.with_cap(decision.row_cap, decision.cap_rule)
        protected |= decision.protected
        audited += decision.audited
        masks.append(decision.mask)
        redact = redact or decision.redact
        counted.update(dict.fromkeys(decision.counted))
    return Allow(
        allowance.row_cap,
        allowance.cap_rule,
        allowance.on_cap,
        frozenset(protected),
        tuple(audited),
        counted=tuple(counted),
        masks=tuple(masks) if any(masks) else (),
        redact=redact,
    )


@dataclass(frozen=True, slots=True)
class Named:
    """A session's prepared statements and cursors (their namespaces are separate in PostgreSQL)."""

    statements: Mapping[str, Allow] = field(default_factory=dict)
    cursors: Mapping[str, Allow] = field(default_factory=dict)

    def source_of(self, stmt: StatementFacts) -> Allow | None:
        if stmt.prepared_name is None:
            return None
        if stmt.command == "execute":
            return self.statements.get(stmt.prepared_name)
        if stmt.command in ("fetch", "move"):
            return self.cursors.get(stmt.prepared_name)
        return None

    def created_by(self, stmt: StatementFacts, decision: Allow) -> Named:
        """These names after ``stmt`` ran: PREPARE and DECLARE earlier in a string create names its
        later EXECUTE and FETCH use, with the allowance they were decided with (as the relay
        records them once the string is allowed). A name that already exists makes PostgreSQL
        fail the PREPARE or DECLARE, and the rest of the string with it."""
        name = stmt.prepared_name
        if name is None:
            return self
        if stmt.command == "prepare":
            return Named({**self.statements, name: decision}, self.cursors)
        if stmt.command == "declare":
            return Named(self.statements, {**self.cursors, name: decision})
        return self


def decide_statement(stmt: StatementFacts, ctx: RuleContext, named: Named) -> Decision:
    """The decision for one statement (the gateway also records it for PREPARE and DECLARE)."""
    permissions = ctx.permissions
    copied_mask: ResultMask | None = None  # CREATE TABLE AS EXECUTE of a statement with masked rows
    if stmt.command == "create_table_as" and stmt.prepared_name is not None:
        # CREATE TABLE ... AS EXECUTE name: the new table holds the rows of a statement prepared
        # earlier, so it is created from whatever protected tables that statement read.
        source = named.statements.get(stmt.prepared_name)
        if source is None:
            if permissions.restricted:
                return _unknown_name(stmt)
        else:
            copied_mask = source.mask if permissions.restricted else None
            reads = (TableUse(relation, Access.READ) for relation in sorted(source.protected))
            stmt = replace(stmt, tables=(*stmt.tables, *reads))
    audited: list[str] = []
    for rule in RULES:
        violation = rule(stmt, ctx)
        if violation is None:
            continue
        if violation.regardless or permissions.refuses(violation.rule):
            return _refusal(violation, ctx)
        audited.append(violation.rule)
    if copied_mask is not None:
        return _masked_copy(stmt, copied_mask, permissions)
    inherited = named.source_of(stmt)
    if stmt.command in NAMED_ROW_SOURCES and inherited is None and permissions.restricted:
        return _unknown_name(stmt)
    cap, cap_rule = _row_cap(stmt, ctx, inherited)
    protected = frozenset(t.relation for t in stmt.tables if ctx.policy.is_protected(t.relation))
    counted = pii_inference.counted(stmt, ctx)
    masking = NO_MASKING
    if permissions.restricted:
        planned = masking_plan(stmt, ctx.policy, permissions)
        if isinstance(planned, Deny):
            if stmt.command not in NAMED_ROW_SOURCES or inherited is None:
                return planned
        else:
            masking = planned
    if inherited is not None:
        protected |= inherited.protected
        counted += inherited.counted  # EXECUTE runs what PREPARE counted
        # EXECUTE and FETCH return the rows their name was created for, masked as decided then.
        masking = Masking(inherited.mask, inherited.redact or masking.redact)
    return Allow(
        cap,
        cap_rule,
        permissions.on_row_cap,
        protected,
        tuple(audited),
        counted=tuple(counted),
        mask=masking.result,
        redact=masking.redact,
    )


def _masked_copy(stmt: StatementFacts, mask: ResultMask, permissions: Permissions) -> Deny:
    """CREATE TABLE ... AS EXECUTE of a statement whose rows carry masked PII: the table would
    hold them in clear (the masks apply to results only)."""
    return Deny(
        "pii_escape",
        POLICY_REFUSED,
        f'Sekisho refuses to copy the rows of "{stmt.prepared_name}" into a table for '
        f"{permissions.user}: they carry PII that is masked for you ({mask.describe()}), and masks "
        "apply only to results (rule pii_escape)",
        hint="EXECUTE the statement to see its rows masked.",
    )


def _unknown_name(stmt: StatementFacts) -> Deny:
    verb = "CREATE TABLE AS" if stmt.command == "create_table_as" else stmt.command.upper()
    return Deny(
        "unanalyzable",
        UNANALYZABLE,
        f'Sekisho does not know what "{stmt.prepared_name}" runs, so {verb} is refused (rule unanalyzable)',
        hint="Prepare the statement or declare the cursor in this session, through Sekisho.",
    )


def _row_cap(
    stmt: StatementFacts, ctx: RuleContext, inherited: Allow | None
) -> tuple[int | None, str | None]:
    """The smallest cap among the role's per-statement cap and the caps of the tables read."""
    if inherited is not None:
        return inherited.row_cap, inherited.cap_rule
    reads = {
        t.relation for t in stmt.tables if t.access == Access.READ and t.relation[0] not in CATALOG_SCHEMAS
    }
    # PREPARE and DECLARE return no rows themselves, but the rows they set up are capped later.
    if not reads or not (stmt.returns_rows or stmt.command in ("prepare", "declare")):
        return None, None
    best: tuple[int | None, str | None] = (None, None)
    permissions = ctx.permissions
    if permissions.max_rows is not None:
        best = (permissions.max_rows, f"max_rows of role {'/'.join(permissions.roles)}")
    for relation in sorted(reads):
        cap = permissions.table_max_rows.get(relation)
        if cap is not None and (best[0] is None or cap < best[0]):
            best = (cap, f"max_rows for {show(relation)}")
    return best


def _refusal(violation: Violation, ctx: RuleContext) -> Deny:
    rule = violation.rule
    user = ctx.permissions.user
    if rule == "unanalyzable":
        return Deny(
            rule,
            UNANALYZABLE,
            f"Sekisho cannot establish what this statement does, so it is refused for {user} "
            f"(rule unanalyzable): {violation.what}",
            hint="Rewrite it as plain SQL over named tables, or ask a compliance lead for an elevation.",
        )
    hint = _elevation_hint(rule, ctx.policy)
    return Deny(
        rule,
        POLICY_REFUSED,
        f"Sekisho policy refuses {violation.what} for {user} (rule {rule})",
        detail=f"Rule {rule}: {RULE_CLASSES.get(rule, rule)}.",
        hint=f"{violation.advice} {hint}" if violation.advice else hint,
    )


def _elevation_hint(rule: str, policy: Policy) -> str:
    offers = []
    for elevation in policy.elevations.values():
        granted_roles = [policy.roles[r] for r in elevation.grants_roles if r in policy.roles]
        if rule in elevation.grants_allow or any(not r.restricted or rule in r.allow for r in granted_roles):
            approvers = " or ".join(elevation.approvers) or "an approver"
            offers.append(f"the elevation '{elevation.name}' (approved by {approvers})")
    if offers:
        return f"If your work needs this, request {', or '.join(offers)}."
    return "If your work needs this, ask your compliance lead; the current policy offers no elevation for it."
