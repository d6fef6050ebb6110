"""Detection rules: each fires on the sequence it is about, and stays quiet on ordinary work."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from pglast.parser import normalize

from policy.detect import (
    Alarm,
    Clearance,
    ClearanceRefused,
    Detector,
    Holds,
    HyperLogLog,
    QuotaUsage,
    Tightening,
    tighten,
    tightening_for,
)
from policy.detect.coverage import Coverage
from policy.detect.paging import literal_values, shape_of
from policy.detect.repeated import Repeated
from policy.detect.volume import VolumeBaseline
from policy.events import ConnectionEvent, StatementEvent
from policy.loader import load_policy
from policy.model import (
    Access,
    AlarmSettings,
    OnAlarm,
    PagingAlarms,
    Policy,
    ProbingAlarms,
    RepeatedAlarms,
    Role,
    TimeWindow,
    User,
)
from policy.permissions import permissions_for

# Monday 1 April 2024, 10:00 in Tokyo.
T0 = datetime(2024, 4, 1, 1, 0, tzinfo=UTC)
CUSTOMERS = "public.customers"
ORDERS = "public.orders"


def stmt(at: datetime, sql: str, **changes: Any) -> StatementEvent:
    """A statement event as the gateway emits it: the fingerprint is PostgreSQL's normalized text."""
    fields: dict[str, Any] = {
        "at": at,
        "user": "maint",
        "session": "s1",
        "address": "10.0.0.5",
        "application_name": "psql",
        "sql": sql,
        "fingerprint": normalize(sql),
        "command": sql.split(maxsplit=1)[0].lower(),
        "tables": (CUSTOMERS,),
    }
    fields.update(changes)
    if "rows" in changes and "protected_rows" not in changes and fields["tables"]:
        fields["protected_rows"] = changes["rows"]
    return StatementEvent(**fields)


def connect(at: datetime, **changes: Any) -> ConnectionEvent:
    fields: dict[str, Any] = {
        "at": at,
        "user": "maint",
        "address": "10.0.0.5",
        "application_name": "psql",
        "accepted": True,
    }
    fields.update(changes)
    return ConnectionEvent(**fields)


def quiet(settings: AlarmSettings | None = None, **sections: Any) -> AlarmSettings:
    """Settings with only the named rule families on, so a test sees its own rule's alarms."""
    base = settings or AlarmSettings()
    off = {
        name: dataclasses.replace(getattr(base, name), enabled=False)
        for name in (
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
        )
        if name not in sections
    }
    on = {name: value if value is not None else getattr(base, name) for name, value in sections.items()}
    return dataclasses.replace(base, **off, **on)


def feed(detector: Detector, events: Iterable[StatementEvent | ConnectionEvent | QuotaUsage]) -> list[Alarm]:
    out: list[Alarm] = []
    for ev in events:
        if isinstance(ev, StatementEvent):
            out += detector.observe_statement(ev)
        elif isinstance(ev, ConnectionEvent):
            out += detector.observe_connection(ev)
        else:
            out += detector.observe_quota(ev)
    return out


def rules(alarms: Iterable[Alarm]) -> list[str]:
    return [a.rule for a in alarms]


# ---------------------------------------------------------------------------- quota thresholds


def usage(at: datetime, used: int, *, budget: int = 1000, table: str | None = CUSTOMERS) -> QuotaUsage:
    return QuotaUsage(at=at, user="maint", window=3600, metric="rows", used=used, budget=budget, table=table)


def test_quota_levels_are_raised_once_each_as_they_are_crossed() -> None:
    detector = Detector(settings=quiet(quota=None))
    seen = [
        detector.observe_quota(usage(T0 + timedelta(minutes=i), used)) for i, used in enumerate([500, 850])
    ]
    assert seen[0] == []
    [medium] = seen[1]
    assert (medium.rule, medium.severity, medium.user) == ("quota_threshold", "medium", "maint")
    assert medium.evidence["percent"] == 85.0
    assert medium.evidence["table"] == CUSTOMERS
    assert "85%" in medium.summary
    assert detector.observe_quota(usage(T0 + timedelta(minutes=3), 900)) == []
    [high] = detector.observe_quota(usage(T0 + timedelta(minutes=4), 1000))
    assert high.severity == "high"
    assert detector.observe_quota(usage(T0 + timedelta(minutes=5), 1000)) == []


def test_a_jump_over_several_quota_levels_raises_the_highest_only() -> None:
    detector = Detector(settings=quiet(quota=None))
    alarms = detector.observe_quota(usage(T0, 1200, table=None))
    assert [(a.severity, a.evidence["level"]) for a in alarms] == [("high", 100.0)]
    assert "all protected tables" in alarms[0].summary


def test_quota_levels_are_raised_again_after_the_window_rolls_below_them() -> None:
    detector = Detector(settings=quiet(quota=None))
    assert rules(detector.observe_quota(usage(T0, 850))) == ["quota_threshold"]
    detector.observe_quota(usage(T0 + timedelta(minutes=30), 100))  # the rolling window moved on
    # Crossed again, but within the dedup period (1h) of the first alarm: not raised again.
    assert detector.observe_quota(usage(T0 + timedelta(minutes=40), 850)) == []
    detector.observe_quota(usage(T0 + timedelta(minutes=90), 100))
    assert rules(detector.observe_quota(usage(T0 + timedelta(minutes=120), 850))) == ["quota_threshold"]


