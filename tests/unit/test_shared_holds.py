"""Holds until cleared and clearances shared by every process: the pure merge of a process's copy
with the shared picture (``Holds.adopt``), the detection store's operations on SQLite and on a
real Redis, and ``SharedDetection`` writing holds back after an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.detect_store import DetectStore, RedisDetectStore, SQLiteDetectStore
from gateway.detection import SharedDetection
from gateway.gate import PolicyService
from gateway.quota_store import StoreUnavailable
from policy.catalog import Catalog
from policy.detect import Alarm, Clearance, Detector, Holds, Tightening
from policy.detect.tightening import HELD_ALARMS, Resync
from policy.loader import load_policy
from tests.unit.test_detect import HOLDING, T0, alarm
from tests.unit.test_shared_detection import POLICY, Switchable, until


def _alarm(n: int, at: datetime, user: str = "maint") -> Alarm:
    """A critical alarm (it holds under ``HOLDING``) with an id of its own."""
    return Alarm(
        id=f"a{n}-{user}",
        at=at,
        severity="critical",
        rule="probing",
        user=user,
        summary="",
        evidence={"n": n},
        action="",
        key=str(n),
    )


def _cleared(user: str, at: datetime, by: str = "lead") -> Clearance:
    return Clearance(user=user, by=by, at=at, reason="reviewed")


def _held(holds: Holds) -> dict[str, list[str]]:
    return {user: [a.id for a in holds.held(user)] for user in holds.people()}


# ---------------------------------------------------------------------------- the pure merge


def test_adopting_the_shared_picture_takes_its_holds_and_clearances() -> None:
    mine = Holds()
    mine.note([_alarm(1, T0)], HOLDING)
    shared = Holds({"maint": [_alarm(1, T0)], "other": [_alarm(2, T0, "other")]})
    shared.clear(_cleared("third", T0))
    resync = mine.adopt(shared)
    assert _held(mine) == {"maint": ["a1-maint"], "other": ["a2-other"]}
    assert mine.cleared_at("third") == T0
    assert resync == Resync(frozenset({"other", "third"}))  # maint was held here already
    assert mine.adopt(shared) == Resync(frozenset())  # nothing new the second time


def test_a_clearance_elsewhere_drops_the_alarms_up_to_it_and_keeps_later_ones() -> None:
    mine = Holds()
    mine.note([_alarm(1, T0), _alarm(2, T0 + timedelta(hours=2))], HOLDING)
    shared = Holds({"maint": [_alarm(1, T0), _alarm(2, T0 + timedelta(hours=2))]})
    shared.clear(_cleared("maint", T0 + timedelta(hours=1)))
    assert _held(shared) == {"maint": ["a2-maint"]}  # a clearance lifts only what came before it
    resync = mine.adopt(shared)
    assert resync.changed == {"maint"}
    assert (resync.unshared_holds, resync.unshared_clearances) == ({}, [])
    assert _held(mine) == {"maint": ["a2-maint"]}
    assert mine.cleared_at("maint") == T0 + timedelta(hours=1)


def test_what_the_store_lacks_is_kept_and_written_back_so_nobody_is_freed_by_a_lost_store() -> None:
    mine = Holds()
    mine.note([_alarm(1, T0)], HOLDING)
    mine.clear(_cleared("other", T0))
    pending = {"late": [_alarm(3, T0, "late")]}
    resync = mine.adopt(Holds(), pending)  # a store that lost everything (or never had it)
    assert _held(mine) == {"late": ["a3-late"], "maint": ["a1-maint"]}
    assert mine.cleared_at("other") == T0
    assert resync.unshared_holds == {"maint": [_alarm(1, T0)]}  # pending ones are queued already
    assert resync.unshared_clearances == [_cleared("other", T0)]
    assert resync.changed == {"late"}


def test_a_hold_this_copy_has_is_not_written_back_over_a_later_clearance() -> None:
    """A process that was away when someone was cleared comes back with the old hold: the
    clearance in the store wins, and only alarms after it would still hold."""
    mine = Holds()
    mine.note([_alarm(1, T0), _alarm(2, T0 + timedelta(hours=3))], HOLDING)
    shared = Holds()
    shared.clear(_cleared("maint", T0 + timedelta(hours=1)))
    resync = mine.adopt(shared)
    assert _held(mine) == {"maint": ["a2-maint"]}
    assert resync.unshared_holds == {"maint": [_alarm(2, T0 + timedelta(hours=3))]}
    assert resync.unshared_clearances == []
    # A later clearance of this copy's own goes back to a store that has only an earlier one.
    mine.clear(_cleared("maint", T0 + timedelta(hours=4)))
    resync = mine.adopt(shared)
    assert resync.unshared_clearances == [_cleared("maint", T0 + timedelta(hours=4))]
    assert _held(mine) == {}


def test_pending_alarms_before_a_clearance_do_not_hold_and_a_hold_is_capped() -> None:
    mine = Holds()
    shared = Holds()
    shared.clear(_cleared("maint", T0 + timedelta(hours=1)))
    many = [_alarm(n, T0 + timedelta(hours=2, seconds=n)) for n in range(HELD_ALARMS + 5)]
    mine.adopt(shared, {"maint": [_alarm(99, T0), *many]})
    assert _held(mine) == {"maint": [a.id for a in many[:HELD_ALARMS]]}


def test_a_clearance_is_checked_before_anything_is_recorded() -> None:
    holds = Holds()
    holds.note([alarm("critical", "repeated")], HOLDING)
    with pytest.raises(Exception, match="themselves"):
        holds.check(_cleared("maint", T0, by="maint"))
    holds.clear(_cleared("maint", T0 + timedelta(hours=1)))
    with pytest.raises(Exception, match="already cleared"):
        holds.check(_cleared("maint", T0))
    assert holds.people() == []


# ---------------------------------------------------------------------------- the store, both kinds

Opener = Callable[[], DetectStore]


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the detection store anew each call (another process, or a restart), on one file or
    one Redis."""
    if request.param == "sqlite":
        path = tmp_path / "detect.sqlite"
        return lambda: SQLiteDetectStore(path)
    url = str(request.getfixturevalue("redis_url"))
    return lambda: RedisDetectStore(url)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_the_store_holds_people_once_per_alarm_and_at_most_held_alarms(opener: Opener) -> None:
    async def test() -> None:
        store = opener()
        assert _held(await store.holds()) == {}
        await store.hold("maint", [_alarm(1, T0)])
        await store.hold("maint", [_alarm(1, T0), _alarm(2, T0 + timedelta(seconds=1))])
        await store.hold("other", [_alarm(3, T0, "other")])
        assert _held(await store.holds()) == {"maint": ["a1-maint", "a2-maint"], "other": ["a3-other"]}
        got = (await store.holds()).held("maint")[1]
        assert got == _alarm(2, T0 + timedelta(seconds=1))  # the whole alarm comes back
        await store.hold("maint", [_alarm(n, T0 + timedelta(minutes=n)) for n in range(10, 10 + HELD_ALARMS)])
        assert len((await store.holds()).held("maint")) == HELD_ALARMS
        await store.close()

    run(test)


