"""Detection shared by every Sekisho process and host: one picture of each person, one set of
tightenings, one alarm feed.

Theory of operation. Each process keeps a ``Detector`` as a cache of the people it has seen; the
detection store (``gateway.detect_store``, the quota store's backend) holds the truth. Sessions
hand finished events to ``submit``, which only appends to a bounded queue: nothing on the relay
path waits. One task owned here takes what has queued, grouped by person in arrival order, and
for each person:

1. if this copy may be stale (never read, or another process wrote since), reads the stored state
   and, when it differs from what the copy continues, loads it (``Detector.load_person``);
2. applies the person's events to the copy, which yields alarms;
3. writes the state back with a compare-and-set on the version token it continued; if another
   process wrote first, goes back to 1 (the events are applied again, to the newer state);
4. once written, raises the alarms (``on_alarms``: log, feed, webhook, on_alarm tightening) and
   queues them for the shared alarm list.

Alarms are thus raised by whichever process finished a person's event, from the whole picture,
within milliseconds of the statement. Under sustained load rounds are rate-limited (at most
``_ROUNDS`` per ``_ROUNDS_WINDOW``; events gather meanwhile), so a busy person's state is read and
written at most 200 times a second, not once per statement. If the store fails, the process keeps
detecting on its own copy (events applied, alarms raised at once), remembers those events as
pending, and tries the store again every second; when it answers, a person nobody else has written
meanwhile is written as is, and otherwise the stored state is loaded and the pending events replayed
on it (alarms the replay finds again are not raised twice).
Detection never refuses service by itself.

A second task, also owned here, shares the consequences every ``_SHARED_PERIOD``: it writes the
holds until cleared this process noted, reads everyone's holds and clearances (``on_holds``: the
server adopts them into its ``Holds`` and works out again the tightening of whoever changed, so a
clearance recorded by one process lifts what the alarms up to it did in every other, and a hold
noted by one holds the person in every other), combines this process's tightenings into the store,
reads every tightening in force into the policy service (``PolicyService.adopt``, which sessions
consult for each statement, so a suspension decided on one process refuses the person's next
statement on every other within about a second), appends this process's alarms to the shared list
and copies other processes' alarms into the local feed. What the store did not take (it failed)
stays queued here and is written when it answers again: holds noted meanwhile hold the person in
this process until then. Clearances are not queued: ``clear`` goes to the store at once, or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from gateway.detect_store import DetectStore
from gateway.gate import PolicyService
from gateway.quota_store import StoreUnavailable
from policy.detect import Alarm, Detector
from policy.detect.alarm import Plain
from policy.detect.tightening import Clearance, Holds, Resync, Tightening
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent

log = structlog.get_logger("sekisho.detection")

Observed = StatementEvent | ConnectionEvent | QuotaUsage

_QUEUE_LIMIT = 10_000  # events waiting for the store; beyond it new ones are dropped (and counted)
_PENDING_LIMIT = 2_000  # events per person applied without the store, kept for replay
_OUTBOX_LIMIT = 1_000  # alarms and tightenings waiting to be shared while the store is away
_ATTEMPTS = 5  # compare-and-set attempts per round before the events stay pending
_PARALLEL = 16  # people synchronized at once
_RETRY = 1.0  # seconds between attempts to reach a store that failed
_SHARED_PERIOD = 0.5  # seconds between reads of the shared tightenings and alarms
_ROUNDS, _ROUNDS_WINDOW = 20, 0.1  # at most this many rounds of events per this many seconds


@dataclass(frozen=True, slots=True)
class DetectionStatistics:
    events: int  # events submitted
    handled: int  # of those, applied and their alarms raised (with ``dropped``: all, when idle)
    synchronized: int  # person rounds written to the store
    conflicts: int  # writes another process won (the events were applied again)
    local: int  # events applied without the store (it failed, or conflicts persisted)
    dropped: int  # events never applied: the queue was full, or a person's pending list was
    store_failures: int
    store_available: bool
    queued: int


@dataclass(slots=True)
class _Person:
    """What this process knows about its copy of one person's state."""

    base: str = ""  # the store token the copy continues ("" for none stored)
    fresh: bool = False  # whether ``base`` is known to be current
    pending: list[Observed] = field(default_factory=list)  # applied here, not yet in the store
    emitted: set[str] = field(default_factory=set)  # alarms raised from pending events


