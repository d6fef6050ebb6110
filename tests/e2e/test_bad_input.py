"""Bad input of every kind gets a specific error, and every other client keeps being served."""

from __future__ import annotations

import base64
import socket
import struct
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.wire import messages as m
from tests.conftest import GatewayFactory
from tests.support import Gateway, LoginFailed, raw_client


def _still_serving(gateway: Gateway) -> None:
    with psycopg.connect(gateway.conninfo("alice")) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)


def _fatal(error: m.ErrorResponse) -> tuple[str | None, str | None]:
    return error.get("S"), error.sqlstate


# ----------------------------------------------------------------------------- before startup


def test_garbage_before_startup_is_refused_with_08P01(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        error = client.error()
        assert _fatal(error) == ("FATAL", "08P01")
        assert "startup packet" in (error.get("M") or "")
        assert client.closed()
    _still_serving(gateway)


def test_unsupported_protocol_version_is_refused(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.send(m.StartupMessage((("user", "maint"),), protocol=2 << 16).encode())
        error = client.error()
        assert _fatal(error) == ("FATAL", "08P01")
        assert "unsupported frontend protocol 2.0" in (error.get("M") or "")


def test_silent_client_is_dropped_after_the_startup_timeout(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(limits={"startup_timeout": 1})
    with raw_client(gw.port) as client:
        started = time.monotonic()
        error = client.error()
        assert _fatal(error) == ("FATAL", "08P01")
        assert "timeout" in (error.get("M") or "")
        assert client.closed()
        assert time.monotonic() - started < 5
    _still_serving(gw)


def test_client_that_stalls_mid_authentication_is_dropped(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(limits={"startup_timeout": 1})
    with raw_client(gw.port) as client:
        client.send(m.StartupMessage((("user", "maint"), ("database", gw.database))).encode())
        assert m.Authentication.decode(client.recv_frame().body).code == m.AUTH_SASL
        assert _fatal(client.error()) == ("FATAL", "08P01")
        assert client.closed()


def test_gssenc_request_is_answered_no_and_startup_continues(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.send(m.GSSENCRequest().encode())
        assert client.recv_byte() == b"N"
        frames = client.login("maint", "maint", gateway.database)
        assert frames[-1].raw == m.ReadyForQuery("I").encode()


def test_ssl_request_without_certificate_is_answered_no(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.send(m.SSLRequest().encode())
        assert client.recv_byte() == b"N"
        assert client.login("maint", "maint", gateway.database)[-1].type == b"Z"


@pytest.mark.parametrize(
    ("params", "sqlstate", "text"),
    [
        ((("user", "maint"), ("user", "lead")), "08P01", 'duplicate startup parameter "user"'),
        ((("user", "maint"), ("replication", "database")), "42501", "replication"),
        ((("user", "maint"), ("replication", "bogus")), "22023", "replication"),
        ((("database", "x"),), "28000", "no PostgreSQL user name"),
    ],
)
def test_startup_packet_is_checked_strictly(
    gateway: Gateway, params: tuple[tuple[str, str], ...], sqlstate: str, text: str
) -> None:
    with raw_client(gateway.port) as client:
        client.send(m.StartupMessage(params).encode())
        error = client.error()
        assert _fatal(error) == ("FATAL", sqlstate)
        assert text in (error.get("M") or "")
        assert client.closed()


# ----------------------------------------------------------------------------- authentication


def test_wrong_password_is_28P01(gateway: Gateway) -> None:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(gateway.conninfo("maint", password="wrong"))
    assert 'password authentication failed for user "maint"' in str(caught.value)


def test_unknown_user_fails_exactly_like_a_wrong_password(gateway: Gateway) -> None:
    errors = {}
    for user in ("maint", "nobody-here"):
        with raw_client(gateway.port) as client, pytest.raises(LoginFailed) as caught:
            client.login(user, "wrong", gateway.database)
        errors[user] = caught.value.error
    known, unknown = errors["maint"], errors["nobody-here"]
    assert known.sqlstate == unknown.sqlstate == "28P01"
    assert known.get("M") == 'password authentication failed for user "maint"'
    assert unknown.get("M") == 'password authentication failed for user "nobody-here"'
    # Same message shape, same fields: nothing tells whether the user exists.
    assert [code for code, _ in known.fields] == [code for code, _ in unknown.fields]


def scram_challenge(port: int, user: str, database: str) -> dict[str, str]:
    """The server-first attributes Sekisho answers a client-first for ``user`` with."""
    with raw_client(port) as client:
        client.send(m.StartupMessage((("user", user), ("database", database))).encode())
        m.Authentication.decode(client.recv_frame().body)
        client.send(m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abcdefghijkl").encode())
        cont = m.Authentication.decode(client.recv_frame().body)
        assert cont.code == m.AUTH_SASL_CONTINUE
        return dict(p.split("=", 1) for p in cont.data.decode().split(","))


def test_unknown_user_gets_a_challenge_shaped_like_a_real_one(gateway: Gateway) -> None:
    """The mock exchange hands out a salt of the real length and iteration count, stable per name."""
    ghost = [scram_challenge(gateway.port, "ghost", gateway.database) for _ in range(2)]
    real = scram_challenge(gateway.port, "maint", gateway.database)
    assert ghost[0]["s"] == ghost[1]["s"]
    assert ghost[0]["i"] == real["i"] == "4096"
    assert len(base64.b64decode(ghost[0]["s"])) == len(base64.b64decode(real["s"]))


def test_other_sasl_mechanisms_and_plain_passwords_are_refused(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.send(m.StartupMessage((("user", "maint"), ("database", gateway.database))).encode())
        auth = m.Authentication.decode(client.recv_frame().body)
        assert auth.sasl_mechanisms() == ("SCRAM-SHA-256",)
        client.send(m.password_message("maint").encode())  # a cleartext password instead
        error = client.error()
        assert _fatal(error)[0] == "FATAL"
        assert client.closed()


def test_unserved_database_is_3D000(gateway: Gateway) -> None:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(gateway.conninfo("maint", dbname="postgres"))
    assert 'database "postgres" does not exist' in str(caught.value)
    with raw_client(gateway.port) as client, pytest.raises(LoginFailed) as refused:
        client.login("maint", "maint", "postgres")
    assert _fatal(refused.value.error) == ("FATAL", "3D000")


# ----------------------------------------------------------------------------- after login


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (b"Q" + struct.pack("!I", 12) + b"select 1", "unterminated string"),  # no NUL
        (b"z" + struct.pack("!I", 4), "invalid frontend message type"),
        (b"Q" + struct.pack("!I", 2), "invalid message length"),
        (b"Q" + struct.pack("!I", 0x7FFFFFF0), "over the limit"),
        (b"B" + struct.pack("!I", 9) + b"\0\0\xff\xff\xff", "malformed Bind"),
        (b"p" + struct.pack("!I", 8) + b"abcd", "invalid frontend message type"),
    ],
)
def test_malformed_message_after_login_is_08P01_and_closes_only_that_session(
    gateway: Gateway, payload: bytes, text: str
) -> None:
    with psycopg.connect(gateway.conninfo("lead")) as bystander, raw_client(gateway.port) as client:
        client.login("maint", "maint", gateway.database)
        client.send(payload)
        error = client.error()
        assert _fatal(error) == ("FATAL", "08P01")
        assert text in (error.get("M") or "")
        assert client.closed()
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    _still_serving(gateway)


def test_oversized_message_is_refused_before_it_is_buffered(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(limits={"max_message_bytes": 4096})
    with raw_client(gw.port) as client:
        client.login("maint", "maint", gw.database)
        client.send(m.Query("SELECT '" + "x" * 10_000 + "'").encode()[:100])
        error = client.error()
        assert _fatal(error) == ("FATAL", "08P01")
        assert "over the limit of 4096" in (error.get("M") or "")
    _still_serving(gw)


def test_terminate_closes_cleanly(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        client.login("maint", "maint", gateway.database)
        client.send(m.Terminate().encode())
        assert client.closed()


def test_half_closed_and_reset_clients_do_not_disturb_others(gateway: Gateway) -> None:
    for _ in range(20):
        with raw_client(gateway.port) as client:
            client.login("maint", "maint", gateway.database)
            client.send(m.Query("SELECT pg_sleep(0.01)").encode())
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _still_serving(gateway)


_frontend_types = st.sampled_from(
    [b"Q", b"P", b"B", b"D", b"E", b"C", b"S", b"H", b"d", b"c", b"f", b"F", b"X", b"z"]
)


@st.composite
def _hostile_streams(draw: st.DrawFn) -> bytes:
    """Byte streams that look like frontend messages often enough to reach deep into the relay."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        body = draw(st.binary(max_size=64))
        length = draw(st.one_of(st.just(len(body) + 4), st.integers(0, 2**32 - 1)))
        parts.append(draw(_frontend_types) + struct.pack("!I", length) + body)
    return b"".join(parts) + draw(st.binary(max_size=16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=_hostile_streams())
def test_hostile_byte_streams_never_break_the_gateway(gateway: Gateway, stream: bytes) -> None:
    with raw_client(gateway.port, timeout=5) as client:
        client.login("maint", "maint", gateway.database)
        client.send(stream)
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed(timeout=10)
    assert gateway.process is not None
    assert gateway.process.poll() is None
    log = gateway.log()
    assert "Traceback" not in log
    assert "Exception in callback" not in log
