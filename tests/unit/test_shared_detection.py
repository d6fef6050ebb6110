"""Detection shared between processes: a person's state exported and imported, and two
``SharedDetection`` instances (two processes, in effect) on one real SQLite detection store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.detect_store import DetectStore, SQLiteDetectStore, Stored
from gateway.detection import SharedDetection
from gateway.gate import PolicyService, combined
from gateway.quota_store import StoreUnavailable
from policy.catalog import Catalog
from policy.detect import Alarm, Detector, Tightening
from policy.detect.alarm import Plain
from policy.detect.probing import Probing
from policy.loader import load_policy
from policy.model import AlarmSettings
from tests.unit.test_detect import CUSTOMERS, T0, feed, month, refused, stmt

POLICY = """\
version: 1
roles: {maintenance: {max_rows: 100}}
users: {maint: {roles: [maintenance]}, other: {roles: [maintenance]}}
alarms:
  probing: {refusals: 4, within: 10m, severity: high}
  on_alarm:
    - {severity: high, action: suspend, for: 1h}
"""

# ---------------------------------------------------------------------------- export and import


def test_a_person_exported_and_imported_continues_exactly() -> None:
    """Moving a person between detectors every 97 events (as processes sharing a store do) gives
    the same alarms and the same final state as one detector that saw everything."""
    events = month(3)
    settings = AlarmSettings(timezone="Asia/Tokyo")
    whole = Detector(settings=settings, table_rows={CUSTOMERS: 100_000})
    expected = feed(whole, events)
    assert {"paging", "probing", "dump_pattern"} <= {a.rule for a in expected}
    got: list[Alarm] = []
    state: dict[str, Any] | None = None
    for start in range(0, len(events), 97):
        moved = Detector(settings=settings, table_rows={CUSTOMERS: 100_000})
        moved.load_person("maint", state)
        got += feed(moved, events[start : start + 97])
        state = json.loads(json.dumps(moved.person_state("maint")))
    assert got == expected
    assert state == json.loads(json.dumps(whole.person_state("maint")))
    assert state == {**whole.to_dict()["people"]["maint"], "version": 1, "raised": state["raised"]}
    assert sorted(map(tuple, state["raised"])) == sorted(
        (rule, key, at) for rule, user, key, at in whole.to_dict()["raised"] if user == "maint"
    )


def test_importing_a_person_replaces_only_that_person() -> None:
    settings = AlarmSettings()
    detector = Detector(settings=settings)
    feed(detector, [stmt(T0, "SELECT 1"), stmt(T0, "SELECT 1", user="other")])
    other = detector.person_state("other")
    assert detector.person_state("maint") is not None
    assert detector.person_state("nobody") is None
    detector.load_person("maint", None)  # forgotten, deduplication entries too
    assert detector.person_state("maint") is None
    assert all(user != "maint" for _, user, _, _ in detector.to_dict()["raised"])
    assert detector.person_state("other") == other
    # first_access again: the memory and its deduplication entry went with the person.
    assert [a.rule for a in detector.observe_statement(stmt(T0, "SELECT 1"))] == ["first_access"]


def test_a_person_state_of_another_version_or_shape_is_refused_and_changes_nothing() -> None:
    detector = Detector(settings=AlarmSettings())
    feed(detector, [stmt(T0, "SELECT 1")])
    before = detector.person_state("maint")
    assert before is not None
    with pytest.raises(ValueError, match="version"):
        detector.load_person("maint", {**before, "version": 99})
    with pytest.raises(KeyError):
        detector.load_person("maint", {"version": 1})
    assert detector.person_state("maint") == before


def test_people_the_policy_does_not_know_are_not_watched() -> None:
    detector = Detector(load_policy(POLICY, "p.yaml"))
    assert detector.watches("maint")
    assert not detector.watches("guess1")


def test_tightenings_combine_to_the_strictest_until_the_later_end() -> None:
    cap = Tightening(max_rows=10, suspend=False, until=T0 + timedelta(hours=1), alarms=("a",))
    stop = Tightening(max_rows=None, suspend=True, until=T0 + timedelta(hours=24), alarms=("b",))
    assert combined(cap, None) == cap
    assert combined(None, None) is None
    assert combined(cap, stop) == Tightening(10, True, T0 + timedelta(hours=24), ("a", "b"))


# ---------------------------------------------------------------------------- two processes, one store


class Switchable:
    """A real store that can be made unreachable, as a network fault would."""

    def __init__(self, inner: DetectStore) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("detection store: switched off")
            return await method(*args, **kwargs)

        return call

    def describe(self) -> str:
        return "switchable"


class Process:
    """What one gateway process holds: its policy service, detector copy and shared detection."""

    def __init__(self, store: DetectStore) -> None:
        policy = load_policy(POLICY, "p.yaml")
        self.service = PolicyService(policy, Catalog.of([]))
        self.raised: list[Alarm] = []
        self.mirrored: list[Alarm] = []
        self.shared = SharedDetection(
            Detector(policy), store, self.service, self._raise, self.mirrored.append
        )

    def _raise(self, alarms: list[Alarm]) -> None:
        self.raised += alarms
        until = datetime.now(UTC) + timedelta(hours=1)
        for alarm in alarms:  # what the server's _raise does with on_alarm
            self.service.restrict(alarm.user, Tightening(None, True, until, (alarm.id,)))


async def settle(processes: Sequence[Process]) -> None:
    """Until every queued event is taken and every process has read what the others shared."""
    await until(lambda: all(not p.shared.statistics().queued for p in processes))
    await asyncio.sleep(1.2)  # more than two sharing periods


async def until(check: Callable[[], bool], timeout: float = 15) -> None:
    """Wait for ``check`` to hold (failing the test after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "detect.sqlite"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_refusals_spread_over_two_processes_raise_one_probing_alarm(store_path: Path) -> None:
    async def test() -> None:
        a, b = Process(SQLiteDetectStore(store_path)), Process(SQLiteDetectStore(store_path))
        for p in (a, b):
            await p.shared.start()
        for i in range(4):  # two each: neither process alone sees the four refusals
            (a if i % 2 == 0 else b).shared.submit(refused(T0 + timedelta(seconds=i)))
            await settle([a, b])
        raised = [x for x in a.raised + b.raised if x.rule == "probing"]
        assert len(raised) == 1
        # The suspension one decided is in force in the other too, and the other's feed has the alarm.
        raiser, other = (a, b) if a.raised else (b, a)
        await until(lambda: "maint" in other.service.restrictions and bool(other.mirrored))
        assert other.service.restrictions["maint"].suspend
        assert [x.id for x in other.mirrored] == [raised[0].id]
        assert raiser.mirrored == []  # its own alarm is not copied back to it
        for p in (a, b):
            await p.shared.stop()
            assert p.shared.statistics().dropped == 0
            await p.shared.store.close()
        assert a.shared.statistics().conflicts + b.shared.statistics().conflicts >= 1

    run(test)


def test_a_store_outage_keeps_detection_going_and_resynchronizes(store_path: Path) -> None:
    async def test() -> None:
        switch = Switchable(SQLiteDetectStore(store_path))
        a = Process(switch)
        b = Process(SQLiteDetectStore(store_path))
        for p in (a, b):
            await p.shared.start()
        a.shared.submit(refused(T0))
        await settle([a, b])
        switch.down = True
        for i in range(1, 4):  # a keeps detecting on its own copy while the store is away
            a.shared.submit(refused(T0 + timedelta(seconds=i)))
        await settle([a])
        assert [x.rule for x in a.raised] == ["probing"]
        assert a.service.restrictions["maint"].suspend
        assert not a.shared.statistics().store_available
        assert "maint" not in b.service.restrictions  # not shared yet
        switch.down = False
        # What a learned while alone reaches the store, and its suspension reaches b.
        await until(lambda: a.shared.statistics().store_available and "maint" in b.service.restrictions)
        assert b.service.restrictions["maint"].suspend
        await until(lambda: bool(b.mirrored))
        await until(lambda: not a.shared.statistics().queued and a.shared.statistics().synchronized >= 2)
        stored = await b.shared.store.fetch("maint")
        assert isinstance(stored, Stored)
        resumed = Detector(load_policy(POLICY, "p.yaml"))
        resumed.load_person("maint", json.loads(stored.state))
        assert resumed.state("maint", Probing) is not None
        assert a.raised[0].id in [x.id for x in b.mirrored]
        for p in (a, b):
            await p.shared.stop()
            await p.shared.store.close()

    run(test)


def test_pending_events_are_replayed_on_what_another_process_wrote(store_path: Path) -> None:
    """a applies two refusals alone while b, still reaching the store, writes two more; when a
    is back, b's state is loaded and a's refusals replayed on it: four, so probing fires."""

    async def test() -> None:
        switch = Switchable(SQLiteDetectStore(store_path))
        a = Process(switch)
        b = Process(SQLiteDetectStore(store_path))
        for p in (a, b):
            await p.shared.start()
        switch.down = True
        for i in range(2):
            a.shared.submit(refused(T0 + timedelta(seconds=i)))
            b.shared.submit(refused(T0 + timedelta(seconds=10 + i)))
        await settle([a, b])
        assert a.raised == b.raised == []
        switch.down = False
        await until(lambda: bool(a.raised))
        assert [x.rule for x in a.raised] == ["probing"]
        await until(lambda: "maint" in b.service.restrictions)
        assert b.service.restrictions["maint"].suspend
        assert b.raised == []
        for p in (a, b):
            await p.shared.stop()
            await p.shared.store.close()

    run(test)


def test_the_shared_alarm_list_is_capped_and_numbered(store_path: Path) -> None:
    async def test() -> None:
        store = SQLiteDetectStore(store_path)
        latest, none = await store.alarms_after(None)
        assert (latest, none) == (0, [])
        alarm: dict[str, Plain] = {"id": "x"}
        await store.append_alarms("p1", [alarm] * 3)
        latest, got = await store.alarms_after(1)
        assert (latest, got) == (3, [("p1", alarm), ("p1", alarm)])
        await store.append_alarms("p2", [alarm] * 1005)
        latest, got = await store.alarms_after(0)
        assert latest == 1008
        assert len(got) == 1000
        assert got[-1] == ("p2", alarm)
        assert await store.put("maint", "", "{}") is not None
        assert await store.put("maint", "", "{}") is None  # someone wrote since: refused
        await store.close()

    run(test)