class SharedDetection:
    """The detector of this process kept in step with every other through the detection store."""

    def __init__(
        self,
        detector: Detector,
        store: DetectStore,
        policy: PolicyService,
        on_alarms: Callable[[list[Alarm]], None],
        mirror: Callable[[Alarm], object] | None = None,
        *,
        on_holds: Callable[[Holds, Mapping[str, Sequence[Alarm]]], Resync] | None = None,
    ) -> None:
        self.detector = detector
        self.store = store
        self.origin = secrets.token_hex(8)  # this process, in the shared alarm list
        self._policy = policy
        self._on_alarms = on_alarms
        self._mirror = mirror
        self._on_holds = on_holds
        self._queue: deque[Observed] = deque()
        self._people: dict[str, _Person] = {}
        self._wake = asyncio.Event()
        self._share_wake = asyncio.Event()
        self._closing = False
        self._round_starts: deque[float] = deque(maxlen=_ROUNDS)
        self._tasks: list[asyncio.Task[None]] = []
        self._alarms_out: deque[dict[str, Plain]] = deque(maxlen=_OUTBOX_LIMIT)
        self._tightenings_out: dict[str, tuple[Tightening, float]] = {}  # with when it was decided
        self._holds_out: dict[str, list[Alarm]] = {}  # alarms holding people, not written yet
        self._clearances_out: list[Clearance] = []  # clearances the store lost, to record again
        self._alarm_seq: int | None = None  # the shared list's last number seen
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._events = self._handled = self._synchronized = self._conflicts = self._local = self._dropped = 0
        self._failures = 0
        policy.on_restrict = self._share_tightening

    # ------------------------------------------------------------------ the session side

    def submit(self, event: Observed) -> None:
        """A finished event of some session; never waits."""
        if not self.detector.watches(event.user):
            return
        self._events += 1
        if len(self._queue) >= _QUEUE_LIMIT:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                log.error("detection_queue_full", dropped=self._dropped, queued=len(self._queue))
            return
        self._queue.append(event)
        self._wake.set()

    def _share_tightening(self, user: str, tightening: Tightening | None) -> None:
        """This process's tightening of ``user``, to combine into the store (None: it has none
        now, so one still queued is withdrawn)."""
        if tightening is None:
            self._tightenings_out.pop(user, None)
            return
        self._tightenings_out[user] = (tightening, time.time())
        self._share_wake.set()

    def share_holds(self, user: str, alarms: Sequence[Alarm]) -> None:
        """Alarms that hold ``user`` until cleared, noted here: written to the store soon (when it
        is back, if it is not answering)."""
        if alarms:
            self._holds_out[user] = [*self._holds_out.get(user, ()), *alarms]  # a new list: see _share
            self._share_wake.set()

    async def clear(self, clearance: Clearance) -> bool:
        """Record ``clearance`` in the store, lifting the person's shared hold and tightening;
        False when a later clearance is recorded there. Raises StoreUnavailable: a clearance is
        never applied in one process only."""
        return await self.store.clear(clearance, lift=True)

    def statistics(self) -> DetectionStatistics:
        return DetectionStatistics(
            events=self._events,
            handled=self._handled,
            synchronized=self._synchronized,
            conflicts=self._conflicts,
            local=self._local,
            dropped=self._dropped,
            store_failures=self._failures,
            store_available=self._down_since is None,
            queued=len(self._queue),
        )

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Share once (holds and tightenings of other processes are in force before the first
        session), then keep sharing and synchronizing in this object's tasks."""
        try:
            await self._share()
        except StoreUnavailable as exc:
            self._store_failed(exc)
        except Exception:
            log.exception("detection_sharing_failed")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_events(), name="detection-events"),
            loop.create_task(self._run_shared(), name="detection-shared"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Apply and write back what is queued (for up to ``grace`` seconds), then stop."""
        self._closing = True
        self._wake.set()
        self._share_wake.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        unsynced = sum(len(p.pending) for p in self._people.values()) + len(self._queue)
        if unsynced:
            log.warning("detection_state_not_shared", events=unsynced)

    # ------------------------------------------------------------------ events

    async def _run_events(self) -> None:
        while True:
            if not self._queue:
                if self._closing and (self._down() or not self._unsynced()):
                    return
                self._wake.clear()
                timeout = _RETRY if self._unsynced() else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            batch: dict[str, list[Observed]] = {}
            while self._queue:
                event = self._queue.popleft()
                batch.setdefault(event.user, []).append(event)
            if self._down():
                for user, events in batch.items():
                    self._apply_locally(self._person(user), events)
                continue
            self._round_starts.append(time.monotonic())
            await self._round(batch)
            if len(self._round_starts) == _ROUNDS and not self._closing:
                wait = self._round_starts[0] + _ROUNDS_WINDOW - time.monotonic()
                if wait > 0:  # a burst of rounds: let the next events gather
                    await asyncio.sleep(wait)

    async def _round(self, batch: dict[str, list[Observed]]) -> None:
        """Synchronize the people with new events and those with events still pending."""
        users = [*batch, *(u for u in self._unsynced() if u not in batch)]
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(user: str) -> None:
            async with gate:
                try:
                    await self._synchronize(user, batch.get(user, []))
                except Exception:  # a fault with one person must not end detection for everyone
                    log.exception("detection_failed", user=user)

        await asyncio.gather(*(one(user) for user in users))

    def _person(self, user: str) -> _Person:
        person = self._people.get(user)
        if person is None:
            person = self._people[user] = _Person()
        return person

    def _unsynced(self) -> list[str]:
        return [user for user, person in self._people.items() if person.pending]

    def _down(self) -> bool:
        return self._down_since is not None and time.monotonic() < self._retry_at

    async def _synchronize(self, user: str, events: list[Observed]) -> None:
        """One round for one person: steps 1 to 4 of the module's theory."""
        person = self._person(user)
        alarms: list[Alarm] | None = None  # from applying ``events`` to the copy as it is now
        try:
            for _ in range(_ATTEMPTS):
                replayed: list[Alarm] = []
                if not person.fresh:
                    stored = await self.store.fetch(user)
                    person.fresh = True
                    if stored is None:
                        person.base = ""  # nothing stored (or the store lost it): the copy seeds it
                    elif stored.token != person.base:
                        if self._load(user, stored.state):
                            alarms = None
                            replayed = self._apply(person.pending)
                        person.base = stored.token
                if alarms is None:
                    alarms = replayed + self._apply(events)
                state = json.dumps(self.detector.person_state(user))
                token = await self.store.put(user, person.base, state)
                if token is not None:
                    person.base = token
                    person.pending.clear()
                    self._synchronized += 1
                    self._store_back()
                    self._emit(person, alarms)
                    self._handled += len(events)
                    return
                self._conflicts += 1
                person.fresh = False
            log.warning("detection_state_contended", user=user, attempts=_ATTEMPTS)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        # Not written: the events stay in this process's copy until the store takes them.
        if alarms is None:
            alarms = self._apply(events)
        self._keep_pending(person, events)
        self._emit(person, alarms)
        self._handled += len(events)

    def _apply_locally(self, person: _Person, events: list[Observed]) -> None:
        alarms = self._apply(events)
        self._keep_pending(person, events)
        self._emit(person, alarms)
        self._handled += len(events)

    def _keep_pending(self, person: _Person, events: list[Observed]) -> None:
        person.pending.extend(events)
        person.fresh = False
        self._local += len(events)
        excess = len(person.pending) - _PENDING_LIMIT
        if excess > 0:
            del person.pending[:excess]  # applied here, but never replayed on another's state
            self._dropped += excess

    def _load(self, user: str, state: str) -> bool:
        """Load a stored state into the copy; False (and the copy kept) if it is unreadable."""
        try:
            self.detector.load_person(user, json.loads(state))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("detection_state_unreadable", user=user, error=str(exc))
            return False
        return True

    def _apply(self, events: Iterable[Observed]) -> list[Alarm]:
        detector = self.detector
        alarms: list[Alarm] = []
        for event in events:
            if isinstance(event, StatementEvent):
                alarms += detector.observe_statement(event)
            elif isinstance(event, ConnectionEvent):
                alarms += detector.observe_connection(event)
            else:
                alarms += detector.observe_quota(event)
        return alarms

    def _emit(self, person: _Person, alarms: list[Alarm]) -> None:
        """Raise the alarms this person's round found that were not raised before."""
        fresh = [alarm for alarm in alarms if alarm.id not in person.emitted]
        if person.pending:
            person.emitted.update(alarm.id for alarm in fresh)  # a replay may find them again
        else:
            person.emitted.clear()
        if not fresh:
            return
        self._alarms_out.extend(alarm.to_dict() for alarm in fresh)
        self._share_wake.set()
        self._on_alarms(fresh)

    def _store_failed(self, exc: StoreUnavailable) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + _RETRY
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("detection_store_unavailable", store=self.store.describe(), error=str(exc))

    def _store_back(self) -> None:
        if self._down_since is not None:
            log.info("detection_store_back", store=self.store.describe(),
                     after=round(time.monotonic() - self._down_since, 1))  # fmt: skip
            self._down_since = None

    # ------------------------------------------------------------------ tightenings and alarms

    async def _run_shared(self) -> None:
        while True:
            try:
                await self._share()
                self._store_back()
            except StoreUnavailable as exc:
                self._store_failed(exc)
            except Exception:  # a fault (an unreadable entry, say) must not end sharing
                log.exception("detection_sharing_failed")
            if self._closing:
                return
            self._share_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SHARED_PERIOD):
                    await self._share_wake.wait()

    async def _share(self) -> None:
        """One round: write what this process queued, read what every process shared."""
        for user in list(self._holds_out):
            alarms = self._holds_out[user]
            await self.store.hold(user, alarms)
            if self._holds_out.get(user) is alarms:  # not added to meanwhile
                del self._holds_out[user]
        while self._clearances_out:
            await self.store.clear(self._clearances_out[0], lift=False)
            self._clearances_out.pop(0)
        if self._on_holds is not None:
            holds = await self.store.holds()
            resync = self._on_holds(holds, self._holds_out)
            for user, alarms in resync.unshared_holds.items():
                self.share_holds(user, alarms)
            self._clearances_out += resync.unshared_clearances
        now = datetime.now(UTC)
        while self._tightenings_out:
            user, queued = next(iter(self._tightenings_out.items()))
            tightening, decided = queued
            if not tightening.lapsed(now):
                await self.store.tighten(user, tightening, now.timestamp(), decided)
            if self._tightenings_out.get(user) is queued:  # not replaced meanwhile
                del self._tightenings_out[user]
        if self._alarms_out:
            sending = list(self._alarms_out)
            await self.store.append_alarms(self.origin, sending)
            for _ in sending:
                self._alarms_out.popleft()
        lifts = self._policy.lifts
        shared = await self.store.tightenings(time.time())
        if self._policy.lifts == lifts:  # else a clearance here came after the read: next round
            self._policy.adopt(shared)
        latest, entries = await self.store.alarms_after(self._alarm_seq)
        self._alarm_seq = latest
        for origin, data in entries:
            if origin != self.origin and self._mirror is not None:
                try:
                    self._mirror(Alarm.from_dict(data))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("shared_alarm_unreadable", error=str(exc))
