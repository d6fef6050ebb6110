"""The listener: accepts clients, owns their session tasks, routes cancels, drains on shutdown.

Every session task is created and tracked here, and cancelled here on shutdown; nothing is fire-and-
forget. ``statistics()`` returns a frozen snapshot for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import upstream
from gateway.catalog import CatalogUnavailable, fetch_catalog
from gateway.config import Config
from gateway.endpoint import Endpoint
from gateway.gate import PolicyService
from gateway.session import Session, new_backend_key
from gateway.users import UsersFileError, Verifier, load_or_create_secret, load_users, typical_salt_bytes
from gateway.wire import messages as m
from policy.catalog import Catalog
from policy.errors import PolicyInvalid, Problem
from policy.loader import check_against_catalog, load_policy
from policy.model import Policy

log = structlog.get_logger("sekisho.server")


@dataclass(frozen=True, slots=True)
class Statistics:
    active_sessions: int
    accepted: int
    authentication_failures: int
    refused_too_many: int


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyInvalid([Problem(str(path), None, "", f"cannot read the policy file: {exc}")]) from exc
    return load_policy(text, str(path))


class Server:
    """Sekisho's client-facing listener."""

    def __init__(self, config: Config, *, sock: socket.socket | None = None) -> None:
        self.config = config
        self.policy = PolicyService(read_policy(config.policy_file), Catalog.of([]))
        self.catalog_ready = False
        self._catalog_wanted = asyncio.Event()
        self._catalog_task: asyncio.Task[None] | None = None
        self.mock_secret = load_or_create_secret(config.users_file.with_name(".sekisho-mock-secret"))
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
        try:
            policy = read_policy(self.config.policy_file)
        except PolicyInvalid as exc:
            log.error("policy_invalid_keeping_previous", problems=[str(p) for p in exc.problems])
            return False
        self.policy.replace(policy=policy)
        log.info("policy_reloaded", path=str(self.config.policy_file), version=self.policy.version)
        return True

    def request_catalog_refresh(self) -> None:
        """Ask for a new catalog snapshot soon (after DDL, for instance)."""
        self._catalog_wanted.set()

    async def _refresh_catalog(self) -> bool:
        try:
            catalog = await fetch_catalog(self.config.upstream)
        except CatalogUnavailable as exc:
            log.warning("catalog_unavailable", error=str(exc))
            return False
        self.policy.replace(catalog=catalog)
        if not self.catalog_ready:
            log.info("catalog_loaded", relations=len(catalog.relations))
        self.catalog_ready = True
        for problem in check_against_catalog(self.policy.policy, catalog):
            log.warning("policy_catalog_mismatch", problem=str(problem))
        return True

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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._refresh_catalog()
        self._catalog_task = loop.create_task(self._catalog_loop())
        if self._sock is not None:
            self._listener = await loop.create_server(self._new_endpoint, sock=self._sock, backlog=1024)
        else:
            self._listener = await loop.create_server(
                self._new_endpoint, self.config.host, self.config.port, backlog=1024,
                reuse_address=True,
            )  # fmt: skip
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
        self._sessions[key.pid] = (session, upstream_key)
        return key

    def forget(self, session: Session) -> None:
        entry = self._sessions.get(session.key.pid)
        if entry is not None and entry[0] is session:
            del self._sessions[session.key.pid]

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

    async def cancel(self, pid: int, secret: int) -> None:
        """Forward a client's CancelRequest to the upstream backend of the session it names."""
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
        )

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let sessions finish for a while, then end the rest with 57P01."""
        if self._listener is not None:
            self._listener.close()
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
