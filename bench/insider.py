"""Insider simulation (`python -m bench.insider`): a month of maintenance work through a policy,
with one person draining the customers table 100 rows at a time, and what each layer stops.

Why: a per-statement cap does not stop someone who takes 100 rows at a time, patiently, at working
hours; volume quotas, alarms and on_alarm tightening are meant to. This measures how far they get.
It drives the pure policy side exactly as the gateway does, with no database and no waiting:
``policy.analyze`` and ``policy.engine.evaluate`` decide each statement (caps, masks, refusals),
``policy.quota``'s bucket arithmetic enforces volume quotas (a statement that would cross a row
budget is cut at the budget, later protected reads get SK002), ``policy.detect`` sees the same
connection, statement and quota events, and its ``on_alarm`` tightening caps or suspends the person
from the next statement on. Time is simulated and every random draw comes from generators seeded
with ``--seed``, so a seed is one month, identical run after run.

The month. ``--people`` ordinary maintenance people and one insider work Monday to Friday in Japan
time (arriving around 9:00, lunch around 12:00, leaving around 18:00, now and then late), in a
few psql sessions a day, from fixed addresses in one office network. Their work: looking customers
up by id or email and reading their orders, counts, psql's catalog queries (``\\d``, ``\\dt``),
order status checks, now and then a bigger read within the cap (a 100-id range, a peek), a
statement the policy refuses by mistake (and sometimes a second one) before the right one, on
Fridays a report that pages through the week's failed payments, and on about one day in 40 a data
incident: a batch of consecutive customers checked range by range (6 to 15 reads of 100 rows),
legitimate and shaped like a drain. ``--warmup`` days of this precede the month, as in a gateway
that has been running: habits (volume, hours, addresses) are learned before the insider starts.
From ``--drain-start`` on, the insider also drains customers in keyset pages (``SELECT ... FROM
customers WHERE id > :last ORDER BY id LIMIT 100``), about ``--pace`` pages an hour at random
times in his working hours, staying under what he believes the limits are (the 100-row cap, 1,000
rows an hour, 5,000 a day: at most 60% of each, so six pages an hour and 30 a day; he does not
know of the 30-day quota). A refusal that says when things free up (SK002, a suspension) makes him
wait until then; a cut page makes him carry on from the last id he got.

Stopped: the first of (1) a drain page refused because he is suspended, (2) a drain page refused by
a quota after which no drain page of that (Japan) day gets rows, (3) a working day on which his
drain obtains at most a tenth of the rows he planned for it (planned pages x 100; a tightened cap
of 10 rows a page holds him to exactly that), from its first refused or cut page. Rows "before
stopped" are his drain's rows before that moment. A stop need not last (a suspension or a
tightening ends), so the report also gives the month's total and how many working days from the
stop's on stayed stopped.

Each run is repeated per configuration of layers (all on; on_alarm off; quotas off; neither) with
the same seed, so the ordinary work is the same in each and the differences are the layers'.
"""

# ruff: noqa: S608  (statements are written from the simulation's own constants and numbers, and never run)
from __future__ import annotations

import argparse
import bisect
import dataclasses
import heapq
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.svgplot import Legend, Marker, Series, line_chart
from gateway.gate import fingerprint
from policy.analyze import analyze
from policy.catalog import TABLE, Catalog, Relation
from policy.decision import POLICY_REFUSED, Allow, Deny
from policy.detect import Alarm, Detector, Holds, Tightening, severity_rank, tighten, tightening_for
from policy.engine import evaluate
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent
from policy.facts import Analysis
from policy.loader import load_policy
from policy.model import SEVERITIES, Policy, User
from policy.permissions import Permissions, permissions_for
from policy.quota import (
    Limit,
    Usage,
    byte_limits,
    elevation_hint,
    exhausted,
    frees_at,
    limits_of,
    row_limits,
    used,
)

JST = ZoneInfo("Asia/Tokyo")
CUSTOMERS = "public.customers"
INSIDER = "insider"
OFFICE = "10.20.30."  # every desk in one /24: the office network
PAGE = 100  # rows the insider asks for per page
STALL_SHARE = 0.1  # a drain day that got at most this share of its plan is stopped
# What the insider believes the limits are, and how close to them he dares to go.
BELIEVED_PER_HOUR = 1000
BELIEVED_PER_DAY = 5000
DARE = 0.6
TASK_GAP = 300.0  # mean seconds between a person's tasks within a session
INCIDENT_RATE = 1 / 40  # days on which a person checks a batch of customers for a data incident

_SURNAMES = ("sato", "suzuki", "takahashi", "tanaka", "watanabe", "ito", "yamamoto", "nakamura", "kato")
_GIVEN = ("shota", "hina", "ren", "yui", "hiroto", "aoi", "yuma", "sakura", "minato", "misaki")
_DOMAINS = ("example.jp", "mail.example.co.jp", "example.ne.jp", "example.or.jp")

# Bytes per value as Sekisho sends it to maintenance (masked where PII), and per DataRow.
_WIDTH = {
    "id": 6,
    "name": 8,
    "address": 40,
    "phone": 13,
    "email": 30,
    "card_number": 19,
    "created_at": 22,
    "customer_id": 6,
    "amount": 7,
    "status": 8,
    "count": 6,
}
CUSTOMER_COLUMNS = ("id", "name", "address", "phone", "email", "card_number", "created_at")
ORDER_COLUMNS = ("id", "customer_id", "amount", "status", "created_at")


def row_bytes(columns: Iterable[str]) -> int:
    """Bytes of one DataRow of these columns (7 of header, 4 per value's length, the values)."""
    return 7 + sum(4 + _WIDTH.get(c, 10) for c in columns)


# ---------------------------------------------------------------------------------------- the world


def demo_catalog() -> Catalog:
    """The demo database as analysis sees it: customers, orders, and the catalog relations psql's
    ``\\d`` and ``\\dt`` read (PostgreSQL 15 columns, those the queries use)."""
    catalog = {
        "pg_am": "oid amname amhandler amtype",
        "pg_attrdef": "oid adrelid adnum adbin",
        "pg_attribute": "attrelid attname atttypid attstattarget attlen attnum attndims atttypmod attnotnull "
        "atthasdef attidentity attgenerated attisdropped attcollation",
        "pg_class": "oid relname relnamespace reltype reloftype relowner relam reltablespace reltuples "
        "reltoastrelid relhasindex relpersistence relkind relchecks relhasrules relhastriggers "
        "relhassubclass relrowsecurity relforcerowsecurity relispartition relreplident reloptions",
        "pg_collation": "oid collname collnamespace",
        "pg_constraint": "oid conname connamespace contype condeferrable condeferred conrelid conindid",
        "pg_index": "indexrelid indrelid indisunique indisprimary indisclustered indisvalid indisreplident",
        "pg_namespace": "oid nspname nspowner",
        "pg_type": "oid typname typnamespace typcollation",
    }
    return Catalog.of(
        [
            Relation("public", "customers", TABLE, CUSTOMER_COLUMNS),
            Relation("public", "orders", TABLE, ORDER_COLUMNS),
            *(Relation("pg_catalog", name, TABLE, tuple(cols.split())) for name, cols in catalog.items()),
        ]
    )