def test_quota_windows_are_told_apart_by_table_metric_and_window() -> None:
    detector = Detector(settings=quiet(quota=None))
    assert len(detector.observe_quota(usage(T0, 850, table=CUSTOMERS))) == 1
    assert len(detector.observe_quota(usage(T0, 850, table=ORDERS))) == 1
    bytes_usage = dataclasses.replace(usage(T0, 850), metric="bytes")
    assert len(detector.observe_quota(bytes_usage)) == 1
    assert detector.observe_quota(usage(T0, 5, budget=0)) == []  # no budget: nothing to measure


# ---------------------------------------------------------------------------- volume baseline


def working_days(start: datetime, days: int, rows: Iterator[int]) -> Iterator[StatementEvent]:
    """One statement a working day at 10:00 Tokyo, reading ``next(rows)`` protected rows."""
    for day in range(days):
        yield stmt(
            start + timedelta(days=day), "SELECT id, name FROM customers WHERE id = 5", rows=next(rows)
        )


def test_a_day_far_above_the_learned_volume_raises_one_alarm() -> None:
    detector = Detector(settings=quiet(volume=None, timezone="Asia/Tokyo"))
    rng = random.Random(5)
    alarms = feed(detector, working_days(T0, 20, iter(lambda: rng.randint(300, 700), None)))
    assert alarms == []
    baseline = detector.state("maint", VolumeBaseline)
    assert baseline is not None
    assert 400 < baseline.mean < 600
    day21 = T0 + timedelta(days=20)
    assert detector.observe_statement(stmt(day21, "SELECT 1", rows=900)) == []  # an ordinary busy morning
    [alarm] = detector.observe_statement(stmt(day21 + timedelta(hours=1), "SELECT 1", rows=2000))
    assert (alarm.rule, alarm.severity) == ("volume_baseline", "high")
    assert alarm.evidence["today_rows"] == 2900
    assert alarm.evidence["day"] == "2024-04-21"
    assert alarm.key == "2024-04-21"
    # Once per day, however much more is read.
    assert detector.observe_statement(stmt(day21 + timedelta(hours=3), "SELECT 1", rows=5000)) == []
    # The next day starts afresh against a baseline that the bad day did not inflate much.
    assert baseline.mean < 1000
    assert detector.observe_statement(stmt(day21 + timedelta(days=1), "SELECT 1", rows=600)) == []


def test_a_streak_of_drain_days_keeps_alarming() -> None:
    """An alarmed day is not learned: day after day of a drain stays far above the baseline."""
    detector = Detector(settings=quiet(volume=None, timezone="Asia/Tokyo"))
    feed(detector, working_days(T0, 20, iter([500] * 20)))
    baseline = detector.state("maint", VolumeBaseline)
    assert baseline is not None
    learned = (baseline.mean, baseline.deviation)
    drain = T0 + timedelta(days=20)
    alarmed = feed(detector, working_days(drain, 10, iter([3000] * 10)))
    assert rules(alarmed) == ["volume_baseline"] * 10
    assert [a.key for a in alarmed] == [(drain + timedelta(days=d)).date().isoformat() for d in range(10)]
    assert (baseline.mean, baseline.deviation) == learned
    # An ordinary day after the streak is learned again, and is not an alarm.
    after = T0 + timedelta(days=30)
    assert detector.observe_statement(stmt(after, "SELECT 1", rows=700)) == []
    detector.observe_statement(stmt(after + timedelta(days=1), "SELECT 1", rows=1))
    assert baseline.mean > learned[0]


def test_no_volume_alarm_while_learning_or_below_the_floor() -> None:
    detector = Detector(settings=quiet(volume=None))
    # A huge day inside the learning period is learned, not alarmed.
    alarms = feed(detector, working_days(T0, 10, iter([100] * 5 + [50_000] + [100] * 10)))
    assert alarms == []
    # Tiny baselines: ten times a day of 10 rows is still below min_rows (1000).
    small = Detector(settings=quiet(volume=None))
    feed(small, working_days(T0, 20, iter([10] * 20)))
    assert small.observe_statement(stmt(T0 + timedelta(days=20), "SELECT 1", rows=900)) == []


def test_days_without_activity_do_not_count_towards_learning() -> None:
    detector = Detector(settings=quiet(volume=None))
    # Fourteen active days spread over seven weeks: learned on the 15th active day, not by the calendar.
    events = [stmt(T0 + timedelta(days=3 * d), "SELECT 1", rows=100) for d in range(13)]
    feed(detector, events)
    assert detector.active_days("maint") == 12
    assert detector.observe_statement(stmt(T0 + timedelta(days=40), "SELECT 1", rows=10_000)) == []
    assert detector.active_days("maint") == 13


# ---------------------------------------------------------------------------- hours


def hours_policy() -> Policy:
    window = TimeWindow(days=frozenset(range(1, 6)), start=time(9), end=time(18), timezone="Asia/Tokyo")
    return Policy(
        roles={"maintenance": Role(name="maintenance", access=Access(hours=(window,)))},
        users={"maint": User(name="maint", roles=("maintenance",))},
        tables={},
        alarms=quiet(hours=None, timezone="Asia/Tokyo"),
    )


def test_statements_after_the_allowed_hours_raise_an_alarm() -> None:
    detector = Detector(hours_policy())
    assert detector.observe_statement(stmt(T0, "SELECT 1")) == []  # 10:00 Tokyo, Monday
    late = T0 + timedelta(hours=9, minutes=30)  # 19:30 Tokyo: the session opened at 10:00 is still working
    [alarm] = detector.observe_statement(stmt(late, "SELECT 1"))
    assert (alarm.rule, alarm.severity) == ("outside_allowed_hours", "high")
    assert "19:30" in alarm.summary
    assert detector.observe_statement(stmt(late + timedelta(hours=2), "SELECT 1")) == []  # once a day


