"""What every rule receives and returns."""

from __future__ import annotations

from dataclasses import dataclass

from policy.catalog import QualifiedName
from policy.facts import Access, StatementFacts
from policy.model import Policy
from policy.permissions import Permissions

WRITES = frozenset({Access.INSERT, Access.UPDATE, Access.DELETE, Access.TRUNCATE})


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # a key of policy.model.RULE_CLASSES
    what: str  # what in the statement triggered it, in words a DBA recognizes
    regardless: bool = False  # refused even though the class is allowed (e.g. a table not listed writable)
    advice: str | None = None  # what to do instead, put first in the refusal's hint


@dataclass(frozen=True, slots=True)
class RuleContext:
    policy: Policy
    permissions: Permissions

    def protected_reads(self, stmt: StatementFacts) -> list[QualifiedName]:
        return sorted(
            {
                t.relation
                for t in stmt.tables
                if t.access == Access.READ and self.policy.is_protected(t.relation)
            }
        )

    def protected_touched(self, stmt: StatementFacts) -> list[QualifiedName]:
        return sorted({t.relation for t in stmt.tables if self.policy.is_protected(t.relation)})


def show(relation: QualifiedName) -> str:
    return f"{relation[0]}.{relation[1]}" if relation[0] else relation[1]
