"""`sekisho run --workers N`: several processes on one port, cancels and quotas across them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from gateway.config import parse_dsn
from gateway.pgcluster import free_port
from tests.support import ROOT, Gateway, Upstream, wait_until_listening, write_gateway_config


@pytest.fixture
def workers(upstream: Upstream, tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    config = write_gateway_config(tmp_path, upstream.dsn, port)
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
