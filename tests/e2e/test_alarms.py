"""Alarms from live sessions: detection sees every statement, the admin feed and the log carry the
alarm, and the policy's on_alarm tightens the person at once."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.pgcluster import free_port
from tests.support import TEST_POLICY, Gateway, Upstream, start_gateway, start_watched

ALARMS = """
alarms:
  probing: {refusals: 5, within: 10m, severity: high}
  on_alarm:
    - {severity: high, tighten: {max_rows: 10, for: 1h}}
"""


def _feed(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/alarms?since=0", timeout=10) as response:
        data = json.loads(response.read())
    assert isinstance(data, list)
    return data


@pytest.fixture
def watched(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[Gateway, int]]:
    gw, admin = start_watched(tmp_path / "gw", upstream.dsn, ALARMS)
    yield gw, admin
    gw.stop()


def test_probing_raises_an_alarm_and_tightens_the_person(watched: tuple[Gateway, int]) -> None:
    gw, admin = watched
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as conn:
        assert len(conn.execute("SELECT id FROM customers").fetchall()) == 100
        for _ in range(5):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute("COPY customers TO STDOUT")
            assert caught.value.sqlstate == "42501"
        # Detection runs after the statement, off the relay path: the alarm follows within moments.
        deadline = time.monotonic() + 10
        while not (alarms := [a for a in _feed(admin) if a["rule"] == "probing"]):
            assert time.monotonic() < deadline, "no probing alarm"
            time.sleep(0.1)
        assert len(alarms) == 1
        alarm = alarms[0]
        assert (alarm["user"], alarm["severity"]) == ("contractor", "high")
        assert alarm["summary"]
        assert alarm["action"]
        # on_alarm: at most 10 rows per statement from now on, in this very session.
        assert len(conn.execute("SELECT id FROM customers").fetchall()) == 10
    # Another person is not affected.
    with psycopg.connect(gw.conninfo("strict"), autocommit=True) as conn:
        assert len(conn.execute("SELECT id FROM customers WHERE id <= 5").fetchall()) == 5
    logged = [json.loads(line) for line in gw.log().splitlines() if '"event": "alarm"' in line]
    logged = [e for e in logged if e["user"] == "contractor"]  # strict's own first_access may follow
    # The first read of customers is itself a (low) first_access alarm; then the probing one.
    assert [(e["rule"], e["user"]) for e in logged] == [
        ("first_access", "contractor"),
        ("probing", "contractor"),
    ]
    assert any('"person_tightened"' in line for line in gw.log().splitlines())


HOLDING = """
alarms:
  dedup: 1s
  probing: {refusals: 3, within: 10m, severity: critical}
  on_alarm:
    - {severity: critical, action: suspend, for: until_cleared}
"""


def _console(gw: Gateway, user: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(gw.conninfo(user, dbname="sekisho"), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def _command(gw: Gateway, user: str, sql: str) -> str | None:
    """A console command that returns no rows: its command tag."""
    with psycopg.connect(gw.conninfo(user, dbname="sekisho"), autocommit=True) as conn:
        return conn.execute(sql).statusmessage


def _probe(gw: Gateway, user: str, times: int) -> None:
    with psycopg.connect(gw.conninfo(user), autocommit=True) as conn:
        for _ in range(times):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute("COPY customers TO STDOUT")
            assert caught.value.sqlstate == "42501"


def _suspended(gw: Gateway, user: str) -> bool:
    """Whether ``user``'s reads are refused as suspended until cleared (and work otherwise)."""
    refused: psycopg.Error | None = None
    with psycopg.connect(gw.conninfo(user), autocommit=True) as conn:
        try:
            rows = conn.execute("SELECT id FROM customers WHERE id <= 3").fetchall()
        except psycopg.Error as exc:
            refused = exc
    if refused is None:
        assert len(rows) == 3
        return False
    assert refused.sqlstate == "42501"
    assert "until a compliance reviewer clears them" in str(refused)
    return True