def _mix(n: int) -> int:
    return (n * 2654435761) & 0xFFFFFFFF


def email_of(customer: int) -> str:
    """The demo-like email address of a customer id (lookups by email name real customers)."""
    h = _mix(customer)
    return f"{_SURNAMES[h % 9]}.{_GIVEN[h // 9 % 10]}{customer}@{_DOMAINS[h // 90 % 4]}"


# The statements psql sends for \d TABLE (after resolving the name: oid) and \dt.
_D_RESOLVE = """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^({table})$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;"""
_D_RELATION = """SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, \
c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', c.reltablespace, \
CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, \
c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '{oid}';"""
_D_COLUMNS = """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '{oid}' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;"""
_D_INDEXES = """SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, \
pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, \
c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND \
contype IN ('p','u','x'))
WHERE c.oid = '{oid}' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;"""
_DT = """SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' \
WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' \
WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"""
_OIDS = {"customers": (16385, 7), "orders": (16394, 5)}  # oid, columns


# ---------------------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Spec:
    """A statement someone means to run, and what PostgreSQL would return for it unshaped."""

    sql: str
    ids: tuple[int, ...] = ()  # customers (by id) among the rows, in result order
    rows: int | None = None  # rows the statement would return; None: one per id
    width: int = 60  # bytes per row
    pause: float = 40.0  # mean seconds of thinking before it is sent

    @property
    def result_rows(self) -> int:
        return len(self.ids) if self.rows is None else self.rows


@dataclass(frozen=True, slots=True)
class Connect:
    at: datetime  # UTC
    session: str


@dataclass(frozen=True, slots=True)
class Query:
    at: datetime  # UTC
    session: str
    spec: Spec
    drain: bool = False  # one of the insider's pages


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    rows: int = 0
    ids: tuple[int, ...] = ()
    rule: str | None = None  # the refusing rule, or what cut the result
    cut: bool = False
    retry_at: datetime | None = None  # a refusal that says when it frees up (quota, suspension)


Step = Connect | Query
Actor = Generator[Step, Outcome | None, None]


@dataclass(frozen=True, slots=True)
class Workday:
    """One person's day at the office (Japan time): two working periods around lunch."""

    periods: tuple[tuple[datetime, datetime], ...]


def workday(seed: int, user: str, day: date) -> Workday | None:
    """When ``user`` works on ``day`` (None: a weekend or a day off). Drawn from its own seed, so
    the insider's ordinary work and his drain agree on his day."""
    if day.weekday() >= 5:
        return None
    rng = random.Random(f"{seed}:{user}:{day.isoformat()}:day")
    if rng.random() < 0.04:
        return None  # a day off
    nine = datetime.combine(day, clock(9), JST)
    arrive = nine + timedelta(minutes=min(max(rng.gauss(0, 12), -25), 40))
    lunch = nine + timedelta(hours=3, minutes=rng.uniform(-10, 10))
    back = lunch + timedelta(minutes=rng.uniform(45, 60))
    leave = nine + timedelta(hours=9, minutes=rng.gauss(0, 20))
    if rng.random() < 0.12:
        leave += timedelta(minutes=rng.uniform(45, 150))  # a late evening now and then
    return Workday(((arrive, lunch), (back, leave)))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------- ordinary work


@dataclass(frozen=True, slots=True)
class Person:
    user: str
    address: str
    insider: bool = False


def _lookup(rng: random.Random, customer: int) -> Spec:
    columns = rng.choice(
        (
            ("id", "name", "address", "phone", "email", "created_at"),
            ("id", "name", "email"),
            ("id", "name", "phone", "created_at"),
            CUSTOMER_COLUMNS,
        )
    )
    shown = "*" if columns == CUSTOMER_COLUMNS else ", ".join(columns)
    if rng.random() < 0.6:
        sql = f"SELECT {shown} FROM customers WHERE id = {customer}"
    else:
        sql = f"SELECT {shown} FROM customers WHERE email = '{email_of(customer)}'"
    return Spec(sql, (customer,), width=row_bytes(columns))


def _ticket(rng: random.Random, customers: int) -> list[Spec]:
    """A customer's enquiry: find them, read their orders, perhaps one order, perhaps again."""
    customer = rng.randint(1, customers)
    out = [_lookup(rng, customer)]
    if rng.random() < 0.7:
        orders = rng.choice((0, 1, 1, 2, 2, 3, 4, 6, 9, 14, 20))
        out.append(
            Spec(
                f"SELECT id, amount, status, created_at FROM orders WHERE customer_id = {customer} "
                "ORDER BY created_at DESC LIMIT 20",
                rows=orders,
                width=row_bytes(("id", "amount", "status", "created_at")),
            )
        )
        if orders and rng.random() < 0.3:
            order = customer * 2 + rng.randint(0, 1)
            out.append(
                Spec(f"SELECT * FROM orders WHERE id = {order}", rows=1, width=row_bytes(ORDER_COLUMNS))
            )
    if rng.random() < 0.2:
        out.append(
            Spec(f"SELECT id, phone, email FROM customers WHERE id = {customer}", (customer,), pause=90)
        )
    return out


def _count(rng: random.Random, day: date) -> Spec:
    since = day - timedelta(days=rng.choice((1, 7, 30)))
    if rng.random() < 0.5:
        return Spec(
            f"SELECT count(*) FROM customers WHERE created_at >= '{since}'",
            rows=1,
            width=row_bytes(["count"]),
        )
    status = rng.choice(("pending", "failed", "shipped"))
    return Spec(f"SELECT count(*) FROM orders WHERE status = '{status}'", rows=1, width=row_bytes(["count"]))


def _orders_check(rng: random.Random, day: date) -> Spec:
    status = rng.choice(("pending", "failed"))
    since = day - timedelta(days=rng.choice((1, 2, 3)))
    return Spec(
        f"SELECT id, customer_id, amount, status FROM orders WHERE status = '{status}' "
        f"AND created_at >= '{since}' ORDER BY created_at DESC LIMIT 50",
        rows=rng.randint(0, 50),
        width=row_bytes(("id", "customer_id", "amount", "status")),
    )


def _bigger(rng: random.Random, customers: int) -> Spec:
    """A legitimate larger read within the cap: a batch of ids after a data fix, or a peek."""
    if rng.random() < 0.7:
        first = rng.randint(1, customers - 99)
        return Spec(
            f"SELECT id, name, email, created_at FROM customers WHERE id BETWEEN {first} AND {first + 99}",
            tuple(range(first, first + 100)),
            width=row_bytes(("id", "name", "email", "created_at")),
        )
    return Spec("SELECT * FROM customers LIMIT 20", tuple(range(1, 21)), width=row_bytes(CUSTOMER_COLUMNS))


