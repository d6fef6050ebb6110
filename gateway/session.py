"""One client's session: startup and authentication, then a synchronous relay to its upstream link.

Theory of operation
-------------------
1. Startup (awaited, under ``limits.startup_timeout``): SSLRequest is answered 'S' and upgraded when
   a certificate is configured, 'N' otherwise; GSSENCRequest is answered 'N'; a CancelRequest is
   routed to the session owning that key and the connection closes; a StartupMessage is checked
   strictly (duplicate keys, replication, a missing user).
2. Authentication: SCRAM-SHA-256 against the users file, nothing else is offered. Unknown users run
   the same exchange against a mock verifier and fail the same way (28P01, no hint).
3. Upstream: a link with the service account and the client's own session parameters, opened for
   this client or reused from an earlier one (``gateway.upstream_pool``). Its ParameterStatus
   messages go to the client; its BackendKeyData never does (the client gets Sekisho's key, so
   cancels come through Sekisho). A client that leaves between statements hands the link back to
   be reset and reused (``_reusable``); otherwise it is closed.
4. Relay: each arriving chunk is framed; client frames are checked (type and structure) and
   forwarded as the bytes that arrived; upstream frames are forwarded as they came, and
   ReadyForQuery updates the transaction status. A protocol violation from the client ends this
   session with 08P01 and no one else's. When the upstream goes away the client is told 08006
   (unless the upstream already said why, e.g. 57P01) and closed.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Container
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from gateway import console, startup_settings, upstream
from gateway.audit import records
from gateway.audit.trail import AuditUnavailable
from gateway.auth import MECHANISM, AuthFailed, ScramServerExchange
from gateway.endpoint import ConnectionClosed, Endpoint
from gateway.gate import SessionGate, fingerprint
from gateway.quota_gate import QuotaGate
from gateway.relay import Outcome, Relay
from gateway.shapes import shape_of
from gateway.upstream_pool import leaves_session_state
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame
from policy.access import connection_refusal
from policy.decision import AUDIT_UNAVAILABLE, POLICY_REFUSED, UNANALYZABLE, Allow, Decision, Deny
from policy.engine import Named
from policy.events import ConnectionEvent, StatementEvent
from policy.facts import Analysis
from policy.masking import ResultMask, key_columns
from policy.quota import elevation_hint as quota_hint
from policy.quota import limits_of

if TYPE_CHECKING:
    from gateway.server import Server

log = structlog.get_logger("sekisho.session")

# Frontend messages a client may send once the session is established, and whether the session
# decodes them to check their structure here. Query, Parse, Bind, Execute and Close are decoded
# (and so checked) by the relay; CopyData is opaque payload; Sync, Flush and CopyDone are empty.
_RELAYED: dict[bytes, bool] = {
    b"Q": False, b"P": False, b"B": False, b"D": True, b"E": False, b"C": False, b"S": False,
    b"H": False, b"d": False, b"c": False, b"f": True, b"F": True,
}  # fmt: skip
_TRUTHY_REPLICATION = {"true", "on", "yes", "1", "database"}
_HELD_LIMIT = 1000  # client messages waiting behind a driven statement before reading pauses
_OFF_LOOP_BYTES = 8 * 1024  # statements longer than this (and not cached) go to a worker process
_WORKER_GRACE = 10.0  # seconds a worker may take beyond the analysis budget (parse, queueing)
_DDL_TAGS = (b"CREATE", b"ALTER", b"DROP", b"COMMENT", b"GRANT", b"REVOKE", b"SECURITY")


_EVENT_SQL_LIMIT = 10_000  # characters of statement text kept in an event
_ELEVATED_LIMIT = 10_000  # statement texts remembered as allowed under an elevation, per session
# Ordinary work that detection need not see statement by statement: allowed, touching no protected
# table, neither cut nor failed, of these commands, and with none of a dump's signals (a dump
# enumerates the catalog, and takes a snapshot, before reading table by table). Such statements are
# counted; one per session per _HEARTBEAT seconds still goes to detection, which sees when and from
# where the person works (working hours, new addresses) as before.
_ORDINARY_COMMANDS = frozenset({"select", "insert", "update", "delete", "begin"})
_DUMP_HINT = re.compile(r"pg_|information_schema|snapshot|isolation", re.IGNORECASE)
_HEARTBEAT = 1.0
_CONSOLE_PARAMETERS = (
    ("server_version", "15.0 (Sekisho console)"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
    ("application_name", ""), ("TimeZone", "UTC"),
)  # fmt: skip
_UNAUDITED = "Sekisho ended the session: the audit trail cannot record it"
_LEXER_CHANGED = (
    "Sekisho ended the session: client_encoding or standard_conforming_strings changed to a value "
    "it does not analyze"
)


def _lexer_setting_safe(body: bytes) -> bool:
    """A ParameterStatus that leaves the session readable as the analyzer reads it."""
    status = m.ParameterStatus.decode(body)
    if status.name == "client_encoding":
        return startup_settings.encoding_is_safe(status.value)
    if status.name == "standard_conforming_strings":
        return status.value == "on"
    return True


def _is_ddl_tag(body: bytes) -> bool:
    """A CommandComplete whose tag means the catalog changed (CREATE TABLE, ALTER VIEW, ...)."""
    return body.startswith(_DDL_TAGS)


_FALSY_REPLICATION = {"false", "off", "no", "0"}


class SessionRefused(Exception):
    """The session cannot start; sent to the client as a FATAL error with this SQLSTATE."""

    code = "session_refused"

    def __init__(
        self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


class Session:
    """A person's connection through Sekisho, from first byte to close."""

    def __init__(self, server: Server, client: Endpoint, peer: str, address: str) -> None:
        self.server = server
        self.client = client
        self.peer = peer
        self.peer_address = address
        self.user: str | None = None
        self.application_name = ""
        self.tls = False
        self.key = m.BackendKeyData(0, 0)
        self.link: upstream.UpstreamLink | None = None
        self.status = "I"
        self.gate: SessionGate | None = None
        self.startup_params: list[tuple[str, str]] = []
        self.relay: Relay | None = None
        self._client_paused = False
        self._analyzing: asyncio.Task[None] | None = None  # a long statement analyzed off the loop
        self.quota: QuotaGate | None = None
        self.session_id = secrets.token_hex(8)
        self._quota_task: asyncio.Task[None] | None = None  # a top-up or byte record in flight
        self._bytes_flushed = 0.0
        self._upstream_said_fatal = False
        self._ending = False
        self._state_kept = False  # a statement may have left state DISCARD ALL does not reset
        self._stateless: Analysis | None = None  # the last analysis found to leave no such state
        self._released = False  # the upstream link went back to the pool
        self._who: records.Who | None = None  # set once admitted: the session's part of audit records
        self._started = time.time()
        self._statements = 0
        self._observed = 0.0  # when the last statement event went to detection
        self._elevated: dict[str, str] = {}  # statement text -> the grant it was last allowed under
        self._grants_used: set[str] = set()  # grants whose first use here is on the audit trail

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the client until either side closes; never raises for client or upstream faults."""
        try:
            try:
                async with asyncio.timeout(self.server.config.limits.startup_timeout):
                    startup = await self._negotiate()
                    if startup is None:
                        return
                    params = self._check_startup(startup)
                    self.startup_params = params
                    await self._authenticate()
            except TimeoutError:
                log.info("startup_timeout", peer=self.peer, user=self.user)
                self._fatal("08P01", "timeout waiting for the startup and authentication to finish")
                return
            if (dict(startup.params).get("database") or self.user) == console.DATABASE:
                self._admit()
                self._audit_connection(accepted=True)
                await self._console()
                return
            self._check_database(startup)
            self._admit()
            self._connection_event(accepted=True)
            self._audit_connection(accepted=True)
            try:
                self.link = await self.server.upstream_pool.acquire(params)
            except upstream.UpstreamError as exc:
                log.warning(
                    "upstream_connect_failed", peer=self.peer, user=self.user,
                    upstream=self.server.config.upstream.describe(), error=str(exc),
                )  # fmt: skip
                self._fatal(exc.sqlstate, exc.message)
                return
            self._welcome(self.link)
            await self._relay(self.link)
        except SessionRefused as exc:
            log.info(
                "session_refused", peer=self.peer, user=self.user, sqlstate=exc.sqlstate, reason=exc.message
            )
            self._connection_event(accepted=False, reason=exc.message)
            self._audit_connection(accepted=False, reason=exc.message)
            self._fatal(exc.sqlstate, exc.message, exc.detail, exc.hint)
        except ProtocolViolation as exc:
            log.info("protocol_violation", peer=self.peer, user=self.user, error=str(exc))
            if self._who is None:
                self._audit_connection(accepted=False, reason=f"protocol violation: {exc}")
            self._fatal("08P01", str(exc))
        except AuditUnavailable as exc:
            log.critical("session_ended_unaudited", peer=self.peer, user=self.user, error=str(exc))
            self._fatal(
                AUDIT_UNAVAILABLE, f"Sekisho ended the session: the audit trail cannot record it ({exc})"
            )
        except ConnectionClosed:
            log.debug("client_closed_during_startup", peer=self.peer, user=self.user)
        finally:
            if self._who is not None:
                self._audit(records.session_end(person=self._who.fields["person"], session=self.session_id,
                                                address=self.peer_address, started=self._started,
                                                statements=self._statements))  # fmt: skip
            self.server.forget(self)
            self.client.close()
            if self.link is not None:
                self.link.endpoint.close()

    def _fatal(self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> None:
        """Tell the client why and close the connection (and the upstream link with it)."""
        if not self.client.closed:
            fields = m.error_fields("FATAL", sqlstate, message, detail, hint)
            self.client.write(m.ErrorResponse(fields).encode())
            self.client.close()
        if self.link is not None:
            self.link.endpoint.write(m.Terminate().encode())
            self.link.endpoint.close()

    def terminate(self, sqlstate: str, message: str) -> None:
        """End the session from the server side (shutdown, administrator)."""
        self._ending = True
        self._fatal(sqlstate, message)

    # ------------------------------------------------------------------ startup

    async def _negotiate(self) -> m.StartupMessage | None:
        tls_context = self.server.tls_context
        while True:
            packet = m.decode_startup(await self.client.read_startup())
            if isinstance(packet, m.SSLRequest):
                if self.tls:
                    raise ProtocolViolation("SSLRequest received on an encrypted connection")
                if tls_context is None:
                    self.client.write(b"N")
                    continue
                if self.client.reader.buffered:
                    raise ProtocolViolation("received unencrypted data after SSL request")
                self.client.write(b"S")
                await self.client.start_tls(tls_context, server_side=True, host=None)
                self.tls = True
            elif isinstance(packet, m.GSSENCRequest):
                self.client.write(b"N")
            elif isinstance(packet, m.CancelRequest):
                await self.server.cancel(packet.pid, packet.secret)
                return None
            else:
                return packet

    def _check_startup(self, startup: m.StartupMessage) -> list[tuple[str, str]]:
        """Validate the startup packet; return the parameters to pass upstream."""
        seen: set[str] = set()
        passed: list[tuple[str, str]] = []
        unknown_protocol_options: list[str] = []
        for key, value in startup.params:
            if key in seen:
                raise SessionRefused("08P01", f'duplicate startup parameter "{key}"')
            seen.add(key)
            if key in ("user", "database"):
                continue
            if key == "replication":
                if value.lower() in _FALSY_REPLICATION:
                    continue
                if value.lower() in _TRUTHY_REPLICATION:
                    raise SessionRefused("42501", "replication connections are not allowed through Sekisho")
                raise SessionRefused("22023", f'invalid value for parameter "replication": "{value}"')
            if key.startswith("_pq_."):
                unknown_protocol_options.append(key)
                continue
            if key == "application_name":
                self.application_name = value
            passed.append((key, value))
        params = dict(startup.params)
        user = params.get("user", "")
        if not user:
            raise SessionRefused("28000", "no PostgreSQL user name specified in startup packet")
        self.user = user
        if self.server.config.tls.require_tls and not self.tls:
            raise SessionRefused(
                "28000",
                f'connection for user "{user}" refused: Sekisho requires TLS (connect with sslmode=require)',
            )
        if startup.protocol != m.PROTOCOL_V3 or unknown_protocol_options:
            self.client.write(m.NegotiateProtocolVersion(0, tuple(unknown_protocol_options)).encode())
        return passed

    async def _authenticate(self) -> None:
        assert self.user is not None
        user = self.user
        self.client.write(m.Authentication.sasl((MECHANISM,)).encode())
        first = await self._read_auth_payload()
        mechanism, client_first = m.parse_sasl_initial_response(first)
        if mechanism != MECHANISM:
            raise SessionRefused("28000", f"SASL mechanism {mechanism!r} is not supported; use SCRAM-SHA-256")
        known = self.server.users().get(user)
        exchange = ScramServerExchange(known, user, self.server.mock_secret, self.server.mock_salt_bytes())
        try:
            server_first = exchange.server_first(client_first)
            self.client.write(m.Authentication(m.AUTH_SASL_CONTINUE, server_first).encode())
            server_final = exchange.server_final(await self._read_auth_payload())
        except AuthFailed:
            log.info("authentication_failed", peer=self.peer, user=user)
            self.server.stats_auth_failed()
            raise SessionRefused("28P01", f'password authentication failed for user "{user}"') from None
        self.client.write(m.Authentication(m.AUTH_SASL_FINAL, server_final).encode())

    async def _read_auth_payload(self) -> bytes:
        frame = await self.client.read_frame()
        if frame.type != b"p":
            raise ProtocolViolation(f"expected SASL response, got message type {frame.type!r}")
        return frame.body

    def _audit(self, record: records.Record) -> bool:
        """Put a record on the audit trail; False (logged) if the trail cannot take it."""
        try:
            self.server.audit.record(record)
        except AuditUnavailable as exc:
            log.critical(
                "audit_record_lost", kind=record.get("kind"), person=record.get("person"), error=str(exc)
            )
            return False
        return True

    def _audit_connection(self, *, accepted: bool, reason: str | None = None) -> None:
        """A connection attempt on the audit trail; an admitted one also fixes the session's ``Who``."""
        params = dict(self.startup_params)
        self._audit(records.connection(
            person=self.user, session=self.session_id, address=self.peer_address,
            application_name=self.application_name, database=params.get("database"), accepted=accepted,
            reason=reason, tls=self.tls,
        ))  # fmt: skip
        if accepted and self.user is not None and self.gate is not None:
            self._who = records.Who(
                person=self.user, roles=self.gate.permissions.roles, session=self.session_id,
                address=self.peer_address, application_name=self.application_name,
            )  # fmt: skip

    def _connection_event(self, *, accepted: bool, reason: str | None = None) -> None:
        if self.user is not None:
            at = datetime.now(UTC)
            event = ConnectionEvent(at, self.user, self.peer_address, self.application_name, accepted, reason)
            self.server.observe_connection(event)

    async def _console(self) -> None:
        """The ``sekisho`` console database: Sekisho answers, no upstream is involved."""
        assert self.user is not None
        out = [m.Authentication(m.AUTH_OK).encode()]
        out += [m.ParameterStatus(k, v).encode() for k, v in _CONSOLE_PARAMETERS]
        out += [m.BackendKeyData(0, 0).encode(), m.ReadyForQuery("I").encode()]
        self.client.write(b"".join(out))
        log.info("console_started", peer=self.peer, user=self.user)
        while True:
            frame = await self.client.read_frame()
            if frame.type == b"X":
                return
            if frame.type != b"Q":
                raise ProtocolViolation("the Sekisho console answers simple queries only (SHOW QUOTA;)")
            sql = m.Query.decode(frame.body).sql
            policy = self.server.policy.policy
            answer = await console.answer(sql, self.user, policy, self.server.quota_store, self.server)
            self.client.write(b"".join(answer))

    def _check_database(self, startup: m.StartupMessage) -> None:
        params = dict(startup.params)
        database = params.get("database") or params["user"]
        served = self.server.config.upstream.database
        if database != served:
            raise SessionRefused("3D000", f'database "{database}" does not exist',
                                 f'Sekisho serves the database "{served}".')  # fmt: skip

    def _admit(self) -> None:
        """The policy's word on this person connecting at all: a role, the place, the hour."""
        assert self.user is not None
        server = self.server
        gate = SessionGate(server.policy, self.user)
        permissions = gate.permissions
        if not permissions.roles:
            raise SessionRefused(
                "28000", f'Sekisho policy has no role for user "{self.user}"',
                hint="Ask a compliance lead to add you to the policy's users.",
            )  # fmt: skip
        problem = connection_refusal(server.policy.policy, self.user, self.peer_address, datetime.now(UTC))
        if problem is not None:
            raise SessionRefused("28000", problem)
        if permissions.restricted:
            why = startup_settings.refusal(self.startup_params)
            if why is not None:
                raise SessionRefused("42501", why, hint="Remove it from the connection string or options.")
        if permissions.restricted and not server.catalog_ready:
            raise SessionRefused(
                "57P03", "Sekisho is still loading the database catalog; try again in a few seconds"
            )
        self.gate = gate

    def _welcome(self, link: upstream.UpstreamLink) -> None:
        assert self.gate is not None
        if self.gate.permissions.restricted:
            for name, value in link.parameters:
                if not _lexer_setting_safe(m.ParameterStatus(name, value).encode()[5:]):
                    raise SessionRefused("42501", _LEXER_CHANGED.replace("ended the session", "refused"))
        out = [m.Authentication(m.AUTH_OK).encode()]
        out += [m.ParameterStatus(name, value).encode() for name, value in link.parameters]
        self.key = self.server.register(self, link.backend_key)
        out.append(self.key.encode())
        out += link.notices
        out.append(m.ReadyForQuery("I").encode())
        self.client.write(b"".join(out))
        log.info(
            "session_started", peer=self.peer, user=self.user, tls=self.tls,
            application_name=self.application_name,
        )  # fmt: skip

    # ------------------------------------------------------------------ relay

    async def _relay(self, link: upstream.UpstreamLink) -> None:
        assert self.gate is not None
        permissions = self.gate.permissions
        restricted = permissions.restricted
        self.relay = Relay(
            self._decide, restricted, maskers=self.server.maskers if restricted else None,
            admit=self._audit_admission,
        )  # fmt: skip
        service = self.gate.service
        self.relay.key_columns = lambda stmt: key_columns(stmt, service.policy, service.catalog)
        limits = limits_of(permissions.quotas)
        if limits:
            hint = quota_hint(self.gate.service.policy)
            chunk = self.server.config.quotas.chunk
            self.quota = QuotaGate(
                permissions.user, limits, self.server.quota_store, chunk, hint,
                on_usage=self.server.observe_quota,
            )  # fmt: skip
            self.relay.quota = self.quota
        client, up = self.client, link.endpoint
        client.peer, up.peer = up, client
        client.on_lost = self._client_lost
        up.on_lost = self._upstream_lost
        client.on_data = self._from_client
        up.on_data = self._from_upstream
        # Bytes that arrived with the last handshake message (pipelined by eager clients).
        if client.reader.buffered:
            self._from_client(b"")
        if up.reader.buffered:
            self._from_upstream(b"")
        if client.closed:
            self._client_lost(None)
        if up.closed:
            self._upstream_lost(None)
        await client.lost
        if not self._released:
            await up.lost
        if self._quota_task is not None:
            await asyncio.gather(self._quota_task, return_exceptions=True)
        if self.quota is not None:
            await self.quota.close()
        log.info("session_ended", peer=self.peer, user=self.user)

    def _from_client(self, data: bytes) -> None:
        reader = self.client.reader
        relay = self.relay
        assert relay is not None
        if data:
            reader.feed(data)
        if self._analyzing is not None:
            return  # frames wait in the reader until the statement ahead of them is analyzed
        try:
            while (frame := reader.read()) is not None:
                kind = frame.type
                check = _RELAYED.get(kind)
                if check is None:
                    if kind == b"X":
                        self._flush()
                        self._client_terminated()
                        return
                    raise ProtocolViolation(f"invalid frontend message type {kind!r}")
                if check:
                    m.FRONTEND[kind](frame.body)
                    if kind == b"F":
                        self._state_kept = True  # a fastpath call runs a function unanalyzed
                if kind in b"QP" and len(frame.body) > _OFF_LOOP_BYTES and self._analyze_off_loop(frame):
                    break
                relay.client_frame(frame)
        except ProtocolViolation as exc:
            log.info("protocol_violation", peer=self.peer, user=self.user, error=str(exc))
            self._fatal("08P01", str(exc))
            return
        self._flush()
        # Messages held behind a driven statement wait in memory: stop reading when they pile up.
        if len(relay.held) > _HELD_LIMIT and self.client.transport is not None:
            self.client.transport.pause_reading()
            self._client_paused = True

    def _analyze_off_loop(self, frame: Frame) -> bool:
        """Start analyzing a long statement not seen before in a worker process; True if started.

        Reading from this client stops until it is done; then the frame goes to the relay as
        usual and finds its analysis ready. Every other session is served meanwhile.
        """
        assert self.gate is not None
        sql = m.Query.decode(frame.body).sql if frame.type == b"Q" else m.Parse.decode(frame.body).sql
        if self.gate.service.lookup(sql) is not None:
            return False
        if self.client.transport is not None:
            self.client.transport.pause_reading()
        self._analyzing = asyncio.get_running_loop().create_task(self._analyzed(frame, sql))
        return True

    async def _analyzed(self, frame: Frame, sql: str) -> None:
        assert self.gate is not None
        assert self.relay is not None
        service = self.gate.service
        version, snapshot = service.snapshot()
        timeout = service.budget.seconds + _WORKER_GRACE
        analysis, shape = await self.server.analysis_pool.analyze(version, snapshot, sql, timeout)
        key = service.remember(sql, shape, analysis, version)
        self.gate.prepared(sql, analysis, key, version)
        self._analyzing = None
        if self.client.closed or self._ending:
            return
        try:
            self.relay.client_frame(frame)
        except ProtocolViolation as exc:
            log.info("protocol_violation", peer=self.peer, user=self.user, error=str(exc))
            self._fatal("08P01", str(exc))
            return
        if not self._client_paused and self.client.transport is not None:
            self.client.transport.resume_reading()
        self._from_client(b"")

    def _from_upstream(self, data: bytes) -> None:
        assert self.link is not None
        assert self.relay is not None
        reader = self.link.endpoint.reader
        relay = self.relay
        if data:
            reader.feed(data)
        try:
            while (frame := reader.read()) is not None:
                kind = frame.type
                if kind == b"Z":
                    self.status = m.ReadyForQuery.decode(frame.body).status
                elif kind == b"E" and m.ErrorResponse.decode(frame.body).get("S") in ("FATAL", "PANIC"):
                    self._upstream_said_fatal = True
                elif kind == b"C" and _is_ddl_tag(frame.body):
                    self.server.request_catalog_refresh()
                elif kind == b"S":
                    # Followed so that a link is reused only once its settings are back at startup.
                    self.link.parameter_status(frame.body)
                    if relay.restricted and not _lexer_setting_safe(frame.body):
                        # The server now reads statement text differently from the analyzer: fail closed.
                        self._flush()
                        self._fatal("42501", _LEXER_CHANGED)
                        return
                elif kind in (b"R", b"K"):
                    raise ProtocolViolation(f"unexpected message {kind!r} from the database mid-session")
                relay.upstream_frame(frame)
        except ProtocolViolation as exc:
            log.error("upstream_protocol_violation", peer=self.peer, user=self.user, error=str(exc))
            self._flush()
            self._fatal("08006", "the database sent an invalid message; the session was closed")
            return
        if relay.finished:
            # On the audit trail before their ends reach the client (see gateway.audit.trail).
            try:
                self._report(relay.finished)
            except AuditUnavailable as exc:
                log.critical("session_ended_unaudited", peer=self.peer, user=self.user, error=str(exc))
                self._fatal(
                    AUDIT_UNAVAILABLE, f"Sekisho ended the session: the audit trail cannot record it ({exc})"
                )
                return
            finally:
                relay.finished.clear()
        self._flush()
        if (
            self._client_paused
            and not relay.held
            and self._analyzing is None
            and self.client.transport is not None
        ):
            self._client_paused = False
            self.client.transport.resume_reading()
        if relay.held and not relay.barrier:
            relay.release_held()
            self._flush()

    def _report(self, outcomes: list[Outcome]) -> None:
        """Turn what the relay finished into statement events for the server's observers."""
        assert self.user is not None
        for outcome in outcomes:
            decision = outcome.decision
            analysis = outcome.analysis
            first = analysis.statements[0] if analysis is not None and analysis.statements else None
            self._audit_statement(outcome, first.command if first is not None else "unknown")
            if (
                isinstance(decision, Allow)
                and not decision.protected
                and not outcome.cut
                and outcome.sqlstate is None
                and analysis is not None
                and analysis.statements
                and all(s.command in _ORDINARY_COMMANDS for s in analysis.statements)
                and outcome.started - self._observed < _HEARTBEAT
                and not _DUMP_HINT.search(outcome.sql)
            ):
                # Ordinary work (see _ORDINARY_COMMANDS): counted, not examined one by one (building
                # and judging the event would cost more than relaying the statement).
                self.server.count_statement()
                continue
            self._observed = outcome.started
            allowed = isinstance(decision, Allow)
            tables: tuple[str, ...] = ()
            masks: tuple[ResultMask | None, ...] = ()
            if isinstance(decision, Allow):
                tables = tuple(sorted(".".join(t) for t in decision.protected))
                masks = (decision.mask, *decision.masks)
                keyed = outcome.key_table
                if keyed is not None:  # coverage counts the keys against the first table
                    tables = (keyed, *(t for t in tables if t != keyed))
            pii = tuple(sorted({c.source for plan in masks if plan is not None for c in plan.columns}))
            event = StatementEvent(
                at=datetime.fromtimestamp(outcome.started, UTC),
                user=self.user,
                session=self.session_id,
                address=self.peer_address,
                application_name=self.application_name,
                sql=outcome.sql[:_EVENT_SQL_LIMIT],
                fingerprint=fingerprint(outcome.sql),
                command=first.command if first is not None else "unknown",
                tables=tables,
                pii_columns=pii,
                allowed=allowed,
                rule=None if isinstance(decision, Allow) else decision.rule,
                sqlstate=outcome.sqlstate,
                rows=outcome.rows,
                protected_rows=outcome.rows if tables else 0,
                bytes=outcome.size,
                cut=outcome.cut,
                duration=max(time.time() - outcome.started, 0.0),
                cursor=first.prepared_name if first is not None and first.command == "fetch" else None,
                keys=tuple(outcome.keys),
            )
            self.server.observe_statement(event)

    def _audit_statement(self, outcome: Outcome, command: str) -> None:
        """The statement's canonical audit record; raises AuditUnavailable (ending the session
        before its result completes) if the trail cannot take it."""
        assert self._who is not None
        self._statements += 1
        if not self.server.audit.active:
            return
        decision = outcome.decision
        grant = self._elevated.get(outcome.sql) if self._elevated and isinstance(decision, Allow) else None
        if grant is not None and grant not in self._grants_used:
            self.server.audit.record(self.server.elevations.used(grant, self.session_id))
            self._grants_used.add(grant)
        self.server.audit.record(records.statement(
            self._who, started=outcome.started, sql=outcome.sql, fingerprint=shape_of(outcome.sql),
            redact=self.server.policy.policy.audit.redact_literals, command=command,
            analysis=outcome.analysis, decision=decision, rows=outcome.rows, size=outcome.size,
            cut=outcome.cut, cut_by=outcome.cut_by, duration=max(time.time() - outcome.started, 0.0),
            sqlstate=outcome.sqlstate,
            error=decision.message if isinstance(decision, Deny) else outcome.error, elevation=grant,
        ))  # fmt: skip

    def _flush(self) -> None:
        """Send what the relay produced, one write per direction."""
        relay = self.relay
        assert relay is not None
        assert self.link is not None
        if relay.to_upstream:
            out = relay.to_upstream
            self.link.endpoint.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if relay.to_client:
            out = relay.to_client
            data = out[0] if len(out) == 1 else b"".join(out)
            self.client.write(data)
            out.clear()
            if self.quota is not None:
                self.quota.sent_bytes(len(data))
        if self.quota is not None and self._quota_task is None:
            now = time.monotonic()
            if relay.quota_wait or now - self._bytes_flushed > 1.0:
                self._bytes_flushed = now
                self._quota_task = asyncio.get_running_loop().create_task(self._quota_work())

    async def _quota_work(self) -> None:
        """Top the quota up for a waiting statement and record the bytes sent; then go on."""
        quota, relay = self.quota, self.relay
        assert quota is not None
        assert relay is not None
        try:
            if relay.quota_wait:
                await quota.top_up()
            await quota.flush_bytes()
        finally:
            self._quota_task = None
        if relay.quota_wait and not (self.client.closed or self._ending):
            relay.quota_ready()  # the held statement is claimed again: granted, cut or refused
            self._flush()

    def _decide(self, sql: str, named: Named) -> tuple[Analysis, Decision]:
        """The policy's decision; any fault inside analysis refuses the statement (fail closed)."""
        assert self.gate is not None
        try:
            verdict = self.gate.decide(sql, named)
        except Exception as exc:  # a bug in analysis must never let a statement through
            log.exception("analysis_failed", user=self.user, error=str(exc))
            message = "Sekisho could not analyze this statement (internal error), so it is refused"
            deny = Deny("unanalyzable", UNANALYZABLE, message)
            return Analysis(()), deny
        decision = verdict.decision
        if verdict.elevation is not None:
            if len(self._elevated) >= _ELEVATED_LIMIT:
                del self._elevated[next(iter(self._elevated))]
            self._elevated[sql] = verdict.elevation
        elif self._elevated and isinstance(decision, Allow):
            self._elevated.pop(sql, None)
        analysis = verdict.analysis
        if not self._state_kept and analysis is not self._stateless:
            if leaves_session_state(analysis):
                self._state_kept = True
            else:
                self._stateless = analysis  # repeated statements share their cached analysis
        if isinstance(decision, Deny):
            log.info("statement_refused", user=self.user, rule=decision.rule,
                     sqlstate=decision.sqlstate, statement=sql[:500])  # fmt: skip
        else:
            if decision.audited:
                # Allowed only because this person is unrestricted (break glass): always on the record.
                log.warning("statement_break_glass", user=self.user, rules=sorted(set(decision.audited)),
                            statement=sql[:500])  # fmt: skip
            if decision.counted:
                # Masked PII in a channel the policy counts (pii_use: count): quotas and alarms read these.
                log.info("statement_pii_counted", user=self.user, uses=[str(u) for u in decision.counted],
                         statement=sql[:500])  # fmt: skip
        return verdict.analysis, decision

    def _audit_admission(self, sql: str, analysis: Analysis | None, decision: Allow) -> Deny | None:
        """The audit trail's word on running an allowed statement (a Query, or a Bind of a prepared
        one): refused if it cannot be recorded; a protected read is on the record
        (``statement_begin``) before it reaches the database."""
        grant = self._elevated.get(sql)
        if grant is not None and self.gate is not None and not self.gate.in_force(grant):
            # Prepared while an elevation was in force: its allowance ended with the grant.
            message = (
                f"Sekisho refused the statement: it was allowed under elevation {grant}, which has ended"
            )
            hint = "Prepare it again: it is decided under your own permissions now."
            return Deny("elevation_ended", POLICY_REFUSED, message, hint=hint)
        audit = self.server.audit
        why = audit.refusal(bool(decision.protected))
        if why is None and decision.protected and self._who is not None and audit.active:
            first = analysis.statements[0] if analysis is not None and analysis.statements else None
            record = records.statement(
                self._who, kind="statement_begin", started=time.time(), sql=sql, fingerprint=shape_of(sql),
                redact=self.server.policy.policy.audit.redact_literals,
                command=first.command if first is not None else "unknown", analysis=analysis,
                decision=decision,
            )  # fmt: skip
            try:
                audit.record(record)
            except AuditUnavailable as exc:
                why = f"the audit trail cannot record statements ({exc})"
        if why is None:
            return None
        log.error("statement_refused_unauditable", user=self.user, reason=why)
        return Deny("audit", AUDIT_UNAVAILABLE, f"Sekisho refused the statement: {why}",
                    hint="Nothing ran. Tell the Sekisho operators; statements resume when the audit trail "
                    "can record them again.")  # fmt: skip

    def _client_terminated(self) -> None:
        self._close_upstream()
        self.client.close()

    def _client_lost(self, exc: Exception | None) -> None:
        self._close_upstream()

    def _close_upstream(self) -> None:
        """The client is done: hand an idle link back for reuse; otherwise end it, cancelling a
        statement still running there (PostgreSQL would read our Terminate only after it finished)."""
        self._ending = True  # the upstream closing now is our doing, not a fault to report
        link = self.link
        if link is None or link.endpoint.closed:
            return
        if self._reusable(link):
            self._release(link)
            return
        if self.relay is not None and self.relay.pending and link.backend_key is not None:
            self.server.cancel_upstream(link.backend_key)
        link.endpoint.write(m.Terminate().encode())
        link.endpoint.close()

    def _reusable(self, link: upstream.UpstreamLink) -> bool:
        """The client left the link idle between statements, in a state a reset fully undoes."""
        relay = self.relay
        return (
            relay is not None
            and self.status == "I"
            and not relay.pending
            and not relay.open_batch
            and not relay.held
            and not relay.barrier
            and not relay.discard_until_sync
            and not relay.to_upstream
            and self._analyzing is None
            and not self._upstream_said_fatal
            and not self._state_kept
            and not link.cancel_sent
        )

    def _release(self, link: upstream.UpstreamLink) -> None:
        """Give the link to the pool to reset and park; this session no longer touches it."""
        self.server.forget(self)  # from now on no cancel can reach the backend through this session
        endpoint = link.endpoint
        endpoint.on_data = None
        endpoint.on_lost = None
        endpoint.peer = None
        self.client.peer = None
        transport = endpoint.transport
        if transport is not None and not transport.is_reading():
            transport.resume_reading()  # the departed client's backpressure must not outlive it
        self.link = None
        self._released = True
        self.server.upstream_pool.release(link, self.startup_params)

    def _upstream_lost(self, exc: Exception | None) -> None:
        if self.client.closed:
            return
        if not self._upstream_said_fatal and not self._ending:
            log.warning("upstream_lost", peer=self.peer, user=self.user, error=str(exc) if exc else None)
            self.client.write(
                m.ErrorResponse(
                    m.error_fields(
                        "FATAL", "08006",
                        "the connection to the database was lost; reconnect to continue",
                    )
                ).encode()
            )  # fmt: skip
        self.client.close()


def new_backend_key(taken: Container[int], preferred_pid: int | None) -> m.BackendKeyData:
    """Sekisho's key for a client: the upstream's pid where free, always Sekisho's own secret.

    Keeping the upstream pid means ``conn.info.backend_pid == pg_backend_pid()`` and the pid in
    NotificationResponse match, as on a direct connection (clients use that to ignore their own
    notifications); the secret is Sekisho's, so a cancel can only come through Sekisho.
    """
    secret = secrets.randbits(32)
    if preferred_pid is not None and preferred_pid not in taken:
        return m.BackendKeyData(preferred_pid, secret)
    while True:
        pid = secrets.randbelow(2**31 - 1) + 1
        if pid not in taken:
            return m.BackendKeyData(pid, secret)
