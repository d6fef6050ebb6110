"""Links to the upstream PostgreSQL under the service account: connect, TLS, authenticate, cancel.

A person's session never reaches the upstream with the person's credentials; it gets a link opened
here with the service credentials from the configuration. Failures are classified so the client is
told something true and useful without seeing service details: the upstream is unreachable
(08006), it is starting up or shutting down (its own 57P03), or Sekisho's own service login was
rejected (a configuration fault, reported as 08006 to the client and in full to the log).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from gateway.auth import AuthFailed, ScramClientExchange, md5_password
from gateway.config import UpstreamConfig
from gateway.endpoint import ConnectionClosed, Endpoint
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame


class UpstreamError(Exception):
    """The upstream link could not be established; ``sqlstate``/``message`` are for the client."""

    code = "upstream_unavailable"

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail


@dataclass(slots=True)
class UpstreamLink:
    """An authenticated upstream connection, ready for queries.

    ``parameters`` are the ParameterStatus values the upstream reported at startup (what every
    client of this link is welcomed with); ``reported`` follows every ParameterStatus since, so
    that a link whose session settings did not come back to them is never reused
    (``gateway.upstream_pool``). ``cancel_sent`` marks a link whose backend was sent a cancel on a
    client's behalf: the cancel may land later, on someone else's statement, so it is not reused.
    """

    endpoint: Endpoint
    parameters: list[tuple[str, str]]
    backend_key: m.BackendKeyData | None
    notices: list[bytes]
    reported: dict[str, str] = field(default_factory=dict)
    cancel_sent: bool = False

    def __post_init__(self) -> None:
        if not self.reported:
            self.reported = dict(self.parameters)

    def parameter_status(self, body: bytes) -> None:
        """Note a ParameterStatus the upstream sent mid-session."""
        status = m.ParameterStatus.decode(body)
        self.reported[status.name] = status.value

    @property
    def as_started(self) -> bool:
        """Every reported parameter has its startup value again (as after a successful reset)."""
        return self.reported == dict(self.parameters)


def _ssl_context(cfg: UpstreamConfig) -> ssl.SSLContext:
    if cfg.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=cfg.sslrootcert)
        ctx.check_hostname = cfg.sslmode == "verify-full"
        return ctx
    # libpq's require/prefer/allow encrypt without verifying who the server is.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open(cfg: UpstreamConfig) -> Endpoint:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            _, endpoint = await loop.create_connection(Endpoint, cfg.host, cfg.port)
    except TimeoutError as exc:
        raise UpstreamError("08006", "the database is not reachable (upstream connection timed out)") from exc
    except OSError as exc:
        raise UpstreamError("08006", "the database is not reachable", exc.strerror or str(exc)) from exc
    return endpoint


async def _negotiate_tls(endpoint: Endpoint, cfg: UpstreamConfig) -> None:
    if cfg.sslmode == "disable":
        return
    endpoint.write(m.SSLRequest().encode())
    while endpoint.reader.buffered < 1:
        await endpoint.wait_data()
    answer = endpoint.reader.take_rest()
    if answer[:1] == b"S" and len(answer) == 1:
        await endpoint.start_tls(_ssl_context(cfg), server_side=False, host=cfg.host)
    elif answer[:1] == b"N" and len(answer) == 1:
        if cfg.sslmode in ("require", "verify-ca", "verify-full"):
            raise UpstreamError("08006", "the database refused TLS but the configuration requires it")
    else:
        raise UpstreamError("08006", "the database answered the TLS request with garbage")


async def connect(cfg: UpstreamConfig, params: list[tuple[str, str]]) -> UpstreamLink:
    """Open, secure and authenticate one upstream link with the client's session parameters."""
    endpoint = await _open(cfg)
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            await _negotiate_tls(endpoint, cfg)
            startup = [("user", cfg.user), ("database", cfg.database), *params]
            endpoint.write(m.StartupMessage(tuple(startup)).encode())
            await _authenticate(endpoint, cfg)
            return await _collect_startup(endpoint)
    except TimeoutError as exc:
        endpoint.abort()
        raise UpstreamError("08006", "the database did not finish the connection in time") from exc
    except (ConnectionClosed, ssl.SSLError, OSError) as exc:
        endpoint.abort()
        raise UpstreamError("08006", "the database closed the connection", str(exc)) from exc
    except ProtocolViolation as exc:
        endpoint.abort()
        raise UpstreamError("08006", "the database sent an invalid message", str(exc)) from exc
    except UpstreamError:
        endpoint.abort()
        raise


