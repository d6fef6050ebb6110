"""Where detection state lives when several Sekisho processes or hosts must share it.

Beside the quota counters and in the same backend (``quotas.store``): a SQLite file on one host
(the default, next to the users file) or Redis for several hosts. It holds four things:

- each person's detector state (``Detector.person_state``) as a JSON blob with a version token
  that changes on every write. ``put`` is a compare-and-set on that token (SQLite: ``BEGIN
  IMMEDIATE``; Redis: one Lua script), so two processes that applied events to the same old state
  cannot both write: the loser reads the new state and applies its events again. Tokens are
  random, not counters, so a store that lost its data (Redis restarted empty) cannot make an old
  token current again;
- each person's tightening in force (``policy.detect.Tightening``), with its end time. Writing one
  combines it with what is there (``gate.combined``: the strictest wins, until the later end), so
  a process that only saw some of a person's alarms never weakens what another decided;
- a capped list of recent alarms with growing sequence numbers and the process that raised them,
  for every process's admin feed;
- holds until cleared and clearances (``policy.detect.Holds``): the alarms that hold each person
  (the first ``HELD_ALARMS``) and each person's latest clearance. Holding and clearing are atomic
  (SQLite: ``BEGIN IMMEDIATE``; Redis: one Lua script each) and judge alarms by their time against
  the stored clearance, so a process that raised an alarm before a clearance it has not heard of
  yet can neither hold the person again with it nor (``tighten`` with the time it decided)
  tighten them again; a clearance also drops the person's stored tightening.

Every failure raises ``StoreUnavailable`` (the quota store's): the caller keeps detecting in
process and writes back when the store is back.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError, WatchError

from gateway import redis_client
from gateway.gate import combined
from gateway.quota_store import DEFAULT_FILE
from gateway.sqlite_file import SQLiteFile, StoreUnavailable
from policy.detect.alarm import Alarm, Plain
from policy.detect.tightening import HELD_ALARMS, Clearance, Holds, Tightening

T = TypeVar("T")
ALARMS_KEPT = 1000  # alarms the shared list keeps (the admin feed's default size)


@dataclass(frozen=True, slots=True)
class Stored:
    """A person's state as the store holds it, and the token of that version."""

    token: str
    state: str  # JSON of Detector.person_state


def new_token() -> str:
    return secrets.token_hex(8)


def _ended(tightening: Tightening, now: float) -> bool:
    return tightening.until is not None and tightening.until.timestamp() <= now


def _until_key(tightening: Tightening) -> float:
    """The SQLite ``until`` column: a tightening held until cleared never ends by itself."""
    return math.inf if tightening.until is None else tightening.until.timestamp()


def tightening_to_json(tightening: Tightening) -> str:
    return json.dumps(
        {
            "max_rows": tightening.max_rows,
            "suspend": tightening.suspend,
            "until": None if tightening.until is None else tightening.until.timestamp(),
            "alarms": list(tightening.alarms),
        }
    )


def tightening_from_json(text: str) -> Tightening:
    data = json.loads(text)
    cap = data["max_rows"]
    return Tightening(
        max_rows=None if cap is None else int(cap),
        suspend=bool(data["suspend"]),
        until=None if data["until"] is None else datetime.fromtimestamp(float(data["until"]), UTC),
        alarms=tuple(str(a) for a in data["alarms"]),
    )


