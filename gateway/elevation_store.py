"""Where elevation requests and grants live: shared by every Sekisho process, across restarts.

Beside the quota counters and in the same backend (``quotas.store``): a SQLite file on one host
(the default, next to the users file) or Redis for several hosts. Each request
(``policy.elevation.Request``) is one JSON document under its id. A decision is a read-modify-write
made atomic (SQLite: ``BEGIN IMMEDIATE``; Redis: WATCH/MULTI on the request's key), with the pure
transition (``approve``, ``deny``, ``revoke``, ``expire``) applied to what is stored at that moment:
two approvers cannot both decide one request, and of the processes that notice an expiry exactly
one writes it (and audits it).

Every failure raises ``StoreUnavailable`` (the quota store's): requests and decisions fail with a
clear error, and each process keeps the grants it read last until they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import structlog
from redis.exceptions import RedisError, WatchError

from gateway import redis_client
from gateway.audit import records
from gateway.audit.records import Record
from gateway.audit.trail import AuditUnavailable
from gateway.gate import PolicyService
from gateway.quota_store import DEFAULT_FILE
from gateway.sqlite_file import SQLiteFile, StoreUnavailable
from policy.elevation import (
    OPEN_STATES,
    ElevationRefused,
    Request,
    approve,
    deny,
    expire,
    grants_in_force,
    revoke,
)
from policy.elevation import request as new_request

log = structlog.get_logger("sekisho.elevations")

T = TypeVar("T")
Change = Callable[[Request], Request]  # a transition; may raise policy.elevation.ElevationRefused
LISTED = 200  # requests SHOW ELEVATIONS lists, newest first


class UnknownRequest(LookupError):
    """No request has this id."""

    code = "unknown_request"


class ElevationStore(Protocol):
    async def add(self, request: Request) -> None:
        """Store a new request (its id must be new)."""

    async def change(self, id: str, change: Change) -> Request:
        """Apply ``change`` to the stored request atomically and store the result; raises
        UnknownRequest, or whatever ``change`` raises (nothing is written then)."""

    async def open(self) -> list[Request]:
        """Every request stored as requested or approved (some may have ended since)."""

    async def recent(self, person: str | None, limit: int = LISTED) -> list[Request]:
        """The newest requests (of ``person``, or everyone's), newest first."""

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def open_elevation_store(url: str | None, default_dir: Path) -> ElevationStore:
    """The store ``quotas.store`` names (already validated by the configuration)."""
    if url is None:
        return SQLiteElevationStore(default_dir / DEFAULT_FILE)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisElevationStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteElevationStore(Path(url.removeprefix("sqlite:///")))
    raise ValueError(f"quotas.store: expected redis://... or sqlite:///path, got {url!r}")


def _encode(request: Request) -> str:
    return json.dumps(request.to_dict(), sort_keys=True)


def _decode(text: str) -> Request:
    return Request.from_dict(json.loads(text))


def _newest_first(requests: list[Request]) -> list[Request]:
    return sorted(requests, key=lambda r: (r.requested_at, r.id), reverse=True)


# ---------------------------------------------------------------------- SQLite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS elevation_requests (id TEXT PRIMARY KEY, person TEXT NOT NULL, "
    "state TEXT NOT NULL, requested REAL NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS elevation_requests_state ON elevation_requests (state)",
)