def _mistake(rng: random.Random, customers: int) -> Spec:
    """A statement the demo policy refuses, written by someone who meant well."""
    first = rng.randint(1, customers - 99)
    sql = rng.choice(
        (
            f"SELECT id, name, email FROM customers WHERE email LIKE '%{rng.choice(_SURNAMES)}%' LIMIT 20",
            "SELECT id, name, phone FROM customers ORDER BY name LIMIT 20",
            f"SELECT DISTINCT address FROM customers WHERE id BETWEEN {first} AND {first + 50}",
            f"COPY (SELECT id, name, email FROM customers WHERE id BETWEEN {first} AND {first + 99}) "
            "TO STDOUT",
            f"SELECT id, name FROM customers WHERE phone LIKE '090-{rng.randint(1000, 9999)}%'",
        )
    )
    return Spec(sql, pause=60)


def _describe(rng: random.Random) -> list[Spec]:
    """psql's \\d of a table (four catalog queries sent at once) or \\dt."""
    if rng.random() < 0.3:
        return [Spec(_DT, rows=2, width=60)]
    table = rng.choice(("customers", "customers", "orders"))
    oid, columns = _OIDS[table]
    return [
        Spec(_D_RESOLVE.format(table=table), rows=1, width=40),
        Spec(_D_RELATION.format(oid=oid), rows=1, width=80, pause=0.05),
        Spec(_D_COLUMNS.format(oid=oid), rows=columns, width=50, pause=0.05),
        Spec(_D_INDEXES.format(oid=oid), rows=1, width=120, pause=0.05),
    ]


# A person's task mix (cumulative shares): enquiries dominate; bigger reads and mistakes are rare
# (about one of each every two days at ~25 tasks a day).
_TASKS = (
    (0.52, "ticket"),
    (0.64, "count"),
    (0.82, "orders"),
    (0.84, "bigger"),
    (0.87, "mistake"),
    (1.0, "describe"),
)


def _task(rng: random.Random, customers: int, day: date) -> list[Spec]:
    roll = rng.random()
    kind = next(name for share, name in _TASKS if roll < share)
    if kind == "ticket":
        return _ticket(rng, customers)
    if kind == "count":
        return [_count(rng, day)]
    if kind == "orders":
        return [_orders_check(rng, day)]
    if kind == "bigger":
        return [_bigger(rng, customers)]
    if kind == "mistake":
        specs = [_mistake(rng, customers)]
        if rng.random() < 0.35:
            specs.append(_mistake(rng, customers))
        return [*specs, *_ticket(rng, customers)]
    return _describe(rng)


def _weekly_report(rng: random.Random, customers: int, day: date) -> list[Spec]:
    """Friday's report: order totals, new customers, and the week's failed payments page by page."""
    monday = day - timedelta(days=day.weekday())
    failed = sorted(rng.sample(range(1, customers + 1), rng.randint(60, 240)))
    specs = [
        Spec(
            f"SELECT status, count(*), sum(amount) FROM orders WHERE created_at >= '{monday}' "
            "GROUP BY status",
            rows=4,
            width=row_bytes(("status", "count", "amount")),
        ),
        Spec(
            f"SELECT count(*) FROM customers WHERE created_at >= '{monday}'",
            rows=1,
            width=row_bytes(["count"]),
        ),
    ]
    last = 0
    while True:
        page = tuple(c for c in failed if c > last)[:PAGE]
        specs.append(
            Spec(
                "SELECT c.id, c.name, c.email FROM customers c JOIN orders o ON o.customer_id = c.id "
                f"WHERE o.status = 'failed' AND o.created_at >= '{monday}' AND c.id > {last} "
                "ORDER BY c.id LIMIT 100",
                page,
                width=row_bytes(("id", "name", "email")),
                pause=90,
            )
        )
        if len(page) < PAGE:
            return specs
        last = page[-1]


def _incident(rng: random.Random, customers: int) -> list[Spec]:
    """A data incident: checking a batch of consecutive customers (an import gone wrong) range by
    range, 6 to 15 reads of 100 rows in a row. Legitimate, and shaped like a drain."""
    first = rng.randint(1, customers - 1600)
    columns = ("id", "name", "email", "created_at")
    return [
        Spec(
            f"SELECT {', '.join(columns)} FROM customers WHERE id BETWEEN {a} AND {a + 99}",
            tuple(range(a, a + 100)),
            width=row_bytes(columns),
            pause=150,
        )
        for a in range(first, first + 100 * rng.randint(6, 15), 100)
    ]


def _sessions(rng: random.Random, day: Workday) -> list[tuple[datetime, datetime]]:
    """A few psql sessions within the working periods, in time order."""
    out = []
    for start, end in day.periods:
        minutes = (end - start).total_seconds() / 60
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            length = min(rng.uniform(20, 100), minutes)
            offset = rng.uniform(0, max(minutes - length, 0))
            begin = start + timedelta(minutes=offset)
            out.append((begin, min(begin + timedelta(minutes=length), end)))
    return sorted(out)


def ordinary(person: Person, scenario: Scenario, days: Sequence[date]) -> Actor:
    """One person's ordinary work, day by day: the same work in every configuration, except that a
    refusal saying when things free up (a spent quota, a suspension) makes the person stop until
    then, as anyone would rather than retry into a probing alarm."""
    rng = random.Random(f"{scenario.seed}:{person.user}:work")
    hold: datetime | None = None
    for day in days:
        today = workday(scenario.seed, person.user, day)
        if today is None:
            continue
        plan = [(start, end, "") for start, end in _sessions(rng, today)]
        if day.weekday() == 4:
            start = datetime.combine(day, clock(15), JST) + timedelta(minutes=rng.uniform(0, 90))
            plan = sorted([*plan, (start, start + timedelta(minutes=30), "report")])
        if rng.random() < INCIDENT_RATE:
            which = rng.randrange(len(plan))
            plan[which] = (plan[which][0], plan[which][1], "incident")
        moment = plan[0][0]
        for number, (start, end, special) in enumerate(plan):
            moment = max(moment, start)
            session = f"{person.user}-{day:%m%d}-{number}"
            if hold is None or _utc(moment) >= hold:
                yield Connect(_utc(moment), session)
            tasks: list[list[Spec]] = []
            if special == "report":
                tasks.append(_weekly_report(rng, scenario.customers, day))
            elif special == "incident":
                tasks.append(_incident(rng, scenario.customers))
            elif rng.random() < 0.35:
                tasks.append(_describe(rng))
            while moment < end:
                specs = tasks.pop(0) if tasks else _task(rng, scenario.customers, day)
                moment += timedelta(seconds=rng.expovariate(1 / TASK_GAP))
                for spec in specs:
                    moment += timedelta(seconds=rng.expovariate(1 / spec.pause))
                    if hold is not None and _utc(moment) < hold:
                        continue  # drawn all the same, so the work stays aligned across configurations
                    outcome = yield Query(_utc(moment), session, spec)
                    if outcome is not None and not outcome.allowed and outcome.retry_at is not None:
                        hold = outcome.retry_at + timedelta(minutes=10)


# ---------------------------------------------------------------------------------------- the drain


@dataclass(slots=True)
class DrainLog:
    """What the insider planned and got, page by page (filled in by ``drain`` and the gateway)."""

    planned: dict[date, int] = field(default_factory=dict)  # local day -> pages planned
    pages: list[tuple[datetime, int, str]] = field(default_factory=list)  # at (UTC), rows, status