def test_a_clearance_in_the_store_lifts_holds_and_tightenings_up_to_it(opener: Opener) -> None:
    async def test() -> None:
        store = opener()
        now = datetime.now(UTC)
        clearance = _cleared("maint", now)
        await store.hold("maint", [_alarm(1, now - timedelta(minutes=5))])
        stop = Tightening(None, True, None, ("a1-maint",))
        await store.tighten("maint", stop, now.timestamp(), (now - timedelta(minutes=5)).timestamp())
        await store.tighten("other", stop, now.timestamp())
        assert await store.clear(clearance, lift=True)
        holds = await store.holds()
        assert (_held(holds), holds.clearances) == ({}, (clearance,))
        assert set(await store.tightenings(now.timestamp())) == {"other"}
        # An alarm raised before the clearance, written late, holds nobody; a later one holds.
        await store.hold(
            "maint", [_alarm(1, now - timedelta(minutes=5)), _alarm(2, now + timedelta(seconds=1))]
        )
        assert _held(await store.holds()) == {"maint": ["a2-maint"]}
        # A tightening decided before the clearance, written late, is dropped; a later one stays.
        late = await store.tighten("maint", stop, now.timestamp(), now.timestamp())
        assert late is None
        assert "maint" not in await store.tightenings(now.timestamp())
        after = (now + timedelta(seconds=2)).timestamp()
        assert await store.tighten("maint", stop, after, after) == stop
        # An earlier clearance than the one recorded changes nothing.
        assert not await store.clear(_cleared("maint", now - timedelta(hours=1)), lift=True)
        assert (await store.holds()).clearances == (clearance,)
        assert "maint" in await store.tightenings(after)
        # Recorded again without lifting (a process writing back what a store lost): the
        # tightening stays; the alarms up to it go.
        again = _cleared("maint", now + timedelta(seconds=1))
        assert await store.clear(again, lift=False)
        assert "maint" in await store.tightenings(after)
        holds = await store.holds()
        assert (_held(holds), holds.cleared_at("maint")) == ({}, again.at)
        await store.close()
        # Another process (or a restart) sees the same.
        other = opener()
        holds = await other.holds()
        assert (_held(holds), holds.clearances) == ({}, (again,))
        await other.close()

    run(test)


