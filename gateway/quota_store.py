"""Where quota counters live: SQLite on one host (the default), Redis for several processes or hosts.

Both keep, per person and limit, amounts per bucket (``policy.quota``) and answer three questions
atomically: reserve up to N rows against every limit at once (the grant is what the tightest
limit has left), add or give back an amount, and report usage. SQLite's ``BEGIN IMMEDIATE`` makes
a reservation atomic across the processes of one host; Redis runs it as one Lua script, so every
Sekisho process and host shares one budget per person. Either store failing raises
``StoreUnavailable``: the caller refuses protected reads and keeps serving the rest.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from redis.exceptions import RedisError

from gateway import redis_client
from gateway.sqlite_file import SQLiteFile, StoreUnavailable
from policy.quota import Limit, Usage, frees_at, used

DEFAULT_FILE = ".sekisho-quotas.sqlite"
T = TypeVar("T")
__all__ = ["StoreUnavailable"]  # the stores' one error, imported from here by the gateway


class QuotaStore(Protocol):
    async def reserve(self, user: str, limits: Sequence[Limit], amount: int, now: float) -> int:
        """Record and return up to ``amount``: what every limit still has room for."""

    async def add(self, user: str, limits: Sequence[Limit], amount: int, at: float) -> None:
        """Record ``amount`` in the bucket of ``at`` (negative gives back; never below zero)."""

    async def usage(self, user: str, limits: Sequence[Limit], now: float) -> list[Usage]: ...

    async def people(self) -> list[str]:
        """Everyone with counters, for compliance's overview."""

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def open_store(url: str | None, default_dir: Path) -> QuotaStore:
    """``redis://...`` or ``sqlite:///path`` (default: a file next to the users file)."""
    if url is None:
        return SQLiteStore(default_dir / DEFAULT_FILE)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url.removeprefix("sqlite:///")))
    raise ValueError(f"quotas.store: expected redis://... or sqlite:///path, got {url!r}")


# ---------------------------------------------------------------------- SQLite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quota_counts (person TEXT NOT NULL, limit_key TEXT NOT NULL, "
    "bucket INTEGER NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (person, limit_key, bucket))",
)


class SQLiteStore:
    """Counters in a SQLite file: survives restarts; shared by the processes of one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SQLiteFile(path, _SCHEMA, "quota store")

    def describe(self) -> str:
        return self._file.describe()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(work)

    @staticmethod
    def _counts(db: sqlite3.Connection, user: str, limit: Limit, now: float) -> dict[int, int]:
        first = limit.index(now) - limit.buckets + 1
        db.execute(
            "DELETE FROM quota_counts WHERE person = ? AND limit_key = ? AND bucket < ?",
            (user, limit.key, first),
        )
        rows = db.execute(
            "SELECT bucket, amount FROM quota_counts WHERE person = ? AND limit_key = ?", (user, limit.key)
        )
        return dict(rows.fetchall())

    @staticmethod
    def _bump(db: sqlite3.Connection, user: str, limit: Limit, bucket: int, amount: int) -> None:
        db.execute(
            "INSERT INTO quota_counts VALUES (?, ?, ?, max(?, 0)) ON CONFLICT (person, limit_key, bucket) "
            "DO UPDATE SET amount = max(amount + excluded.amount, 0)",
            (user, limit.key, bucket, amount),
        )

    async def reserve(self, user: str, limits: Sequence[Limit], amount: int, now: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                grant = amount
                for limit in limits:
                    grant = min(grant, limit.budget - used(self._counts(db, user, limit, now), limit, now))
                grant = max(grant, 0)
                if grant:
                    for limit in limits:
                        self._bump(db, user, limit, limit.index(now), grant)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return grant

        return await self._run(work)

    async def add(self, user: str, limits: Sequence[Limit], amount: int, at: float) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for limit in limits:
                    if amount > 0 or limit.index(at) >= limit.index(time.time()) - limit.buckets + 1:
                        if amount < 0:
                            # Giving back: only into the bucket the amount was taken from.
                            db.execute(
                                "UPDATE quota_counts SET amount = max(amount + ?, 0) "
                                "WHERE person = ? AND limit_key = ? AND bucket = ?",
                                (amount, user, limit.key, limit.index(at)),
                            )
                        else:
                            self._bump(db, user, limit, limit.index(at), amount)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(work)

    async def usage(self, user: str, limits: Sequence[Limit], now: float) -> list[Usage]:
        def work(db: sqlite3.Connection) -> list[Usage]:
            out = []
            for limit in limits:
                counts = self._counts(db, user, limit, now)
                out.append(Usage(limit, used(counts, limit, now), frees_at(counts, limit, now)))
            return out

        return await self._run(work)

    async def people(self) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT DISTINCT person FROM quota_counts ORDER BY person")]

        return await self._run(work)

    async def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------- Redis

# KEYS: one hash per limit (field: bucket index, value: amount). ARGV[1]: the amount wanted; then
# per limit: first live bucket, current bucket, budget, time to live (seconds).
_RESERVE = """
local grant = tonumber(ARGV[1])
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 4
  local first = tonumber(ARGV[base + 1])
  local all = redis.call('HGETALL', KEYS[i])
  local spent = 0
  for j = 1, #all, 2 do
    if tonumber(all[j]) >= first then
      spent = spent + tonumber(all[j + 1])
    else
      redis.call('HDEL', KEYS[i], all[j])
    end
  end
  local left = tonumber(ARGV[base + 3]) - spent
  if left < grant then grant = left end
