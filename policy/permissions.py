"""What a person may do, merged from all their roles: deny wins, the smallest row cap wins.

Computed once per session (and again when an elevation starts or ends), so evaluating a statement
never walks the roles again.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.catalog import QualifiedName
from policy.model import RULE_CLASSES, Policy, Role


@dataclass(frozen=True, slots=True)
class Permissions:
    user: str
    roles: tuple[str, ...]
    restricted: bool
    allowed: frozenset[str]  # rule classes this person may do (all of them when unrestricted)
    max_rows: int | None
    table_max_rows: dict[QualifiedName, int]
    on_row_cap: str
    writable: frozenset[QualifiedName] | None  # None: any protected table (when writes are allowed)
    clear: frozenset[tuple[str, str, str]]

    def refuses(self, rule_class: str) -> bool:
        return rule_class not in self.allowed


def permissions_for(policy: Policy, user: str, extra_roles: tuple[Role, ...] = ()) -> Permissions:
    """Merge a person's roles (plus any elevation's) into one set of permissions."""
    roles = (*policy.roles_of(user), *extra_roles)
    restricted_roles = [r for r in roles if r.restricted]
    restricted = bool(restricted_roles) or not roles  # nobody without a role is unrestricted
    if restricted:
        allowed = (
            frozenset.intersection(*(r.allow for r in restricted_roles)) if restricted_roles else frozenset()
        )
    else:
        allowed = frozenset(RULE_CLASSES)
    caps = [r.max_rows for r in roles if r.max_rows is not None]
    table_caps: dict[QualifiedName, int] = {}
    for role in roles:
        for table, cap in role.table_max_rows.items():
            table_caps[table] = min(cap, table_caps.get(table, cap))
    if restricted:
        for protected in policy.tables.values():
            if protected.max_rows is not None:
                current = table_caps.get(protected.relation, protected.max_rows)
                table_caps[protected.relation] = min(current, protected.max_rows)
    writable: frozenset[QualifiedName] | None = None
    for role in restricted_roles:
        if role.writable:
            writable = role.writable if writable is None else writable & role.writable
    clear_sets = [r.clear for r in roles]
    clear = frozenset.intersection(*clear_sets) if clear_sets else frozenset()
    return Permissions(
        user=user,
        roles=tuple(r.name for r in roles),
        restricted=restricted,
        allowed=allowed,
        max_rows=min(caps) if caps else None,
        table_max_rows=table_caps,
        on_row_cap="error" if any(r.on_row_cap == "error" for r in roles) else "truncate",
        writable=writable,
        clear=clear,
    )
