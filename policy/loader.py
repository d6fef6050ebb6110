"""Policy YAML to ``policy.model.Policy``, reporting every problem with its file, line and key.

The format is written for a compliance team reviewing a pull request::

    version: 1
    protected_tables:                     # tables whose rows Sekisho guards
      public.customers:                   # schema.table; a bare name means public.<name>
        max_rows: 1000                    # optional: row cap on this table for every restricted role
        pii:                              # column: mask shown to restricted roles
          name: full                      # masks: full, partial, email, phone, card, token, null
          address: {mask: partial, keep_first: 3}   # partial keeps keep_first and/or keep_last
          email: email
          card_number: card
      public.orders: {}                   # protected, without PII columns
    roles:
      maintenance:
        restricted: true                  # default true: refused every rule class not under allow
        max_rows: 100                     # rows per statement
        on_row_cap: truncate              # or error
        table_max_rows: {public.orders: 500}
        allow: [protected_writes]         # rule classes this role may do anyway
        writable: [public.orders]         # with protected_writes: only these (omitted: every one)
        clear: [public.customers.email]   # PII columns this role sees unmasked
        hidden: [public.customers.address]   # PII columns this role may not read or use at all
        pii_use: {where: equality, join: equality, order_by: refuse}   # masked PII in predicates, ...
        from: [10.0.0.0/8]                # client addresses (CIDR); omitted means any
        hours: ["Mon-Fri 07:00-22:00 Asia/Tokyo"]   # omitted means any time; 22:00-06:00 spans midnight
      compliance_lead: {max_rows: 100}
      break_glass: {restricted: false}    # refused nothing; everything audited
    users:
      maint: {roles: [maintenance]}       # also from: and hours:, as for roles
      lead: {roles: [compliance_lead]}
    default_role: maintenance             # optional: for people not listed under users
    elevations:
      bulk_export:
        grants: {allow: [copy_protected], max_rows: 10000}   # and/or roles: [...]
        max_duration: 2h                  # 30m, 2h, 1d12h, ...; at most 30 days; default 1h
        approvers: [compliance_lead]      # roles whose members may approve
    alarms:                               # optional: detection thresholds (every key has a default)
      timezone: Asia/Tokyo                # days and hours are counted here (default UTC)
      dedup: 1h                           # the same alarm is not raised again within this
      learning_days: 14                   # active days before learned habits alarm
      memory_days: 30                     # baselines mostly reflect about this many recent days
      quota: {levels: {80: medium, 100: high}}          # percent of a quota window: severity
      volume: {factor: 3, deviations: 4, min_rows: 1000, severity: high}
      hours: {outside_allowed: high, unusual: low, min_share: 0.05}   # unusual: false for none
      new_address: {severity: medium, prefix_v4: 24, prefix_v6: 64}
      first_access: {severity: low}
      probing: {refusals: 5, within: 10m, severity: high}
      paging: {pages: 20, rows: 2000, max_gap: 1h, severity: high}
      dump: {applications: [pg_dump, pg_dumpall], tables: 2, severity: high}
      coverage: {window: 90d, min_rows: 1000, levels: {10: medium, 25: high, 50: critical}}
      repeated: {rules: [paging, volume_baseline, coverage], at_least: high, days: 3, within: 7d,
                 severity: critical}      # escalation: alarms of these rules on 3 days in a week
      on_alarm:                           # what alarms of a severity or higher do to the person
        - {severity: high, tighten: {max_rows: 10, for: 24h}}
        - {severity: critical, action: suspend, for: until_cleared}   # until a second person clears
        - {severity: high, rules: [dump_tool, dump_pattern], action: suspend}   # for: 24h by default
    audit:
      statement_text: redacted            # or full (the default): literals in the trail become $n

A rule's section may be ``false`` to switch the rule off. Severities are low, medium, high,
critical; ``policy.model.ALARM_RULES`` names the rules.

Names of tables and columns are read as PostgreSQL reads them in SQL: unquoted names are folded to
lower case, and a part in double quotes is kept exactly (``'"Sales"."Q1"'``).

Every problem is collected, not only the first, and the whole list is raised as
``PolicyInvalid``. The document is read with ``yaml.compose`` rather than ``yaml.safe_load`` so that
each value keeps its line and so that duplicate keys, which YAML silently collapses to the last
one, can be refused. The loader only walks the structure it expects, so YAML aliases cannot make it
do unbounded work. It reads no files: the caller passes the text and a name for messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import itertools
import math
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policy.catalog import SEQUENCE, Catalog, QualifiedName
from policy.errors import PolicyInvalid, Problem
from policy.model import (
    ALARM_RULES,
    DEFAULT_ON_ALARM_DURATION,
    DEFAULT_PII_USE,
    EQUALITY_CHANNELS,
    MASK_KINDS,
    ON_CAP,
    PII_CHANNELS,
    PII_USES,
    RULE_CLASSES,
    SEVERITIES,
    Access,
    AlarmSettings,
    AuditSettings,
    Elevation,
    Levels,
    Mask,
    OnAlarm,
    Policy,
    ProtectedTable,
    Quota,
    Role,
    TimeWindow,
    User,
)

SUPPORTED_VERSION = 1
MAX_ELEVATION = timedelta(days=30)
MAX_QUOTA_WINDOW = timedelta(days=366)
DEFAULT_ELEVATION = timedelta(hours=1)

_TOP_KEYS = ("version", "protected_tables", "roles", "users", "default_role", "elevations", "alarms", "audit")
_AUDIT_KEYS = ("statement_text",)
_STATEMENT_TEXT = ("full", "redacted")
_TABLE_KEYS = ("max_rows", "pii")
_MASK_KEYS = ("mask", "keep_first", "keep_last")
_ROLE_KEYS = (
    "restricted",
    "max_rows",
    "on_row_cap",
    "table_max_rows",
    "allow",
    "writable",
    "clear",
    "hidden",
    "quotas",
    "pii_use",
    "from",
    "hours",
)
_USER_KEYS = ("roles", "from", "hours")
_ELEVATION_KEYS = ("grants", "max_duration", "approvers")
_GRANT_KEYS = ("roles", "allow", "max_rows")
MAX_ALARM_DURATION = timedelta(days=3660)  # ten years: durations beyond it are typos
_ALARM_KEYS = (
    "timezone",
    "dedup",
    "learning_days",
    "memory_days",
    "quota",
    "volume",
    "hours",
    "new_address",
    "first_access",
    "probing",
    "paging",
    "dump",
    "coverage",
    "repeated",
    "on_alarm",
)
# Each rule's section: its keys, read by _Builder.alarm_rule into the AlarmSettings field of that name.
_ALARM_RULE_KEYS: dict[str, tuple[str, ...]] = {
    "quota": ("levels",),
    "volume": ("factor", "deviations", "min_rows", "severity"),
    "hours": ("outside_allowed", "unusual", "min_share"),
    "new_address": ("severity", "prefix_v4", "prefix_v6"),
    "first_access": ("severity",),
    "probing": ("refusals", "within", "severity"),
    "paging": ("pages", "rows", "max_gap", "severity"),
    "dump": ("applications", "tables", "severity"),
    "coverage": ("window", "min_rows", "levels"),
    "repeated": ("rules", "at_least", "days", "within", "severity"),
}
_ON_ALARM_KEYS = ("severity", "rules", "tighten", "action", "for")
_TIGHTEN_KEYS = ("max_rows", "for")
_ON_ALARM_ACTIONS = ("suspend",)
UNTIL_CLEARED = "until_cleared"  # on_alarm's ``for``: until a second person records a clearance

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NUMBERS = {spelling: n for n, day in enumerate(_DAY_NAMES, 1) for spelling in (day, day[:3])}
_WINDOW = re.compile(r"(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s+(?P<zone>\S+)")
_SIZE = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>|b|kb|mb|gb|tb|kib|mib|gib|tib)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_QUOTA_KEYS = ("window", "rows", "bytes", "table")
_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")
# One part of a dotted name: "quoted" (kept exactly, "" for a quote) or unquoted (folded).
_NAME_PART = re.compile(r'"(?P<quoted>(?:[^"]|"")+)"|(?P<plain>[^\W\d][\w$]*)')
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_YAML = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_YAML + t for t in ("null", "bool", "int", "float", "str"))
_PLAIN_TAGS = frozenset(
    {_NULL, _BOOL, _INT, _FLOAT, _STR, _YAML + "timestamp"}
)  # what untagged text resolves to

KeyPath = tuple[str | int, ...]
Ref = tuple[str, ...]  # what a position is about, e.g. ("pii", "public", "customers", "phone")


@dataclass(frozen=True, slots=True)
class Where:
    line: int
    key: str  # dotted key path as written in the file


@dataclass(frozen=True)
class Positions:
    """Where the parts of a loaded policy were written, for problems found after loading.

    Keys are references to policy parts, not YAML paths, so that a later check can find a
    place from the model alone: ``("table", schema, table)``, ``("pii", schema, table, column)``,
    ``("writable", role, schema, table)``, ``("table_max_rows", role, schema, table)``.
    """

    source: str
    places: Mapping[Ref, Where] = field(default_factory=dict)

    def problem(self, ref: Ref, key: str, message: str) -> Problem:
        """A problem at ``ref``'s place; ``key`` names it when the place is unknown."""
        where = self.places.get(ref)
        if where is None:
            return Problem(self.source, None, key, message)
        return Problem(self.source, where.line, where.key, message)


