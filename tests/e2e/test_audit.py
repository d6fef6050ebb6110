"""The audit trail through the gateway, against real PostgreSQL audit databases.

Each test gets an audit database of its own on the test server (or a private cluster, for the tests
that stop the audit database), a gateway writing to it, and reads the trail back with psycopg and
with ``sekisho audit verify`` / ``search`` as an investigator would.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import yaml

from gateway.audit import database as audit_database
from gateway.audit.record import GENESIS, seal
from gateway.audit.trail import AuditTrail
from gateway.config import AuditConfig, parse_dsn
from gateway.pgcluster import Cluster, free_port
from tests.conftest import GatewayFactory
from tests.support import ROOT, WORK, Upstream, eventually, start_gateway

Conn = psycopg.Connection[tuple[Any, ...]]


def _dsn_for(dsn: str, database: str) -> str:
    cfg = parse_dsn(dsn)
    pw = f":{cfg.password}" if cfg.password else ""
    return f"postgresql://{cfg.user}{pw}@{cfg.host}:{cfg.port}/{database}?sslmode=disable"


@pytest.fixture
def audit_dsn(upstream: Upstream) -> Iterator[str]:
    """A fresh audit database on the test server, dropped afterwards."""
    name = f"sekisho_audit_{secrets.token_hex(4)}"
    admin = _dsn_for(upstream.dsn, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _dsn_for(upstream.dsn, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _records(audit_dsn: str, kind: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('sekisho_audit') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute("SELECT body FROM sekisho_audit ORDER BY chain, seq").fetchall()
    out = [json.loads(body) for (body,) in rows]
    return [r for r in out if kind is None or r["kind"] == kind]


_wait_for = functools.partial(eventually, what="the audit records", timeout=30.0)


def _statements(audit_dsn: str, marker: str) -> list[dict[str, Any]]:
    return [r for r in _records(audit_dsn, "statement") if marker in (r.get("sql") or "")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_statements_carry_every_field_simple_extended_copy_and_refusals(
    gateway_factory: GatewayFactory, audit_dsn: str
) -> None:
    gw = gateway_factory(audit={"database": audit_dsn, "log": "audit.jsonl"})
    with psycopg.connect(gw.conninfo("contractor", application_name="ticket-4711"), autocommit=True) as conn:
        conn.execute(
            "SELECT name, phone FROM customers WHERE id = 5 /* m-simple */", prepare=False
        ).fetchall()
        conn.execute("SELECT name, phone FROM customers WHERE id = %s /* m-extended */", (6,)).fetchall()
        with conn.cursor().copy(
            "COPY (SELECT g FROM generate_series(1, 3) g /* m-copy */) TO STDOUT"
        ) as copy:
            b"".join(bytes(chunk) for chunk in copy)
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT pg_read_file('/etc/passwd') /* m-refused */")
        assert refused.value.sqlstate == "42501"
        conn.execute("SELECT id FROM customers /* m-capped */").fetchall()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0 /* m-failed */")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gw.conninfo("contractor", password="wrong"))

    simple = _wait_for(lambda: _statements(audit_dsn, "m-simple"))[0]
    assert simple["person"] == "contractor"
    assert simple["roles"] == ["maintenance"]
    assert simple["application_name"] == "ticket-4711"
    assert simple["address"] == "127.0.0.1"
    assert len(simple["session"]) == 16
    assert simple["command"] == "select"
    assert simple["tables"] == ["public.customers"]
    assert simple["protected_tables"] == ["public.customers"]
    assert simple["pii_columns"] == {"public.customers.name": "full", "public.customers.phone": "phone"}
    assert simple["decision"] == "allowed"
    assert simple["rows"] == 1
    assert simple["bytes"] > 0
    assert simple["cut"] is False
    assert simple["duration_ms"] >= 0
    assert simple["sqlstate"] is None
    assert simple["fingerprint"].startswith("SELECT name, phone FROM customers WHERE id = $1")
    assert "id = 5" in simple["sql"]
    extended = _wait_for(lambda: _statements(audit_dsn, "m-extended"))[0]
    assert extended["rows"] == 1
    assert extended["pii_columns"]["public.customers.phone"] == "phone"
    copy_record = _wait_for(lambda: _statements(audit_dsn, "m-copy"))[0]
    assert copy_record["command"] == "copy"
    assert copy_record["rows"] == 3
    assert copy_record["tables"] == []
    refusal = _wait_for(lambda: _statements(audit_dsn, "m-refused"))[0]
    assert refusal["decision"] == "refused"
    assert refusal["sqlstate"] == "42501"
    assert refusal["rule"] == "server_files"
    assert refusal["rows"] == 0
    assert "pg_read_file" in refusal["error"] or "server" in refusal["error"]
    capped = _wait_for(lambda: _statements(audit_dsn, "m-capped"))[0]
    assert capped["decision"] == "cut"
    assert capped["cut"] is True
    assert capped["rows"] == 100
    assert capped["rule"] is not None
    failed = _wait_for(lambda: _statements(audit_dsn, "m-failed"))[0]
    assert failed["decision"] == "failed"
    assert failed["sqlstate"] == "22012"
    assert failed["error"] == "division by zero"
    # Protected reads are on the record before they reach the database.
    trail = [(r["kind"], r.get("sql") or "") for r in _records(audit_dsn)]
    begins = [i for i, (kind, sql) in enumerate(trail) if kind == "statement_begin" and "m-simple" in sql]
    ends = [i for i, (kind, sql) in enumerate(trail) if kind == "statement" and "m-simple" in sql]
    assert len(begins) == 1
    assert begins[0] < ends[0]
    assert not [sql for kind, sql in trail if kind == "statement_begin" and "m-copy" in sql]  # unprotected
    connections = _wait_for(
        lambda: [r for r in _records(audit_dsn, "connection") if r["accepted"] is False], what="refused login"
    )
    assert connections[0]["person"] == "contractor"
    assert "password" in connections[0]["reason"]
    assert any(
        r["accepted"] and r["application_name"] == "ticket-4711" for r in _records(audit_dsn, "connection")
    )
    assert _records(audit_dsn, "policy_change")[0]["decision"] == "allowed"
    # The same records went to the JSON-lines audit log, sealed into the same chain.
    lines = [json.loads(line) for line in (gw.directory / "audit.jsonl").read_text().splitlines()]
    logged = [line for line in lines if "m-simple" in (line.get("sql") or "") and line["kind"] == "statement"]
    assert logged[0]["audit_seq"] > 0
    assert logged[0]["rows"] == 1
    result = _cli("verify", "--dsn", audit_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all intact" in result.stdout


def test_verify_names_a_deleted_an_edited_and_a_reordered_record(
    gateway_factory: GatewayFactory, audit_dsn: str
) -> None:
    gw = gateway_factory(audit={"database": audit_dsn, "log": "none"})
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        for i in range(1, 31):
            conn.execute(f"SELECT name FROM customers WHERE id = {i}").fetchall()
    _wait_for(lambda: len(_records(audit_dsn, "statement")) >= 30)
    gw.stop()  # the gateway has delivered everything; now someone edits the database
    assert _cli("verify", "--dsn", audit_dsn).returncode == 0

    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        (chain,) = conn.execute("SELECT chain FROM sekisho_audit LIMIT 1").fetchone() or ("",)
        original = conn.execute("SELECT body FROM sekisho_audit WHERE seq = 10").fetchone()
        assert original is not None
        conn.execute(
            'UPDATE sekisho_audit SET body = replace(body, \'"person":"contractor"\', \'"person":"alice"\') '
            "WHERE seq = 10"
        )
        edited = _cli("verify", "--dsn", audit_dsn)
        assert edited.returncode == 1
        assert (
            f"chain {chain}: BROKEN at record 10: its content does not match its hash (the record was edited)"
            in edited.stdout
        )

        conn.execute("UPDATE sekisho_audit SET body = %s WHERE seq = 10", original)
        assert _cli("verify", "--dsn", audit_dsn).returncode == 0
        saved = conn.execute("SELECT * FROM sekisho_audit WHERE seq = 15").fetchone()
        conn.execute("DELETE FROM sekisho_audit WHERE seq = 15")
        deleted = _cli("verify", "--dsn", audit_dsn)
        assert deleted.returncode == 1
        assert "BROKEN at record 16: record 15 is missing before it (deleted)" in deleted.stdout

        conn.execute("INSERT INTO sekisho_audit VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", saved)
        assert _cli("verify", "--dsn", audit_dsn).returncode == 0
        # Reorder: swap records 20 and 21 (each keeps its hash, but the links no longer hold).
        conn.execute("UPDATE sekisho_audit SET seq = -1 WHERE seq = 20")
        conn.execute("UPDATE sekisho_audit SET seq = 20 WHERE seq = 21")
        conn.execute("UPDATE sekisho_audit SET seq = 21 WHERE seq = -1")
        reordered = _cli("verify", "--dsn", audit_dsn)
        assert reordered.returncode == 1
        assert "BROKEN at record 20" in reordered.stdout

        conn.execute("UPDATE sekisho_audit SET seq = -1 WHERE seq = 20")
        conn.execute("UPDATE sekisho_audit SET seq = 20 WHERE seq = 21")
        conn.execute("UPDATE sekisho_audit SET seq = 21 WHERE seq = -1")
        assert _cli("verify", "--dsn", audit_dsn).returncode == 0
        # Cutting off the newest records leaves a valid-looking chain; the spool's anchor catches it.
        (last,) = conn.execute("SELECT max(seq) FROM sekisho_audit").fetchone() or (0,)
        conn.execute("DELETE FROM sekisho_audit WHERE seq > %s", (last - 3,))
    assert _cli("verify", "--dsn", audit_dsn).returncode == 0
    anchored = _cli("verify", "--config", str(gw.directory / "sekisho.yaml"))
    assert anchored.returncode == 1, anchored.stdout
    assert "the newest records were deleted" in anchored.stdout


def _private_cluster() -> Cluster:
    """A PostgreSQL of the test's own, to stop and start (under .test-work: the postgres user
    must be able to reach its directory, which pytest's tmp_path does not allow)."""
    cluster = Cluster(WORK / f"audit-pg-{secrets.token_hex(4)}", free_port())
    cluster.start()
    with psycopg.connect(_dsn_for(cluster.dsn(), "postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE audit")
    return cluster


def test_audit_database_stopped_under_load_loses_nothing_and_keeps_order(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cluster = _private_cluster()
    audit_dsn = _dsn_for(cluster.dsn(), "audit")
    try:
        gw = gateway_factory(audit={"database": audit_dsn, "log": "none", "batch": 50})
        sent: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def work(worker: int) -> None:
            with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
                i = 0
                while not stop.is_set():
                    i += 1
                    tag = f"load-{worker}-{i}"
                    conn.execute(f"SELECT name FROM customers WHERE id = {i % 50 + 1} /* {tag} */").fetchall()
                    with lock:
                        sent.append(tag)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        cluster.stop()  # the audit database goes away mid-run
        time.sleep(2.0)
        with lock:
            during = len(sent)
        cluster.start()
        time.sleep(1.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert during > 0

        def delivered() -> bool:
            tags = {r["sql"].rsplit("/* ", 1)[1][:-3] for r in _statements(audit_dsn, "load-")}
            return tags >= set(sent)

        _wait_for(delivered, timeout=60, what="every statement's record after the audit database returned")
        with psycopg.connect(audit_dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT seq, at FROM sekisho_audit ORDER BY seq").fetchall()
        seqs = [seq for seq, _ in rows]
        assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice
        result = _cli("verify", "--dsn", audit_dsn)
        assert result.returncode == 0, result.stdout
        assert "audit_database_unreachable" in gw.log()
        assert "audit_database_up" in gw.log()
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        cluster.log_file.unlink(missing_ok=True)


def test_a_full_spool_refuses_protected_statements_and_serves_the_rest(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/audit?sslmode=disable&connect_timeout=1"
    gw = gateway_factory(audit={"database": dead, "log": "none", "spool_max_bytes": 1024 * 1024})
    padding = "x" * 60_000
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        refused: psycopg.Error | None = None
        for _ in range(60):  # ~60 kB a record: the 1 MiB spool fills after about 18
            try:
                conn.execute(f"SELECT name FROM customers WHERE id = 1 AND '{padding}' <> ''").fetchall()
            except psycopg.Error as exc:
                refused = exc
                break
        assert refused is not None, "the spool never filled"
        assert refused.sqlstate == "SK004"
        assert "audit spool is full" in str(refused)
        assert refused.diag.message_hint is not None
        # Statements that touch no protected table still run (and are recorded).
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone() is not None
        with pytest.raises(psycopg.Error) as again:
            conn.execute("SELECT phone FROM customers WHERE id = 2")
        assert again.value.sqlstate == "SK004"


def test_refuse_all_when_full_refuses_everything(gateway_factory: GatewayFactory) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/audit?sslmode=disable&connect_timeout=1"
    gw = gateway_factory(
        audit={"database": dead, "log": "none", "spool_max_bytes": 1024 * 1024, "when_full": "refuse_all"}
    )
    padding = "y" * 100_000
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        ran = 0
        refused: psycopg.Error | None = None
        for _ in range(30):  # ~100 kB a record: the 1 MiB spool is full after about 11
            try:
                conn.execute(f"SELECT '{padding}' <> ''").fetchall()
            except psycopg.Error as exc:
                refused = exc
                break
            ran += 1
        assert refused is not None
        assert refused.sqlstate == "SK004"
        assert 8 <= ran <= 12
        with pytest.raises(psycopg.Error) as again:
            conn.execute("SELECT 1")  # nothing protected, refused all the same
        assert again.value.sqlstate == "SK004"


def test_a_crash_loses_no_accepted_record(upstream: Upstream, tmp_path: Path, audit_dsn: str) -> None:
    """Records spooled while the audit database was down reach it after a kill -9 and a restart."""
    directory = tmp_path / "gw"
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/audit?sslmode=disable&connect_timeout=1"
    gw = start_gateway(directory, upstream.dsn, audit={"database": dead, "log": "none"})
    try:
        with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
            for i in range(25):
                conn.execute(f"SELECT name FROM customers WHERE id = {i + 1} /* crash-{i} */").fetchall()
        assert gw.process is not None
        gw.process.send_signal(signal.SIGKILL)
        gw.process.wait(10)
    finally:
        gw.stop()
    config = directory / "sekisho.yaml"
    data = yaml.safe_load(config.read_text())
    data["audit"]["database"] = audit_dsn
    config.write_text(yaml.safe_dump(data))
    restarted = start_gateway(directory, upstream.dsn, audit={"database": audit_dsn, "log": "none"})
    try:
        _wait_for(lambda: len(_statements(audit_dsn, "crash-")) == 25, what="the spooled records")
        result = _cli("verify", "--config", str(directory / "sekisho.yaml"))
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        restarted.stop()


def test_literals_redacted_by_policy(gateway_factory: GatewayFactory, audit_dsn: str, tmp_path: Path) -> None:
    gw = gateway_factory(audit={"database": audit_dsn, "log": "none"})
    policy = gw.directory / "policy.yaml"
    policy.write_text(policy.read_text() + "audit:\n  statement_text: redacted\n")
    assert gw.process is not None
    gw.process.send_signal(signal.SIGHUP)
    _wait_for(lambda: len(_records(audit_dsn, "policy_change")) >= 2, what="the policy change record")
    change = _records(audit_dsn, "policy_change")[-1]
    assert "+audit:" in change["diff"]
    assert change["decision"] == "allowed"
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        conn.execute("SELECT name FROM customers WHERE phone = '090-1234-5678' /* redact-me */").fetchall()
    record = _wait_for(lambda: [r for r in _records(audit_dsn, "statement") if r.get("sql_redacted")])[0]
    assert "090-1234-5678" not in json.dumps(record)
    assert "phone = $1" in record["sql"]


def test_search_by_person_table_time_and_decision(gateway_factory: GatewayFactory, audit_dsn: str) -> None:
    admin = free_port()
    gw = gateway_factory(
        audit={"database": audit_dsn, "log": "none"}, admin={"host": "127.0.0.1", "port": admin}
    )
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        conn.execute("SELECT name FROM customers WHERE id = 1").fetchall()
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT pg_read_file('/etc/hostname')")
    with psycopg.connect(gw.conninfo("alice"), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM orders").fetchall()
    _wait_for(lambda: len(_records(audit_dsn, "statement")) >= 3)
    found = _cli("search", "--dsn", audit_dsn, "--person", "contractor", "--table", "customers", "--json")
    assert found.returncode == 0, found.stderr
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert lines
    assert all(r["person"] == "contractor" and "public.customers" in r["tables"] for r in lines)
    refused = _cli("search", "--dsn", audit_dsn, "--decision", "refused", "--kind", "statement", "--json")
    assert [json.loads(line)["rule"] for line in refused.stdout.splitlines()] == ["server_files"]
    future = _cli("search", "--dsn", audit_dsn, "--since", "2999-01-01", "--json")
    assert future.stdout == ""
    bad = _cli("search", "--dsn", audit_dsn, "--since", "yesterday")
    assert bad.returncode == 2
    assert "--since: expected an ISO 8601 time" in bad.stderr
    table = _cli("search", "--dsn", audit_dsn, "--person", "alice", "--kind", "statement")
    assert table.stdout.splitlines()[0].startswith("at\tkind\tperson")
    assert "orders" in table.stdout

    # The same through the admin API, streamed as JSON lines.
    def get(path: str, who: str | None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{admin}{path}")
        if who is not None:
            token = base64.b64encode(f"{who}:{who}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(request, timeout=10)  # noqa: S310  http://127.0.0.1 only

    with get("/audit/search?person=contractor&decision=refused&kind=statement", "lead") as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        api = [json.loads(line) for line in response.read().splitlines()]
    assert [r["rule"] for r in api] == ["server_files"]
    for who, code in ((None, 401), ("contractor", 403)):  # investigators only
        with pytest.raises(urllib.error.HTTPError) as refused_search:
            get("/audit/search?person=contractor", who)
        refused_search.value.close()
        assert refused_search.value.code == code
    with pytest.raises(urllib.error.HTTPError) as bad_request:
        get("/audit/search?decision=maybe", "lead")
    bad_request.value.close()
    assert bad_request.value.code == 400
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/audit/stats", timeout=10) as response:
        stats = json.loads(response.read())
    assert stats["database_up"] is True
    assert stats["failed"] is None


def _trail_records(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"kind": "statement", "at": "2026-12-07T10:00:00.000000+00:00", "person": "maint",
         "decision": "allowed", "tables": ["public.customers"], "sql": f"SELECT {start + i}"}
        for i in range(count)
    ]  # fmt: skip


def _stored(audit_dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT seq, body FROM sekisho_audit ORDER BY seq").fetchall()
    return [(seq, body) for seq, body in rows]


def test_a_batch_sent_again_after_a_crash_is_stored_once(audit_dsn: str) -> None:
    """COPY fails on rows already stored (a crash between storing and acknowledging): the batch
    goes in again row by row, the stored rows untouched and the new ones added."""

    async def run() -> None:
        sealed, prev = [], GENESIS
        for seq, record in enumerate(_trail_records(3), start=1):
            sealed.append(seal(seq, prev, record))
            prev = sealed[-1].hash
        conn = await asyncpg.connect(audit_dsn)
        try:
            await audit_database.ensure_schema(conn)
            await audit_database.insert(conn, [audit_database.row("c1", s) for s in sealed[:2]])
            await audit_database.insert(conn, [audit_database.row("c1", s) for s in sealed])
            await audit_database.insert(conn, [audit_database.row("c1", s) for s in sealed])
        finally:
            await conn.close()

    asyncio.run(run())
    stored = _stored(audit_dsn)
    assert [seq for seq, _ in stored] == [1, 2, 3]
    assert [json.loads(body)["sql"] for _, body in stored] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert _cli("verify", "--dsn", audit_dsn).returncode == 0


def test_delivery_catches_up_from_the_spool_after_the_queue_overflows(audit_dsn: str, tmp_path: Path) -> None:
    """More records than the in-memory queue holds, accepted before delivery starts (as while the
    database is down): the deliverer reads them from the spool, then goes on from the queue, with
    nothing lost, doubled or out of order."""
    config = AuditConfig(database=audit_dsn, log="none", batch=100)

    async def run() -> None:
        trail = AuditTrail(config, tmp_path / "spool", "t")
        trail.open()
        for record in _trail_records(1500):  # the queue holds 1000 (max(4 x batch, 1000))
            trail.record(record)
        await trail.start()
        deadline = time.monotonic() + 30
        while trail.statistics().delivered_seq < 1500 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for record in _trail_records(250, start=1500):
            trail.record(record)
            await asyncio.sleep(0)
        while trail.statistics().delivered_seq < 1750 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await trail.stop()

    asyncio.run(run())
    stored = _stored(audit_dsn)
    assert [seq for seq, _ in stored] == list(range(1, 1751))
    assert [json.loads(body)["sql"] for _, body in stored] == [f"SELECT {i}" for i in range(1750)]
    assert _cli("verify", "--dsn", audit_dsn).returncode == 0