class DetectStore(Protocol):
    async def fetch(self, user: str) -> Stored | None:
        """The person's stored state, or None when the store has none."""

    async def put(self, user: str, expected: str, state: str) -> str | None:
        """Write ``state`` if the stored token is still ``expected`` ("" for none stored);
        returns the new token, or None when another process wrote first."""

    async def tighten(
        self, user: str, tightening: Tightening, now: float, decided: float | None = None
    ) -> Tightening | None:
        """Combine ``tightening`` with the person's stored one (if still in force); the result.
        One ``decided`` (a time) at or before the person's latest clearance is dropped (None):
        the clearance lifted it."""

    async def tightenings(self, now: float) -> dict[str, Tightening]:
        """Every tightening still in force at ``now``."""

    async def append_alarms(self, origin: str, alarms: Sequence[Mapping[str, Plain]]) -> None:
        """Add alarms (``Alarm.to_dict``) raised by process ``origin`` to the shared list."""

    async def alarms_after(self, seq: int | None) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """The latest sequence number and the (origin, alarm) pairs after ``seq``, oldest first
        (None: none, only the latest number, to start following the list)."""

    async def hold(self, user: str, alarms: Sequence[Alarm]) -> None:
        """Add ``alarms`` to the person's hold, except those at or before their latest clearance
        (and beyond ``HELD_ALARMS``)."""

    async def clear(self, clearance: Clearance, *, lift: bool) -> bool:
        """Record ``clearance`` as the person's latest and drop the held alarms up to it (and,
        with ``lift``, their tightening); False, changing nothing, when a later one is recorded."""

    async def holds(self) -> Holds:
        """Everyone held and everyone's latest clearance."""

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def open_detect_store(url: str | None, default_dir: Path) -> DetectStore:
    """The store ``quotas.store`` names (already validated by the configuration)."""
    if url is None:
        return SQLiteDetectStore(default_dir / DEFAULT_FILE)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDetectStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteDetectStore(Path(url.removeprefix("sqlite:///")))
    raise ValueError(f"quotas.store: expected redis://... or sqlite:///path, got {url!r}")


# ---------------------------------------------------------------------- SQLite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS detect_people (person TEXT PRIMARY KEY, token TEXT NOT NULL, "
    "state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS detect_tightenings (person TEXT PRIMARY KEY, until REAL NOT NULL, "
    "tightening TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS detect_alarms (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "origin TEXT NOT NULL, alarm TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS detect_holds (person TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL, "
    "alarm TEXT NOT NULL, PRIMARY KEY (person, id))",
    "CREATE TABLE IF NOT EXISTS detect_cleared (person TEXT PRIMARY KEY, at REAL NOT NULL, "
    "clearance TEXT NOT NULL)",
)