def test_an_unreachable_redis_fails_every_hold_operation(tmp_path: Path) -> None:
    async def test() -> None:
        store = RedisDetectStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
        with pytest.raises(StoreUnavailable):
            await store.clear(_cleared("maint", T0), lift=True)
        with pytest.raises(StoreUnavailable):
            await store.hold("maint", [_alarm(1, T0)])
        with pytest.raises(StoreUnavailable):
            await store.holds()
        await store.close()

    run(test)


# ---------------------------------------------------------------------------- sharing


class HoldingProcess:
    """A gateway process's holds, as the server keeps them: noted holds go to the store, and the
    shared picture is adopted into its copy."""

    def __init__(self, store: DetectStore) -> None:
        policy = load_policy(POLICY, "p.yaml")
        self.holds = Holds()
        self.resyncs: list[Resync] = []
        self.shared = SharedDetection(
            Detector(policy),
            store,
            PolicyService(policy, Catalog.of([])),
            lambda _: None,
            on_holds=self._adopt,
        )

    def _adopt(self, shared: Holds, pending: Mapping[str, Sequence[Alarm]]) -> Resync:
        resync = self.holds.adopt(shared, pending)
        self.resyncs.append(resync)
        return resync

    def note(self, alarm: Alarm) -> None:
        self.holds.note([alarm], HOLDING)
        self.shared.share_holds(alarm.user, [alarm])


def test_holds_reach_other_processes_and_those_noted_during_an_outage_are_written_later(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        path = tmp_path / "detect.sqlite"
        switch = Switchable(SQLiteDetectStore(path))
        a, b = HoldingProcess(switch), HoldingProcess(SQLiteDetectStore(path))
        for p in (a, b):
            await p.shared.start()
        now = datetime.now(UTC)
        a.note(_alarm(1, now))
        await until(lambda: b.holds.people() == ["maint"])
        assert any("maint" in r.changed for r in b.resyncs)
        switch.down = True
        a.note(_alarm(2, now, "other"))  # held here at once, shared when the store answers
        assert a.holds.people() == ["maint", "other"]
        await until(lambda: not a.shared.statistics().store_available)
        with pytest.raises(StoreUnavailable):  # a clearance never applies to one process only
            await a.shared.clear(_cleared("maint", now + timedelta(seconds=1)))
        await asyncio.sleep(1.2)  # more than two sharing periods: b still does not know
        assert b.holds.people() == ["maint"]
        switch.down = False
        await until(lambda: b.holds.people() == ["maint", "other"])
        # A clearance through b reaches a.
        assert await b.shared.clear(_cleared("maint", now + timedelta(seconds=2)))
        await until(lambda: a.holds.people() == ["other"])
        assert a.holds.cleared_at("maint") == now + timedelta(seconds=2)
        for p in (a, b):
            await p.shared.stop()
            await p.shared.store.close()

    run(test)