end
if grant < 0 then grant = 0 end
if grant > 0 then
  for i = 1, #KEYS do
    local base = 1 + (i - 1) * 4
    redis.call('HINCRBY', KEYS[i], ARGV[base + 2], grant)
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[base + 4]))
  end
end
return grant
"""

# KEYS: one hash per limit. ARGV[1]: the amount (negative gives back); then per limit: bucket, ttl.
_ADD = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local bucket = ARGV[2 * i]
  local value = redis.call('HINCRBY', KEYS[i], bucket, amount)
  if value <= 0 then redis.call('HDEL', KEYS[i], bucket) end
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1]))
end
return 1
"""

_PREFIX = "sekisho:quota:"
_PEOPLE = "sekisho:quota-people"


class RedisStore:
    """Counters in Redis: one budget per person across every Sekisho process and host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis_client.connect(url)
        self._reserve = self._redis.register_script(_RESERVE)
        self._add = self._redis.register_script(_ADD)

    def describe(self) -> str:
        return redis_client.describe(self.url)

    @staticmethod
    def _key(user: str, limit: Limit) -> str:
        return f"{_PREFIX}{user}:{limit.key}"

    @staticmethod
    def _ttl(limit: Limit) -> int:
        return limit.window + 2 * limit.bucket

    async def reserve(self, user: str, limits: Sequence[Limit], amount: int, now: float) -> int:
        args: list[int] = [amount]
        for limit in limits:
            args += [limit.index(now) - limit.buckets + 1, limit.index(now), limit.budget, self._ttl(limit)]
        try:
            await self._redis.sadd(_PEOPLE, user)
            grant = await self._reserve(keys=[self._key(user, lim) for lim in limits], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"quota store {self.describe()}: {exc}") from exc
        return int(grant)

    async def add(self, user: str, limits: Sequence[Limit], amount: int, at: float) -> None:
        args: list[int] = [amount]
        for limit in limits:
            args += [limit.index(at), self._ttl(limit)]
        try:
            await self._add(keys=[self._key(user, lim) for lim in limits], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"quota store {self.describe()}: {exc}") from exc

    async def usage(self, user: str, limits: Sequence[Limit], now: float) -> list[Usage]:
        out = []
        try:
            for limit in limits:
                raw = await self._redis.hgetall(self._key(user, limit))
                counts = {int(k): int(v) for k, v in raw.items()}
                out.append(Usage(limit, used(counts, limit, now), frees_at(counts, limit, now)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"quota store {self.describe()}: {exc}") from exc
        return out

    async def people(self) -> list[str]:
        try:
            return sorted(str(p) for p in await self._redis.smembers(_PEOPLE))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"quota store {self.describe()}: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