def load_policy(text: str, source: str) -> Policy:
    """Build a policy from YAML ``text``; ``source`` names it in messages (usually the file name).

    Raises ``PolicyInvalid`` listing every problem found.
    """
    return load_policy_with_positions(text, source)[0]


def load_policy_with_positions(text: str, source: str) -> tuple[Policy, Positions]:
    """As ``load_policy``, also returning where each part was written (for ``check_against_catalog``)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = "; ".join(part for part in (exc.context, exc.problem) if part) or "unreadable"
        line = mark.line + 1 if mark is not None else 1
        raise PolicyInvalid([Problem(source, line, "", f"not valid YAML: {detail}")]) from exc
    except yaml.YAMLError as exc:  # e.g. a control character the YAML reader refuses
        raise PolicyInvalid([Problem(source, None, "", f"not valid YAML: {exc}")]) from exc
    builder = _Builder(source)
    policy = builder.policy(root)
    if builder.problems or policy is None:
        raise PolicyInvalid(builder.problems)
    return policy, Positions(source, builder.places)


def check_against_catalog(
    policy: Policy, catalog: Catalog, positions: Positions | None = None
) -> list[Problem]:
    """Problems with a valid policy that only the live database can show, in file order.

    Protected tables, writable tables and per-table caps naming relations that do not exist, and
    PII columns that the table does not have. With ``positions`` (from
    ``load_policy_with_positions``) each problem names its line; without, only its key.
    """
    where = positions or Positions(policy.source)
    problems: list[Problem] = []
    for qn, table in policy.tables.items():
        key = f"protected_tables.{_show(qn)}"
        rel = catalog.relations.get(qn)
        if rel is None:
            problems.append(where.problem(("table", *qn), key, _missing_relation(qn, catalog)))
            continue
        if rel.kind == SEQUENCE:
            message = f"{_show(qn)} is a sequence, not a table, so it has no rows to protect"
            problems.append(where.problem(("table", *qn), key, message))
            continue
        for column in table.pii:
            if column not in rel.columns:
                hint = _did_you_mean(column, rel.columns, quote='"')
                problems.append(
                    where.problem(
                        ("pii", *qn, column),
                        f"{key}.pii.{column}",
                        f'column "{column}" does not exist in {_show(qn)}{hint}',
                    )
                )
    for role in policy.roles.values():
        for ref_kind, tables in (("writable", role.writable), ("table_max_rows", role.table_max_rows)):
            for qn in sorted(tables):
                if qn not in catalog.relations:
                    key = f"roles.{role.name}.{ref_kind}"
                    problems.append(
                        where.problem((ref_kind, role.name, *qn), key, _missing_relation(qn, catalog))
                    )
    return sorted(problems, key=lambda p: p.line or 0)


def _missing_relation(qn: QualifiedName, catalog: Catalog) -> str:
    same_schema = [name for (schema, name) in catalog.relations if schema == qn[0]]
    hint = _did_you_mean(qn[1], same_schema, prefix=f"{qn[0]}.")
    if qn[0] not in catalog.schemas:
        return f"table {_show(qn)} does not exist in the database (there is no schema {qn[0]}){hint}"
    return f"table {_show(qn)} does not exist in the database{hint}"


def _show(qn: QualifiedName) -> str:
    return f"{qn[0]}.{qn[1]}"


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _did_you_mean(word: str, choices: Iterable[str], *, quote: str = "", prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f"; did you mean {quote}{prefix}{close[0]}{quote}?" if close else ""


def _allowed(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    return f"(allowed: {', '.join(choices)}){_did_you_mean(word, choices)}"


def _describe(node: Node) -> str:
    """What a compliance reader would call the value they wrote."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = node.value
    if node.tag == _NULL:
        return "nothing" if value in ("", "~") else f"nothing ({value})"
    if node.tag == _BOOL:
        return f"the yes/no value {value}"
    if node.tag in (_INT, _FLOAT):
        return f"the number {value}"
    if node.tag == _STR:
        return f"the text {value!r}"
    return f"a value tagged {node.tag}"


