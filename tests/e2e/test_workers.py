"""`sekisho run --workers N`: several processes on one port, cancels, quotas and detection across them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from gateway.config import parse_dsn
from gateway.pgcluster import free_port
from gateway.wire import messages as m
from tests.support import (
    ROOT,
    TEST_POLICY,
    Gateway,
    RawClient,
    Upstream,
    wait_until_listening,
    write_gateway_config,
)


@pytest.fixture
def workers(upstream: Upstream, tmp_path: Path) -> Iterator[Gateway]:
    yield from _workers(upstream, tmp_path)


def _workers(upstream: Upstream, tmp_path: Path, admin_port: int | None = None) -> Iterator[Gateway]:
    port = free_port()
    config = write_gateway_config(tmp_path, upstream.dsn, port, admin_port=admin_port)
    with (tmp_path / "sekisho.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    gateway = Gateway(tmp_path, port, parse_dsn(upstream.dsn).database, process)
    problem = wait_until_listening(process, port, 20)
    assert problem is None, f"sekisho {problem}:\n{gateway.log()}"
    time.sleep(0.5)  # both workers listening
    try:
        yield gateway
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


def _worker_pids(gateway: Gateway) -> list[int]:
    return [child.pid for child in psutil.Process(gateway.process.pid).children()]


def test_connections_spread_over_the_workers_and_cancels_reach_the_right_one(workers: Gateway) -> None:
    """A cancel arrives on a new connection, which the kernel gives to either worker: over 12
    cancels some must cross to the other worker (all 12 staying put has odds of 1 in 4,096), and
    an unforwarded cancel would leave pg_sleep(20) running."""
    assert len(_worker_pids(workers)) == 2
    for _ in range(12):
        with psycopg.connect(workers.conninfo("maint"), autocommit=True) as conn:
            cancel = threading.Timer(0.3, conn.cancel)
            cancel.start()
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(20)")
            assert time.monotonic() - started < 10
            cancel.join()
    # Both workers served sessions (each log line names its worker).
    started = [json.loads(line) for line in workers.log().splitlines() if '"session_started"' in line]
    assert {event["worker"] for event in started} == {0, 1}


def test_quotas_are_one_budget_across_workers(workers: Gateway) -> None:
    got: list[int | str | None] = []
    for _ in range(4):
        with psycopg.connect(workers.conninfo("drip"), autocommit=True) as conn:
            try:
                got.append(len(conn.execute("SELECT id FROM customers").fetchall()))
            except psycopg.Error as exc:
                got.append(exc.sqlstate)
    assert got == [100, 100, 50, "SK002"]  # one SQLite store on this host: one budget


# ---------------------------------------------------------------------- detection across workers

ALARMS = """
alarms:
  probing: {refusals: 4, within: 10m, severity: high}
  on_alarm:
    - {severity: high, action: suspend, for: 1h}
"""


@pytest.fixture
def watched_workers(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[Gateway, int]]:
    (tmp_path / "policy.yaml").write_text(TEST_POLICY + ALARMS)
    admin = free_port()
    for gateway in _workers(upstream, tmp_path, admin):
        yield gateway, admin


def _on_each_worker(gateway: Gateway, user: str) -> dict[int, RawClient]:
    """One logged-in raw connection on each of the two workers (the secret of BackendKeyData
    names the worker). The kernel picks the worker: 40 connections all landing on one worker
    has odds of 1 in 2**39."""
    found: dict[int, RawClient] = {}
    for _ in range(40):
        client = RawClient(gateway.port)
        frames = client.login(user, user, gateway.database)
        [key] = [m.BackendKeyData.decode(f.body) for f in frames if f.type == b"K"]
        if key.secret >> 24 in found:
            client.close()
            continue
        found[key.secret >> 24] = client
        if len(found) == 2:
            return found
    raise AssertionError(f"connections reached only workers {sorted(found)}")


def _query(client: RawClient, sql: str) -> m.ErrorResponse | None:
    """Run a simple query; the error it got, if any."""
    client.send(m.Query(sql).encode())
    frames = client.recv_until(b"Z")
    errors = [m.ErrorResponse.decode(f.body) for f in frames if f.type == b"E"]
    return errors[0] if errors else None


def _feed(admin: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/alarms?since=0", timeout=10) as response:
        data = json.loads(response.read())
    assert isinstance(data, list)
    return data


def test_detection_sees_one_person_across_workers(watched_workers: tuple[Gateway, int]) -> None:
    """Four refusals, two through each worker: neither worker alone saw four, yet probing fires
    once; the suspension it causes refuses the person on both workers; worker 0's admin feed shows
    the alarm whichever worker raised it."""
    gateway, admin = watched_workers
    clients = _on_each_worker(gateway, "contractor")
    try:
        for i in range(4):
            error = _query(clients[i % 2], "COPY customers TO STDOUT")
            assert error is not None
            assert error.get("C") == "42501"
            assert "copy_protected" in (error.get("M") or "")
        deadline = time.monotonic() + 10
        refused: dict[int, str] = {}
        while len(refused) < 2:  # the suspension reaches both workers within a second or two
            assert time.monotonic() < deadline, f"suspended only on workers {sorted(refused)}"
            for index, client in clients.items():
                if index not in refused and (error := _query(client, "SELECT 1")) is not None:
                    refused[index] = error.get("M") or ""
            time.sleep(0.2)
        assert all("suspended contractor" in message for message in refused.values()), refused
        # Another person is not affected.
        with psycopg.connect(gateway.conninfo("strict"), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for client in clients.values():
            client.close()
    deadline = time.monotonic() + 10
    while not (probing := [a for a in _feed(admin) if a["rule"] == "probing"]):
        assert time.monotonic() < deadline, "worker 0's feed never showed the alarm"
        time.sleep(0.2)
    assert [(a["user"], a["severity"]) for a in probing] == [("contractor", "high")]
    logged = [json.loads(line) for line in gateway.log().splitlines() if '"event": "alarm"' in line]
    assert [e["rule"] for e in logged if e["rule"] == "probing"] == ["probing"]  # raised once, not per worker
