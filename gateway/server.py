"""The listener: accepts clients, owns their session tasks, routes cancels, drains on shutdown.

Every session task is created and tracked here, and cancelled here on shutdown; nothing is fire-and-
forget. ``statistics()`` returns a frozen snapshot for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import hmac
import json
import os
import pwd
import socket
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway import upstream
from gateway.alarms import AlarmHub
from gateway.analysis_pool import AnalysisPool
from gateway.audit import records as audit_records
from gateway.audit.spool import SpoolError
from gateway.audit.trail import AuditTrail, AuditUnavailable
from gateway.catalog import CatalogUnavailable, fetch_catalog, table_rows
from gateway.config import Config, ConfigError, load_token_key
from gateway.detect_store import open_detect_store
from gateway.detection import DetectionStatistics, SharedDetection
from gateway.elevation_store import Elevations, open_elevation_store
from gateway.endpoint import Endpoint
from gateway.gate import PolicyService
from gateway.quota_store import open_store
from gateway.result_masks import maskers_for
from gateway.session import Session, new_backend_key
from gateway.upstream_pool import PoolStatistics, UpstreamPool
from gateway.users import UsersFileError, Verifier, load_or_create_secret, load_users, typical_salt_bytes
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from policy.catalog import Catalog
from policy.detect import Alarm, Clearance, ClearanceRefused, Detector, Holds, Tightening
from policy.detect.tightening import Resync, tightening_for
from policy.errors import PolicyInvalid, Problem
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent
from policy.loader import check_against_catalog, load_policy
from policy.model import Policy

log = structlog.get_logger("sekisho.server")
_AUDIT_SPOOL = ".sekisho-audit"  # the audit spool's directory, next to the users file
_RECENT_ALARMS = 1000  # alarms kept for tightening decisions
# This process's copy of the holds until cleared and clearances (the detection store has the
# shared ones): in force at start before the store answers, and written back if the store lost them.
_HOLDS_STATE = ".sekisho-holds.json"


@dataclass(frozen=True, slots=True)
class Statistics:
    active_sessions: int
    accepted: int
    authentication_failures: int
    refused_too_many: int
    statements: int = 0  # statements finished (one per simple-query string or Execute)
    refused_statements: int = 0
    detection: DetectionStatistics | None = None
    upstream_pool: PoolStatistics | None = None


class _UsersCache:
    """The users file, re-read when it changes so `sekisho passwd` takes effect without restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = self._read_stamp()
        self._users = load_users(path)  # at start a missing or broken file is fatal
        self.salt_bytes = typical_salt_bytes(self._users)

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> dict[str, Verifier]:
        """The current users; a file broken or removed while running keeps the last good version."""
        stamp = self._read_stamp()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._users = load_users(self._path)
                self.salt_bytes = typical_salt_bytes(self._users)
                log.info("users_file_reloaded", path=str(self._path), users=len(self._users))
            except UsersFileError as exc:
                log.error("users_file_invalid_keeping_previous", error=str(exc))
        return self._users


def read_policy(path: Path) -> Policy:
    """Load and validate the policy file (raises PolicyInvalid listing every problem)."""
    return load_policy(read_policy_text(path), str(path))


def read_policy_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyInvalid([Problem(str(path), None, "", f"cannot read the policy file: {exc}")]) from exc


