"""Decisions are values: ``Allow(shape)`` or ``Deny(rule, sqlstate, message)``; the gateway renders them.

SQLSTATEs Sekisho uses for its own refusals (documented in README.md):

    42501  blocked by policy (insufficient_privilege: the class PostgreSQL uses for permission denied)
    42601  the statement is not valid SQL by PostgreSQL's grammar (refused before reaching the database)
    SK001  row cap reached, when the policy says to fail rather than truncate
    SK002  volume quota exhausted
    SK003  unanalyzable: Sekisho cannot establish what the statement does
    SK004  the audit trail cannot record the statement (its spool is full or its disk failed)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from policy.catalog import QualifiedName

if TYPE_CHECKING:
    from policy.masking import ResultMask

POLICY_REFUSED = "42501"
SYNTAX_ERROR = "42601"
ROW_CAP_REACHED = "SK001"
QUOTA_EXHAUSTED = "SK002"
UNANALYZABLE = "SK003"
AUDIT_UNAVAILABLE = "SK004"


@dataclass(frozen=True, slots=True)
class InferenceUse:
    """A masked PII column used where it steers the result (policy.model.PII_CHANNELS), in a
    channel the person's roles set to ``count``: allowed, and counted by quotas and alarms."""

    column: tuple[str, str, str]  # (schema, table, column)
    channel: str  # a key of policy.model.PII_CHANNELS
    equality: bool = False  # an exact-value lookup or a join on equal values

    def __str__(self) -> str:
        return f"{'.'.join(self.column)} in {self.channel}" + (" (exact)" if self.equality else "")


@dataclass(frozen=True, slots=True)
class Allow:
    """Run it, shaped: at most ``row_cap`` rows reach the client (None: no cap)."""

    row_cap: int | None = None
    cap_rule: str | None = None  # which limit set the cap, for the notice or error
    on_cap: str = "truncate"  # or "error"
    protected: frozenset[QualifiedName] = frozenset()  # protected tables the statement reads or writes
    audited: tuple[str, ...] = ()  # rule classes an unrestricted role used: allowed, but noted in audit
    # Masking. For one statement: ``mask``, the masks of its rows (for PREPARE and DECLARE, of the
    # rows the name will return). For a string: ``masks``, one entry per statement.
    mask: ResultMask | None = None
    masks: tuple[ResultMask | None, ...] = ()
    redact: bool = False  # it reads masked PII: error and notice texts are redacted
    counted: tuple[InferenceUse, ...] = ()  # masked PII used in channels the policy counts

    def with_cap(self, cap: int | None, rule: str | None) -> Allow:
        """The stricter of this allowance's cap and another (the smallest cap wins)."""
        if cap is None or (self.row_cap is not None and self.row_cap <= cap):
            return self
        return replace(self, row_cap=cap, cap_rule=rule)

    def statement(self, index: int) -> Allow:
        """This string's allowance as it applies to its ``index``-th statement's rows."""
        mask = self.masks[index] if index < len(self.masks) else None
        if mask is None and self.mask is None and not self.masks:
            return self  # nothing masked: the same allowance (on every Parse's path)
        return replace(self, mask=mask, masks=())


@dataclass(frozen=True, slots=True)
class Deny:
    rule: str  # the rule class (policy.model.RULE_CLASSES) or a fixed name such as "syntax"
    sqlstate: str
    message: str
    hint: str | None = None
    detail: str | None = None


Decision = Allow | Deny