def _page_times(rng: random.Random, today: Workday, pace: float) -> list[datetime]:
    """Random times at about ``pace`` an hour in the working periods, at most DARE of what he
    believes an hour and a day allow."""
    per_hour = int(DARE * BELIEVED_PER_HOUR / PAGE)
    per_day = int(DARE * BELIEVED_PER_DAY / PAGE)
    out: list[datetime] = []
    for start, end in today.periods:
        moment = start + timedelta(minutes=rng.uniform(5, 20))
        while True:
            moment += timedelta(hours=rng.expovariate(pace))
            if moment >= end - timedelta(minutes=5) or len(out) >= per_day:
                break
            recent = [t for t in out if moment - t < timedelta(hours=1)]
            if len(recent) >= per_hour:
                moment = recent[0] + timedelta(hours=1, minutes=rng.uniform(1, 10))
                if moment >= end - timedelta(minutes=5):
                    break
            out.append(moment)
    return out


def drain_sql(last: int) -> str:
    return (
        "SELECT id, name, address, phone, email, created_at FROM customers "
        f"WHERE id > {last} ORDER BY id LIMIT {PAGE}"
    )


def drain(person: Person, scenario: Scenario, days: Sequence[date], log: DrainLog) -> Actor:
    """The insider's second activity: keyset pages through customers, paced, patient after refusals."""
    rng = random.Random(f"{scenario.seed}:{person.user}:drain")
    width = row_bytes(("id", "name", "address", "phone", "email", "created_at"))
    last = 0
    hold: datetime | None = None  # a refusal said when to come back
    for day in days:
        today = workday(scenario.seed, person.user, day)
        if today is None:
            continue
        times = _page_times(rng, today, scenario.pace)
        log.planned[day] = len(times)
        session = None
        for moment in times:
            if hold is not None and _utc(moment) < hold:
                continue
            half = "am" if moment.hour < 12 else "pm"
            if session is None or not session.endswith(half):
                session = f"{person.user}-{day:%m%d}-d{half}"
                yield Connect(_utc(moment - timedelta(seconds=30)), session)
            ids = tuple(range(last + 1, min(last + PAGE, scenario.customers) + 1))
            outcome = yield Query(_utc(moment), session, Spec(drain_sql(last), ids, width=width), drain=True)
            assert outcome is not None
            if not outcome.allowed:
                # No random draw here: his plans stay the same in every configuration.
                end = _utc(datetime.combine(day, clock(23, 59), JST))
                hold = outcome.retry_at + timedelta(minutes=5) if outcome.retry_at else end
            elif outcome.ids:
                last = outcome.ids[-1]
            elif not ids:
                return  # the whole table is his


# ---------------------------------------------------------------------------------------- the gateway


@dataclass(frozen=True, slots=True)
class Layers:
    """Which of Sekisho's volume defences run (the row cap and the refusals always do)."""

    name: str
    quotas: bool
    on_alarm: bool


CONFIGURATIONS = (
    Layers("quotas + on_alarm", quotas=True, on_alarm=True),
    Layers("quotas only (on_alarm off)", quotas=True, on_alarm=False),
    Layers("on_alarm only (quotas off)", quotas=False, on_alarm=True),
    Layers("row cap only (neither)", quotas=False, on_alarm=False),
)


@dataclass(slots=True)
class Tally:
    """One person's statements in the month that a layer refused or cut."""

    refused: Counter[str] = field(default_factory=Counter)  # by rule
    cut: Counter[str] = field(default_factory=Counter)  # by what cut (row_cap, tightened, quota)


