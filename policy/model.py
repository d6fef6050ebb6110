"""The policy document, as validated frozen data.

A policy names people (users) and what they may do (roles), the protected tables and their PII
columns, and the elevations a second person may approve. ``policy.loader`` builds it from YAML and
reports every problem with file, line and key; nothing here reads files.

Statement classes (``RULE_CLASSES``) are the vocabulary of refusals. A *restricted* role is refused
every class except those it lists under ``allow``, so a class added in a later version is refused
until a policy allows it (fail closed). An unrestricted role (a break-glass DBA) is refused nothing,
and everything it does is audited. ``PII_CHANNELS`` and a role's ``pii_use`` say what it may do
with masked PII where a statement uses it without showing it (WHERE, ORDER BY, ...): the rule
``pii_inference`` refuses what they refuse.

``AlarmSettings`` is the policy's ``alarms:`` section: the thresholds of the detection rules
(``policy.detect``) and what an alarm does to a person's limits (``on_alarm``). Every field has a
default, so a policy without the section still raises alarms.
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
    "user_functions": "calling functions outside pg_catalog and information_schema, or put there after "
    "initdb, whose bodies Sekisho does not analyze",
    "views_over_protected": "reading protected tables through a view",
    "pii_inference": "a PII column the person sees masked, used where it steers the result without "
    "being shown (WHERE, joins, GROUP BY, ORDER BY, DISTINCT, HAVING, windows), as the role's "
    "pii_use refuses",
    "session_settings": "changing client_encoding or standard_conforming_strings, which change how "
    "statements are read",
    "admin_functions": "server administration functions (pg_terminate_backend, pg_reload_conf, ...)",
    "unanalyzable": "statements whose effect Sekisho cannot establish",
}

MASK_KINDS = ("full", "partial", "email", "phone", "card", "token", "null")
ON_CAP = ("truncate", "error")

# Inference channels: where a masked PII column can steer a result without being shown in it.
# ``WHERE phone LIKE '090%'`` reveals digits one query at a time, ``ORDER BY phone`` ranks every
# row by the value, ``GROUP BY`` and ``DISTINCT`` tell equal values apart.
PII_CHANNELS: dict[str, str] = {
    "where": "WHERE and FILTER conditions, and what decides how many rows return (LIMIT, OFFSET, "
    "TABLESAMPLE, arguments of set-returning functions such as generate_series)",
    "join": "join conditions: ON, USING, NATURAL, and WHERE conditions comparing two columns",
    "group_by": "GROUP BY (also ROLLUP, CUBE, GROUPING SETS)",
    "order_by": "ORDER BY, also inside aggregates (string_agg(x, ',' ORDER BY phone))",
    "distinct": "DISTINCT, DISTINCT ON, and UNION, INTERSECT, EXCEPT without ALL",
    "having": "HAVING",
    "window": "PARTITION BY and ORDER BY of window functions",
}
# What a role lets its people do with a masked PII column in a channel, least strict first (a
# person's roles merge to the strictest): allow it; count it (allowed, and listed on the decision
# for quotas and alarms); equality (where and join only): allow exact-value lookups and joins on
# equal values, refuse patterns, ranges, casts and functions; refuse it (rule pii_inference).
PII_USES = ("allow", "count", "equality", "refuse")
EQUALITY_CHANNELS = frozenset({"where", "join"})
# A restricted role that does not say: the lookups everyday maintenance needs (by id, by an exact
# email or phone), nothing that ranks, groups or pattern-matches masked values. Like every rule
# class, the controls hold until a policy relaxes them (fail closed).
DEFAULT_PII_USE: dict[str, str] = {
    channel: "equality" if channel in EQUALITY_CHANNELS else "refuse" for channel in PII_CHANNELS
}


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
class Quota:
    """A cumulative limit per person over a rolling window: rows read by statements that touch
    protected tables (or one protected table), and/or bytes of rows returned overall."""

    window: timedelta
    rows: int | None = None
    bytes: int | None = None
    table: QualifiedName | None = None  # rows of statements reading this table only

    def describe(self) -> str:
        what = " and ".join(
            part
            for part in (
                f"{self.rows:,} rows of {'.'.join(self.table) if self.table else 'protected tables'}"
                if self.rows is not None
                else "",
                f"{self.bytes:,} bytes" if self.bytes is not None else "",
            )
            if part
        )
        return f"{what} per {show_duration(self.window)}"


def show_duration(amount: timedelta) -> str:
    """30d, 1d12h, 2h, 15m: the way the policy file writes durations."""
    seconds = int(amount.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


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
    hidden: frozenset[tuple[str, str, str]] = frozenset()  # PII columns this role may not touch at all
    quotas: tuple[Quota, ...] = ()
    access: Access = field(default_factory=Access)
    # Inference channel -> one of PII_USES, for every channel (restricted roles only).
    pii_use: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PII_USE))


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


# Alarm severities, least severe first; thresholds and on_alarm entries compare by this order.
SEVERITIES = ("low", "medium", "high", "critical")

# Detection rules (policy.detect): the ``rule`` of an alarm, and what on_alarm entries may name.
ALARM_RULES: dict[str, str] = {
    "quota_threshold": "a volume quota crossed a share of its window's budget (such as 80% and 100%)",
    "volume_baseline": "a day's protected rows far above the person's own learned daily volume",
    "outside_allowed_hours": "activity outside the hours the policy allows the person (a session kept "
    "open past them), or a connection refused for the hour",
    "unusual_hours": "activity at an hour of the day the person has rarely worked, once learned",
    "new_address": "activity from a network the person has not used before, once learned",
    "first_access": "the person's first read of a protected table",
    "probing": "repeated refusals in a short time",
    "paging": "sequential paging through a protected table (WHERE id > x ORDER BY id LIMIT n, "
    "a growing OFFSET, a key range that moves on page after page)",
    "cursor_paging": "a FETCH loop over one cursor (or portal) on protected rows",
    "dump_tool": "a session of pg_dump or pg_dumpall, by its application_name",
    "dump_pattern": "a dump-like session: a snapshot or repeatable-read transaction, catalog "
    "enumeration, then whole-table reads, COPY or LOCK of table after table",
    "coverage": "the share of a protected table's distinct rows one person has seen over a long window",
    "repeated": "alarms of the rules it names on several distinct days within a window (escalation)",
}
# Rules whose alarms mean rows leaving in bulk: what the repeated rule escalates by default.
EXTRACTION_RULES = frozenset(
    {"paging", "cursor_paging", "volume_baseline", "coverage", "dump_tool", "dump_pattern"}
)

DEFAULT_ON_ALARM_DURATION = timedelta(hours=24)  # how long an on_alarm entry lasts when it does not say

# (percent, severity) pairs, ascending by percent.
Levels = tuple[tuple[float, str], ...]


@dataclass(frozen=True, slots=True)
class QuotaAlarms:
    enabled: bool = True
    levels: Levels = ((80.0, "medium"), (100.0, "high"))  # share of a quota window's budget used


@dataclass(frozen=True, slots=True)
class VolumeAlarms:
    """Today's protected rows against the person's learned daily volume: an alarm when today exceeds
    all of ``factor`` x the mean, the mean plus ``deviations`` standard deviations, and ``min_rows``."""

    enabled: bool = True
    factor: float = 3.0
    deviations: float = 4.0
    min_rows: int = 1000
    severity: str = "high"


@dataclass(frozen=True, slots=True)
class HoursAlarms:
    enabled: bool = True
    outside_allowed: str = "high"  # severity outside the policy's hours for the person
    unusual: str | None = "low"  # severity at a learned-unusual hour; None: not raised
    min_share: float = 0.05  # an hour (or a neighbour) worked on less than this share of days is unusual


@dataclass(frozen=True, slots=True)
class AddressAlarms:
    enabled: bool = True
    severity: str = "medium"
    prefix_v4: int = 24  # addresses in one /24 (IPv4) or /64 (IPv6) are the same place
    prefix_v6: int = 64


@dataclass(frozen=True, slots=True)
class FirstAccessAlarms:
    enabled: bool = True
    severity: str = "low"


@dataclass(frozen=True, slots=True)
class ProbingAlarms:
    enabled: bool = True
    refusals: int = 5
    within: timedelta = timedelta(minutes=10)
    severity: str = "high"


@dataclass(frozen=True, slots=True)
class PagingAlarms:
    """A run of pages ends when the next one comes more than ``max_gap`` later (slow drips are the
    coverage rule's); it alarms at ``pages`` pages, or at ``rows`` rows over three pages or more."""

    enabled: bool = True
    pages: int = 20
    rows: int = 2000
    max_gap: timedelta = timedelta(hours=1)
    severity: str = "high"


@dataclass(frozen=True, slots=True)
class DumpAlarms:
    enabled: bool = True
    applications: tuple[str, ...] = ("pg_dump", "pg_dumpall")  # application_name prefixes, any case
    tables: int = 2  # tables read whole, copied or locked after catalog enumeration in a snapshot
    severity: str = "high"


@dataclass(frozen=True, slots=True)
class CoverageAlarms:
    """Distinct rows of a protected table one person has seen, counted over between ``window`` and
    twice ``window`` of history, as a share of the table's rows."""

    enabled: bool = True
    window: timedelta = timedelta(days=90)
    min_rows: int = 1000  # no alarm below this many distinct rows, whatever the share
    levels: Levels = ((10.0, "medium"), (25.0, "high"), (50.0, "critical"))


@dataclass(frozen=True, slots=True)
class RepeatedAlarms:
    """Escalation: alarms of ``rules`` at ``at_least`` or above on ``days`` distinct days (in
    ``timezone``) within ``within`` raise one alarm of ``severity``. A drain that comes back day
    after day is worse than any one of its days, and a day of bulk work by an honest person is
    rarely followed by two more within a week."""

    enabled: bool = True
    rules: frozenset[str] = EXTRACTION_RULES
    at_least: str = "high"
    days: int = 3
    within: timedelta = timedelta(days=7)
    severity: str = "critical"


@dataclass(frozen=True, slots=True)
class OnAlarm:
    """What an alarm of ``severity`` or higher (of one of ``rules``, or any) does to its person's
    limits, for ``duration`` from the alarm, or, with ``until_cleared``, until a second person
    records a clearance (a suspension that only a review ends)."""

    severity: str
    rules: frozenset[str] = frozenset()  # empty: alarms of every rule
    max_rows: int | None = None  # rows per statement, while it lasts
    suspend: bool = False  # no statements at all, while it lasts
    duration: timedelta = DEFAULT_ON_ALARM_DURATION  # ignored when until_cleared
    until_cleared: bool = False


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    timezone: str = "UTC"  # days (baselines) and hours are counted in this time zone
    dedup: timedelta = timedelta(hours=1)  # the same rule, person and key is not raised again within this
    learning_days: int = 14  # active days before baselines, usual hours and new addresses alarm
    memory_days: int = 30  # how many recent days baselines mostly reflect (exponential weighting)
    quota: QuotaAlarms = field(default_factory=QuotaAlarms)
    volume: VolumeAlarms = field(default_factory=VolumeAlarms)
    hours: HoursAlarms = field(default_factory=HoursAlarms)
    new_address: AddressAlarms = field(default_factory=AddressAlarms)
    first_access: FirstAccessAlarms = field(default_factory=FirstAccessAlarms)
    probing: ProbingAlarms = field(default_factory=ProbingAlarms)
    paging: PagingAlarms = field(default_factory=PagingAlarms)
    dump: DumpAlarms = field(default_factory=DumpAlarms)
    coverage: CoverageAlarms = field(default_factory=CoverageAlarms)
    repeated: RepeatedAlarms = field(default_factory=RepeatedAlarms)
    on_alarm: tuple[OnAlarm, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """What the audit trail keeps of statements: with ``redact_literals``, statement text is
    recorded in its normalized form (every literal as $n), so values typed into queries (a phone
    number in a WHERE clause) do not end up in the trail."""

    redact_literals: bool = False


@dataclass(frozen=True)
class Policy:
    roles: dict[str, Role]
    users: dict[str, User]
    tables: dict[QualifiedName, ProtectedTable]
    elevations: dict[str, Elevation] = field(default_factory=dict)
    default_role: str | None = None  # for people in the users file that the policy does not name
    source: str = "<policy>"  # where it was loaded from, for messages
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    def roles_of(self, user: str) -> tuple[Role, ...]:
        """The roles that apply to a person; unknown people get the default role, or none."""
        entry = self.users.get(user)
        names = entry.roles if entry else ((self.default_role,) if self.default_role else ())
        return tuple(self.roles[n] for n in names if n in self.roles)

    def masked_pii(
        self, relation: QualifiedName, column: str, clear: frozenset[tuple[str, str, str]]
    ) -> bool:
        """Whether a column is PII that a person seeing ``clear`` columns unmasked sees masked. A
        relation the catalog does not know (schema "") counts as every protected table of its name."""
        if relation[0]:
            table = self.tables.get(relation)
            return table is not None and column in table.pii and (*relation, column) not in clear
        return any(
            name == relation[1] and column in table.pii and (schema, name, column) not in clear
            for (schema, name), table in self.tables.items()
        )

    def is_protected(self, relation: QualifiedName) -> bool:
        """Protected by name; a relation the catalog does not know yet (schema "") counts as
        protected when any protected table has its name: fail closed on a stale catalog."""
        if relation in self.tables:
            return True
        return relation[0] == "" and any(name == relation[1] for _, name in self.tables)
