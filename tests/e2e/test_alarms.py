"""Alarms from live sessions: detection sees every statement, the admin feed and the log carry the
alarm, and the policy's on_alarm tightens the person at once."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from gateway.pgcluster import free_port
from tests.support import TEST_POLICY, Gateway, Upstream, start_gateway

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
def watched(upstream: Upstream, tmp_path: Path) -> tuple[Gateway, int]:
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw" / "policy.yaml").write_text(TEST_POLICY + ALARMS)
    admin = free_port()
    gw = start_gateway(tmp_path / "gw", upstream.dsn, admin={"host": "127.0.0.1", "port": admin})
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
    # The first read of customers is itself a (low) first_access alarm; then the probing one. The
    # statement's events are handled before its result is released, so strict's is logged too.
    assert [(e["rule"], e["user"]) for e in logged] == [
        ("first_access", "contractor"),
        ("probing", "contractor"),
        ("first_access", "strict"),
    ]
    assert any('"person_tightened"' in line for line in gw.log().splitlines())