class Gateway:
    """The pure half of Sekisho for simulated sessions: decide, cap, charge quotas, observe, tighten.

    The order per statement is the gateway's: suspension, then the decision with the tightened
    permissions, then the quota (refused when a budget is spent, else cut at what remains), then
    quota usage and the statement event to the detector; alarms take effect from the next statement.
    """

    def __init__(self, policy: Policy, layers: Layers, customers: int, log: DrainLog) -> None:
        self.policy = policy
        self.layers = layers
        self.catalog = demo_catalog()
        self.detector = Detector(policy, table_rows={CUSTOMERS: customers})
        self.settings = policy.alarms if layers.on_alarm else dataclasses.replace(policy.alarms, on_alarm=())
        self.alarms: list[Alarm] = []
        self.tallies: dict[str, Tally] = {}
        self.seen: list[tuple[datetime, tuple[int, ...]]] = []  # the insider's customers, in the month
        self.log = log
        self._hint = elevation_hint(policy)
        self._permissions: dict[str, Permissions] = {}
        self._limits: dict[str, tuple[Limit, ...]] = {}
        self._counts: dict[tuple[str, str], dict[int, int]] = {}
        self._analyses: dict[str, Analysis] = {}
        self._decisions: dict[tuple[str, str, int | None], Allow | Deny] = {}
        self._live: dict[str, list[Alarm]] = {}  # per person, alarms whose on_alarm may still apply
        timed = [entry.duration for entry in self.settings.on_alarm if not entry.until_cleared]
        self._horizon = max(timed, default=timedelta(0))
        # Holds until cleared (on_alarm ``for: until_cleared``): nobody clears in the simulation.
        self.holds = Holds()
        self.held_since: dict[str, datetime] = {}
        self._counting = False  # the month has begun: tallies count

    def begin_month(self) -> None:
        self.tallies.clear()
        self._counting = True

    # ------------------------------------------------------------------ events

    def connect(self, person: Person, step: Connect) -> None:
        event = ConnectionEvent(step.at, person.user, person.address, "psql", True)
        self._raise(self.detector.observe_connection(event))

    def run(self, person: Person, query: Query) -> Outcome:
        user, at, spec = person.user, query.at, query.spec
        tightening = self._tightening(user, at)
        shape = fingerprint(spec.sql)
        analysis = self._analysis(spec.sql, shape)
        decision, retry_at = self._decide(user, analysis, shape, tightening)
        protected: frozenset[tuple[str, str]] = frozenset()
        pii: tuple[str, ...] = ()
        rows, cut, rule = 0, False, None
        if isinstance(decision, Allow):
            limits = self._limits_of(user)
            spent = self._spent(user, limits, decision.protected, at) if decision.protected else None
            if spent is not None:
                decision, retry_at = spent
            else:
                protected = decision.protected
                masks = (decision.mask, *decision.masks)
                pii = tuple(sorted({c.source for plan in masks if plan is not None for c in plan.columns}))
                rows = spec.result_rows
                if decision.row_cap is not None and rows > decision.row_cap:
                    rows, cut = decision.row_cap, True
                    tight = tightening is not None and tightening.max_rows == decision.row_cap
                    rule = "tightened" if tight else "row_cap"
                remaining = self._remaining(user, limits, protected, at) if protected else None
                if remaining is not None and rows > remaining[0]:
                    rows, cut, rule = remaining[0], True, f"quota: {remaining[1].describe()}"
        refusal = decision if isinstance(decision, Deny) else None
        ids = spec.ids[:rows]
        size = rows * spec.width
        if refusal is None:
            self._charge(user, at, rows if protected else 0, size, protected)
        else:
            rule = refusal.rule
        first = analysis.statements[0] if analysis.statements else None
        event = StatementEvent(
            at=at,
            user=user,
            session=query.session,
            address=person.address,
            application_name="psql",
            sql=spec.sql,
            fingerprint=shape,
            command=first.command if first is not None else "unknown",
            tables=tuple(sorted(".".join(t) for t in protected)),
            pii_columns=pii,
            allowed=refusal is None,
            rule=rule,
            sqlstate=refusal.sqlstate if refusal is not None else None,
            rows=rows,
            protected_rows=rows if protected else 0,
            bytes=size,
            cut=cut,
            duration=0.002 + rows * 0.00002,
            keys=tuple(str(i) for i in ids) if protected else (),  # every id: statements are capped
        )
        self._raise(self.detector.observe_statement(event))
        self._tally(user, refusal is None, rule, cut)
        if person.insider and ids and self._counting:
            self.seen.append((at, ids))
        if query.drain:
            status = "ok" if refusal is None and not cut else f"{'refused' if refusal else 'cut'}: {rule}"
            self.log.pages.append((at, rows, status))
        return Outcome(refusal is None, rows, ids, rule, cut, retry_at)

    # ------------------------------------------------------------------ decisions

    def _analysis(self, sql: str, shape: str) -> Analysis:
        analysis = self._analyses.get(shape)
        if analysis is None:
            analysis = analyze(sql, self.catalog)
            if analysis.cacheable:
                self._analyses[shape] = analysis
        return analysis

    def _decide(
        self, user: str, analysis: Analysis, shape: str, tightening: Tightening | None
    ) -> tuple[Allow | Deny, datetime | None]:
        if tightening is not None and tightening.suspend:
            return (
                Deny(
                    "suspended",
                    POLICY_REFUSED,
                    f"Sekisho suspended {user} until {tightening.describe_until()} after alarms; every "
                    "statement is refused until then",
                ),
                tightening.until,  # None (until cleared): he tries again the next day
            )
        cap = tightening.max_rows if tightening is not None else None
        key = (user, shape, cap)
        decision = self._decisions.get(key)
        if decision is None:
            permissions = self._permissions.get(user)
            if permissions is None:
                permissions = self._permissions[user] = permissions_for(self.policy, user)
            decision = evaluate(analysis, self.policy, tighten(permissions, tightening))
            self._decisions[key] = decision
        return decision, None

    def _tightening(self, user: str, at: datetime) -> Tightening | None:
        live = self._live.get(user)
        if not live and user not in self.held_since:
            return None
        if live:
            live[:] = [a for a in live if a.at + self._horizon > at]
        return tightening_for(user, live or (), self.settings, at, self.holds)

    # ------------------------------------------------------------------ quotas

    def _limits_of(self, user: str) -> tuple[Limit, ...]:
        limits = self._limits.get(user)
        if limits is None:
            quotas = permissions_for(self.policy, user).quotas if self.layers.quotas else ()
            limits = self._limits[user] = limits_of(quotas)
        return limits

    def _spent(
        self, user: str, limits: tuple[Limit, ...], protected: frozenset[tuple[str, str]], at: datetime
    ) -> tuple[Deny, datetime | None] | None:
        """The SK002 refusal when a row budget or a byte budget is used up, and when it frees up."""
        now = at.timestamp()
        for lim in (*row_limits(limits, protected), *byte_limits(limits)):
            counts = self._counts.get((user, lim.key), {})
            amount = used(counts, lim, now)
            if amount >= lim.budget:
                free = frees_at(counts, lim, now)
                usage = Usage(lim, amount, free)
                return exhausted(user, usage, self._hint), None if free is None else datetime.fromtimestamp(
                    free, UTC
                )
        return None

    def _remaining(
        self, user: str, limits: tuple[Limit, ...], protected: frozenset[tuple[str, str]], at: datetime
    ) -> tuple[int, Limit] | None:
        now = at.timestamp()
        left = [
            (lim.budget - used(self._counts.get((user, lim.key), {}), lim, now), lim)
            for lim in row_limits(limits, protected)
        ]
        return min(left, key=lambda pair: pair[0]) if left else None

    def _charge(
        self, user: str, at: datetime, rows: int, size: int, protected: frozenset[tuple[str, str]]
    ) -> None:
        """Count rows (of protected reads) and bytes in their buckets; report each window's use."""
        limits = self._limits_of(user)
        if not limits:
            return
        now = at.timestamp()
        charged = [(lim, rows) for lim in row_limits(limits, protected)] if protected else []
        charged += [(lim, size) for lim in byte_limits(limits)]
        for lim, amount in charged:
            if amount <= 0:
                continue
            counts = self._counts.setdefault((user, lim.key), {})
            index = lim.index(now)
            counts[index] = counts.get(index, 0) + amount
            if len(counts) > lim.buckets + 4:  # forget buckets that left the window
                first = index - lim.buckets + 1
                for old in [i for i in counts if i < first]:
                    del counts[old]
            usage = QuotaUsage(at, user, lim.window, lim.metric, used(counts, lim, now), lim.budget)
            self._raise(self.detector.observe_quota(usage))

    # ------------------------------------------------------------------ alarms and tallies

    def _raise(self, alarms: list[Alarm]) -> None:
        for alarm in alarms:
            self.alarms.append(alarm)
            if self.settings.on_alarm:
                self._live.setdefault(alarm.user, []).append(alarm)
                for user in self.holds.note([alarm], self.settings):
                    self.held_since.setdefault(user, alarm.at)

    def _tally(self, user: str, allowed: bool, rule: str | None, cut: bool) -> None:
        if not self._counting:
            return
        tally = self.tallies.setdefault(user, Tally())
        if not allowed:
            tally.refused[rule or "?"] += 1
        elif cut:
            tally.cut["quota" if rule and rule.startswith("quota") else rule or "?"] += 1


# ---------------------------------------------------------------------------------------- a run


@dataclass(frozen=True, slots=True)
class Scenario:
    days: int = 30
    people: int = 6  # ordinary people; the insider comes on top
    seed: int = 1
    warmup: int = 28  # days of ordinary work before the month (habits learned, as in a running gateway)
    start: date = date(2026, 10, 5)  # the month's first day (a Monday)
    customers: int = 100_000
    pace: float = 4.0  # drain pages per hour he aims at
    drain_start: int = 0  # the month's day his drain begins


def people_of(scenario: Scenario) -> list[Person]:
    names = [*_SURNAMES[: scenario.people]]
    names += [f"maint{i:02}" for i in range(len(names) + 1, scenario.people + 1)]
    people = [Person(name, f"{OFFICE}{20 + i}") for i, name in enumerate(names)]
    return [*people, Person(INSIDER, f"{OFFICE}{20 + len(names)}", insider=True)]


def with_people(policy: Policy, people: Sequence[Person], role: str) -> Policy:
    """The policy with the simulated people added under ``role`` (the detector ignores strangers)."""
    if role not in policy.roles:
        raise ValueError(f"the policy has no role {role!r}")
    users = {**policy.users, **{p.user: User(p.user, (role,)) for p in people}}
    return dataclasses.replace(policy, users=users)


