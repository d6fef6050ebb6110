"""What a person may do, merged from all their roles: deny wins, the smallest row cap wins, the
strictest use of PII in each inference channel wins.

Computed once per session (and again when an elevation starts or ends), so evaluating a statement
never walks the roles again.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.catalog import QualifiedName
from policy.model import DEFAULT_PII_USE, PII_USES, RULE_CLASSES, Policy, Quota, Role


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
    # Inference channels whose PII use is not simply allowed: channel -> count, equality or refuse.
    # Empty for unrestricted people, and for roles that allow every channel: nothing to check.
    pii_use: dict[str, str]
    hidden: frozenset[tuple[str, str, str]] = frozenset()  # any role hiding a column hides it
    quotas: tuple[Quota, ...] = ()  # every role's quotas: all of them apply

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
    hidden = frozenset().union(*(r.hidden for r in restricted_roles))
    pii_use: dict[str, str] = {}
    for role in restricted_roles:
        for channel, use in role.pii_use.items():
            pii_use[channel] = max(pii_use.get(channel, "allow"), use, key=PII_USES.index)
    if restricted and not restricted_roles:  # no role at all: the defaults of a restricted role
        pii_use = dict(DEFAULT_PII_USE)
    return Permissions(
        user=user,
        roles=tuple(r.name for r in roles),
        restricted=restricted,
        allowed=allowed,
        max_rows=min(caps) if caps else None,
        table_max_rows=table_caps,
        on_row_cap="error" if any(r.on_row_cap == "error" for r in roles) else "truncate",
        writable=writable,
        clear=clear - hidden,
        hidden=hidden,
        quotas=tuple(dict.fromkeys(q for r in roles for q in r.quotas)),
        pii_use={channel: use for channel, use in pii_use.items() if use != "allow"},
    )