def _split_name(text: str) -> list[str] | None:
    """The parts of a dotted SQL name, folded as PostgreSQL folds them; None if it is not one."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _NAME_PART.match(text, pos)
        if match is None:
            return None
        quoted = match.group("quoted")
        parts.append(
            quoted.replace('""', '"') if quoted is not None else match.group("plain").translate(_ASCII_LOWER)
        )
        pos = match.end()
        if pos == len(text):
            return parts
        if text[pos] != ".":
            return None
        pos += 1


class _Builder:
    """Walks the composed YAML, building model objects and collecting problems as it goes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._found: list[tuple[tuple[int, int], Problem]] = []  # (line, column) for file order
        self.places: dict[Ref, Where] = {}
        self._constructor = SafeConstructor()
        self._pii: dict[QualifiedName, set[str]] = {}  # even for tables with other problems
        self._role_names: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    @property
    def problems(self) -> list[Problem]:
        """Every problem found so far, in file order."""
        return [problem for _, problem in sorted(self._found, key=lambda found: found[0])]

    def problem(self, node: Node, path: KeyPath, message: str) -> None:
        mark = node.start_mark
        self._found.append(
            ((mark.line, mark.column), Problem(self.source, mark.line + 1, _dotted(path), message))
        )

    def place(self, ref: Ref, node: Node, path: KeyPath) -> None:
        self.places[ref] = Where(node.start_mark.line + 1, _dotted(path))

    def entries(self, node: Node | None, path: KeyPath) -> list[tuple[str, ScalarNode, Node]]:
        """A mapping's (key, key node, value node) triples; a missing or empty value is no entries."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return []
        if not isinstance(node, MappingNode):
            self.problem(
                node, path, f"expected a mapping (indented key: value lines), found {_describe(node)}"
            )
            return []
        out: list[tuple[str, ScalarNode, Node]] = []
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.problem(key_node, path, f"expected a name as the key, found {_describe(key_node)}")
                continue
            name = key_node.value
            line = key_node.start_mark.line + 1
            if name in first:
                self.problem(
                    key_node,
                    (*path, name),
                    f"duplicate key (also at line {first[name]}); YAML would silently keep only the last "
                    "one, so remove or merge one of them",
                )
                continue
            first[name] = line
            out.append((name, key_node, value_node))
        return out

    def fields(self, node: Node | None, path: KeyPath, allowed: tuple[str, ...]) -> dict[str, Node]:
        """A fixed-shape mapping's values by key; unknown keys are problems."""
        out: dict[str, Node] = {}
        for name, key_node, value_node in self.entries(node, path):
            if name not in allowed:
                self.problem(key_node, (*path, name), f"unknown key {_allowed(name, allowed)}")
                continue
            out[name] = value_node
        return out

    def required(
        self, fields: Mapping[str, Node], key: str, parent: Node, path: KeyPath, hint: str
    ) -> Node | None:
        node = fields.get(key)
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            self.problem(node or parent, (*path, key), f"required: {hint}")
            return None
        return node

    def integer(self, node: Node, path: KeyPath) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            value = self._constructor.construct_object(node)
            if isinstance(value, int):
                return value
        self.problem(node, path, f"expected a whole number, found {_describe(node)}")
        return None

    def positive(self, node: Node | None, path: KeyPath) -> int | None:
        if node is None:
            return None
        value = self.integer(node, path)
        if value is not None and value <= 0:
            self.problem(node, path, f"must be at least 1, found {value}")
            return None
        return value

    def boolean(self, node: Node, path: KeyPath) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self._constructor.construct_object(node))
        self.problem(node, path, f"expected true or false, found {_describe(node)}")
        return None

    def text(self, node: Node, path: KeyPath, what: str) -> str | None:
        """A name or other text, exactly as written (so that a user named 'no' stays 'no')."""
        if isinstance(node, ScalarNode) and node.tag != _NULL and node.value.strip():
            if node.tag not in _PLAIN_TAGS:
                self.problem(
                    node, path, f"expected {what}, found {_describe(node)}; YAML tags are not used here"
                )
                return None
            return str(node.value)
        self.problem(node, path, f"expected {what}, found {_describe(node)}")
        return None

    def items(self, node: Node | None, path: KeyPath, what: str) -> list[tuple[str, Node, KeyPath]]:
        """A list of texts, each with its node and path; a missing list is empty."""
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.problem(node, path, f"expected a list of {what} such as [a, b], found {_describe(node)}")
            return []
        out: list[tuple[str, Node, KeyPath]] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            value = self.text(item, item_path, what)
            if value is not None:
                out.append((value, item, item_path))
        return out

    def table_name(self, text: str, node: Node, path: KeyPath) -> QualifiedName | None:
        parts = _split_name(text.strip())
        if parts is None or len(parts) > 2:
            self.problem(
                node,
                path,
                "expected a table name as schema.table (or just table, meaning public.table), "
                f"found {text!r}",
            )
            return None
        return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])

    def role_ref(self, node: Node, path: KeyPath, name: str) -> None:
        if name not in self._role_names:
            hint = _did_you_mean(name, self._role_names)
            self.problem(node, path, f"role {name!r} is not defined under roles{hint}")

    def rule_classes(self, node: Node | None, path: KeyPath) -> frozenset[str]:
        out: set[str] = set()
        for name, item, item_path in self.items(node, path, "rule classes"):
            if name in RULE_CLASSES:
                out.add(name)
            else:
                self.problem(item, item_path, f"unknown rule class {name!r} {_allowed(name, RULE_CLASSES)}")
        return frozenset(out)

    # ------------------------------------------------------------------ the document

    def policy(self, root: Node | None) -> Policy | None:
        if root is None:
            self._found.append(
                ((0, 0), Problem(self.source, 1, "", "the policy is empty; it starts with version: 1"))
            )
            return None
        if not isinstance(root, MappingNode):
            self.problem(
                root, (), f"expected a policy (a mapping with version, roles, ...), found {_describe(root)}"
            )
            return None
        top = self.fields(root, (), _TOP_KEYS)
        version = self.required(top, "version", root, (), f"write version: {SUPPORTED_VERSION} at the top")
        if version is not None:
            number = self.integer(version, ("version",))
            if number is not None and number != SUPPORTED_VERSION:
                self.problem(
                    version, ("version",), f"this Sekisho reads version {SUPPORTED_VERSION}, found {number}"
                )
        # Names first, so that references can be checked whatever order the sections are written in.
        roles_node = self.required(top, "roles", root, (), "define at least one role")
        if isinstance(roles_node, MappingNode):
            self._role_names = {k.value for k, _ in roles_node.value if isinstance(k, ScalarNode)}
        tables = self.tables(top.get("protected_tables"))
        roles = self.roles(roles_node)
        users = self.users(top.get("users"))
        default_role: str | None = None
        default_node = top.get("default_role")
        if default_node is not None and not (
            isinstance(default_node, ScalarNode) and default_node.tag == _NULL
        ):
            default_role = self.text(default_node, ("default_role",), "a role name")
            if default_role is not None:
                self.role_ref(default_node, ("default_role",), default_role)
        elevations = self.elevations(top.get("elevations"))
        alarms = self.alarms(top.get("alarms"))
        audit = self.audit(top.get("audit"))
        return Policy(
            roles=roles,
            users=users,
            tables=tables,
            elevations=elevations,
            default_role=default_role,
            source=self.source,
            alarms=alarms,
            audit=audit,
        )

    # ------------------------------------------------------------------ protected tables

    def table_entries(
        self, node: Node | None, path: KeyPath
    ) -> Iterator[tuple[QualifiedName, Node, Node, KeyPath]]:
        """The entries of a mapping keyed by table names, each table once: a table listed again
        (also as ``customers`` after ``public.customers``) is a problem naming the first line."""
        first: dict[QualifiedName, int] = {}
        for name, key_node, value_node in self.entries(node, path):
            table_path = (*path, name)
            qn = self.table_name(name, key_node, table_path)
            if qn is None:
                continue
            if qn in first:
                self.problem(key_node, table_path, f"{_show(qn)} is already listed at line {first[qn]}")
                continue
            first[qn] = key_node.start_mark.line + 1
            yield qn, key_node, value_node, table_path

    def tables(self, node: Node | None) -> dict[QualifiedName, ProtectedTable]:
        path: KeyPath = ("protected_tables",)
        out: dict[QualifiedName, ProtectedTable] = {}
        for qn, key_node, value_node, table_path in self.table_entries(node, path):
            self.place(("table", *qn), key_node, table_path)
            columns = self._pii.setdefault(qn, set())
            spec = self.fields(value_node, table_path, _TABLE_KEYS)
            max_rows = self.positive(spec.get("max_rows"), (*table_path, "max_rows"))
            pii: dict[str, Mask] = {}
            pii_path = (*table_path, "pii")
            for column_text, column_node, mask_node in self.entries(spec.get("pii"), pii_path):
                column_path = (*pii_path, column_text)
                parts = _split_name(column_text.strip())
                if parts is None or len(parts) != 1:
                    self.problem(column_node, column_path, f"expected a column name, found {column_text!r}")
                    continue
                column = parts[0]
                if column in columns:
                    self.problem(column_node, column_path, f"column {column} is listed twice")
                    continue
                columns.add(column)
                self.place(("pii", *qn, column), column_node, column_path)
                mask = self.mask(mask_node, column_path)
                if mask is not None:
                    pii[column] = mask
            out[qn] = ProtectedTable(relation=qn, pii=pii, max_rows=max_rows)
        return out

    def mask(self, node: Node, path: KeyPath) -> Mask | None:
        if isinstance(node, MappingNode):
            spec = self.fields(node, path, _MASK_KEYS)
            kind_node = self.required(spec, "mask", node, path, f"the mask kind ({', '.join(MASK_KINDS)})")
            kind = self.mask_kind(kind_node, (*path, "mask")) if kind_node is not None else None
            keep: dict[str, int | None] = {}
            for key in ("keep_first", "keep_last"):
                keep_node = spec.get(key)
                keep[key] = self.positive(keep_node, (*path, key))
                if keep_node is not None and kind is not None and kind != "partial":
                    self.problem(keep_node, (*path, key), f"{key} applies only to mask: partial, not {kind}")
            if kind is None:
                return None
            return Mask(kind, keep_last=keep["keep_last"], keep_first=keep["keep_first"])
        kind = self.mask_kind(node, path)
        return Mask(kind) if kind is not None else None

    def mask_kind(self, node: Node, path: KeyPath) -> str | None:
        # Plain YAML reads `null` as nothing; here it is the mask that shows every value as NULL.
        if isinstance(node, ScalarNode) and node.tag == _NULL and node.value == "null":
            return "null"
        kind = self.text(node, path, f"a mask kind ({', '.join(MASK_KINDS)})")
        if kind is not None and kind not in MASK_KINDS:
            self.problem(node, path, f"unknown mask kind {kind!r} {_allowed(kind, MASK_KINDS)}")
            return None
        return kind

    # ------------------------------------------------------------------ roles and users

    def roles(self, node: Node | None) -> dict[str, Role]:
        path: KeyPath = ("roles",)
        out: dict[str, Role] = {}
        for name, _, value_node in self.entries(node, path):
            role_path = (*path, name)
            spec = self.fields(value_node, role_path, _ROLE_KEYS)
            restricted = True
            if "restricted" in spec:
                restricted = self.boolean(spec["restricted"], (*role_path, "restricted")) is not False
            allow = self.rule_classes(spec.get("allow"), (*role_path, "allow"))
            on_row_cap = "truncate"
            if "on_row_cap" in spec:
                cap_path = (*role_path, "on_row_cap")
                value = self.text(spec["on_row_cap"], cap_path, f"one of {', '.join(ON_CAP)}")
                if value is not None and value not in ON_CAP:
                    self.problem(
                        spec["on_row_cap"], cap_path, f"unknown value {value!r} {_allowed(value, ON_CAP)}"
                    )
                elif value is not None:
                    on_row_cap = value
            out[name] = Role(
                name=name,
                restricted=restricted,
                allow=allow,
                max_rows=self.positive(spec.get("max_rows"), (*role_path, "max_rows")),
                table_max_rows=self.table_caps(
                    name, spec.get("table_max_rows"), (*role_path, "table_max_rows")
                ),
                on_row_cap=on_row_cap,
                writable=self.writable(name, spec.get("writable"), (*role_path, "writable"), allow),
                clear=self.clear(spec.get("clear"), (*role_path, "clear")),
                hidden=self.clear(spec.get("hidden"), (*role_path, "hidden")),
                quotas=self.quotas(spec.get("quotas"), (*role_path, "quotas")),
                access=self.access(spec, role_path),
                pii_use=self.pii_use(spec.get("pii_use"), (*role_path, "pii_use"), restricted),
            )
        return out

    def table_caps(self, role: str, node: Node | None, path: KeyPath) -> dict[QualifiedName, int]:
        out: dict[QualifiedName, int] = {}
        for qn, key_node, value_node, table_path in self.table_entries(node, path):
            self.place(("table_max_rows", role, *qn), key_node, table_path)
            cap = self.positive(value_node, table_path)
            if cap is not None:
                out[qn] = cap
        return out

    def writable(
        self, role: str, node: Node | None, path: KeyPath, allow: frozenset[str]
    ) -> frozenset[QualifiedName]:
        out: set[QualifiedName] = set()
        for name, item, item_path in self.items(node, path, "table names"):
            qn = self.table_name(name, item, item_path)
            if qn is None:
                continue
            if qn not in self._pii:
                self.problem(
                    item,
                    item_path,
                    f"{_show(qn)} is not a protected table; writable lists protected tables only "
                    "(writes to other tables are not restricted by this policy)",
                )
                continue
            self.place(("writable", role, *qn), item, item_path)
            out.add(qn)
        if out and node is not None and "protected_writes" not in allow:
            self.problem(node, path, "has no effect unless allow includes protected_writes")
        return frozenset(out)

    def clear(self, node: Node | None, path: KeyPath) -> frozenset[tuple[str, str, str]]:
        out: set[tuple[str, str, str]] = set()
        for text, item, item_path in self.items(node, path, "PII columns (schema.table.column)"):
            parts = _split_name(text.strip())
            if parts is None or len(parts) not in (2, 3):
                self.problem(
                    item,
                    item_path,
                    "expected a column as schema.table.column (or table.column, meaning public), "
                    f"found {text!r}",
                )
                continue
            schema, table, column = ("public", *parts) if len(parts) == 2 else parts
            qn = (schema, table)
            if qn not in self._pii:
                self.problem(
                    item, item_path, f"{_show(qn)} is not a protected table, so it has no masked columns"
                )
            elif column not in self._pii[qn]:
                known = ", ".join(sorted(self._pii[qn])) or "none"
                self.problem(
                    item,
                    item_path,
                    f"{column} is not a PII column of {_show(qn)} (its PII columns: {known})",
                )
            else:
                out.add((schema, table, column))
        return frozenset(out)

    def pii_use(self, node: Node | None, path: KeyPath, restricted: bool) -> dict[str, str]:
        """``pii_use: {channel: allow | count | equality | refuse, ...}`` (channels not named keep
        the default of a restricted role), or one value for every channel: ``pii_use: count``."""
        out = dict(DEFAULT_PII_USE)
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return out
        if not restricted:
            self.problem(node, path, "has no effect on an unrestricted role (it is refused nothing)")
            return out
        if isinstance(node, ScalarNode):
            use = self.pii_use_value(node, path, None)
            if use is not None:
                out = dict.fromkeys(PII_CHANNELS, use)
            return out
        if not isinstance(node, MappingNode):
            self.problem(
                node,
                path,
                "expected a mapping of channels such as {where: equality, order_by: refuse}, "
                f"or one of {', '.join(u for u in PII_USES if u != 'equality')}; found {_describe(node)}",
            )
            return out
        for channel, key_node, value_node in self.entries(node, path):
            channel_path = (*path, channel)
            if channel not in PII_CHANNELS:
                self.problem(
                    key_node, channel_path, f"unknown channel {channel!r} {_allowed(channel, PII_CHANNELS)}"
                )
                continue
            use = self.pii_use_value(value_node, channel_path, channel)
            if use is not None:
                out[channel] = use
        return out

    def pii_use_value(self, node: Node, path: KeyPath, channel: str | None) -> str | None:
        use = self.text(node, path, f"one of {', '.join(PII_USES)}")
        if use is None:
            return None
        if use not in PII_USES:
            self.problem(node, path, f"unknown value {use!r} {_allowed(use, PII_USES)}")
            return None
        if use == "equality" and channel not in EQUALITY_CHANNELS:
            where = "for every channel" if channel is None else f"to {channel}"
            self.problem(
                node,
                path,
                f"equality applies to where and join only, not {where}; give the channels one by one, "
                "such as {where: equality, join: equality, order_by: refuse}",
            )
            return None
        return use

    def access(self, spec: Mapping[str, Node], path: KeyPath) -> Access:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        windows: list[TimeWindow] = []
        for key, what in (("from", "addresses"), ("hours", "time windows")):
            node = spec.get(key)
            if isinstance(node, SequenceNode) and not node.value:
                self.problem(
                    node,
                    (*path, key),
                    f"an empty list would allow any {'address' if key == 'from' else 'time'}; "
                    f"list the {what}, or remove the key to allow any",
                )
        for text, item, item_path in self.items(
            spec.get("from"), (*path, "from"), "addresses or CIDR ranges"
        ):
            network = self.network(text.strip(), item, item_path)
            if network is not None:
                networks.append(network)
        for text, item, item_path in self.items(spec.get("hours"), (*path, "hours"), "time windows"):
            window = self.window(text.strip(), item, item_path)
            if window is not None:
                windows.append(window)
        return Access(networks=tuple(networks), hours=tuple(windows))

    def network(
        self, text: str, node: Node, path: KeyPath
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.problem(node, path, f"{text!r} is not an IP address or CIDR range (such as 10.0.0.0/8)")
            return None
        self.problem(node, path, f"{text!r} has bits set after the prefix length; did you mean {loose}?")
        return None

    def window(self, text: str, node: Node, path: KeyPath) -> TimeWindow | None:
        match = _WINDOW.fullmatch(text)
        if match is None:
            self.problem(
                node,
                path,
                "expected days, hours and a time zone such as 'Mon-Fri 08:00-20:00 Asia/Tokyo', "
                f"found {text!r}",
            )
            return None
        problems_before = len(self._found)
        days = self.days(match["days"], node, path)
        start = self.clock(match["start"], node, path)
        end = self.clock(match["end"], node, path)
        zone = match["zone"]
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            self.problem(node, path, f"unknown time zone {zone!r} (use a name such as Asia/Tokyo or UTC)")
        if start is not None and start == end:
            self.problem(node, path, f"the window {text!r} starts and ends at the same time")
        if len(self._found) > problems_before or days is None or start is None or end is None:
            return None
        return TimeWindow(days=days, start=start, end=end, timezone=zone)

    def days(self, text: str, node: Node, path: KeyPath) -> frozenset[int] | None:
        out: set[int] = set()
        for part in text.split(","):
            ends = [_DAY_NUMBERS.get(day.strip().lower(), 0) for day in part.split("-")]
            if len(ends) > 2 or 0 in ends:
                self.problem(
                    node,
                    path,
                    f"{part!r} is not a day or a range of days (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
                    "as in Mon-Fri or Sat,Sun)",
                )
                return None
            day, last = ends[0], ends[-1]
            out.add(day)
            while day != last:  # a range such as Fri-Mon runs through the weekend
                day = day % 7 + 1
                out.add(day)
        return frozenset(out)

    def clock(self, text: str, node: Node, path: KeyPath) -> time | None:
        hours, minutes = (int(part) for part in text.split(":"))
        if hours > 23 or minutes > 59:
            self.problem(node, path, f"{text} is not a time of day (00:00 to 23:59)")
            return None
        return time(hours, minutes)

    def users(self, node: Node | None) -> dict[str, User]:
        path: KeyPath = ("users",)
        out: dict[str, User] = {}
        for name, _, value_node in self.entries(node, path):
            user_path = (*path, name)
            spec = self.fields(value_node, user_path, _USER_KEYS)
            roles_node = self.required(
                spec, "roles", value_node, user_path, "the roles of this person, as [role, ...]"
            )
            roles: list[str] = []
            for role, item, item_path in self.items(roles_node, (*user_path, "roles"), "role names"):
                self.role_ref(item, item_path, role)
                if role not in roles:
                    roles.append(role)
            out[name] = User(name=name, roles=tuple(roles), access=self.access(spec, user_path))
        return out

    # ------------------------------------------------------------------ elevations

    def elevations(self, node: Node | None) -> dict[str, Elevation]:
        path: KeyPath = ("elevations",)
        out: dict[str, Elevation] = {}
        for name, _, value_node in self.entries(node, path):
            elevation_path = (*path, name)
            spec = self.fields(value_node, elevation_path, _ELEVATION_KEYS)
            grants_path = (*elevation_path, "grants")
            grants_node = self.required(
                spec, "grants", value_node, elevation_path, "what this elevation grants"
            )
            grants = self.fields(grants_node, grants_path, _GRANT_KEYS)
            if grants_node is not None and isinstance(grants_node, MappingNode) and not grants:
                self.problem(grants_node, grants_path, "grants nothing; give roles, allow or max_rows")
            roles: list[str] = []
            for role, item, item_path in self.items(
                grants.get("roles"), (*grants_path, "roles"), "role names"
            ):
                self.role_ref(item, item_path, role)
                roles.append(role)
            approvers: list[str] = []
            approvers_path = (*elevation_path, "approvers")
            approvers_node = self.required(
                spec,
                "approvers",
                value_node,
                elevation_path,
                "the roles whose members may approve, as [role, ...]",
            )
            if isinstance(approvers_node, SequenceNode) and not approvers_node.value:
                self.problem(
                    approvers_node, approvers_path, "list at least one role; nobody could approve this"
                )
            for role, item, item_path in self.items(approvers_node, approvers_path, "role names"):
                self.role_ref(item, item_path, role)
                approvers.append(role)
            duration = DEFAULT_ELEVATION
            if "max_duration" in spec:
                duration = self.duration(spec["max_duration"], (*elevation_path, "max_duration")) or duration
            out[name] = Elevation(
                name=name,
                grants_roles=tuple(roles),
                grants_allow=self.rule_classes(grants.get("allow"), (*grants_path, "allow")),
                grants_max_rows=self.positive(grants.get("max_rows"), (*grants_path, "max_rows")),
                max_duration=duration,
                approvers=tuple(approvers),
            )
        return out

    def quotas(self, node: Node | None, path: KeyPath) -> tuple[Quota, ...]:
        """``quotas: [{window: 1h, rows: 1000}, {window: 30d, rows: 20000, table: public.customers},
        {window: 1d, bytes: 50MB}]``."""
        if node is None:
            return ()
        if not isinstance(node, SequenceNode):
            self.problem(node, path, f"expected a list of quotas, found {_describe(node)}")
            return ()
        out: list[Quota] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            spec = self.fields(item, item_path, _QUOTA_KEYS)
            if "window" not in spec:
                self.problem(item, item_path, "a quota needs a window (such as 1h, 1d or 30d)")
                continue
            window = self.duration(
                spec["window"],
                (*item_path, "window"),
                limit=MAX_QUOTA_WINDOW,
                why="quotas look back a year at most",
            )
            rows = self.positive(spec.get("rows"), (*item_path, "rows"))
            size = self.size(spec.get("bytes"), (*item_path, "bytes"))
            table = None
            if "table" in spec:
                name = self.text(spec["table"], (*item_path, "table"), "a protected table name")
                table = None if name is None else self.table_name(name, spec["table"], (*item_path, "table"))
                if table is not None and table not in self._pii:
                    self.problem(
                        spec["table"], (*item_path, "table"), f"{_show(table)} is not a protected table"
                    )
                    table = None
                if table is not None and "rows" not in spec:
                    self.problem(item, item_path, "a quota for one table counts rows: give rows")
            if "rows" not in spec and "bytes" not in spec:
                self.problem(item, item_path, "a quota limits rows, bytes or both: give at least one")
                continue
            if window is not None and (rows is not None or size is not None):
                out.append(Quota(window, rows, size, table))
        return tuple(out)

    def size(self, node: Node | None, path: KeyPath) -> int | None:
        """A byte count: an integer, or a number with a unit (50MB, 1.5GiB, 800kB)."""
        if node is None:
            return None
        text = node.value.strip() if isinstance(node, ScalarNode) and node.tag in (_STR, _INT, _FLOAT) else ""
        match = _SIZE.fullmatch(text.replace(" ", "")) if text else None
        if match is None:
            self.problem(node, path, f"expected a size such as 50MB, 1GiB or 800000, found {_describe(node)}")
            return None
        amount = int(float(match["n"]) * _SIZE_UNITS[match["unit"].lower()])
        if amount <= 0:
            self.problem(node, path, "must be more than zero bytes")
            return None
        return amount

    def duration(
        self,
        node: Node,
        path: KeyPath,
        *,
        limit: timedelta = MAX_ELEVATION,
        why: str = "elevations are meant to be temporary",
    ) -> timedelta | None:
        text = (
            node.value.strip().replace(" ", "") if isinstance(node, ScalarNode) and node.tag == _STR else ""
        )
        match = _DURATION.fullmatch(text) if text else None
        if match is None:
            self.problem(node, path, f"expected a duration such as 30m, 2h or 1d12h, found {_describe(node)}")
            return None
        amount = timedelta(
            days=int(match["d"] or 0),
            hours=int(match["h"] or 0),
            minutes=int(match["m"] or 0),
            seconds=int(match["s"] or 0),
        )
        if amount <= timedelta(0):
            self.problem(node, path, "must be longer than zero")
            return None
        if amount > limit:
            self.problem(node, path, f"{text} is longer than the {limit.days}-day limit; {why}")
            return None
        return amount

    # ------------------------------------------------------------------ alarms

    def audit(self, node: Node | None) -> AuditSettings:
        """The ``audit:`` section: whether statement text keeps its literal values."""
        path: KeyPath = ("audit",)
        spec = self.fields(node, path, _AUDIT_KEYS)
        text_node = spec.get("statement_text")
        if text_node is None:
            return AuditSettings()
        value = self.text(text_node, (*path, "statement_text"), "full or redacted")
        if value is not None and value not in _STATEMENT_TEXT:
            self.problem(text_node, (*path, "statement_text"), f"expected full or redacted, found {value!r}")
            return AuditSettings()
        return AuditSettings(redact_literals=value == "redacted")

    def alarms(self, node: Node | None) -> AlarmSettings:
        """The ``alarms:`` section over the defaults of ``AlarmSettings``."""
        path: KeyPath = ("alarms",)
        spec = self.fields(node, path, _ALARM_KEYS)
        changes: dict[str, Any] = {}
        if "timezone" in spec:
            zone_node = spec["timezone"]
            zone = self.text(zone_node, (*path, "timezone"), "a time zone such as Asia/Tokyo or UTC")
            if zone is not None and self.zone(zone, zone_node, (*path, "timezone")):
                changes["timezone"] = zone
        if "dedup" in spec:
            changes["dedup"] = self.alarm_duration(spec["dedup"], (*path, "dedup"))
        for key in ("learning_days", "memory_days"):
            changes[key] = self.positive(spec.get(key), (*path, key))
        defaults = AlarmSettings()
        for name, keys in _ALARM_RULE_KEYS.items():
            changes[name] = self.alarm_rule(spec.get(name), (*path, name), keys, getattr(defaults, name))
        if "on_alarm" in spec:
            changes["on_alarm"] = self.on_alarm(spec["on_alarm"], (*path, "on_alarm"))
        return dataclasses.replace(defaults, **{k: v for k, v in changes.items() if v is not None})

    def alarm_rule(self, node: Node | None, path: KeyPath, keys: tuple[str, ...], default: Any) -> Any:
        """One rule's section over its defaults; ``false`` switches the rule off."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return dataclasses.replace(default, enabled=bool(self._constructor.construct_object(node)))
        if not isinstance(node, MappingNode):
            self.problem(
                node,
                path,
                f"expected a mapping of {', '.join(keys)}, or false to switch the rule off; "
                f"found {_describe(node)}",
            )
            return None
        spec = self.fields(node, path, keys)
        changes: dict[str, Any] = {}
        for key, value in spec.items():
            key_path = (*path, key)
            if key in ("severity", "outside_allowed", "at_least"):
                changes[key] = self.severity(value, key_path)
            elif key == "unusual":
                if isinstance(value, ScalarNode) and value.tag == _BOOL:
                    if self._constructor.construct_object(value):
                        self.problem(
                            value, key_path, f"expected a severity ({', '.join(SEVERITIES)}) or false"
                        )
                    else:
                        changes[key] = ""  # off; turned into None below
                else:
                    changes[key] = self.severity(value, key_path)
            elif key == "levels":
                changes[key] = self.levels(value, key_path, most=100.0 if path[-1] == "coverage" else None)
            elif key in ("within", "max_gap", "window"):
                changes[key] = self.alarm_duration(value, key_path)
            elif key in ("factor", "deviations"):
                changes[key] = self.number(value, key_path, least=1.0 if key == "factor" else 0.0)
            elif key == "min_share":
                changes[key] = self.number(value, key_path, least=0.0, most=1.0)
            elif key in ("prefix_v4", "prefix_v6"):
                changes[key] = self.prefix(value, key_path, 32 if key == "prefix_v4" else 128)
            elif key == "rules":
                changes[key] = self.escalated_rules(value, key_path)
            elif key == "applications":
                names = [text.strip() for text, _, _ in self.items(value, key_path, "application names")]
                if isinstance(value, SequenceNode) and not value.value:
                    self.problem(value, key_path, "list at least one name, or switch the rule off with false")
                changes[key] = tuple(names) if names else None
            else:  # min_rows, refusals, pages, rows, tables, days
                changes[key] = self.positive(value, key_path)
        out = {k: v for k, v in changes.items() if v is not None}
        if out.get("unusual") == "":
            out["unusual"] = None
        return dataclasses.replace(default, **out)

    def escalated_rules(self, node: Node, path: KeyPath) -> frozenset[str] | None:
        """The rules whose alarms ``repeated`` counts: at least one, never itself."""
        problems_before = len(self._found)
        names: set[str] = set()
        for name, item, item_path in self.items(node, path, "alarm rules"):
            if name == "repeated":
                self.problem(item, item_path, "repeated cannot count its own alarms")
            elif name not in ALARM_RULES:
                self.problem(item, item_path, f"unknown alarm rule {name!r} {_allowed(name, ALARM_RULES)}")
            else:
                names.add(name)
        if isinstance(node, SequenceNode) and not node.value:
            self.problem(node, path, "list at least one rule, or switch the rule off with false")
        return frozenset(names) if len(self._found) == problems_before else None

    def on_alarm(self, node: Node, path: KeyPath) -> tuple[OnAlarm, ...] | None:
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return ()
        if not isinstance(node, SequenceNode):
            self.problem(
                node,
                path,
                "expected a list of entries such as [{severity: high, tighten: {max_rows: 10, for: 24h}}], "
                f"found {_describe(node)}",
            )
            return None
        out: list[OnAlarm] = []
        for index, item in enumerate(node.value):
            entry = self.on_alarm_entry(item, (*path, index))
            if entry is not None:
                out.append(entry)
        return tuple(out)

    def on_alarm_entry(self, node: Node, path: KeyPath) -> OnAlarm | None:
        if not isinstance(node, MappingNode):
            self.problem(
                node, path, f"expected a mapping with severity and tighten or action, found {_describe(node)}"
            )
            return None
        problems_before = len(self._found)
        spec = self.fields(node, path, _ON_ALARM_KEYS)
        severity_node = self.required(spec, "severity", node, path, "the least severity this applies to")
        severity = self.severity(severity_node, (*path, "severity")) if severity_node is not None else None
        rules: set[str] = set()
        for name, item, item_path in self.items(spec.get("rules"), (*path, "rules"), "alarm rules"):
            if name in ALARM_RULES:
                rules.add(name)
            else:
                self.problem(item, item_path, f"unknown alarm rule {name!r} {_allowed(name, ALARM_RULES)}")
        max_rows: int | None = None
        suspend = False
        duration_node = spec.get("for")
        duration_path: KeyPath = (*path, "for")
        tighten_node, action_node = spec.get("tighten"), spec.get("action")
        if (tighten_node is None) == (action_node is None):
            self.problem(
                node,
                path,
                "give either tighten: {max_rows: N, for: 24h} or action: suspend"
                + (", not both" if tighten_node is not None else ""),
            )
        if tighten_node is not None:
            tighten_path = (*path, "tighten")
            tighten = self.fields(tighten_node, tighten_path, _TIGHTEN_KEYS)
            rows_node = self.required(
                tighten, "max_rows", tighten_node, tighten_path, "the row cap per statement"
            )
            max_rows = (
                self.positive(rows_node, (*tighten_path, "max_rows")) if rows_node is not None else None
            )
            if "for" in tighten:
                if duration_node is not None:
                    self.problem(tighten["for"], (*tighten_path, "for"), "for is given twice; keep one")
                duration_node, duration_path = tighten["for"], (*tighten_path, "for")
        if action_node is not None:
            action = self.text(action_node, (*path, "action"), f"one of {', '.join(_ON_ALARM_ACTIONS)}")
            if action is not None and action not in _ON_ALARM_ACTIONS:
                self.problem(
                    action_node,
                    (*path, "action"),
                    f"unknown action {action!r} {_allowed(action, _ON_ALARM_ACTIONS)}",
                )
            suspend = action == "suspend"
        duration = DEFAULT_ON_ALARM_DURATION
        until_cleared = False
        if duration_node is not None:
            text = duration_node.value.strip() if isinstance(duration_node, ScalarNode) else ""
            if text == UNTIL_CLEARED:
                until_cleared = True
            elif duration_node.tag == _STR and not _DURATION.fullmatch(text.replace(" ", "")):
                self.problem(
                    duration_node,
                    duration_path,
                    f"expected a duration such as 24h or 7d, or {UNTIL_CLEARED}, "
                    f"found {_describe(duration_node)}" + _did_you_mean(text, (UNTIL_CLEARED,)),
                )
            else:
                duration = self.alarm_duration(duration_node, duration_path) or duration
        if len(self._found) > problems_before or severity is None:
            return None
        return OnAlarm(
            severity=severity,
            rules=frozenset(rules),
            max_rows=max_rows,
            suspend=suspend,
            duration=duration,
            until_cleared=until_cleared,
        )

    def alarm_duration(self, node: Node, path: KeyPath) -> timedelta | None:
        return self.duration(
            node, path, limit=MAX_ALARM_DURATION, why="give the time in days (such as 365d) if you mean it"
        )

    def severity(self, node: Node, path: KeyPath) -> str | None:
        value = self.text(node, path, f"a severity ({', '.join(SEVERITIES)})")
        if value is not None and value not in SEVERITIES:
            self.problem(node, path, f"unknown severity {value!r} {_allowed(value, SEVERITIES)}")
            return None
        return value

    def number(
        self, node: Node, path: KeyPath, *, least: float | None = None, most: float | None = None
    ) -> float | None:
        value: object = None
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            value = self._constructor.construct_object(node)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            self.problem(node, path, f"expected a number, found {_describe(node)}")
            return None
        if (least is not None and value < least) or (most is not None and value > most):
            bounds = (
                f"between {least:g} and {most:g}"
                if least is not None and most is not None
                else f"at least {least:g}"
                if least is not None
                else f"at most {most:g}"
            )
            self.problem(node, path, f"must be {bounds}, found {value:g}")
            return None
        return float(value)

    def prefix(self, node: Node, path: KeyPath, bits: int) -> int | None:
        value = self.integer(node, path)
        if value is not None and not 0 <= value <= bits:
            self.problem(node, path, f"must be a prefix length from 0 to {bits}, found {value}")
            return None
        return value

    def levels(self, node: Node, path: KeyPath, *, most: float | None) -> Levels | None:
        """``{percent: severity, ...}``, in ascending order, severities not decreasing."""
        if not isinstance(node, MappingNode) or not node.value:
            self.problem(
                node,
                path,
                "expected percentages and severities such as {80: medium, 100: high}, "
                f"found {_describe(node)}",
            )
            return None
        problems_before = len(self._found)
        out: list[tuple[float, str]] = []
        for name, key_node, value_node in self.entries(node, path):
            level_path = (*path, name)
            percent = self.number(key_node, level_path, least=0.0, most=most)
            if percent is not None and percent <= 0:
                self.problem(key_node, level_path, "must be more than 0")
                percent = None
            severity = self.severity(value_node, level_path)
            if percent is not None and severity is not None:
                out.append((percent, severity))
        out.sort()
        for (low, low_severity), (high, high_severity) in itertools.pairwise(out):
            if SEVERITIES.index(high_severity) < SEVERITIES.index(low_severity):
                self.problem(
                    node,
                    path,
                    f"{high:g}% is {high_severity} but the lower level {low:g}% is {low_severity}; "
                    "a higher level must not be less severe",
                )
        return tuple(out) if len(self._found) == problems_before else None

    def zone(self, zone: str, node: Node, path: KeyPath) -> bool:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            self.problem(node, path, f"unknown time zone {zone!r} (use a name such as Asia/Tokyo or UTC)")
            return False
        return True