@dataclass(slots=True)
class Run:
    layers: Layers
    alarms: list[Alarm]
    tallies: dict[str, Tally]
    log: DrainLog
    month_start: datetime  # UTC
    drain_days: list[date]
    seen: list[tuple[datetime, tuple[int, ...]]]  # customers that reached the insider in the month
    statements: int
    seconds: float
    held_since: dict[str, datetime] = field(default_factory=dict)  # held until cleared, from (UTC)


def simulate(scenario: Scenario, policy: Policy, layers: Layers, role: str = "maintenance") -> Run:
    """One month (after the warm-up) under ``policy`` with ``layers``; deterministic for a scenario."""
    began = time.perf_counter()
    people = people_of(scenario)
    policy = with_people(policy, people, role)
    first = scenario.start - timedelta(days=scenario.warmup)
    days = [first + timedelta(days=i) for i in range(scenario.warmup + scenario.days)]
    drain_days = days[scenario.warmup + scenario.drain_start :]
    log = DrainLog()
    gateway = Gateway(policy, layers, scenario.customers, log)
    actors: list[tuple[Person, Actor]] = [(p, ordinary(p, scenario, days)) for p in people]
    insider = people[-1]
    actors.append((insider, drain(insider, scenario, drain_days, log)))
    month_start = _utc(datetime.combine(scenario.start, clock(0), JST))
    # One pending step per actor, earliest first (actor index breaks ties, so runs are reproducible).
    queue: list[tuple[datetime, int, Step]] = []
    for index, (_, actor) in enumerate(actors):
        step = next(actor, None)
        if step is not None:
            heapq.heappush(queue, (step.at, index, step))
    statements = 0
    started = False
    while queue:
        at, index, step = heapq.heappop(queue)
        if not started and at >= month_start:
            gateway.begin_month()
            started = True
        person, actor = actors[index]
        outcome: Outcome | None = None
        if isinstance(step, Connect):
            gateway.connect(person, step)
        else:
            outcome = gateway.run(person, step)
            statements += 1
        try:
            step = actor.send(outcome)
        except StopIteration:
            continue
        heapq.heappush(queue, (step.at, index, step))
    return Run(
        layers,
        gateway.alarms,
        gateway.tallies,
        log,
        month_start,
        [d for d in drain_days if d in log.planned],
        gateway.seen,
        statements,
        time.perf_counter() - began,
        dict(gateway.held_since),
    )


# ---------------------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class Figures:
    """What one run says about the insider and about everyone else."""

    layers: str
    drain_start: datetime | None  # his first page (UTC)
    rows_before_stop: int
    distinct_before_stop: int  # customers his drain and his ordinary reads reached before the stop
    rows_total: int  # his drain's rows over the whole month
    stopped_at: datetime | None  # None: not stopped within the month
    stopped_by: str | None
    held_days: tuple[int, int]  # working days from the stop's on which he stayed stopped, of all
    first_alarm: Alarm | None  # on him, from the drain's start
    first_high: Alarm | None
    insider_alarms: dict[str, int]  # "severity rule" -> count, from the drain's start
    ordinary_alarms: dict[str, int]  # "severity rule" -> count, in the month, everyone but him
    ordinary_by_severity: dict[str, int]
    warmup_alarms: int  # on anyone, before the month (learning: first_access and the like)
    held_from: datetime | None  # when he was suspended until cleared (nobody clears: he stays held)
    rows_before_hold: int  # his drain's rows before that (all of them if never held)
    ordinary_held: int  # ordinary people suspended until cleared (warm-up included): false holds
    collateral: dict[str, int]  # ordinary people's statements refused or cut by a quota or an alarm
    curve: list[tuple[float, int]]  # (days since the month began, his drain's cumulative rows)
    markers: list[tuple[float, int, str, str]]  # (days, cumulative rows, severity, rule) of alarms on him
    statements: int
    seconds: float

    @property
    def hours_to_stop(self) -> float | None:
        if self.stopped_at is None or self.drain_start is None:
            return None
        return (self.stopped_at - self.drain_start).total_seconds() / 3600

    @property
    def hours_to_hold(self) -> float | None:
        if self.held_from is None or self.drain_start is None:
            return None
        return (self.held_from - self.drain_start).total_seconds() / 3600

    def hours_to(self, alarm: Alarm | None) -> float | None:
        if alarm is None or self.drain_start is None:
            return None
        return (alarm.at - self.drain_start).total_seconds() / 3600

    def to_dict(self) -> dict[str, object]:
        def alarm(a: Alarm | None) -> dict[str, object] | None:
            if a is None:
                return None
            return {
                "at": a.at.isoformat(),
                "hours": round(self.hours_to(a) or 0, 2),
                "rule": a.rule,
                "severity": a.severity,
            }

        return {
            "layers": self.layers,
            "drain_start": self.drain_start.isoformat() if self.drain_start else None,
            "rows_before_stop": self.rows_before_stop,
            "distinct_before_stop": self.distinct_before_stop,
            "rows_total": self.rows_total,
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "hours_to_stop": round(self.hours_to_stop, 2) if self.hours_to_stop is not None else None,
            "stopped_by": self.stopped_by,
            "held_days": list(self.held_days),
            "first_alarm": alarm(self.first_alarm),
            "first_high_alarm": alarm(self.first_high),
            "insider_alarms": self.insider_alarms,
            "ordinary_alarms": self.ordinary_alarms,
            "ordinary_alarms_by_severity": self.ordinary_by_severity,
            "warmup_alarms": self.warmup_alarms,
            "held_from": self.held_from.isoformat() if self.held_from else None,
            "hours_to_hold": round(self.hours_to_hold, 2) if self.hours_to_hold is not None else None,
            "rows_before_hold": self.rows_before_hold,
            "ordinary_held": self.ordinary_held,
            "collateral": self.collateral,
            "statements": self.statements,
            "seconds": round(self.seconds, 2),
        }


def _local_day(moment: datetime) -> date:
    return moment.astimezone(JST).date()


def _stopped_day(run: Run, day: date, got: Counter[date]) -> bool:
    planned = run.log.planned.get(day, 0)
    return planned > 0 and got[day] <= STALL_SHARE * PAGE * planned


def stop_of(run: Run) -> tuple[datetime, str] | None:
    """When the insider was first stopped, and how (the module docstring's definition)."""
    pages = sorted(run.log.pages)
    got: Counter[date] = Counter()
    for at, rows, _ in pages:
        got[_local_day(at)] += rows
    found: list[tuple[datetime, int, str]] = []  # when, precedence at the same moment, how
    for i, (at, _, status) in enumerate(pages):
        if status == "refused: suspended":
            found.append((at, 0, "suspended"))
            break
        day = _local_day(at)
        if status == "refused: quota" and not any(r for t, r, _ in pages[i + 1 :] if _local_day(t) == day):
            found.append((at, 1, "quota-refused for the rest of the day"))
            break
    for day in run.drain_days:
        if _stopped_day(run, day, got):
            hindered = [(at, status) for at, _, status in pages if _local_day(at) == day and status != "ok"]
            at, status = hindered[0] if hindered else (_utc(datetime.combine(day, clock(0), JST)), "no page")
            found.append((at, 2, f"drain at most {STALL_SHARE:.0%} of plan ({status})"))
            break
    if not found:
        return None
    at, _, how = min(found)
    return at, how


