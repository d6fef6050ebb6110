"""The policy document, as validated frozen data.

A policy names people (users) and what they may do (roles), the protected tables and their PII
columns, and the elevations a second person may approve. ``policy.loader`` builds it from YAML and
reports every problem with file, line and key; nothing here reads files.

Statement classes (``RULE_CLASSES``) are the vocabulary of refusals. A *restricted* role is refused
every class except those it lists under ``allow``, so a class added in a later version is refused
until a policy allows it (fail closed). An unrestricted role (a break-glass DBA) is refused nothing,
and everything it does is audited.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import time, timedelta

from policy.catalog import QualifiedName

RULE_CLASSES: dict[str, str] = {
    "copy_protected": "COPY of a protected table, or of a query over one (any direction or target)",
    "copy_server": "COPY to or from a server file or program (any table)",
    "server_files": "server file and program functions (pg_read_file, pg_ls_dir, lo_import, lo_export, ...)",
    "large_objects": "reading or writing large objects (lo_get, lo_open, loread, ...)",
    "derived_objects": "creating objects from protected data (CREATE TABLE AS, SELECT INTO, views, "
    "functions, rules, INSERT ... SELECT)",
    "dynamic_sql": "a statement hidden in a string (query_to_xml, dblink, EXECUTE in DO blocks, ...)",
    "do_blocks": "anonymous code blocks (DO)",
    "role_switch": "SET ROLE, SET SESSION AUTHORIZATION, set_config('role', ...)",
    "protected_writes": "INSERT, UPDATE, DELETE, MERGE or TRUNCATE on a protected table",
    "protected_ddl": "ALTER, DROP, CREATE RULE/TRIGGER/POLICY, GRANT ... on a protected table",
    "user_functions": "calling functions outside pg_catalog, whose bodies Sekisho does not analyze",
    "views_over_protected": "reading protected tables through a view",
    "session_settings": "changing client_encoding or standard_conforming_strings, which change how "
    "statements are read",
    "admin_functions": "server administration functions (pg_terminate_backend, pg_reload_conf, ...)",
    "unanalyzable": "statements whose effect Sekisho cannot establish",
}

MASK_KINDS = ("full", "partial", "email", "phone", "card", "token", "null")
ON_CAP = ("truncate", "error")


@dataclass(frozen=True, slots=True)
class Mask:
    kind: str  # one of MASK_KINDS
    keep_last: int | None = None  # partial: keep the last N characters
    keep_first: int | None = None  # partial: keep the first N characters


@dataclass(frozen=True, slots=True)
class ProtectedTable:
    relation: QualifiedName
    pii: dict[str, Mask]  # column -> mask
    max_rows: int | None = None  # a per-table row cap applying to every restricted role


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Allowed hours: on these ISO weekdays (1 = Monday), from start to end, in a time zone."""

    days: frozenset[int]
    start: time
    end: time
    timezone: str


@dataclass(frozen=True, slots=True)
class Access:
    """Where and when someone may connect; empty means anywhere, any time."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hours: tuple[TimeWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    restricted: bool = True
    allow: frozenset[str] = frozenset()  # rule classes this restricted role may do anyway
    max_rows: int | None = None  # rows per statement
    table_max_rows: dict[QualifiedName, int] = field(default_factory=dict)
    on_row_cap: str = "truncate"  # or "error"
    writable: frozenset[QualifiedName] = frozenset()  # protected tables this role may write
    clear: frozenset[tuple[str, str, str]] = frozenset()  # PII columns this role sees unmasked
    access: Access = field(default_factory=Access)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: tuple[str, ...]
    access: Access = field(default_factory=Access)


@dataclass(frozen=True, slots=True)
class Elevation:
    """What a second person may grant someone for a limited time."""

    name: str
    grants_roles: tuple[str, ...] = ()
    grants_allow: frozenset[str] = frozenset()
    grants_max_rows: int | None = None
    max_duration: timedelta = timedelta(hours=1)
    approvers: tuple[str, ...] = ()  # roles whose members may approve (never the requester)


@dataclass(frozen=True)
class Policy:
    roles: dict[str, Role]
    users: dict[str, User]
    tables: dict[QualifiedName, ProtectedTable]
    elevations: dict[str, Elevation] = field(default_factory=dict)
    default_role: str | None = None  # for people in the users file that the policy does not name
    source: str = "<policy>"  # where it was loaded from, for messages

    def roles_of(self, user: str) -> tuple[Role, ...]:
        """The roles that apply to a person; unknown people get the default role, or none."""
        entry = self.users.get(user)
        names = entry.roles if entry else ((self.default_role,) if self.default_role else ())
        return tuple(self.roles[n] for n in names if n in self.roles)

    def is_protected(self, relation: QualifiedName) -> bool:
        """Protected by name; a relation the catalog does not know yet (schema "") counts as
        protected when any protected table has its name: fail closed on a stale catalog."""
        if relation in self.tables:
            return True
        return relation[0] == "" and any(name == relation[1] for _, name in self.tables)