class SQLiteElevationStore:
    """Requests in the quota store's SQLite file: shared by the processes of one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SQLiteFile(path, _SCHEMA, "elevation store")

    def describe(self) -> str:
        return self._file.describe()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(work)

    @staticmethod
    def _write(db: sqlite3.Connection, request: Request) -> None:
        db.execute(
            "INSERT INTO elevation_requests VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET state = excluded.state, body = excluded.body",
            (request.id, request.person, request.state, request.requested_at.timestamp(), _encode(request)),
        )

    async def add(self, request: Request) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO elevation_requests VALUES (?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.person,
                    request.state,
                    request.requested_at.timestamp(),
                    _encode(request),
                ),
            )

        await self._run(work)

    async def change(self, id: str, change: Change) -> Request:
        def work(db: sqlite3.Connection) -> Request:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT body FROM elevation_requests WHERE id = ?", (id,)).fetchone()
                if row is None:
                    raise UnknownRequest(f"there is no elevation request {id!r}")
                changed = change(_decode(str(row[0])))
                self._write(db, changed)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return changed

        return await self._run(work)

    async def open(self) -> list[Request]:
        def work(db: sqlite3.Connection) -> list[Request]:
            rows = db.execute("SELECT body FROM elevation_requests WHERE state IN ('requested', 'approved')")
            return [_decode(str(r[0])) for r in rows.fetchall()]

        return await self._run(work)

    async def recent(self, person: str | None, limit: int = LISTED) -> list[Request]:
        def work(db: sqlite3.Connection) -> list[Request]:
            if person is None:
                rows = db.execute(
                    "SELECT body FROM elevation_requests ORDER BY requested DESC, id DESC LIMIT ?", (limit,)
                )
            else:
                rows = db.execute(
                    "SELECT body FROM elevation_requests WHERE person = ? "
                    "ORDER BY requested DESC, id DESC LIMIT ?",
                    (person, limit),
                )
            return _newest_first([_decode(str(r[0])) for r in rows.fetchall()])

        return await self._run(work)

    async def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------- Redis

_REQUEST = "sekisho:elevation:request:"  # one string per request: its JSON
_OPEN = "sekisho:elevation:open"  # a set of the ids stored as requested or approved
_BY_TIME = "sekisho:elevation:by-time"  # every id, scored by request time (for listing)


class RedisElevationStore:
    """Requests in Redis: one view of every grant across every process and host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis_client.connect(url)

    def describe(self) -> str:
        return redis_client.describe(self.url)

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"elevation store {self.describe()}: {exc}")

    async def add(self, request: Request) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_REQUEST + request.id, _encode(request), nx=True)
                pipe.sadd(_OPEN, request.id)
                pipe.zadd(_BY_TIME, {request.id: request.requested_at.timestamp()})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def change(self, id: str, change: Change) -> Request:
        key = _REQUEST + id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            raise UnknownRequest(f"there is no elevation request {id!r}")
                        changed = change(_decode(str(raw)))
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                        pipe.set(key, _encode(changed))
                        if changed.state in OPEN_STATES:
                            pipe.sadd(_OPEN, id)
                        else:
                            pipe.srem(_OPEN, id)
                        await pipe.execute()
                        return changed
                    except WatchError:
                        continue  # another process changed it meanwhile: apply the change to that
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def _load(self, ids: list[str]) -> list[Request]:
        if not ids:
            return []
        raw = await self._redis.mget([_REQUEST + i for i in ids])
        return [_decode(str(text)) for text in raw if text is not None]

    async def open(self) -> list[Request]:
        try:
            ids = sorted(str(i) for i in await self._redis.smembers(_OPEN))
            return [r for r in await self._load(ids) if r.state in OPEN_STATES]
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def recent(self, person: str | None, limit: int = LISTED) -> list[Request]:
        try:
            if person is None:
                ids = [str(i) for i in await self._redis.zrevrange(_BY_TIME, 0, limit - 1)]
                return _newest_first(await self._load(ids))
            found: list[Request] = []
            start, page = 0, 500
            while len(found) < limit:  # everyone's newest first, filtered: requests are few
                ids = [str(i) for i in await self._redis.zrevrange(_BY_TIME, start, start + page - 1)]
                if not ids:
                    break
                found += [r for r in await self._load(ids) if r.person == person]
                start += page
            return _newest_first(found)[:limit]
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def newest(requests: list[Request], now: datetime) -> list[Request]:
    """Open requests first (newest first), then the rest: what SHOW ELEVATIONS lists."""
    ordered = _newest_first(requests)
    return [r for r in ordered if r.state_at(now) in OPEN_STATES] + [
        r for r in ordered if r.state_at(now) not in OPEN_STATES
    ]


# ---------------------------------------------------------------------- the process's side


