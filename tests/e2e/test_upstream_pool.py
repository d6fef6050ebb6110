"""Upstream connections reused across clients (gateway/upstream_pool.py), against the real PostgreSQL.

Reuse is proven by the backend pid (``pg_backend_pid()`` passes through Sekisho to the upstream):
person B gets the backend person A left. Each test waits, through the admin API's statistics, for
the reset to finish and the link to be parked before B connects, so nothing depends on timing.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.config import parse_dsn
from gateway.pgcluster import free_port
from tests.conftest import GatewayFactory
from tests.support import Gateway, Upstream

_WAIT = 20.0  # seconds to wait for something that normally takes milliseconds
# Parameters a session may SET, with a value no fresh session has.
_CHANGED = {
    "search_path": "pg_catalog",
    "statement_timeout": "4min",
    "DateStyle": "German, DMY",
    "TimeZone": "Asia/Tokyo",
    "work_mem": "7MB",
    "application_name": "changed by A",
    "default_transaction_isolation": "serializable",
}


class Pooled:
    """A gateway with its admin port known, to read the pool's statistics."""

    def __init__(self, gateway: Gateway, admin_port: int) -> None:
        self.gateway = gateway
        self.admin_port = admin_port

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.admin_port}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            pool: dict[str, Any] = json.loads(response.read())["upstream_pool"]
            return pool

    def wait(self, what: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + _WAIT
        while True:
            stats = self.stats()
            if done(stats):
                return stats
            assert time.monotonic() < deadline, f"the pool never reached: {what} ({stats})"
            time.sleep(0.05)

    def wait_parked(self, count: int = 1) -> dict[str, Any]:
        return self.wait(f"{count} parked", lambda s: s["idle"] == count and s["resetting"] == 0)

    def connect(self, user: str, **extra: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.gateway.conninfo(user, **extra), autocommit=True)


@pytest.fixture
def pooled(gateway_factory: GatewayFactory) -> Pooled:
    admin = free_port()
    gw = gateway_factory(
        admin={"host": "127.0.0.1", "port": admin},
        upstream_pool={"max_idle": 4, "idle_timeout": 300, "check_after": 300},
    )
    return Pooled(gw, admin)


@pytest.fixture
def direct(upstream: Upstream) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(upstream.conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def other_role(direct: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"pool_role_{uuid.uuid4().hex[:8]}"
    direct.execute(f"CREATE ROLE {name} NOLOGIN")
    try:
        yield name
    finally:
        direct.execute(f"DROP ROLE {name}")


def pid_of(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def one(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def wait_backend_gone(direct: psycopg.Connection[Any], pid: int) -> None:
    deadline = time.monotonic() + _WAIT
    while one(direct, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"):
        assert time.monotonic() < deadline, f"backend {pid} was not closed"
        time.sleep(0.05)


def test_state_of_one_person_never_reaches_the_next(pooled: Pooled, other_role: str) -> None:
    with pooled.connect("maint") as a:
        pid = pid_of(a)
        fresh = {name: one(a, f"SHOW {name}") for name in _CHANGED}
        fresh_status = {name: a.info.parameter_status(name) for name in ("DateStyle", "TimeZone")}
        service = one(a, "SELECT current_user")
        for name, value in _CHANGED.items():
            a.execute(f"SET {name} = '{value}'")
        a.execute("PREPARE secret_plan AS SELECT 42")
        a.execute("BEGIN")
        a.execute("DECLARE secret_cursor CURSOR WITH HOLD FOR SELECT 1")
        a.execute("COMMIT")
        a.execute("CREATE TEMP TABLE secret_temp (x int)")
        a.execute("LISTEN secret_channel")
        a.execute("SELECT pg_advisory_lock(424242)")
        a.execute("SET default_transaction_read_only = on")
        a.execute(f"SET ROLE {other_role}")
        assert one(a, "SELECT current_user") == other_role
        assert one(a, "SELECT count(*) FROM pg_cursors") == 1
    pooled.wait_parked()

    with pooled.connect("lead") as b:
        assert pid_of(b) == pid, "the parked backend was not reused"
        assert b.info.backend_pid == pid  # Sekisho's key keeps the upstream pid where it is free
        for name, value in fresh.items():
            assert one(b, f"SHOW {name}") == value, name
        assert one(b, "SHOW default_transaction_read_only") == "off"
        assert {name: b.info.parameter_status(name) for name in fresh_status} == fresh_status
        assert one(b, "SELECT current_user") == service
        assert one(b, "SELECT session_user") == service
        assert one(b, "SELECT count(*) FROM pg_prepared_statements") == 0
        assert one(b, "SELECT count(*) FROM pg_cursors") == 0
        assert one(b, "SELECT to_regclass('pg_temp.secret_temp')") is None
        assert one(b, "SELECT count(*) FROM pg_listening_channels()") == 0
        advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        assert one(b, advisory) == 0
        b.execute("CREATE TEMP TABLE secret_temp (x int)")  # the name is free again
    stats = pooled.wait_parked()
    assert stats["reused"] == 1


def test_a_restricted_person_is_served_on_a_reused_link(pooled: Pooled) -> None:
    with pooled.connect("maint") as a:
        pid = pid_of(a)
        clear = one(a, "SELECT phone FROM customers ORDER BY id LIMIT 1")
        assert "*" not in clear
    pooled.wait_parked()
    with pooled.connect("contractor") as b:
        assert pid_of(b) == pid
        masked = one(b, "SELECT phone FROM customers ORDER BY id LIMIT 1")
        assert masked != clear
        assert "*" in masked, masked
        assert len(b.execute("SELECT id FROM customers").fetchall()) == 100  # the role's row cap


@pytest.mark.parametrize(
    "leftover",
    [
        "SELECT set_config('sekisho_test.secret', 'A was here', false)",
        "SET sekisho_test.secret = 'A was here'",
        "SELECT setseed(0.5)",
        "DO $$ BEGIN PERFORM set_config('sekisho_test.secret', 'A was here', false); END $$",
    ],
)
def test_state_that_discard_all_keeps_closes_the_link(
    pooled: Pooled, direct: psycopg.Connection[Any], leftover: str
) -> None:
    with pooled.connect("maint") as a:
        pid = pid_of(a)
        a.execute(leftover)
    wait_backend_gone(direct, pid)
    with pooled.connect("lead") as b:
        assert pid_of(b) != pid
        assert one(b, "SELECT current_setting('sekisho_test.secret', true)") is None
    assert pooled.stats()["reused"] == 0


@pytest.mark.parametrize("ending", ["transaction", "aborted", "copy"])
def test_a_client_leaving_mid_work_does_not_leave_its_link(
    pooled: Pooled, direct: psycopg.Connection[Any], ending: str
) -> None:
    a = pooled.connect("maint")
    pid = pid_of(a)
    if ending == "transaction":
        a.execute("BEGIN")
        a.execute("CREATE TEMP TABLE pending_temp (x int)")
    elif ending == "aborted":
        a.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
    else:
        a.execute("CREATE TEMP TABLE pending_temp (x int)")
        # The server waits for rows; the client goes away in the middle.
        a.pgconn.send_query(b"COPY pending_temp (x) FROM STDIN")
        started = a.pgconn.get_result()
        assert started is not None
        assert started.status == psycopg.pq.ExecStatus.COPY_IN
        a.pgconn.put_copy_data(b"1\n")
        a.pgconn.flush()
    a.pgconn.finish()
    wait_backend_gone(direct, pid)
    with pooled.connect("lead") as b:
        assert pid_of(b) != pid
        assert one(b, "SELECT to_regclass('pg_temp.pending_temp')") is None
    assert pooled.stats()["reused"] == 0


def test_links_are_kept_per_startup_parameters(pooled: Pooled) -> None:
    with pooled.connect("maint", application_name="first tool") as a:
        first = pid_of(a)
    pooled.wait_parked()
    with pooled.connect("lead", application_name="second tool") as b:
        assert pid_of(b) != first
        assert one(b, "SHOW application_name") == "second tool"
        assert b.info.parameter_status("application_name") == "second tool"
    pooled.wait_parked(2)
    with pooled.connect("alice", application_name="first tool") as c:
        assert pid_of(c) == first
        assert one(c, "SHOW application_name") == "first tool"


def test_cancel_reaches_a_reused_backend_and_retires_it(
    pooled: Pooled, direct: psycopg.Connection[Any]
) -> None:
    with pooled.connect("maint") as a:
        pid = pid_of(a)
    pooled.wait_parked()
    with pooled.connect("lead") as b:
        assert pid_of(b) == pid
        timer = threading.Timer(0.5, b.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            b.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 15
        timer.join()
        assert one(b, "SELECT 1") == 1
    # A cancel may land late, on another person's statement: a link that was sent one is closed.
    wait_backend_gone(direct, pid)
    assert pooled.stats()["idle"] == 0


def test_a_backend_terminated_while_parked_is_not_handed_out(
    pooled: Pooled, direct: psycopg.Connection[Any]
) -> None:
    with pooled.connect("maint") as a:
        pid = pid_of(a)
    pooled.wait_parked()
    assert one(direct, f"SELECT pg_terminate_backend({pid})") is True
    wait_backend_gone(direct, pid)
    with pooled.connect("lead") as b:
        assert pid_of(b) != pid
        assert one(b, "SELECT 1") == 1
    stats = pooled.stats()
    assert stats["reused"] == 0
    assert stats["dropped_idle"] == 1


def test_idle_links_time_out(gateway_factory: GatewayFactory, direct: psycopg.Connection[Any]) -> None:
    admin = free_port()
    gw = gateway_factory(
        admin={"host": "127.0.0.1", "port": admin}, upstream_pool={"max_idle": 4, "idle_timeout": 1}
    )
    pooled = Pooled(gw, admin)
    with pooled.connect("maint") as a:
        pid = pid_of(a)
    wait_backend_gone(direct, pid)  # after a second parked, the link is closed
    assert pooled.stats()["dropped_idle"] == 1


def test_reuse_can_be_switched_off(gateway_factory: GatewayFactory, direct: psycopg.Connection[Any]) -> None:
    gw = gateway_factory(upstream_pool={"max_idle": 0})
    with psycopg.connect(gw.conninfo("maint"), autocommit=True) as a:
        pid = pid_of(a)
    wait_backend_gone(direct, pid)


def test_pgbench_connection_churn(pooled: Pooled, tmp_path: Path) -> None:
    script = tmp_path / "pid.sql"
    script.write_text("SELECT pg_backend_pid();\n")
    done = subprocess.run(
        ["pgbench", "-n", "-C", "-T", "3", "-c", "4", "-j", "2", "-f", str(script)],
        env=pooled.gateway.env("maint"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"pgbench exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    failed = re.search(r"^number of failed transactions: (\d+) ", done.stdout, re.MULTILINE)
    assert failed is not None, done.stdout
    assert int(failed.group(1)) == 0
    processed = re.search(r"^number of transactions actually processed: (\d+)$", done.stdout, re.MULTILINE)
    assert processed is not None, done.stdout
    stats = pooled.wait("resets done", lambda s: s["resetting"] == 0)
    assert stats["reused"] > 0
    assert stats["opened"] + stats["reused"] >= int(processed.group(1))
    assert stats["idle"] <= 4


class SeveringProxy:
    """A TCP relay between Sekisho and PostgreSQL that can cut one backend's connection the moment
    Sekisho next writes to it, without PostgreSQL or Sekisho having seen anything before: a link
    that died unnoticed while parked."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.doomed: set[int] = set()
        self.severed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            pid: list[int] = []
            self._start(self._pump, server, client, pid, False)
            self._start(self._pump, client, server, pid, True)

    def _pump(self, src: socket.socket, dst: socket.socket, pid: list[int], to_server: bool) -> None:
        seen = b""
        try:
            while chunk := src.recv(65536):
                if to_server and pid and pid[0] in self.doomed:
                    self.severed.set()
                    break
                if not to_server and not pid:
                    seen += chunk  # the BackendKeyData of the startup names the backend
                    at = seen.find(b"K\x00\x00\x00\x0c")
                    if at >= 0 and len(seen) >= at + 9:
                        pid.append(struct.unpack("!i", seen[at + 5 : at + 9])[0])
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            sock.close()


def test_a_parked_link_that_died_unnoticed_is_replaced_before_the_client_sees_it(
    gateway_factory: GatewayFactory, upstream: Upstream
) -> None:
    up = parse_dsn(upstream.dsn)
    proxy = SeveringProxy((up.host, up.port))
    try:
        admin = free_port()
        dsn = upstream.dsn.replace(f"@{up.host}:{up.port}/", f"@127.0.0.1:{proxy.port}/")
        gw = gateway_factory(
            dsn,
            admin={"host": "127.0.0.1", "port": admin},
            upstream_pool={"max_idle": 4, "idle_timeout": 300, "check_after": 0},
        )
        pooled = Pooled(gw, admin)
        with pooled.connect("maint") as a:
            pid = pid_of(a)
        pooled.wait_parked()
        with pooled.connect("lead") as b:  # checked with a round trip, and reused
            assert pid_of(b) == pid
        pooled.wait_parked()
        proxy.doomed.add(pid)
        with pooled.connect("alice") as c:  # the check fails; a new connection serves the client
            assert proxy.severed.is_set()
            assert pid_of(c) != pid
            assert one(c, "SELECT 1") == 1
        stats = pooled.stats()
        assert stats["reused"] == 1
        assert stats["closed_in_doubt"] == 1
        assert stats["opened"] == 2
    finally:
        proxy.close()