class SQLiteDetectStore:
    """Detection state in the quota store's SQLite file: shared by the processes of one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SQLiteFile(path, _SCHEMA, "detection store")

    def describe(self) -> str:
        return self._file.describe()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(work)

    @staticmethod
    def _atomically(db: sqlite3.Connection, work: Callable[[], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def fetch(self, user: str) -> Stored | None:
        def work(db: sqlite3.Connection) -> Stored | None:
            row = db.execute("SELECT token, state FROM detect_people WHERE person = ?", (user,)).fetchone()
            return None if row is None else Stored(str(row[0]), str(row[1]))

        return await self._run(work)

    async def put(self, user: str, expected: str, state: str) -> str | None:
        def work(db: sqlite3.Connection) -> str | None:
            def swap() -> str | None:
                row = db.execute("SELECT token FROM detect_people WHERE person = ?", (user,)).fetchone()
                if (row[0] if row is not None else "") != expected:
                    return None
                token = new_token()
                db.execute(
                    "INSERT INTO detect_people VALUES (?, ?, ?) ON CONFLICT (person) "
                    "DO UPDATE SET token = excluded.token, state = excluded.state",
                    (user, token, state),
                )
                return token

            return self._atomically(db, swap)

        return await self._run(work)

    async def tighten(
        self, user: str, tightening: Tightening, now: float, decided: float | None = None
    ) -> Tightening | None:
        def work(db: sqlite3.Connection) -> Tightening | None:
            def merge() -> Tightening | None:
                cleared = _sqlite_cleared_at(db, user)
                if decided is not None and cleared is not None and decided <= cleared:
                    return None
                row = db.execute(
                    "SELECT tightening FROM detect_tightenings WHERE person = ? AND until > ?", (user, now)
                ).fetchone()
                merged = combined(tightening_from_json(row[0]) if row is not None else None, tightening)
                assert merged is not None
                db.execute(
                    "INSERT INTO detect_tightenings VALUES (?, ?, ?) ON CONFLICT (person) "
                    "DO UPDATE SET until = excluded.until, tightening = excluded.tightening",
                    (user, _until_key(merged), tightening_to_json(merged)),
                )
                return merged

            return self._atomically(db, merge)

        return await self._run(work)

    async def tightenings(self, now: float) -> dict[str, Tightening]:
        def work(db: sqlite3.Connection) -> dict[str, Tightening]:
            rows = db.execute("SELECT person, tightening FROM detect_tightenings WHERE until > ?", (now,))
            return {str(person): tightening_from_json(text) for person, text in rows.fetchall()}

        return await self._run(work)

    async def append_alarms(self, origin: str, alarms: Sequence[Mapping[str, Plain]]) -> None:
        def work(db: sqlite3.Connection) -> None:
            def append() -> None:
                db.executemany(
                    "INSERT INTO detect_alarms (origin, alarm) VALUES (?, ?)",
                    [(origin, json.dumps(alarm)) for alarm in alarms],
                )
                db.execute(
                    "DELETE FROM detect_alarms WHERE seq <= (SELECT max(seq) FROM detect_alarms) - ?",
                    (ALARMS_KEPT,),
                )

            self._atomically(db, append)

        await self._run(work)

    async def alarms_after(self, seq: int | None) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        def work(db: sqlite3.Connection) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
            # AUTOINCREMENT never reuses a number, even after the newest rows were deleted.
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'detect_alarms'").fetchone()
            latest = int(row[0]) if row is not None else 0
            if seq is None or latest == seq:
                return latest, []
            after = seq if seq < latest else 0  # a smaller number: another file since, take it all
            rows = db.execute(
                "SELECT origin, alarm FROM detect_alarms WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, ALARMS_KEPT),
            ).fetchall()
            return latest, [(str(r[0]), json.loads(r[1])) for r in rows]

        return await self._run(work)

    async def hold(self, user: str, alarms: Sequence[Alarm]) -> None:
        def work(db: sqlite3.Connection) -> None:
            def add() -> None:
                cleared = _sqlite_cleared_at(db, user)
                count = int(
                    db.execute("SELECT count(*) FROM detect_holds WHERE person = ?", (user,)).fetchone()[0]
                )
                for alarm in sorted(alarms, key=lambda a: a.at):
                    at = alarm.at.timestamp()
                    if count >= HELD_ALARMS:
                        break
                    if cleared is None or at > cleared:
                        count += db.execute(
                            "INSERT INTO detect_holds VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            (user, alarm.id, at, json.dumps(alarm.to_dict())),
                        ).rowcount

            self._atomically(db, add)

        await self._run(work)

    async def clear(self, clearance: Clearance, *, lift: bool) -> bool:
        user, at = clearance.user, clearance.at.timestamp()

        def work(db: sqlite3.Connection) -> bool:
            def record() -> bool:
                cleared = _sqlite_cleared_at(db, user)
                if cleared is not None and cleared > at:
                    return False
                db.execute(
                    "INSERT INTO detect_cleared VALUES (?, ?, ?) ON CONFLICT (person) "
                    "DO UPDATE SET at = excluded.at, clearance = excluded.clearance",
                    (user, at, json.dumps(clearance.to_dict())),
                )
                db.execute("DELETE FROM detect_holds WHERE person = ? AND at <= ?", (user, at))
                if lift:
                    db.execute("DELETE FROM detect_tightenings WHERE person = ?", (user,))
                return True

            return self._atomically(db, record)

        return await self._run(work)

    async def holds(self) -> Holds:
        def work(db: sqlite3.Connection) -> Holds:
            held: dict[str, list[Alarm]] = {}
            for person, alarm in db.execute("SELECT person, alarm FROM detect_holds ORDER BY at").fetchall():
                held.setdefault(str(person), []).append(Alarm.from_dict(json.loads(alarm)))
            rows = db.execute("SELECT clearance FROM detect_cleared").fetchall()
            return Holds(held, [Clearance.from_dict(json.loads(row[0])) for row in rows])

        return await self._run(work)

    async def close(self) -> None:
        self._file.close()


def _sqlite_cleared_at(db: sqlite3.Connection, user: str) -> float | None:
    row = db.execute("SELECT at FROM detect_cleared WHERE person = ?", (user,)).fetchone()
    return None if row is None else float(row[0])


# ---------------------------------------------------------------------- Redis

# KEYS[1]: the person's hash (t: token, s: state). ARGV: expected token ("" for none), new token,
# state. Returns 1 when written, 0 when another process wrote first.
_PUT = """
local current = redis.call('HGET', KEYS[1], 't') or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[2], 's', ARGV[3])
return 1
"""

# KEYS[1]: the sequence counter, KEYS[2]: the list. ARGV[1]: how many to keep, ARGV[2]: origin, then
# one alarm (JSON) per argument. Each entry is {"seq", "origin", "alarm"} as JSON, the alarm's text
# kept as it came (decoding and encoding it again in Lua would turn [] into {} and round floats).
_APPEND = """
local kept = tonumber(ARGV[1])
for i = 3, #ARGV do
  local seq = redis.call('INCR', KEYS[1])
  local entry = '{"seq":' .. seq .. ',"origin":' .. cjson.encode(ARGV[2]) .. ',"alarm":' .. ARGV[i] .. '}'
  redis.call('RPUSH', KEYS[2], entry)