class Elevations:
    """This process's elevation desk: requests and decisions through the store, each on the audit
    trail, and the grants in force kept current in the policy service.

    One task owned here reads the open requests every ``REFRESH`` seconds: the grants in force go
    to ``PolicyService.grant`` (sessions re-merge at their next statement), and requests that
    ended are written down as expired by whichever process gets there first (it alone audits the
    expiry). While the store fails, the grants last read stay until their own end (sessions drop
    an ended grant by its time, store or not), and requests and decisions fail with
    ``StoreUnavailable``.
    """

    REFRESH = 1.0  # seconds between reads of the store

    def __init__(
        self, store: ElevationStore, service: PolicyService, record: Callable[[Record], object]
    ) -> None:
        self.store = store
        self._service = service
        self._record = record
        self._task: asyncio.Task[None] | None = None
        self._known: dict[str, Request] = {}  # open requests as last read, by id
        self._failing = False

    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="elevations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH)
            with contextlib.suppress(StoreUnavailable):
                await self.refresh()

    async def refresh(self) -> None:
        """Read the open requests, put the grants in force, write down what has expired."""
        try:
            requests = await self.store.open()
        except StoreUnavailable as exc:
            if not self._failing:
                log.error(
                    "elevation_store_unavailable",
                    error=str(exc),
                    hint="grants read last stay until they end; requests and decisions fail",
                )
            self._failing = True
            raise
        if self._failing:
            log.info("elevation_store_available", store=self.store.describe())
            self._failing = False
        now = datetime.now(UTC)
        self._known = {r.id: r for r in requests}
        self._service.grant(grants_in_force(self._service.policy, requests, now))
        for ended in (r for r in requests if r.state_at(now) == "expired"):
            try:
                expired = await self.store.change(ended.id, lambda r: expire(r, now))
            except (ElevationRefused, UnknownRequest):
                continue  # another process wrote it down first (and audited it)
            log.info("elevation_expired", **_fields(expired))
            self._audit("expired", expired, by=None)

    def _audit(self, event: str, request: Request, *, by: str | None, session: str | None = None) -> None:
        try:
            self._record(records.elevation(event, request.to_dict(), by=by, session=session))
        except AuditUnavailable as exc:
            log.critical("audit_record_lost", kind="elevation", event=event, id=request.id, error=str(exc))

    # ------------------------------------------------------------------ the console's and API's side

    async def request(self, person: str, elevation: str, duration: timedelta, reason: str) -> Request:
        """A new request; raises ElevationRefused or StoreUnavailable."""
        created = new_request(self._service.policy, secrets.token_hex(4), person, elevation, duration, reason,
                          datetime.now(UTC))  # fmt: skip
        await self.store.add(created)
        log.info("elevation_requested", **_fields(created))
        self._audit("requested", created, by=person)
        return created

    async def decide(self, id: str, by: str, verdict: str, reason: str = "") -> Request:
        """``verdict`` (approve, deny or revoke) on request ``id`` by ``by``; applies at once in
        this process (others within ``REFRESH``). Raises ElevationRefused, UnknownRequest or
        StoreUnavailable."""
        policy = self._service.policy

        def change(current: Request) -> Request:
            now = datetime.now(UTC)
            if verdict == "approve":
                return approve(policy, current, by, now)
            if verdict == "deny":
                return deny(policy, current, by, reason, now)
            return revoke(policy, current, by, now)

        changed = await self.store.change(id, change)
        event = {"approve": "approved", "deny": "denied", "revoke": "revoked"}[verdict]
        log.info(f"elevation_{event}", by=by, **_fields(changed))
        self._audit(event, changed, by=by)
        with contextlib.suppress(StoreUnavailable):
            await self.refresh()
        return changed

    async def listing(self, person: str | None) -> list[Request]:
        """Requests to show (``person``'s, or everyone's for None), open ones first."""
        return newest(await self.store.recent(person), datetime.now(UTC))

    def used(self, grant: str, session: str) -> Record:
        """The audit record of a grant's first use in a session (``by``: the person using it)."""
        known = self._known.get(grant)
        if known is not None:
            return records.elevation("used", known.to_dict(), by=known.person, session=session)
        granted = next((g for held in self._service.grants.values() for g in held if g.id == grant), None)
        person = granted.person if granted is not None else None
        fields = {"id": grant, "person": person, "elevation": granted.elevation if granted else None}
        return records.elevation("used", fields, by=person, session=session)


def _fields(request: Request) -> dict[str, object]:
    return {
        "id": request.id,
        "person": request.person,
        "elevation": request.elevation,
        "state": request.state,
    }
