"""The rules, one module per thing decided, applied in the declared order of ``RULES``.

A rule looks at one statement's facts and reports a ``Violation`` (the rule class and what in the
statement triggered it) or None. Rules do not decide who may do what: the engine turns a violation
into a refusal when the person's permissions refuse that class, and into an audit note otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from policy.facts import StatementFacts
from policy.rules import (
    copying,
    derived_objects,
    functions,
    pii_inference,
    protected_tables,
    session_state,
    unanalyzable,
)
from policy.rules.base import RuleContext, Violation

Rule = Callable[[StatementFacts, RuleContext], Violation | None]

# Order matters only for which refusal a person sees first; every rule must pass.
RULES: tuple[Rule, ...] = (
    unanalyzable.decide,
    session_state.role_switch,
    session_state.session_settings,
    session_state.do_blocks,
    functions.dynamic_sql,
    functions.server_files,
    functions.large_objects,
    functions.admin_functions,
    functions.user_functions,
    copying.copy_server,
    copying.copy_protected,
    derived_objects.decide,
    protected_tables.protected_writes,
    protected_tables.protected_ddl,
    protected_tables.views_over_protected,
    pii_inference.decide,
)

__all__ = ["RULES", "Rule", "RuleContext", "Violation"]