end
redis.call('LTRIM', KEYS[2], -kept, -1)
return redis.call('GET', KEYS[1])
"""

# KEYS[1]: the set of held people, KEYS[2]: the person's hold (alarm id -> alarm), KEYS[3]: the
# alarms' times (a sorted set of ids), KEYS[4]: the latest clearance's time by person. ARGV[1]: the
# person, ARGV[2]: how many alarms a hold keeps, then (id, time, alarm JSON) per alarm, oldest first.
_HOLD = """
local cleared = redis.call('HGET', KEYS[4], ARGV[1])
cleared = cleared and tonumber(cleared)
local held = redis.call('HLEN', KEYS[2])
local kept = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  if held >= kept then break end
  if not cleared or tonumber(ARGV[i + 1]) > cleared then
    if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
      redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
      held = held + 1
    end
  end
end
if held > 0 then redis.call('SADD', KEYS[1], ARGV[1]) end
return held
"""

# KEYS[1..4] as for _HOLD, KEYS[5]: the latest clearance (JSON) by person, KEYS[6]: the
# tightenings. ARGV: the person, the clearance's time, its JSON, "1" to drop the tightening too.
# Returns 0 (nothing changed) when a later clearance is recorded.
_CLEAR = """
local cleared = redis.call('HGET', KEYS[4], ARGV[1])
if cleared and tonumber(cleared) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
if ARGV[4] == '1' then redis.call('HDEL', KEYS[6], ARGV[1]) end
return 1
"""

_PERSON = "sekisho:detect:person:"
_TIGHTENINGS = "sekisho:detect:tightenings"
_ALARM_SEQ = "sekisho:detect:alarm-seq"
_ALARMS = "sekisho:detect:alarms"
_HELD = "sekisho:detect:held"
_HOLD_ALARMS = "sekisho:detect:hold:"
_HOLD_TIMES = "sekisho:detect:hold-at:"
_CLEARED_AT = "sekisho:detect:cleared-at"
_CLEARED = "sekisho:detect:cleared"


class RedisDetectStore:
    """Detection state in Redis: one picture of each person across every process and host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis_client.connect(url)
        self._put = self._redis.register_script(_PUT)
        self._append = self._redis.register_script(_APPEND)
        self._hold = self._redis.register_script(_HOLD)
        self._clear = self._redis.register_script(_CLEAR)

    def describe(self) -> str:
        return redis_client.describe(self.url)

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"detection store {self.describe()}: {exc}")

    async def fetch(self, user: str) -> Stored | None:
        try:
            found = await self._redis.hmget(_PERSON + user, ["t", "s"])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        token, state = found
        return None if token is None or state is None else Stored(str(token), str(state))

    async def put(self, user: str, expected: str, state: str) -> str | None:
        token = new_token()
        try:
            written = await self._put(keys=[_PERSON + user], args=[expected, token, state])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return token if int(written) == 1 else None

    async def tighten(
        self, user: str, tightening: Tightening, now: float, decided: float | None = None
    ) -> Tightening | None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(_TIGHTENINGS, _CLEARED_AT)
                        cleared = await pipe.hget(_CLEARED_AT, user)
                        if decided is not None and cleared is not None and decided <= float(cleared):
                            return None
                        raw = await pipe.hget(_TIGHTENINGS, user)
                        current = tightening_from_json(str(raw)) if raw is not None else None
                        if current is not None and _ended(current, now):
                            current = None
                        merged = combined(current, tightening)
                        assert merged is not None
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                        pipe.hset(_TIGHTENINGS, user, tightening_to_json(merged))
                        await pipe.execute()
                        return merged
                    except WatchError:
                        continue  # another process tightened someone meanwhile: read again
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def tightenings(self, now: float) -> dict[str, Tightening]:
        # Ended ones stay in the hash (one field per person ever tightened) until the next
        # tightening of that person replaces them; deleting them here could race with it.
        try:
            raw = await self._redis.hgetall(_TIGHTENINGS)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        found = {str(user): tightening_from_json(str(text)) for user, text in raw.items()}
        return {user: t for user, t in found.items() if not _ended(t, now)}

    async def append_alarms(self, origin: str, alarms: Sequence[Mapping[str, Plain]]) -> None:
        if not alarms:
            return
        try:
            await self._append(
                keys=[_ALARM_SEQ, _ALARMS], args=[ALARMS_KEPT, origin, *(json.dumps(a) for a in alarms)]
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def alarms_after(self, seq: int | None) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        try:
            latest = int(await self._redis.get(_ALARM_SEQ) or 0)
            if seq is None or latest == seq:
                return latest, []
            if latest < seq:  # the store lost its data and counts again: take everything it has
                seq = 0
            raw = await self._redis.lrange(_ALARMS, -min(latest - seq, ALARMS_KEPT), -1)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        entries = [json.loads(item) for item in raw]
        return latest, [(str(e["origin"]), e["alarm"]) for e in entries if int(e["seq"]) > seq]

    @staticmethod
    def _hold_keys(user: str) -> list[str]:
        return [_HELD, _HOLD_ALARMS + user, _HOLD_TIMES + user, _CLEARED_AT]

    async def hold(self, user: str, alarms: Sequence[Alarm]) -> None:
        args: list[str | int] = [user, HELD_ALARMS]
        for alarm in sorted(alarms, key=lambda a: a.at):
            args += [alarm.id, repr(alarm.at.timestamp()), json.dumps(alarm.to_dict())]
        try:
            await self._hold(keys=self._hold_keys(user), args=args)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def clear(self, clearance: Clearance, *, lift: bool) -> bool:
        user = clearance.user
        args = [user, repr(clearance.at.timestamp()), json.dumps(clearance.to_dict()), "1" if lift else "0"]
        try:
            done = await self._clear(keys=[*self._hold_keys(user), _CLEARED, _TIGHTENINGS], args=args)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return int(done) == 1

    async def holds(self) -> Holds:
        try:
            people = sorted(str(user) for user in await self._redis.smembers(_HELD))
            async with self._redis.pipeline(transaction=False) as pipe:
                for user in people:
                    pipe.hvals(_HOLD_ALARMS + user)
                pipe.hvals(_CLEARED)
                *alarms, clearances = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        held: dict[str, list[Alarm]] = {}
        for user, found in zip(people, alarms, strict=True):
            if found:
                held[user] = sorted((Alarm.from_dict(json.loads(a)) for a in found), key=lambda a: a.at)
        return Holds(held, [Clearance.from_dict(json.loads(c)) for c in clearances])

    async def close(self) -> None:
        await self._redis.aclose()