def test_refused_connections_outside_the_hours_raise_a_lower_alarm() -> None:
    detector = Detector(hours_policy())
    saturday = T0 + timedelta(days=5)
    [alarm] = detector.observe_connection(connect(saturday, accepted=False, reason="outside hours"))
    assert (alarm.rule, alarm.severity) == ("outside_allowed_hours", "medium")
    assert alarm.evidence["reason"] == "outside hours"
    assert detector.observe_connection(connect(saturday, accepted=False)) == []  # once a day
    # A session that does get to work on the same day is its own, higher alarm.
    [worked] = detector.observe_statement(stmt(saturday + timedelta(hours=1), "SELECT 1"))
    assert (worked.rule, worked.severity) == ("outside_allowed_hours", "high")


def test_unusual_hours_are_learned() -> None:
    detector = Detector(settings=quiet(hours=None, timezone="Asia/Tokyo"))
    day_work = [
        stmt(T0 + timedelta(days=d, hours=h), "SELECT 1")  # 10:00 to 16:00 Tokyo
        for d in range(20)
        for h in range(7)
    ]
    assert feed(detector, day_work) == []
    assert detector.observe_statement(stmt(T0 + timedelta(days=20, hours=7), "SELECT 1")) == []  # 17:00
    night = T0 + timedelta(days=20, hours=17)  # 03:00 Tokyo
    [alarm] = detector.observe_statement(stmt(night, "SELECT 1"))
    assert (alarm.rule, alarm.severity) == ("unusual_hours", "low")
    assert alarm.evidence["hour"] == 3
    assert alarm.evidence["usual_hours"] == list(range(10, 18))  # 17:00 once, of 20 days: 5%


def test_no_unusual_hours_while_learning() -> None:
    detector = Detector(settings=quiet(hours=None, timezone="Asia/Tokyo"))
    events = [stmt(T0 + timedelta(days=d, hours=-8 if d == 5 else 0), "SELECT 1") for d in range(10)]
    assert feed(detector, events) == []


# ---------------------------------------------------------------------------- new address


def test_a_new_network_after_learning_raises_an_alarm() -> None:
    detector = Detector(settings=quiet(new_address=None))
    assert feed(detector, [connect(T0 + timedelta(days=d)) for d in range(20)]) == []
    later = T0 + timedelta(days=20)
    assert detector.observe_connection(connect(later, address="10.0.0.77")) == []  # same /24
    [alarm] = detector.observe_connection(connect(later, address="203.0.113.9"))
    assert (alarm.rule, alarm.severity, alarm.key) == ("new_address", "medium", "203.0.113.0/24")
    assert alarm.evidence["known_networks"] == ["10.0.0.0/24"]
    assert detector.observe_statement(stmt(later, "SELECT 1", address="203.0.113.9")) == []
    # A refused connection is not the person working from there.
    assert detector.observe_connection(connect(later, address="198.51.100.1", accepted=False)) == []


def test_new_networks_while_learning_are_remembered_quietly() -> None:
    detector = Detector(settings=quiet(new_address=None))
    events = [
        connect(T0 + timedelta(days=d), address=f"192.0.2.{d}" if d < 3 else "10.0.0.5") for d in range(20)
    ]
    assert feed(detector, events) == []
    assert detector.observe_connection(connect(T0 + timedelta(days=21), address="192.0.2.200")) == []


# ---------------------------------------------------------------------------- first access


def test_first_access_to_each_protected_table() -> None:
    detector = Detector(settings=quiet(first_access=None))
    [alarm] = detector.observe_statement(stmt(T0, "SELECT id FROM customers WHERE id = 1", rows=1))
    assert (alarm.rule, alarm.severity, alarm.key) == ("first_access", "low", CUSTOMERS)
    assert detector.observe_statement(stmt(T0 + timedelta(days=30), "SELECT id FROM customers")) == []
    refused = stmt(T0, "COPY orders TO STDOUT", tables=(ORDERS,), allowed=False, rule="copy_protected")
    assert detector.observe_statement(refused) == []
    assert detector.observe_statement(stmt(T0, "SELECT 1", tables=())) == []
    assert rules(detector.observe_statement(stmt(T0, "SELECT id FROM orders", tables=(ORDERS,)))) == [
        "first_access"
    ]


# ---------------------------------------------------------------------------- probing


def refused(at: datetime, rule: str = "copy_protected") -> StatementEvent:
    return stmt(at, "COPY customers TO STDOUT", allowed=False, rule=rule, sqlstate="42501")


def test_repeated_refusals_in_a_short_time_are_probing() -> None:
    detector = Detector(settings=quiet(probing=None))
    first = [
        refused(T0 + timedelta(minutes=i), rule)
        for i, rule in enumerate(["copy_protected"] * 2 + ["pii_inference"] * 2)
    ]
    assert feed(detector, first) == []
    [alarm] = detector.observe_connection(
        connect(T0 + timedelta(minutes=5), accepted=False, reason="wrong password")
    )
    assert (alarm.rule, alarm.severity) == ("probing", "high")
    assert alarm.evidence["refusals"] == 5
    assert alarm.evidence["reasons"] == {
        "copy_protected": 2,
        "pii_inference": 2,
        "connection: wrong password": 1,
    }


def test_refusals_spread_out_are_not_probing() -> None:
    detector = Detector(settings=quiet(probing=None))
    assert feed(detector, [refused(T0 + timedelta(minutes=4 * i)) for i in range(30)]) == []