def _startup_error(frame: Frame) -> UpstreamError:
    err = m.ErrorResponse.decode(frame.body)
    state = err.sqlstate or "08006"
    text = err.get("M") or "upstream error"
    if state.startswith("28") or state == "42501":
        # The service login itself was refused: an operator problem, not the person's.
        return UpstreamError(
            "08006",
            "Sekisho could not log in to the database with its service account; "
            "ask the Sekisho administrator to check the upstream credentials",
            f"upstream said {state}: {text}",
        )
    return UpstreamError(state, text)


async def _authenticate(endpoint: Endpoint, cfg: UpstreamConfig) -> None:
    scram: ScramClientExchange | None = None
    while True:
        frame = await endpoint.read_frame()
        if frame.type == b"E":
            raise _startup_error(frame)
        if frame.type == b"v":
            continue  # NegotiateProtocolVersion: we asked for nothing optional
        if frame.type != b"R":
            raise UpstreamError("08006", f"unexpected message {frame.type!r} during upstream login")
        auth = m.Authentication.decode(frame.body)
        if auth.code == m.AUTH_OK:
            return
        if auth.code in (m.AUTH_CLEARTEXT, m.AUTH_MD5, m.AUTH_SASL) and cfg.password is None:
            raise UpstreamError(
                "08006",
                "the database asks for a password but none is configured for Sekisho's service account",
            )
        password = cfg.password or ""
        if auth.code == m.AUTH_CLEARTEXT:
            endpoint.write(m.password_message(password).encode())
        elif auth.code == m.AUTH_MD5:
            endpoint.write(m.password_message(md5_password(cfg.user, password, auth.data[:4])).encode())
        elif auth.code == m.AUTH_SASL:
            if "SCRAM-SHA-256" not in auth.sasl_mechanisms():
                raise UpstreamError("08006", "the database offers no SASL mechanism Sekisho supports")
            scram = ScramClientExchange(cfg.user, password)
            endpoint.write(m.sasl_initial_response("SCRAM-SHA-256", scram.client_first()).encode())
        elif auth.code == m.AUTH_SASL_CONTINUE and scram is not None:
            endpoint.write(m.AuthPayload(scram.client_final(auth.data)).encode())
        elif auth.code == m.AUTH_SASL_FINAL and scram is not None:
            try:
                scram.verify_server_final(auth.data)
            except AuthFailed as exc:
                raise UpstreamError("08006", "the database failed to prove its identity", str(exc)) from exc
        else:
            raise UpstreamError("08006", f"the database asks for unsupported authentication ({auth.code})")


async def _collect_startup(endpoint: Endpoint) -> UpstreamLink:
    params: list[tuple[str, str]] = []
    key: m.BackendKeyData | None = None
    notices: list[bytes] = []
    while True:
        frame = await endpoint.read_frame()
        if frame.type == b"S":
            status = m.ParameterStatus.decode(frame.body)
            params.append((status.name, status.value))
        elif frame.type == b"K":
            key = m.BackendKeyData.decode(frame.body)
        elif frame.type == b"N":
            notices.append(frame.raw)
        elif frame.type == b"Z":
            return UpstreamLink(endpoint, params, key, notices)
        elif frame.type == b"E":
            raise _startup_error(frame)
        else:
            raise UpstreamError("08006", f"unexpected message {frame.type!r} after upstream login")


async def send_cancel(cfg: UpstreamConfig, key: m.BackendKeyData) -> None:
    """Ask the upstream to cancel the query running on the backend with this key."""
    endpoint = await _open(cfg)
    try:
        endpoint.write(m.CancelRequest(key.pid, key.secret).encode())
        # The server closes the connection when it has read the request.
        async with asyncio.timeout(cfg.connect_timeout):
            await endpoint.lost
    except TimeoutError:
        pass
    finally:
        endpoint.close()