def figures(run: Run) -> Figures:
    """The report's figures from one run."""
    pages = sorted(run.log.pages)
    start = pages[0][0] if pages else None
    stop = stop_of(run)
    stop_at = stop[0] if stop else None
    held_from = run.held_since.get(INSIDER)
    rows_before = sum(rows for at, rows, _ in pages if stop_at is None or at < stop_at)
    seen: set[int] = set()
    for at, ids in run.seen:
        if stop_at is None or at < stop_at:
            seen.update(ids)
    got: Counter[date] = Counter()
    for at, rows, _ in pages:
        got[_local_day(at)] += rows
    later = [d for d in run.drain_days if stop_at is not None and d >= _local_day(stop_at)]
    held = sum(1 for d in later if _stopped_day(run, d, got))
    on_him = [a for a in run.alarms if a.user == INSIDER and start is not None and a.at >= start]
    first_alarm = on_him[0] if on_him else None
    first_high = next((a for a in on_him if a.at_least("high")), None)
    others = [a for a in run.alarms if a.user != INSIDER and a.at >= run.month_start]
    by_severity = Counter(a.severity for a in others)
    collateral: Counter[str] = Counter()
    for user, tally in run.tallies.items():
        if user == INSIDER:
            continue
        for rule, n in tally.refused.items():
            if rule in ("quota", "suspended"):
                collateral[f"refused: {rule}"] += n
        for rule, n in tally.cut.items():
            if rule in ("quota", "tightened"):
                collateral[f"cut: {rule}"] += n
    curve: list[tuple[float, int]] = [(0.0, 0)]
    total = 0
    for at, rows, _ in pages:
        total += rows
        curve.append(((at - run.month_start).total_seconds() / 86400, total))
    times = [t for t, _ in curve]
    markers = []
    for a in on_him:
        if severity_rank(a.severity) < severity_rank("medium"):
            continue
        x = (a.at - run.month_start).total_seconds() / 86400
        y = curve[max(bisect.bisect_right(times, x) - 1, 0)][1]
        markers.append((x, y, a.severity, a.rule))
    return Figures(
        layers=run.layers.name,
        drain_start=start,
        rows_before_stop=rows_before,
        distinct_before_stop=len(seen),
        rows_total=total,
        stopped_at=stop_at,
        stopped_by=stop[1] if stop else None,
        held_days=(held, len(later)),
        first_alarm=first_alarm,
        first_high=first_high,
        insider_alarms=dict(sorted(Counter(f"{a.severity} {a.rule}" for a in on_him).items())),
        ordinary_alarms=dict(sorted(Counter(f"{a.severity} {a.rule}" for a in others).items())),
        ordinary_by_severity={s: by_severity.get(s, 0) for s in SEVERITIES},
        warmup_alarms=sum(1 for a in run.alarms if a.at < run.month_start),
        held_from=held_from,
        rows_before_hold=sum(rows for at, rows, _ in pages if held_from is None or at < held_from),
        ordinary_held=sum(1 for user in run.held_since if user != INSIDER),
        collateral=dict(sorted(collateral.items())),
        curve=curve,
        markers=markers,
        statements=run.statements,
        seconds=run.seconds,
    )


# ---------------------------------------------------------------------------------------- output

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#7f7f7f")
_DASHES = (None, "7 4", "2 3", "10 4 2 4")
_SHAPES = {"medium": "circle", "high": "triangle", "critical": "diamond"}


def _days(moment: datetime, scenario: Scenario) -> float:
    return (moment - _utc(datetime.combine(scenario.start, clock(0), JST))).total_seconds() / 86400


def plot(results: Sequence[Figures], scenario: Scenario, policy_name: str) -> str:
    """Cumulative drained rows per configuration, with the alarms on him (medium and up) and the stop."""
    series = [
        Series(fig.layers, fig.curve, _COLORS[i % len(_COLORS)], _DASHES[i % len(_DASHES)])
        for i, fig in enumerate(results)
    ]
    markers = []
    for i, fig in reversed(list(enumerate(results))):  # the first configuration's markers on top
        color = _COLORS[i % len(_COLORS)]
        for x, y, severity, rule in fig.markers:
            markers.append(
                Marker(x, y, color, _SHAPES.get(severity, "circle"), f"{fig.layers}: {severity} {rule}")
            )
        if fig.stopped_at is not None:
            title = f"{fig.layers}: stopped ({fig.stopped_by})"
            markers.append(
                Marker(_days(fig.stopped_at, scenario), fig.rows_before_stop, color, "square", title)
            )
    legend = [
        Legend("medium alarm on him", "#444", "circle"),
        Legend("high alarm on him", "#444", "triangle"),
        Legend("critical alarm on him", "#444", "diamond"),
        Legend("first stopped", "#444", "square"),
    ]
    return line_chart(
        series,
        markers,
        title="Insider drain through Sekisho: customer rows obtained, by the layers enforced",
        x_label=f"days since {scenario.start} (Japan time); the drain starts on day {scenario.drain_start}",
        y_label="rows of customers drained (cumulative)",
        legend=[*legend, Legend("weekend (grey band)", "#dddddd", "square")],
        bands=[
            (float(d), float(d + 1))
            for d in range(scenario.days)
            if (scenario.start + timedelta(days=d)).weekday() >= 5
        ],
        x_max=float(scenario.days),
        notes=[
            f"{policy_name}; {scenario.people} ordinary maintenance people + 1 insider; {scenario.days} days "
            f"after {scenario.warmup} days of warm-up; seed {scenario.seed}",
            f"insider: keyset pages of {PAGE} rows, ~{scenario.pace:g}/h at random in working hours, at most "
            f"{int(DARE * BELIEVED_PER_HOUR / PAGE)} an hour and {int(DARE * BELIEVED_PER_DAY / PAGE)} a day",
        ],
    )