def test_deduplication_within_the_period_and_again_after_it() -> None:
    settings = quiet(probing=ProbingAlarms(refusals=3), dedup=timedelta(minutes=30))
    detector = Detector(settings=settings)
    burst = [refused(T0 + timedelta(seconds=i)) for i in range(3)]
    assert rules(feed(detector, burst)) == ["probing"]
    again = [refused(T0 + timedelta(minutes=10, seconds=i)) for i in range(3)]
    assert feed(detector, again) == []  # same rule, person and key within 30 minutes
    later = [refused(T0 + timedelta(minutes=31, seconds=i)) for i in range(3)]
    assert rules(feed(detector, later)) == ["probing"]
    # Another person's alarm is not a repeat of maint's.
    other = [dataclasses.replace(e, user="lead") for e in again]
    assert rules(feed(detector, other)) == ["probing"]


# ---------------------------------------------------------------------------- paging


def keyset_pages(
    count: int, *, start: datetime = T0, step: timedelta = timedelta(seconds=5)
) -> list[StatementEvent]:
    return [
        stmt(
            start + i * step,
            f"SELECT id, name FROM customers WHERE id > {100 * i} ORDER BY id LIMIT 100",
            rows=100,
            keys=tuple(str(k) for k in range(100 * i + 1, 100 * i + 101, 10)),
        )
        for i in range(count)
    ]


def test_keyset_paging_through_a_protected_table() -> None:
    detector = Detector(settings=quiet(paging=None))
    alarms = feed(detector, keyset_pages(30))
    [alarm] = alarms
    assert (alarm.rule, alarm.severity) == ("paging", "high")
    assert alarm.at == T0 + 19 * timedelta(seconds=5)  # at the 20th page
    assert alarm.evidence["pages"] == 20
    assert alarm.evidence["rows"] == 2000
    assert alarm.evidence["how"] == "keyset"
    assert alarm.evidence["last_values"] == [1900]
    assert alarm.evidence["statement"] == "SELECT id, name FROM customers WHERE id > $1 ORDER BY id LIMIT $2"


def test_descending_and_offset_paging() -> None:
    detector = Detector(settings=quiet(paging=None))
    descending = [
        stmt(
            T0 + timedelta(seconds=i),
            f"SELECT id FROM customers WHERE id < {100_000 - 50 * i} ORDER BY id DESC LIMIT 50",
        )
        for i in range(25)
    ]
    assert rules(feed(detector, descending)) == ["paging"]
    offsets = [
        stmt(
            T0 + timedelta(seconds=i),
            f"SELECT id, phone FROM customers ORDER BY id LIMIT 100 OFFSET {100 * i}",
        )
        for i in range(25)
    ]
    [alarm] = feed(detector, offsets)
    assert alarm.evidence["how"] == "OFFSET"


def test_parameterized_paging_is_seen_in_the_keys() -> None:
    sql = "SELECT id, name FROM customers WHERE id > $1 ORDER BY id LIMIT 100"
    pages = [
        stmt(T0 + timedelta(seconds=i), sql, rows=100, keys=(str(100 * i + 1), str(100 * i + 100)))
        for i in range(25)
    ]
    assert rules(feed(Detector(settings=quiet(paging=None)), pages)) == ["paging"]


def test_a_few_large_pages_reach_the_rows_threshold() -> None:
    detector = Detector(settings=quiet(paging=None))
    pages = [
        stmt(
            T0 + timedelta(seconds=i),
            f"SELECT * FROM customers WHERE id >= {1000 * i} ORDER BY id LIMIT 1000",
            rows=1000,
        )
        for i in range(3)
    ]
    [alarm] = feed(detector, pages)
    assert alarm.evidence["pages"] == 3
    # One big read is not a loop.
    big = stmt(
        T0, "SELECT * FROM orders WHERE id > 5 ORDER BY id LIMIT 100000", rows=100_000, tables=(ORDERS,)
    )
    assert detector.observe_statement(big) == []


def test_ordinary_maintenance_is_not_paging() -> None:
    detector = Detector(settings=quiet(paging=None))
    # Lookups by increasing id are not pages.
    lookups = [
        stmt(T0 + timedelta(seconds=i), f"SELECT id, name FROM customers WHERE id = {7 * i}", rows=1)
        for i in range(50)
    ]
    # The same page again and again (a dashboard refresh).
    same = [
        stmt(
            T0 + timedelta(minutes=i),
            "SELECT * FROM orders WHERE created_at > '2024-03-01' ORDER BY created_at LIMIT 50",
            rows=50,
            tables=(ORDERS,),
        )
        for i in range(50)
    ]
    # Paging, but slowly: an hour and more between pages.
    slow = keyset_pages(30, start=T0 + timedelta(days=1), step=timedelta(minutes=70))
    # Paging through a table that is not protected.
    unprotected = [
        dataclasses.replace(e, tables=(), protected_rows=0)
        for e in keyset_pages(30, start=T0 + timedelta(days=5))
    ]
    # Refused pages are probing's business.
    refused_pages = [
        dataclasses.replace(e, allowed=False) for e in keyset_pages(30, start=T0 + timedelta(days=6))
    ]
    # Alternating between two ranges does not advance.
    back_and_forth = [
        stmt(
            T0 + timedelta(days=7, seconds=i),
            f"SELECT id FROM customers WHERE id > {100 if i % 2 else 200} ORDER BY id LIMIT 10",
        )
        for i in range(40)
    ]
    assert feed(detector, lookups + same + slow + unprotected + refused_pages + back_and_forth) == []