def _suspended_soon(gw: Gateway, user: str, within: float = 5.0) -> bool:
    """Whether ``user`` is suspended once detection has handled the events before (it runs
    asynchronously, off the statement path: within milliseconds when idle, later under load)."""
    deadline = time.monotonic() + within
    while not _suspended(gw, user):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _clear_over_http(admin: int, person: str, auth: tuple[str, str] | None, reason: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/people/{person}/clear",
        data=json.dumps({"reason": reason}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http on loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # its response is a socket: closed here, or a ResourceWarning fails a later test
            return exc.code, exc.read().decode()


def test_a_suspension_until_cleared_holds_across_a_restart_until_compliance_clears_it(
    upstream: Upstream, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "policy.yaml").write_text(TEST_POLICY + HOLDING)
    gw = start_gateway(directory, upstream.dsn)
    try:
        _probe(gw, "contractor", 3)  # a critical probing alarm: held until cleared
        assert _suspended_soon(gw, "contractor")
        assert not _suspended(gw, "strict")  # nobody else
        # Restricted people who approve nothing may not look or clear.
        with pytest.raises(psycopg.Error) as caught:
            _command(gw, "strict", "CLEAR contractor 'looks fine'")
        assert caught.value.sqlstate == "42501"
        with pytest.raises(psycopg.Error) as caught:
            _console(gw, "strict", "SHOW HOLDS")
        assert caught.value.sqlstate == "42501"
        [hold] = _console(gw, "lead", "SHOW HOLDS;")
        assert hold[:4] == ("contractor", "yes", None, "cleared")
        probing = [row for row in _console(gw, "lead", "SHOW ALARMS") if row[2] == "probing"]
        assert [(r[1], r[3], r[5]) for r in probing] == [
            ("critical", "contractor", "suspended until cleared")
        ]
    finally:
        gw.stop()
    # The hold outlasts a restart (the alarm itself is gone from the new process's memory).
    gw = start_gateway(directory, upstream.dsn)
    try:
        assert _suspended(gw, "contractor")
        with pytest.raises(psycopg.Error) as caught:
            _command(gw, "lead", "CLEAR contractor ''")
        assert "reason" in str(caught.value)
        tag = _command(gw, "lead", "CLEAR contractor 'Reviewed with the team lead: a mistyped script';")
        assert tag == "CLEAR contractor"
        assert not _suspended(gw, "contractor")
        assert _console(gw, "lead", "SHOW HOLDS") == []
        cleared = [json.loads(line) for line in gw.log().splitlines() if '"person_cleared"' in line]
        assert [(c["user"], c["by"], c["reason"]) for c in cleared] == [
            ("contractor", "lead", "Reviewed with the team lead: a mistyped script")
        ]
        with pytest.raises(psycopg.Error) as caught:
            _command(gw, "lead", "CLEAR contractor 'again'")
        assert "neither suspended nor tightened" in str(caught.value)
    finally:
        gw.stop()


def test_the_admin_api_clears_with_a_compliance_persons_credentials(
    upstream: Upstream, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "policy.yaml").write_text(TEST_POLICY + HOLDING)
    admin = free_port()
    gw = start_gateway(directory, upstream.dsn, admin={"host": "127.0.0.1", "port": admin})
    try:
        _probe(gw, "contractor", 3)
        assert _suspended_soon(gw, "contractor")
        reason = "checked the refused statements"
        assert _clear_over_http(admin, "contractor", None, reason)[0] == 401
        assert _clear_over_http(admin, "contractor", ("lead", "wrong"), reason)[0] == 401
        assert _clear_over_http(admin, "contractor", ("nobody", "nobody"), reason)[0] == 401
        assert _clear_over_http(admin, "contractor", ("strict", "strict"), reason)[0] == 403
        assert _clear_over_http(admin, "contractor", ("lead", "lead"), "")[0] == 400
        assert _suspended(gw, "contractor")
        status, body = _clear_over_http(admin, "contractor", ("lead", "lead"), reason)
        assert status == 200, body
        record = json.loads(body)
        assert (record["user"], record["by"], record["reason"]) == ("contractor", "lead", reason)
        assert not _suspended(gw, "contractor")
        assert _clear_over_http(admin, "contractor", ("lead", "lead"), reason)[0] == 409
    finally:
        gw.stop()
