"""`sekisho demo` as a new user meets it: starts, prints how to connect, and psql works through it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from gateway.config import load_config, parse_dsn
from gateway.demo import ensure_database
from gateway.pgcluster import free_port
from tests.support import ROOT, WORK, Upstream


@dataclass
class Demo:
    process: subprocess.Popen[str]
    output: list[str]
    port: int
    admin_port: int
    data_dir: Path

    def psql(self, *commands: str, user: str = "maint", database: str = "sekisho_demo") -> str:
        args = ["psql", "-X", "-v", "ON_ERROR_STOP=1"]
        for command in commands:
            args += ["-c", command]
        env = {**os.environ, "PGPASSWORD": user}
        conn = f"host=127.0.0.1 port={self.port} dbname={database} user={user} sslmode=disable"
        out = subprocess.run([*args, conn], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout


def _start_demo(*extra: str) -> Demo:
    data_dir = WORK / f"demo-{uuid.uuid4().hex[:8]}"
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--data-dir", str(data_dir), "--port", str(port),
         "--admin-port", str(admin_port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    output: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if "Press Ctrl-C to stop." in line:
            return Demo(process, output, port, admin_port, data_dir)
    process.kill()
    raise AssertionError("demo did not become ready:\n" + "".join(output))


def _stop(demo: Demo) -> None:
    demo.process.send_signal(signal.SIGTERM)
    demo.process.communicate(timeout=60)


@pytest.fixture
def demo() -> Iterator[Demo]:
    d = _start_demo("--rows", "3000")
    try:
        yield d
    finally:
        if d.process.poll() is None:
            _stop(d)
        shutil.rmtree(d.data_dir, ignore_errors=True)


def test_demo_serves_psql_and_prints_how_to_connect(demo: Demo) -> None:
    printed = "".join(demo.output)
    assert f'psql "host=127.0.0.1 port={demo.port} dbname=sekisho_demo user=maint"' in printed
    described = demo.psql(r"\d customers")
    for column in ("id", "name", "address", "phone", "email", "card_number", "created_at"):
        assert f" {column} " in described
    assert demo.psql("SELECT count(*) FROM customers").split("\n")[2].strip() == "3000"
    assert "orders" in demo.psql(r"\dt")
    for person in ("lead", "auditor"):
        assert demo.psql("SELECT 1", user=person)
    with urllib.request.urlopen(f"http://127.0.0.1:{demo.admin_port}/health", timeout=5) as response:
        assert json.load(response) == {"status": "ok"}


def test_demo_data_is_japanese_synthetic_customers(demo: Demo) -> None:
    upstream = load_config(demo.data_dir / "sekisho.yaml").upstream
    direct = (
        f"host={upstream.host} port={upstream.port} dbname={upstream.database} user={upstream.user} "
        "sslmode=disable"
    )
    with psycopg.connect(direct) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT name) > 100, bool_and(phone ~ '^0[0-9]{1,2}-[0-9]{3,4}-[0-9]{4}$'), "
            "bool_and(email LIKE '%@%example%'), bool_and(address ~ '[都道府県]'), "
            "bool_and(length(card_number) = 16), (SELECT count(*) FROM orders) FROM customers"
        ).fetchone()
    assert row == (True, True, True, True, True, 6000)


def test_the_demo_maintenance_user_sees_customers_masked(demo: Demo) -> None:
    out = demo.psql("SELECT name, address, phone, email, card_number FROM customers WHERE id = 7")
    name, address, phone, email, card = (field.strip() for field in out.split("\n")[2].split("|"))
    assert name == "****"
    assert re.fullmatch(r"\S{3}\*{4}", address)
    assert re.fullmatch(r"\*{2,3}-\*{3,4}-\d{4}", phone)
    assert re.fullmatch(r"\*{4}@[a-z.]+example[a-z.]+", email)
    assert re.fullmatch(r"\*{12}\d{4}", card)


def test_demo_restart_is_quick_and_reuses_the_data(demo: Demo) -> None:
    _stop(demo)
    started = time.monotonic()
    again = _start_demo("--rows", "3000", "--data-dir", str(demo.data_dir))
    try:
        assert time.monotonic() - started < 30
        assert "creating" not in "".join(again.output)
        assert again.psql("SELECT count(*) FROM customers").split("\n")[2].strip() == "3000"
    finally:
        _stop(again)


def test_demo_with_an_existing_upstream(upstream: Upstream) -> None:
    cfg = parse_dsn(upstream.dsn)
    asyncio.run(ensure_database(upstream.dsn, "sekisho_demo_external"))
    dsn = f"postgresql://{cfg.user}@{cfg.host}:{cfg.port}/sekisho_demo_external?sslmode=disable"
    d = _start_demo("--upstream", dsn, "--rows", "500")
    try:
        assert (
            d.psql("SELECT count(*) FROM customers", database="sekisho_demo_external").split("\n")[2].strip()
            == "500"
        )
    finally:
        _stop(d)
        shutil.rmtree(d.data_dir, ignore_errors=True)


def test_demo_stops_its_private_cluster_on_exit(demo: Demo) -> None:
    _stop(demo)
    assert demo.process.returncode == 0
    pid_file = demo.data_dir / "pg" / "postmaster.pid"
    assert not pid_file.exists(), "the private PostgreSQL is still running"


def test_demo_rejects_a_bad_upstream_url() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--upstream", "mysql://x@y/z"],
        capture_output=True, text=True, cwd=ROOT, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "expected a postgresql:// URL" in out.stderr


def test_demo_enforces_its_policy(demo: Demo) -> None:
    rows = demo.psql("SELECT id FROM customers ORDER BY id").strip().splitlines()
    assert rows[-1] == "(100 rows)"
    env = {**os.environ, "PGPASSWORD": "maint"}
    conn = f"host=127.0.0.1 port={demo.port} dbname=sekisho_demo user=maint sslmode=disable"
    out = subprocess.run(
        ["psql", "-X", "-c", "COPY customers TO STDOUT", conn],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "(rule copy_protected)" in out.stderr
    assert "bulk_export" in out.stderr
    assert out.stdout == ""