def test_fetch_loops_over_one_cursor() -> None:
    detector = Detector(settings=quiet(paging=None))
    fetches = [stmt(T0 + timedelta(seconds=i), "FETCH 100 FROM c1", cursor="c1", rows=100) for i in range(25)]
    [alarm] = feed(detector, fetches)
    assert (alarm.rule, alarm.evidence["pages"], alarm.evidence["cursor"]) == ("cursor_paging", 20, "c1")
    # A few fetches, or fetches past the end, are ordinary.
    other = Detector(settings=quiet(paging=None))
    few = [stmt(T0 + timedelta(seconds=i), "FETCH 100 FROM c2", cursor="c2", rows=100) for i in range(5)]
    empty = [
        stmt(T0 + timedelta(seconds=10 + i), "FETCH 100 FROM c2", cursor="c2", rows=0) for i in range(30)
    ]
    assert feed(other, few + empty) == []


def test_paging_can_be_switched_off() -> None:
    detector = Detector(settings=quiet(paging=PagingAlarms(enabled=False)))
    assert feed(detector, keyset_pages(30)) == []


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE id > 42 ORDER BY id LIMIT 10", (42.0,)),
        ("SELECT * FROM t WHERE (id) >= (-7) ORDER BY id LIMIT 10", (-7.0,)),
        ("SELECT * FROM t WHERE   name >  'O''Hara' ORDER BY name LIMIT 10", ("O'Hara",)),
        ("SELECT * FROM t ORDER BY id LIMIT 10 OFFSET 500", (500.0,)),
        ("SELECT * FROM t WHERE id BETWEEN 100 AND 200", (100.0,)),
        ("SELECT * FROM t WHERE id > $1 ORDER BY id LIMIT 10", (None,)),
    ],
)
def test_literal_values_read_back_from_the_text(sql: str, expected: tuple[object, ...]) -> None:
    shape = shape_of(normalize(sql))
    assert shape is not None
    assert literal_values(sql, shape) == expected


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM t WHERE id = 5", "SELECT * FROM t WHERE id <> 5 LIMIT 3", "SELECT * FROM t ORDER BY id"],
)
def test_statements_that_cannot_be_pages(sql: str) -> None:
    assert shape_of(normalize(sql)) is None


# ---------------------------------------------------------------------------- dumps


PG_DUMP_SESSION = [
    "BEGIN",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    "SELECT pg_catalog.set_config('search_path', '', false)",
    "SELECT c.tableoid, c.oid, c.relname, c.relnamespace FROM pg_catalog.pg_class c "
    "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v')",
    "LOCK TABLE public.customers IN ACCESS SHARE MODE",
    "LOCK TABLE public.orders IN ACCESS SHARE MODE",
    "COPY public.customers (id, name, address, phone, email, card_number, created_at) TO stdout;",
    "COPY public.orders (id, customer_id, amount, status, created_at) TO stdout;",
    "COMMIT",
]


def dump_session(
    statements: list[str], *, application: str = "psql", session: str = "s9"
) -> list[StatementEvent]:
    out = []
    for i, sql in enumerate(statements):
        target = (CUSTOMERS,) if "customers" in sql else (ORDERS,) if "orders" in sql else ()
        out.append(
            stmt(
                T0 + timedelta(seconds=i),
                sql,
                tables=target,
                application_name=application,
                session=session,
                allowed="COPY" not in sql,
            )
        )
    return out


def test_pg_dump_by_name() -> None:
    detector = Detector(settings=quiet(dump=None))
    [alarm] = detector.observe_connection(connect(T0, application_name="pg_dump"))
    assert (alarm.rule, alarm.severity, alarm.key) == ("dump_tool", "high", "pg_dump")
    # Its statements do not repeat the alarm; the dump pattern is its own alarm.
    alarms = feed(detector, dump_session(PG_DUMP_SESSION, application="pg_dump"))
    assert rules(alarms) == ["dump_pattern"]


def test_a_dump_that_does_not_say_its_name() -> None:
    detector = Detector(settings=quiet(dump=None))
    alarms = feed(detector, dump_session(PG_DUMP_SESSION))
    [alarm] = alarms
    assert (alarm.rule, alarm.severity, alarm.key) == ("dump_pattern", "high", "s9")
    assert alarm.evidence["tables"] == [CUSTOMERS, ORDERS]
    assert alarm.at == T0 + timedelta(seconds=5)  # at the second table locked
    # A parallel dump imports the snapshot in its workers.
    worker = [
        "BEGIN",
        "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        "SELECT attname FROM pg_attribute WHERE attrelid = 16384",
        "COPY public.customers (id, name) TO stdout;",
        'COPY "public"."Orders_2024" TO stdout;',
    ]
    assert rules(feed(detector, dump_session(worker, session="w1"))) == ["dump_pattern"]


def test_ordinary_psql_work_is_not_a_dump() -> None:
    detector = Detector(settings=quiet(dump=None))
    work = [
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        # \d customers
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$'",
        "SELECT id, name FROM customers WHERE id = 5",
        "SELECT id, name FROM customers LIMIT 10",
        "SELECT count(*) FROM orders WHERE status = 'open'",
        "COMMIT",
        # After the transaction, the snapshot is over.
        "SELECT * FROM customers",
        "SELECT * FROM orders",
    ]
    assert feed(detector, dump_session(work)) == []
    # Reading whole tables after a catalog query, without a snapshot, is not a dump either.
    assert feed(detector, dump_session(work[1:5] + work[6:], session="s10")) == []


# ---------------------------------------------------------------------------- coverage


def reads(start: datetime, first: int, last: int, *, per_page: int = 100) -> list[StatementEvent]:
    return [
        stmt(
            start + timedelta(minutes=i),
            f"SELECT id, name FROM customers WHERE id IN ({k})",
            rows=min(per_page, last - k),
            keys=tuple(str(n) for n in range(k, min(k + per_page, last))),
        )
        for i, k in enumerate(range(first, last, per_page))
    ]