def _after(fig: Figures, alarm: Alarm | None) -> str:
    hours = fig.hours_to(alarm)
    if alarm is None or hours is None:
        return "none"
    return f"{_duration(hours)}: {alarm.rule} ({alarm.severity})"


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: columns padded to their widest cell, a rule under the header."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("-+-".join("-" * w for w in widths))
    out.extend(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return out


def table(results: Sequence[Figures], scenario: Scenario, policy_name: str) -> str:
    """The printed report: one line per configuration, then the alarms and side effects of each."""
    lines = [
        f"Insider simulation: {policy_name}; {scenario.people} ordinary maintenance people + 1 insider; "
        f"{scenario.days} days from {scenario.start} after {scenario.warmup} days of warm-up; "
        f"seed {scenario.seed}.",
    ]
    head = results[0].drain_start if results else None
    if head is not None:
        lines.append(
            f"Drain from {head.astimezone(JST):%Y-%m-%d %H:%M} JST: keyset pages of {PAGE} rows, "
            f"~{scenario.pace:g}/h in working hours. Stopped: the first of a suspension, a quota refusal "
            f"for the rest of a day, or a day whose drain got at most {STALL_SHARE:.0%} of its plan."
        )
    lines.append("")
    header = (
        "configuration",
        "rows before stop",
        "distinct",
        "stopped after",
        "days held",
        "rows in month",
        "first alarm on him after",
        "first high+ alarm after",
    )
    rows = []
    for fig in results:
        hours = fig.hours_to_stop
        stop = "not stopped" if hours is None else f"{_duration(hours)}: {fig.stopped_by}"
        rows.append(
            (
                fig.layers,
                f"{fig.rows_before_stop:,}",
                f"{fig.distinct_before_stop:,}",
                stop,
                f"{fig.held_days[0]}/{fig.held_days[1]}" if fig.stopped_at else "-",
                f"{fig.rows_total:,}",
                _after(fig, fig.first_alarm),
                _after(fig, fig.first_high),
            )
        )
    lines.extend(_grid(header, rows))
    lines.append("")
    lines.append(
        "(distinct: customers that reached him before the stop, his ordinary reads included; days held: "
        "working days from the stop's on which his drain stayed at most "
        f"{STALL_SHARE:.0%} of plan)"
    )
    for fig in results:
        lines.append("")
        lines.append(f"{fig.layers}:")
        on_him = ", ".join(f"{k} x{n}" for k, n in fig.insider_alarms.items()) or "none"
        lines.append(f"  alarms on him from the drain's start: {on_him}")
        hold = fig.hours_to_hold
        lines.append(
            "  suspended until cleared: "
            + (
                "not him"
                if hold is None
                else f"him, {_duration(hold)} after his first page, after {fig.rows_before_hold:,} drained "
                "rows (nobody clears in the simulation: he stays held)"
            )
            + f"; ordinary people: {fig.ordinary_held}"
        )
        severities = ", ".join(f"{s} {n}" for s, n in fig.ordinary_by_severity.items())
        rules = ", ".join(f"{k} x{n}" for k, n in fig.ordinary_alarms.items()) or "none"
        lines.append(f"  false alarms on ordinary people in the month: {severities} ({rules})")
        collateral = ", ".join(f"{k} x{n}" for k, n in fig.collateral.items()) or "none"
        lines.append(
            f"  ordinary statements refused or cut by a quota or an alarm: {collateral}; "
            f"alarms in the warm-up: {fig.warmup_alarms}; {fig.statements:,} statements simulated "
            f"in {fig.seconds:.1f} s"
        )
    return "\n".join(lines)


def spread(runs: Sequence[Sequence[Figures]], seeds: Sequence[int]) -> str:
    """Across seeds, per configuration: the median and range of the headline figures."""

    def summary(values: Sequence[float], show: str = "{:,.0f}") -> str:
        if not values:
            return "-"
        middle, low, high = statistics.median(values), min(values), max(values)
        return f"{show.format(middle)} ({show.format(low)}-{show.format(high)})"

    header = (
        "configuration",
        "rows before stop",
        "stopped",
        "days to stop",
        "rows in month",
        "hours to 1st alarm",
        "ordinary alarms high+ / all",
        "ordinary cut+refused",
        "held until cleared: him (days) / ordinary",
    )
    rows = []
    for i, layers in enumerate(CONFIGURATIONS):
        figs = [run[i] for run in runs]
        stops = [f.hours_to_stop / 24 for f in figs if f.hours_to_stop is not None]
        firsts = [h for f in figs if (h := f.hours_to(f.first_alarm)) is not None]
        high = [f.ordinary_by_severity["high"] + f.ordinary_by_severity["critical"] for f in figs]
        every = [sum(f.ordinary_by_severity.values()) for f in figs]
        holds = [h / 24 for f in figs if (h := f.hours_to_hold) is not None]
        ordinary_held = sum(f.ordinary_held for f in figs)
        rows.append(
            (
                layers.name,
                summary([f.rows_before_stop for f in figs]),
                f"{len(stops)} of {len(figs)}",
                summary(stops, "{:.1f}"),
                summary([f.rows_total for f in figs]),
                summary(firsts, "{:.1f}"),
                f"{summary(high)} / {summary(every)}",
                summary([sum(f.collateral.values()) for f in figs]),
                f"{len(holds)} of {len(figs)} ({summary(holds, '{:.1f}')}) / {ordinary_held}",
            )
        )
    lines = [f"Across seeds {seeds[0]}-{seeds[-1]}: median (min-max)", "", *_grid(header, rows)]
    rules: Counter[str] = Counter()
    for run in runs:
        rules.update(run[0].ordinary_alarms)
    lines.append("")
    lines.append(
        f"False alarms on ordinary people, all seeds, {CONFIGURATIONS[0].name}: "
        + (", ".join(f"{k} x{n}" for k, n in sorted(rules.items())) or "none")
    )
    return "\n".join(lines)


def _one(scenario: Scenario, policy_text: str, source: str, role: str) -> list[Figures]:
    policy = load_policy(policy_text, source)
    return [figures(simulate(scenario, policy, layers, role)) for layers in CONFIGURATIONS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.insider", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days in the simulated month (default 30)")
    parser.add_argument(
        "--people", type=int, default=6, help="ordinary maintenance people (the insider is extra)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--seeds", type=int, default=1, help="run this many seeds from --seed and show the spread"
    )
    parser.add_argument("--policy", type=Path, default=Path("policies/demo.yaml"))
    parser.add_argument("--role", default="maintenance", help="the policy role everyone simulated has")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--warmup", type=int, default=28, help="days of ordinary work before the month")
    parser.add_argument(
        "--start", type=date.fromisoformat, default=date(2026, 10, 5), help="the month's first day"
    )
    parser.add_argument(
        "--customers", type=int, default=100_000, help="rows of customers (the demo's 100,000)"
    )
    parser.add_argument("--pace", type=float, default=4.0, help="drain pages per hour he aims at")
    parser.add_argument(
        "--drain-start", type=int, default=0, help="the month's day (from 0) his drain begins"
    )
    args = parser.parse_args(argv)
    scenarios = [
        Scenario(
            days=args.days,
            people=args.people,
            seed=args.seed + i,
            warmup=args.warmup,
            start=args.start,
            customers=args.customers,
            pace=args.pace,
            drain_start=args.drain_start,
        )
        for i in range(max(args.seeds, 1))
    ]
    text = args.policy.read_text()
    load_policy(text, str(args.policy))  # a policy problem is reported before any work
    jobs = [(sc, text, str(args.policy), args.role) for sc in scenarios]
    if len(jobs) > 1:
        # Seeds are independent: spread them over the cores (each run is deterministic either way).
        with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
            runs = list(pool.map(_one, *zip(*jobs, strict=True)))
    else:
        runs = [_one(*jobs[0])]
    scenario, results = scenarios[0], runs[0]
    print(table(results, scenario, str(args.policy)))
    if len(runs) > 1:
        print()
        print(spread(runs, [sc.seed for sc in scenarios]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "insider.svg").write_text(plot(results, scenario, str(args.policy)))
    report = {
        "policy": str(args.policy),
        "runs": [
            {
                "scenario": {k: str(v) for k, v in dataclasses.asdict(sc).items()},
                "results": [fig.to_dict() for fig in figs],
            }
            for sc, figs in zip(scenarios, runs, strict=True)
        ],
    }
    (args.out / "insider.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out / 'insider.svg'} (seed {scenario.seed}) and {args.out / 'insider.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