def file_owner(path: Path) -> str:
    """Who owns the policy file: the best a file reload can say about who changed it."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return "unknown"
    try:
        return f"file owner {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"file owner uid {uid}"


@dataclass(frozen=True, slots=True)
class Worker:
    """This process's place among ``sekisho run --workers N``: its index, and the loopback port
    each worker takes forwarded CancelRequests on (a cancel may reach any worker; the secret's top
    byte names the one holding the session)."""

    index: int
    cancel_ports: tuple[int, ...]


class Server:
    """Sekisho's client-facing listener."""

    def __init__(
        self,
        config: Config,
        *,
        sock: socket.socket | None = None,
        worker: Worker | None = None,
        alarms: AlarmHub | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.alarms = alarms
        self._cancel_listener: asyncio.Server | None = None
        self._policy_text = read_policy_text(config.policy_file)
        self.policy = PolicyService(
            load_policy(self._policy_text, str(config.policy_file)), Catalog.of([]), config.limits.budget
        )
        self.audit = self._audit_trail()
        self.analysis_pool = AnalysisPool()  # long statements are analyzed there, off the loop
        self.upstream_pool = UpstreamPool(config.upstream, config.upstream_pool)  # links between clients
        self.catalog_ready = False
        self._catalog_wanted = asyncio.Event()
        self._catalog_task: asyncio.Task[None] | None = None
        self._unmeasured: list[str] = []  # protected tables without a row count (no coverage)
        self.mock_secret = load_or_create_secret(config.users_file.with_name(".sekisho-mock-secret"))
        self.maskers = maskers_for(load_token_key(config))
        self.quota_store = open_store(config.quotas.store, config.users_file.parent)
        self.statements_observed = 0
        # What detection learned lives in the detection store (the quota store's backend), shared
        # by every process; this detector is this process's copy (gateway/detection.py).
        self.detector = Detector(self.policy.policy)
        self.detection = SharedDetection(
            self.detector,
            open_detect_store(config.quotas.store, config.users_file.parent),
            self.policy,
            self._raise,
            alarms.mirror if alarms is not None else None,
            on_holds=self._adopt_holds,
        )
        # Elevation requests and grants live in their own store (the quota store's backend).
        self.elevations = Elevations(
            open_elevation_store(config.quotas.store, config.users_file.parent),
            self.policy,
            self.audit.record,
        )
        self._recent_alarms: deque[Alarm] = deque(maxlen=_RECENT_ALARMS)
        self.holds = self._load_holds()
        for user in self.holds.people():  # a hold until cleared outlasts a restart
            self.policy.restrict(user, self._tightening(user, datetime.now(UTC)))
        self.statements_refused = 0
        self.tls_context = self._tls_context()
        self._users = _UsersCache(config.users_file)
        self._sock = sock
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per client connection
        self._cancels: set[asyncio.Task[None]] = set()  # upstream cancels for departed clients
        self._sessions: dict[int, tuple[Session, m.BackendKeyData | None]] = {}
        self._accepted = 0
        self._auth_failed = 0
        self._too_many = 0

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls.cert is None or tls.key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(tls.cert, tls.key)
        return ctx

    def users(self) -> dict[str, Verifier]:
        return self._users.get()

    def mock_salt_bytes(self) -> int:
        return self._users.salt_bytes

    # ------------------------------------------------------------------ listening

    # ------------------------------------------------------------------ policy and catalog

    def reload_policy(self) -> bool:
        """Re-read the policy file; a broken one never replaces the working one."""
        text: str | None = None
        try:
            text = read_policy_text(self.config.policy_file)
            policy = load_policy(text, str(self.config.policy_file))
        except PolicyInvalid as exc:
            problems = [str(p) for p in exc.problems]
            log.error("policy_invalid_keeping_previous", problems=problems)
            if text is not None:  # a file that was read but refused is a change attempt: on the record
                with contextlib.suppress(AuditUnavailable):
                    self._audit_policy(text, loaded=False, problems=problems)
            return False
        self.policy.replace(policy=policy)
        with contextlib.suppress(AuditUnavailable):
            self._audit_policy(text, loaded=True, problems=[])
        self._policy_text = text
        self.detector.update(policy)
        log.info("policy_reloaded", path=str(self.config.policy_file), version=self.policy.version)
        return True

    def request_catalog_refresh(self) -> None:
        """Ask for a new catalog snapshot soon (after DDL, for instance)."""
        self._catalog_wanted.set()

    async def _refresh_catalog(self) -> bool:
        try:
            catalog = await fetch_catalog(self.config.upstream, self.policy.policy.tables)
        except CatalogUnavailable as exc:
            log.warning("catalog_unavailable", error=str(exc))
            return False
        self.policy.replace(catalog=catalog)
        self._measure_tables(catalog)
        if not self.catalog_ready:
            log.info("catalog_loaded", relations=len(catalog.relations))
        self.catalog_ready = True
        for problem in check_against_catalog(self.policy.policy, catalog):
            log.warning("policy_catalog_mismatch", problem=str(problem))
        return True

    def _measure_tables(self, catalog: Catalog) -> None:
        """Give the detector the protected tables' row counts (coverage is a share of them); say
        which protected tables have none, since coverage cannot be measured for those."""
        rows = table_rows(catalog)
        self.detector.set_table_rows(rows)
        known = catalog.relations
        protected = [".".join(t) for t in self.policy.policy.tables if t in known]
        unknown = sorted(name for name in protected if name not in rows)
        if unknown != self._unmeasured:
            self._unmeasured = unknown
            if unknown:
                log.warning("coverage_table_rows_unknown", tables=unknown,
                            hint="ANALYZE these tables so that coverage can be measured")  # fmt: skip

    async def _catalog_loop(self) -> None:
        """Keep the catalog current: retry quickly until the first snapshot, then refresh."""
        while True:
            delay = self.config.limits.catalog_refresh if self.catalog_ready else 2.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._catalog_wanted.wait()
                    await asyncio.sleep(0.2)  # let a burst of DDL settle into one refresh
            self._catalog_wanted.clear()
            await self._refresh_catalog()

    def _audit_trail(self) -> AuditTrail:
        """This process's audit chain, spooled by the users file unless configured elsewhere."""
        audit = self.config.audit
        spool = audit.spool or self.config.users_file.with_name(_AUDIT_SPOOL)
        name = audit.name or f"{self.config.host}-{self.config.port}"
        if self.worker is not None:
            spool, name = spool / f"worker-{self.worker.index}", f"{name}-w{self.worker.index}"
        return AuditTrail(audit, spool, name)

    def _audit_policy(self, text: str, *, loaded: bool, problems: list[str]) -> None:
        """A policy load or change on the audit trail: who, what changed, which version."""
        before = self._policy_text.splitlines(keepends=True) if self.audit.statistics().accepted else []
        diff = "".join(difflib.unified_diff(before, text.splitlines(keepends=True), "before", "after"))
        self.audit.record(audit_records.policy_change(
            changed_by=file_owner(self.config.policy_file), path=str(self.config.policy_file),
            version=self.policy.version, sha256=hashlib.sha256(text.encode()).hexdigest(), diff=diff,
            loaded=loaded, problems=problems,
        ))  # fmt: skip

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.audit.open()
        except SpoolError as exc:
            raise ConfigError(f"audit.spool: {exc}") from exc
        await self.audit.start()
        self._audit_policy(self._policy_text, loaded=True, problems=[])
        await self._refresh_catalog()
        self._catalog_task = loop.create_task(self._catalog_loop())
        await self.detection.start()
        await self.elevations.start()
        if self._sock is not None:
            self._listener = await loop.create_server(self._new_endpoint, sock=self._sock, backlog=1024)
        else:
            self._listener = await loop.create_server(
                self._new_endpoint, self.config.host, self.config.port, backlog=1024,
                reuse_address=True, reuse_port=self.worker is not None,
            )  # fmt: skip
        if self.worker is not None:
            port = self.worker.cancel_ports[self.worker.index]
            self._cancel_listener = await asyncio.start_server(self._forwarded_cancel, "127.0.0.1", port)
        log.info("listening", host=self.config.host, port=self.port,
                 upstream=self.config.upstream.describe(), tls=self.tls_context is not None)  # fmt: skip

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    def _new_endpoint(self) -> Endpoint:
        return _AcceptedEndpoint(self, self.config.limits.max_message_bytes)

    def accept(self, endpoint: Endpoint) -> None:
        self._accepted += 1
        assert endpoint.transport is not None
        peername = endpoint.transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        address = str(peername[0]) if isinstance(peername, tuple) else ""
        if len(self._tasks) >= self.config.limits.max_clients:
            self._too_many += 1
            endpoint.write(
                m.ErrorResponse(m.error_fields("FATAL", "53300", "sorry, too many clients already")).encode()
            )
            endpoint.close()
            return
        task = asyncio.get_running_loop().create_task(Session(self, endpoint, peer, address).run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ sessions and cancels

    def register(self, session: Session, upstream_key: m.BackendKeyData | None) -> m.BackendKeyData:
        preferred = upstream_key.pid if upstream_key is not None else None
        key = new_backend_key(self._sessions, preferred)
        if self.worker is not None:  # the secret's top byte names this worker, for forwarded cancels
            key = m.BackendKeyData(key.pid, (self.worker.index << 24) | (key.secret & 0xFFFFFF))
        self._sessions[key.pid] = (session, upstream_key)
        return key

    def forget(self, session: Session) -> None:
        entry = self._sessions.get(session.key.pid)
        if entry is not None and entry[0] is session:
            del self._sessions[session.key.pid]

    async def _forward_cancel(self, port: int, pid: int, secret: int) -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(m.CancelRequest(pid, secret).encode())
            await writer.drain()
            writer.close()
        except (OSError, TimeoutError) as exc:
            log.warning("cancel_forward_failed", port=port, error=str(exc))

    async def _forwarded_cancel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A CancelRequest another worker received for one of this worker's sessions."""
        try:
            packet = await asyncio.wait_for(reader.readexactly(16), 5)
            request = m.decode_startup(packet)
            if isinstance(request, m.CancelRequest):
                # Done in a tracked task, which shutdown waits for or cancels (not this handler's).
                task = asyncio.get_running_loop().create_task(
                    self.cancel(request.pid, request.secret, forwarded=True)
                )
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolViolation) as exc:
            log.warning("cancel_forward_bad", error=str(exc))
        finally:
            writer.close()

    def stats_auth_failed(self) -> None:
        self._auth_failed += 1

    def cancel_upstream(self, key: m.BackendKeyData) -> None:
        """Cancel an upstream backend's running statement (its client went away); the task is
        tracked, so shutdown waits for or cancels it."""
        task = asyncio.get_running_loop().create_task(self._send_cancel(key))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _send_cancel(self, key: m.BackendKeyData) -> None:
        try:
            await upstream.send_cancel(self.config.upstream, key)
        except upstream.UpstreamError as exc:
            log.warning("cancel_failed", error=str(exc))

    async def cancel(self, pid: int, secret: int, *, forwarded: bool = False) -> None:
        """Forward a client's CancelRequest to the upstream backend of the session it names (first
        to the worker holding that session, when another worker received it)."""
        worker = self.worker
        if worker is not None and not forwarded and (secret >> 24) != worker.index:
            owner = secret >> 24
            if owner < len(worker.cancel_ports):
                await self._forward_cancel(worker.cancel_ports[owner], pid, secret)
            return
        entry = self._sessions.get(pid)
        if entry is None:
            log.info("cancel_unknown_key", pid=pid)
            return
        session, upstream_key = entry
        if not hmac.compare_digest(session.key.secret.to_bytes(4, "big"), secret.to_bytes(4, "big")):
            log.warning("cancel_bad_secret", pid=pid, user=session.user)
            return
        if upstream_key is None:
            return
        if session.link is not None:
            session.link.cancel_sent = True  # it may land after the statement: never reuse this link
        try:
            await upstream.send_cancel(self.config.upstream, upstream_key)
            log.info("cancel_forwarded", user=session.user, peer=session.peer)
        except upstream.UpstreamError as exc:
            log.warning("cancel_failed", user=session.user, error=str(exc))

    def statistics(self) -> Statistics:
        return Statistics(
            active_sessions=len(self._tasks),
            accepted=self._accepted,
            authentication_failures=self._auth_failed,
            refused_too_many=self._too_many,
            statements=self.statements_observed,
            refused_statements=self.statements_refused,
            detection=self.detection.statistics(),
            upstream_pool=self.upstream_pool.statistics(),
        )

    # ------------------------------------------------------------------ observation

    def count_statement(self) -> None:
        """A finished statement that needs no examining (an ordinary read of unprotected data)."""
        self.statements_observed += 1

    def observe_statement(self, event: StatementEvent) -> None:
        """Every other finished statement of every session, for detection (and the audit trail)."""
        self.statements_observed += 1
        if not event.allowed:
            self.statements_refused += 1
        self.detection.submit(event)  # alarms come back through _raise once the store has it

    def observe_connection(self, event: ConnectionEvent) -> None:
        self.detection.submit(event)

    def observe_quota(self, usage: QuotaUsage) -> None:
        self.detection.submit(usage)

    def _raise(self, alarms: list[Alarm]) -> None:
        """Alarms go to the hub (log, feed, webhook); the policy's on_alarm may tighten the person."""
        if not alarms:
            return
        for alarm in alarms:
            with contextlib.suppress(AuditUnavailable):
                self.audit.record(audit_records.alarm(alarm.to_dict()))
            self._recent_alarms.append(alarm)
            if self.alarms is not None:
                self.alarms.raise_(alarm)
            else:
                log.warning("alarm", **alarm.to_dict())
        now = datetime.now(UTC)
        self.holds.note(alarms, self.policy.policy.alarms)
        raised = {a.id for a in alarms}
        noted = False
        for user in {a.user for a in alarms}:
            held = [a for a in self.holds.held(user) if a.id in raised]
            if held:  # to every process, through the store (when it answers)
                self.detection.share_holds(user, held)
                noted = True
        if noted:
            self.save_holds()
        for user in {a.user for a in alarms}:
            tightening = self._tightening(user, now)
            if tightening is not None:
                until = tightening.until.isoformat() if tightening.until else "cleared"
                log.warning("person_tightened", user=user, max_rows=tightening.max_rows,
                            suspended=tightening.suspend, until=until,
                            alarms=list(tightening.alarms))  # fmt: skip
                with contextlib.suppress(AuditUnavailable):
                    self.audit.record(audit_records.restriction(
                        person=user, max_rows=tightening.max_rows, suspended=tightening.suspend,
                        until=until, alarms=list(tightening.alarms),
                    ))  # fmt: skip
            self.policy.restrict(user, tightening)

    def _tightening(self, user: str, now: datetime) -> Tightening | None:
        return tightening_for(user, self._recent_alarms, self.policy.policy.alarms, now, self.holds)

    def recent_alarms(self) -> list[Alarm]:
        """The alarms this process raised lately, oldest first (for the console)."""
        return list(self._recent_alarms)

    def tightenings(self) -> dict[str, Tightening]:
        """Who is tightened or suspended now, and how."""
        now = datetime.now(UTC)
        return {u: t for u, t in self.policy.restrictions.items() if not t.lapsed(now)}

    async def clear(self, user: str, by: str, reason: str) -> Clearance:
        """Lift ``user``'s hold and tightening after a review by ``by`` (who must be allowed to
        clear: the console and the admin API check that), in the detection store first, so that
        every process lifts them. Raises ClearanceRefused, and StoreUnavailable when the store
        does not answer (nothing is cleared anywhere then)."""
        if user not in self.holds.people() and user not in self.tightenings():
            raise ClearanceRefused("nothing_to_clear", f"{user} is neither suspended nor tightened")
        clearance = Clearance(user=user, by=by, at=datetime.now(UTC), reason=reason)
        self.holds.check(clearance)
        if not await self.detection.clear(clearance):
            raise ClearanceRefused("out_of_order", f"{user} was cleared again meanwhile, later than this")
        with contextlib.suppress(ClearanceRefused):  # a later clearance arrived meanwhile: it stands
            self.holds.clear(clearance)
        self.save_holds()
        log.warning("person_cleared", **clearance.to_dict())
        with contextlib.suppress(AuditUnavailable):
            self.audit.record(audit_records.clearance(clearance.to_dict()))
        self.policy.lift(user)
        self.policy.restrict(user, self._tightening(user, clearance.at))
        return clearance

    def _adopt_holds(self, shared: Holds, pending: Mapping[str, Sequence[Alarm]]) -> Resync:
        """Every process's holds and clearances, read from the detection store: this process's
        copy becomes them (keeping what the store has not taken yet), and whoever was held or
        cleared elsewhere has their tightening here worked out again."""
        resync = self.holds.adopt(shared, pending)
        if resync.changed or resync.unshared_holds or resync.unshared_clearances:
            self.save_holds()
        now = datetime.now(UTC)
        for user in sorted(resync.changed):
            tightening = self._tightening(user, now)
            log.info("holds_changed_elsewhere", user=user, held=bool(self.holds.held(user)),
                     cleared=str(self.holds.cleared_at(user)), tightened=tightening is not None)  # fmt: skip
            self.policy.restrict(user, tightening)
        if resync.unshared_holds or resync.unshared_clearances:
            log.warning("holds_written_back", holds=sorted(resync.unshared_holds),
                        clearances=[c.user for c in resync.unshared_clearances])  # fmt: skip
        return resync

    def _load_holds(self) -> Holds:
        path = self._state_path(_HOLDS_STATE)
        try:
            return Holds.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return Holds()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Fail loud, not open: an unreadable file must not free people held until cleared.
            raise RuntimeError(f"cannot read the holds in {path} ({exc}); fix or move it") from exc

    def save_holds(self) -> None:
        path = self._state_path(_HOLDS_STATE)
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.holds.to_dict()))
            temporary.replace(path)
        except OSError as exc:
            log.error("holds_not_saved", path=str(path), error=str(exc))

    def _state_path(self, name: str) -> Path:
        path = self.config.users_file.with_name(name)
        return path.with_name(f"{path.name}.{self.worker.index}") if self.worker is not None else path

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let sessions finish for a while, then end the rest with 57P01."""
        if self._listener is not None:
            self._listener.close()
        if self._cancel_listener is not None:
            self._cancel_listener.close()
        timeout = self.config.limits.drain_timeout if drain_timeout is None else drain_timeout
        if self._tasks and timeout > 0:
            log.info("draining", sessions=len(self._tasks), timeout=timeout)
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for session, _ in list(self._sessions.values()):
            session.terminate("57P01", "terminating connection due to administrator command")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        for task in set(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream_pool.close()
        if self._cancels:
            await asyncio.wait(set(self._cancels), timeout=2)
        for task in set(self._cancels):
            task.cancel()
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        if self._catalog_task is not None:
            self._catalog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catalog_task
        if self._listener is not None:
            await self._listener.wait_closed()
        if self._cancel_listener is not None:
            await self._cancel_listener.wait_closed()
        await self.analysis_pool.close()
        await self.detection.stop()  # what the sessions did, written back to the shared store
        await self.detection.store.close()
        await self.elevations.stop()
        await self.quota_store.close()
        await self.audit.stop()


class _AcceptedEndpoint(Endpoint):
    """A client connection that starts its session as soon as it is made."""

    def __init__(self, server: Server, max_message: int) -> None:
        super().__init__(max_message)
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.accept(self)
