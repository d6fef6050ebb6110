"""Quota arithmetic (policy.quota) and the two stores (gateway.quota_store) against real SQLite
files and a real private Redis: rolling windows, atomic reservations, give-backs, persistence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.quota_store import QuotaStore, RedisStore, SQLiteStore, StoreUnavailable, open_store
from policy.model import Quota
from policy.quota import Limit, frees_at, limits_of, row_limits, used

HOUR = Limit("rows", 250, 3600)
TABLE = Limit("rows", 40, 86400, ("public", "customers"))
T0 = 1_800_000_000.0  # a fixed moment, on a bucket boundary of both limits


def test_limits_merge_by_metric_window_and_table_keeping_the_smallest() -> None:
    quotas = [
        Quota(timedelta(hours=1), rows=300),
        Quota(timedelta(hours=1), rows=250, bytes=10_000),
        Quota(timedelta(days=30), rows=5000, table=("public", "customers")),
    ]
    limits = limits_of(quotas)
    assert [(lim.key, lim.budget) for lim in limits] == [
        ("bytes:3600s:*", 10_000),
        ("rows:2592000s:public.customers", 5000),
        ("rows:3600s:*", 250),
    ]
    assert row_limits(limits, [("public", "orders")]) == (limits[2],)
    assert set(row_limits(limits, [("public", "customers")])) == {limits[1], limits[2]}


def test_a_rolling_window_forgets_buckets_that_left_it() -> None:
    assert (HOUR.bucket, HOUR.buckets) == (60, 60)
    counts = {HOUR.index(T0): 100, HOUR.index(T0 + 1800): 50}
    assert used(counts, HOUR, T0 + 1800) == 150
    assert used(counts, HOUR, T0 + 3599) == 150
    assert used(counts, HOUR, T0 + 3600) == 50  # the first bucket left the window
    assert frees_at(counts, HOUR, T0 + 1800) == T0 + 3600
    assert frees_at({}, HOUR, T0) is None


def _stores(tmp_path: Path, redis_url: str) -> list[Callable[[], QuotaStore]]:
    path = tmp_path / "q.sqlite"
    return [lambda: SQLiteStore(path), lambda: RedisStore(redis_url)]


@pytest.mark.parametrize("kind", [0, 1], ids=["sqlite", "redis"])
def test_reservations_grant_what_every_limit_has_left(tmp_path: Path, redis_url: str, kind: int) -> None:
    make = _stores(tmp_path, redis_url)[kind]

    async def run() -> None:
        store = make()
        try:
            assert await store.reserve("ann", (HOUR, TABLE), 30, T0) == 30
            assert await store.reserve("ann", (HOUR, TABLE), 30, T0 + 10) == 10  # the table limit: 40
            assert await store.reserve("ann", (HOUR,), 300, T0 + 20) == 210  # the hour limit: 250
            assert await store.reserve("ann", (HOUR,), 1, T0 + 30) == 0
            assert await store.reserve("bob", (HOUR,), 5, T0) == 5  # budgets are per person
            # Giving back unused rows makes room again, in the bucket they were taken from.
            await store.add("ann", (HOUR,), -20, T0 + 20)
            usage = await store.usage("ann", (HOUR, TABLE), T0 + 40)
            assert [(u.used, u.remaining) for u in usage] == [(230, 20), (40, 0)]
            assert usage[0].frees_at == T0 + 3600
            # An hour later the first uses have left the window.
            assert await store.reserve("ann", (HOUR,), 300, T0 + 3600) == 250
            assert await store.people() == ["ann", "bob"]
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", [0, 1], ids=["sqlite", "redis"])
def test_concurrent_reservations_never_overshoot(tmp_path: Path, redis_url: str, kind: int) -> None:
    """Two stores on one file or one Redis stand for two Sekisho processes."""
    make = _stores(tmp_path, redis_url)[kind]

    async def run() -> None:
        first, second = make(), make()
        try:
            grants = await asyncio.gather(
                *(store.reserve("ann", (HOUR,), 7, T0) for _ in range(40) for store in (first, second))
            )
            assert sum(grants) == 250
        finally:
            await first.close()
            await second.close()

    asyncio.run(run())


def test_sqlite_counters_survive_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    async def run() -> None:
        store = SQLiteStore(tmp_path / "q.sqlite")
        await store.reserve("ann", (HOUR,), 100, T0)
        await store.close()
        again = SQLiteStore(tmp_path / "q.sqlite")
        assert (await again.usage("ann", (HOUR,), T0 + 5))[0].used == 100
        await again.close()

    asyncio.run(run())


def test_an_unreachable_redis_is_reported_as_such() -> None:
    async def run() -> None:
        store = RedisStore("redis://127.0.0.1:1/0")
        with pytest.raises(StoreUnavailable, match=r"quota store redis://127\.0\.0\.1:1/0: "):
            await store.reserve("ann", (HOUR,), 1, T0)
        await store.close()

    asyncio.run(run())


def test_a_redis_password_never_shows() -> None:
    assert RedisStore("redis://:s3cret@127.0.0.1:6390/1").describe() == "redis://127.0.0.1:6390/1"


def test_store_urls() -> None:
    assert isinstance(open_store(None, Path("/tmp/x")), SQLiteStore)
    assert isinstance(open_store("redis://127.0.0.1:6379/2", Path()), RedisStore)
    with pytest.raises(ValueError, match=r"quotas\.store"):
        open_store("memcached://x", Path())
