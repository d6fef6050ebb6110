"""Faults: the upstream down, restarting or slow to start; clients that stop reading; cancels."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import psutil
import psycopg
import pytest

from gateway.pgcluster import Cluster, free_port
from gateway.wire import messages as m
from gateway.wire.framing import FrameReader
from tests.conftest import GatewayFactory
from tests.support import WORK, Gateway, LoginFailed, Upstream, raw_client


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A private cluster this test may stop and start at will."""
    cluster = Cluster(WORK / f"pg-own-{uuid.uuid4().hex[:8]}", free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        cluster.log_file.unlink(missing_ok=True)


def test_unreachable_upstream_gives_08006_quickly(gateway_factory: GatewayFactory) -> None:
    dead_port = free_port()
    gw = gateway_factory(f"postgresql://postgres@127.0.0.1:{dead_port}/sekisho_test?sslmode=disable")
    with raw_client(gw.port) as client:
        started = time.monotonic()
        with pytest.raises(LoginFailed) as caught:
            client.login("maint", "maint", "sekisho_test")
        assert caught.value.error.sqlstate == "08006"
        assert "not reachable" in (caught.value.error.get("M") or "")
        assert time.monotonic() - started < 5
    assert "127.0.0.1" not in (caught.value.error.get("M") or ""), "no upstream address leaks"


def test_upstream_restart_fails_sessions_clearly_then_recovers(
    own_cluster: Cluster, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(own_cluster.dsn("postgres"))
    conninfo = gw.conninfo("maint", dbname="postgres")
    conn = psycopg.connect(conninfo, autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    own_cluster.stop("fast")
    with pytest.raises(psycopg.OperationalError) as lost:
        conn.execute("SELECT 1")
    # PostgreSQL's own goodbye (57P01) or Sekisho's 08006: never a hang, never silence.
    assert "terminating connection" in str(lost.value) or "lost" in str(lost.value)
    conn.close()
    with pytest.raises(psycopg.OperationalError) as down:
        psycopg.connect(conninfo, connect_timeout=5)
    assert "not reachable" in str(down.value)
    own_cluster.start()
    with psycopg.connect(conninfo) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


class _StartingUpServer:
    """A fault injector: answers every startup the way PostgreSQL does while it recovers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                reader = FrameReader()
                while (packet := reader.read_startup()) is None:
                    reader.feed(conn.recv(4096))
                if isinstance(m.decode_startup(packet), m.SSLRequest):
                    conn.sendall(b"N")
                    while reader.read_startup() is None:
                        reader.feed(conn.recv(4096))
                fields = m.error_fields("FATAL", "57P03", "the database system is starting up")
                conn.sendall(m.ErrorResponse(fields).encode())

    def close(self) -> None:
        self.sock.close()


def test_upstream_starting_up_is_reported_as_57P03(gateway_factory: GatewayFactory) -> None:
    fake = _StartingUpServer()
    try:
        gw = gateway_factory(f"postgresql://postgres@127.0.0.1:{fake.port}/sekisho_test?sslmode=prefer")
        with raw_client(gw.port) as client, pytest.raises(LoginFailed) as caught:
            client.login("maint", "maint", "sekisho_test")
        assert caught.value.error.sqlstate == "57P03"
        assert caught.value.error.get("M") == "the database system is starting up"
    finally:
        fake.close()


def test_client_that_stops_reading_does_not_grow_gateway_memory(gateway: Gateway) -> None:
    assert gateway.process is not None
    proc = psutil.Process(gateway.process.pid)
    rows = 200_000
    with raw_client(gateway.port, timeout=60) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.login("maint", "maint", gateway.database)
        before = proc.memory_info().rss
        # About 200 MB of result that the client does not read for a while.
        client.send(m.Query(f"SELECT repeat('x', 1000) FROM generate_series(1, {rows})").encode())
        time.sleep(3)
        grown = proc.memory_info().rss - before
        assert grown < 32 * 1024 * 1024, f"gateway grew by {grown / 1e6:.1f} MB while the client stalled"
        count = 0
        while (frame := client.recv_frame()).type != b"Z":
            count += frame.type == b"D"
        assert count == rows


def test_cancel_request_reaches_the_right_upstream_backend(gateway: Gateway) -> None:
    with (
        psycopg.connect(gateway.conninfo("maint")) as conn,
        psycopg.connect(gateway.conninfo("lead")) as other,
    ):
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10
        timer.join()
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_cancel_with_a_wrong_secret_cancels_nothing(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        frames = client.login("maint", "maint", gateway.database)
        key = next(m.BackendKeyData.decode(f.body) for f in frames if f.type == b"K")
        client.send(m.Query("SELECT pg_sleep(1.5), 'done'").encode())
        time.sleep(0.3)
        with raw_client(gateway.port) as canceller:
            canceller.send(m.CancelRequest(key.pid, key.secret ^ 1).encode())
            assert canceller.closed()
        frames = client.recv_until(b"Z")
        assert not any(f.type == b"E" for f in frames)
        assert any(f.type == b"D" and b"done" in f.raw for f in frames)


def test_clients_see_the_upstream_pid_with_sekishos_own_secret(gateway: Gateway) -> None:
    with raw_client(gateway.port) as client:
        frames = client.login("maint", "maint", gateway.database)
        key = next(m.BackendKeyData.decode(f.body) for f in frames if f.type == b"K")
        client.send(m.Query("SELECT pg_backend_pid()").encode())
        row = next(f for f in client.recv_until(b"Z") if f.type == b"D")
        upstream_pid = int(m.DataRow.decode(row.body).values[0] or b"0")
        assert key.pid == upstream_pid
    # The secret is Sekisho's: a cancel with the pid alone and a guessed secret does nothing
    # (test_cancel_with_a_wrong_secret_cancels_nothing), and only Sekisho knows the upstream's.


def test_many_concurrent_clients(gateway: Gateway) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with psycopg.connect(gateway.conninfo(("maint", "lead", "alice")[i % 3])) as conn:
                for j in range(20):
                    got = conn.execute("SELECT %s::int + %s::int", (i, j)).fetchone()
                    assert got == (i + j,)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_a_client_that_vanishes_mid_statement_has_its_statement_cancelled(
    gateway: Gateway, upstream: Upstream
) -> None:
    """Red-team finding: an orphaned statement kept running upstream after its client left."""
    with raw_client(gateway.port) as client:
        client.login("contractor", "contractor", gateway.database)
        client.send(m.Query("SELECT pg_sleep(60), 'orphan-probe'").encode())
        time.sleep(0.5)
    with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
        for _ in range(50):
            running = direct.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE query LIKE '%orphan-probe%' AND pid <> pg_backend_pid()"
            ).fetchone()
            if running == (0,):
                break
            time.sleep(0.1)
        assert running == (0,)