def test_coverage_levels_as_a_person_sees_more_of_a_table() -> None:
    detector = Detector(settings=quiet(coverage=None), table_rows={CUSTOMERS: 10_000})
    assert feed(detector, reads(T0, 0, 900)) == []  # below min_rows
    [medium] = feed(detector, reads(T0 + timedelta(days=1), 900, 1500))
    assert (medium.rule, medium.severity) == ("coverage", "medium")
    assert medium.evidence["table"] == CUSTOMERS
    assert medium.evidence["table_rows"] == 10_000
    assert 1000 <= medium.evidence["distinct_rows"] <= 1100  # type: ignore[operator]
    # Rereading the same rows adds nothing.
    assert feed(detector, reads(T0 + timedelta(days=2), 0, 1500)) == []
    [high] = feed(detector, reads(T0 + timedelta(days=30), 1500, 2700))
    assert (high.severity, high.evidence["level"]) == ("high", 25.0)
    state = detector.state("maint", Coverage)
    assert state is not None
    assert 2600 < state.distinct(CUSTOMERS) < 2800


def test_coverage_needs_the_table_size_and_keys() -> None:
    detector = Detector(settings=quiet(coverage=None))
    assert feed(detector, reads(T0, 0, 5000)) == []
    detector.set_table_rows({CUSTOMERS: 6000})
    [alarm] = feed(detector, reads(T0, 5000, 5100))
    assert alarm.severity == "critical"


def test_coverage_counts_over_a_rotating_window() -> None:
    settings = quiet(coverage=None)
    detector = Detector(settings=settings, table_rows={CUSTOMERS: 10_000})
    assert rules(feed(detector, reads(T0, 0, 1500))) == ["coverage"]  # 15%: medium
    # 100 days later the first window has rolled: what was counted stays counted for one more window
    # (the level it met is not raised again), then drops out.
    assert feed(detector, reads(T0 + timedelta(days=100), 20_000, 20_100)) == []
    assert feed(detector, reads(T0 + timedelta(days=200), 30_000, 30_100)) == []
    state = detector.state("maint", Coverage)
    assert state is not None
    assert state.distinct(CUSTOMERS) < 300
    assert rules(feed(detector, reads(T0 + timedelta(days=201), 40_000, 41_500))) == ["coverage"]


def test_hyperloglog_is_within_a_few_percent() -> None:
    for count in (1_000, 100_000):
        sketch = HyperLogLog()
        for n in range(count):
            sketch.add(str(n))
        assert abs(sketch.estimate() - count) / count < 0.03, count
    # Duplicates do not count, and the saved registers mean the same after loading.
    again = HyperLogLog()
    for n in range(50_000):
        again.add(str(n % 5_000))
    assert abs(again.estimate() - 5_000) / 5_000 < 0.03
    loaded = HyperLogLog.from_text(again.to_text())
    assert loaded.estimate() == pytest.approx(again.estimate())
    assert HyperLogLog().estimate() == 0


# ---------------------------------------------------------------------------- state and replay


def month(seed: int) -> list[StatementEvent | ConnectionEvent | QuotaUsage]:
    """A month of a maintenance person's work with a few bad days in it: every rule gets material."""
    rng = random.Random(seed)
    out: list[StatementEvent | ConnectionEvent | QuotaUsage] = []
    for day in range(30):
        start = T0 + timedelta(days=day)
        out.append(connect(start))
        for minute in range(0, 360, 30):
            at = start + timedelta(minutes=minute)
            k = rng.randrange(100_000)
            out.append(stmt(at, f"SELECT id, name FROM customers WHERE id = {k}", rows=1, keys=(str(k),)))
        out.append(usage(start + timedelta(hours=6), rng.randrange(200, 900)))
    bad = T0 + timedelta(days=25, hours=3)
    out.append(connect(bad, address="203.0.113.9"))
    out += [dataclasses.replace(e, at=e.at + timedelta(days=25, hours=3)) for e in keyset_pages(25)]
    out += [refused(bad + timedelta(minutes=30, seconds=i)) for i in range(6)]
    out += [dataclasses.replace(e, at=e.at + timedelta(days=26)) for e in dump_session(PG_DUMP_SESSION)]
    out.append(usage(bad, 1000))
    return out


def test_state_round_trips_through_json_and_replays_identically() -> None:
    events = month(7)
    settings = AlarmSettings(timezone="Asia/Tokyo")
    whole = Detector(settings=settings, table_rows={CUSTOMERS: 100_000})
    expected = feed(whole, events)
    assert {"paging", "probing", "dump_pattern", "new_address", "quota_threshold", "first_access"} <= set(
        rules(expected)
    )
    resumed = Detector(settings=settings, table_rows={CUSTOMERS: 100_000})
    got: list[Alarm] = []
    for start in range(0, len(events), 97):
        got += feed(resumed, events[start : start + 97])
        saved = json.loads(json.dumps(resumed.to_dict()))
        resumed = Detector.from_dict(saved, settings=settings, table_rows={CUSTOMERS: 100_000})
    assert got == expected
    assert json.loads(json.dumps(resumed.to_dict())) == json.loads(json.dumps(whole.to_dict()))


def test_state_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        Detector.from_dict({"version": 99})


def test_alarms_round_trip_and_ids_are_stable() -> None:
    [alarm] = Detector(settings=quiet(first_access=None)).observe_statement(stmt(T0, "SELECT 1"))
    assert Alarm.from_dict(json.loads(json.dumps(alarm.to_dict()))) == alarm
    [again] = Detector(settings=quiet(first_access=None)).observe_statement(stmt(T0, "SELECT 1"))
    assert again.id == alarm.id


