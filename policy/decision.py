"""Decisions are values: ``Allow(shape)`` or ``Deny(rule, sqlstate, message)``; the gateway renders them.

SQLSTATEs Sekisho uses for its own refusals (documented in README.md):

    42501  blocked by policy (insufficient_privilege: the class PostgreSQL uses for permission denied)
    42601  the statement is not valid SQL by PostgreSQL's grammar (refused before reaching the database)
    SK001  row cap reached, when the policy says to fail rather than truncate
    SK002  volume quota exhausted
    SK003  unanalyzable: Sekisho cannot establish what the statement does
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.catalog import QualifiedName

POLICY_REFUSED = "42501"
SYNTAX_ERROR = "42601"
ROW_CAP_REACHED = "SK001"
QUOTA_EXHAUSTED = "SK002"
UNANALYZABLE = "SK003"


@dataclass(frozen=True, slots=True)
class Allow:
    """Run it, shaped: at most ``row_cap`` rows reach the client (None: no cap)."""

    row_cap: int | None = None
    cap_rule: str | None = None  # which limit set the cap, for the notice or error
    on_cap: str = "truncate"  # or "error"
    protected: frozenset[QualifiedName] = frozenset()  # protected tables the statement reads or writes
    audited: tuple[str, ...] = ()  # rule classes an unrestricted role used: allowed, but noted in audit

    def with_cap(self, cap: int | None, rule: str | None) -> Allow:
        """The stricter of this allowance's cap and another (the smallest cap wins)."""
        if cap is None or (self.row_cap is not None and self.row_cap <= cap):
            return self
        return Allow(cap, rule, self.on_cap, self.protected, self.audited)


@dataclass(frozen=True, slots=True)
class Deny:
    rule: str  # the rule class (policy.model.RULE_CLASSES) or a fixed name such as "syntax"
    sqlstate: str
    message: str
    hint: str | None = None
    detail: str | None = None


Decision = Allow | Deny