def test_people_the_policy_does_not_know_are_ignored() -> None:
    policy = load_policy(
        "version: 1\nroles: {maintenance: {max_rows: 10}}\nusers: {maint: {roles: [maintenance]}}\n", "p.yaml"
    )
    detector = Detector(policy)
    spray = [connect(T0 + timedelta(seconds=i), user=f"guess{i}", accepted=False) for i in range(100)]
    assert feed(detector, spray) == []
    assert detector.to_dict()["people"] == {}
    assert rules(detector.observe_statement(stmt(T0, "SELECT 1"))) == ["first_access"]


# ---------------------------------------------------------------------------- tightening


def alarm(severity: str, rule: str = "paging", at: datetime = T0, user: str = "maint") -> Alarm:
    return Alarm(
        id=f"{rule}-{severity}-{user}",
        at=at,
        severity=severity,
        rule=rule,
        user=user,
        summary="",
        evidence={},
        action="",
        key="",
    )


SETTINGS = AlarmSettings(
    on_alarm=(
        OnAlarm(severity="high", max_rows=10, duration=timedelta(hours=24)),
        OnAlarm(severity="medium", rules=frozenset({"dump_tool"}), max_rows=50, duration=timedelta(hours=2)),
        OnAlarm(severity="critical", suspend=True, duration=timedelta(days=7)),
    )
)


def test_tightening_follows_on_alarm() -> None:
    now = T0 + timedelta(hours=1)
    assert tightening_for("maint", [alarm("medium")], SETTINGS, now) is None
    assert tightening_for("maint", [alarm("high")], SETTINGS, now) == Tightening(
        max_rows=10, suspend=False, until=T0 + timedelta(hours=24), alarms=("paging-high-maint",)
    )
    # A rule-specific entry applies from a lower severity.
    dump = tightening_for("maint", [alarm("medium", "dump_tool")], SETTINGS, now)
    assert dump is not None
    assert (dump.max_rows, dump.until) == (50, T0 + timedelta(hours=2))
    # Critical: every entry at or below it applies; the strictest wins, until the last ends.
    both = tightening_for("maint", [alarm("critical"), alarm("medium", "dump_tool")], SETTINGS, now)
    assert both == Tightening(
        max_rows=10,
        suspend=True,
        until=T0 + timedelta(days=7),
        alarms=("paging-critical-maint", "dump_tool-medium-maint"),
    )


def test_tightening_ends_and_is_per_person() -> None:
    assert tightening_for("maint", [alarm("high")], SETTINGS, T0 + timedelta(hours=25)) is None
    assert tightening_for("maint", [alarm("high", user="lead")], SETTINGS, T0) is None
    assert tightening_for("maint", [alarm("critical")], AlarmSettings(), T0) is None  # no on_alarm


def test_tighten_merges_the_row_cap_into_permissions() -> None:
    policy = load_policy(
        "version: 1\nroles: {maintenance: {max_rows: 100}, dba: {restricted: false}}\n"
        "users: {maint: {roles: [maintenance]}, root: {roles: [dba]}}\n",
        "p.yaml",
    )
    until = T0 + timedelta(hours=1)
    capped = tighten(permissions_for(policy, "maint"), Tightening(max_rows=10, suspend=False, until=until))
    assert capped.max_rows == 10
    assert tighten(permissions_for(policy, "root"), Tightening(10, False, until)).max_rows == 10
    loose = Tightening(max_rows=500, suspend=False, until=until)
    assert tighten(permissions_for(policy, "maint"), loose).max_rows == 100
    assert tighten(permissions_for(policy, "maint"), None) == permissions_for(policy, "maint")


# ---------------------------------------------------------------------------- repeated (escalation)


def paging_day(day: int, *, hours: float = 0.0) -> list[StatementEvent]:
    """A run of 20 keyset pages on day ``day`` after T0: one high paging alarm that day."""
    shift = timedelta(days=day, hours=hours)
    return [dataclasses.replace(e, at=e.at + shift) for e in keyset_pages(20)]


def escalating(**changes: Any) -> Detector:
    return Detector(settings=quiet(paging=None, repeated=RepeatedAlarms(**changes), timezone="Asia/Tokyo"))


def test_alarms_of_the_named_rules_on_three_days_within_a_week_escalate() -> None:
    detector = escalating()
    assert rules(feed(detector, paging_day(0) + paging_day(2))) == ["paging", "paging"]
    state = detector.state("maint", Repeated)
    assert state is not None
    assert [d.isoformat() for d in state.days] == ["2024-04-01", "2024-04-03"]
    third = feed(detector, paging_day(5))
    assert rules(third) == ["paging", "repeated"]
    paging, escalation = third
    assert (escalation.severity, escalation.at) == ("critical", paging.at)
    assert escalation.evidence["days"] == ["2024-04-01", "2024-04-03", "2024-04-06"]
    assert escalation.evidence["last_alarm"] == paging.id
    assert escalation.key == "2024-04-06"
    # The days are spent: the next escalation needs three fresh days.
    assert state.days == ()
    assert rules(feed(detector, paging_day(6) + paging_day(7))) == ["paging", "paging"]
    assert rules(feed(detector, paging_day(8))) == ["paging", "repeated"]


def test_escalation_stays_quiet_on_what_it_does_not_count() -> None:
    # Two alarms on one day are one day; days spread wider than the window never make three.
    detector = escalating()
    spread = paging_day(0) + paging_day(0, hours=3) + paging_day(4) + paging_day(8) + paging_day(12)
    assert rules(feed(detector, spread)) == ["paging"] * 5
    # Rules it does not name, and alarms below at_least, do not count.
    for changes in ({"rules": frozenset({"coverage"})}, {"at_least": "critical"}):
        other = escalating(**changes)
        assert rules(feed(other, paging_day(0) + paging_day(1) + paging_day(2))) == ["paging"] * 3
    # Switched off.
    off = escalating(enabled=False)
    assert rules(feed(off, paging_day(0) + paging_day(1) + paging_day(2))) == ["paging"] * 3


def test_ordinary_work_with_a_busy_day_now_and_then_never_escalates() -> None:
    """A month of ordinary lookups, with the volume rule and a day of bulk work every ten days."""
    settings = dataclasses.replace(AlarmSettings(timezone="Asia/Tokyo"), learning_days=5)
    detector = Detector(settings=settings, table_rows={CUSTOMERS: 100_000})
    rng = random.Random(11)
    raised: list[Alarm] = []
    for day in range(60):
        start = T0 + timedelta(days=day)
        rows = 3000 if day % 10 == 9 else rng.randint(50, 150)
        raised += detector.observe_statement(stmt(start, "SELECT id FROM customers WHERE id = 1", rows=rows))
    assert "volume_baseline" in rules(raised)
    assert "repeated" not in rules(raised)


def test_escalation_state_round_trips_and_replays() -> None:
    events = paging_day(0) + paging_day(2) + paging_day(3)
    whole = escalating()
    expected = feed(whole, events)
    assert rules(expected)[-1] == "repeated"
    resumed = escalating()
    got: list[Alarm] = []
    for start in range(0, len(events), 7):
        got += feed(resumed, events[start : start + 7])
        saved = json.loads(json.dumps(resumed.to_dict()))
        resumed = Detector.from_dict(saved, settings=resumed.settings)
    assert got == expected


# ---------------------------------------------------------------------------- holds until cleared

HOLDING = AlarmSettings(
    on_alarm=(
        OnAlarm(severity="high", rules=frozenset({"paging"}), max_rows=10, duration=timedelta(hours=24)),
        OnAlarm(severity="critical", suspend=True, until_cleared=True),
    )
)


def test_a_critical_alarm_holds_the_person_until_someone_else_clears_them() -> None:
    holds = Holds()
    critical = alarm("critical", "repeated")
    assert holds.note([alarm("high"), alarm("high", user="lead")], HOLDING) == []
    assert holds.note([critical], HOLDING) == ["maint"]
    assert holds.note([critical], HOLDING) == []  # already held
    # No end: a year on, with the alarm long gone from the gateway's memory, still suspended.
    later = T0 + timedelta(days=365)
    held = tightening_for("maint", [], HOLDING, later, holds)
    assert held == Tightening(max_rows=None, suspend=True, until=None, alarms=(critical.id,))
    assert not held.lapsed(later)
    assert "clears them" in held.describe_until()
    assert tightening_for("lead", [], HOLDING, later, holds) is None
    # Nobody clears themselves, and a clearance states its reason.
    with pytest.raises(ClearanceRefused, match="themselves") as caught:
        holds.clear(Clearance(user="maint", by="maint", at=later, reason="it was me"))
    assert caught.value.code == "self_clearance"
    with pytest.raises(ClearanceRefused, match="reason"):
        holds.clear(Clearance(user="maint", by="lead", at=later, reason="  "))
    assert tightening_for("maint", [critical], HOLDING, later, holds) is not None
    # A second person clears: the hold and every effect of the alarms up to then are lifted.
    cleared = Clearance(user="maint", by="lead", at=later, reason="incident INC-42, approved")
    holds.clear(cleared)
    assert holds.people() == []
    assert holds.clearances == (cleared,)
    assert tightening_for("maint", [critical, alarm("high", at=later)], HOLDING, later, holds) is None
    # A new alarm after the clearance holds again.
    again = alarm("critical", "coverage", at=later + timedelta(days=1))
    assert holds.note([critical, again], HOLDING) == ["maint"]
    assert holds.held("maint") == (again,)
    with pytest.raises(ClearanceRefused, match="already cleared"):
        holds.clear(Clearance(user="maint", by="lead", at=later - timedelta(hours=1), reason="late"))


def test_timed_tightening_and_a_hold_merge() -> None:
    holds = Holds()
    high = alarm("high")
    critical = alarm("critical", "repeated", at=T0 + timedelta(hours=1))
    holds.note([high, critical], HOLDING)
    merged = tightening_for("maint", [high, critical], HOLDING, T0 + timedelta(hours=2), holds)
    assert merged == Tightening(max_rows=10, suspend=True, until=None, alarms=(critical.id, high.id))
    # Without the until_cleared entry the same alarms only cap, for a day.
    timed = dataclasses.replace(HOLDING, on_alarm=HOLDING.on_alarm[:1])
    assert tightening_for("maint", [high, critical], timed, T0 + timedelta(hours=2)) == Tightening(
        max_rows=10, suspend=False, until=T0 + timedelta(hours=24), alarms=(high.id,)
    )


def test_holds_round_trip_through_json() -> None:
    holds = Holds()
    holds.note([alarm("critical", "repeated")], HOLDING)
    holds.clear(Clearance(user="other", by="lead", at=T0, reason="checked"))
    again = Holds.from_dict(json.loads(json.dumps(holds.to_dict())))
    assert again.held("maint") == holds.held("maint")
    assert again.clearances == holds.clearances
    assert again.cleared_at("other") == T0
    assert tightening_for("maint", [], HOLDING, T0, again) == tightening_for("maint", [], HOLDING, T0, holds)
