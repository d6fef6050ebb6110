"""Detection state shared through the store: across gateways on one Redis, across a restart, and
through a Redis outage.

The policy makes probing fire at four refusals and suspend the person for an hour, so each test
can tell whether a gateway saw the whole picture: refusals split between gateways, or before and
after a restart, only add up to four if the state is shared.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from gateway.pgcluster import free_port
from tests.support import TEST_POLICY, Gateway, Upstream, eventually, start_gateway, start_redis

ALARMS = """
alarms:
  probing: {refusals: 4, within: 10m, severity: high}
  on_alarm:
    - {severity: high, action: suspend, for: 1h}
"""

Connection = psycopg.Connection[tuple[object, ...]]


def _watched(factory: Factory, **sections: object) -> tuple[Gateway, int]:
    """A gateway with the policy above and a known admin port."""
    admin = free_port()
    gateway = factory(admin={"host": "127.0.0.1", "port": admin}, **sections)
    return gateway, admin


def _contractor(gateway: Gateway) -> Connection:
    return psycopg.connect(gateway.conninfo("contractor"), autocommit=True)


def _refused(conn: Connection) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("COPY customers TO STDOUT")
    assert caught.value.sqlstate == "42501"
    assert "copy_protected" in str(caught.value)


def _suspended(conn: Connection) -> bool:
    """Whether the person's next statement is refused for a suspension (any other error fails)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.errors.InsufficientPrivilege as exc:
        message = str(exc)
    else:
        return False
    assert "suspended contractor" in message, message
    return True


_eventually = functools.partial(eventually, timeout=15.0)


def _probing(admin: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/alarms?since=0", timeout=10) as response:
        return [a for a in json.loads(response.read()) if a["rule"] == "probing"]


Factory = Callable[..., Gateway]


@pytest.fixture
def factory(upstream: Upstream, tmp_path: Path) -> Iterator[Factory]:
    """Gateways with the policy above, each in a directory of its own, stopped after the test."""
    started: list[Gateway] = []

    def make(**sections: object) -> Gateway:
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        (directory / "policy.yaml").write_text(TEST_POLICY + ALARMS)
        gateway = start_gateway(directory, upstream.dsn, **sections)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()
    for gateway in started:
        assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


def test_gateways_on_one_redis_share_detection_and_its_consequences(factory: Factory, redis_url: str) -> None:
    (first, first_admin), (second, second_admin) = (
        _watched(factory, quotas={"store": redis_url}) for _ in "ab"
    )
    with _contractor(first) as a, _contractor(second) as b:
        for conn in (a, b, a, b):  # two refusals through each gateway
            _refused(conn)
        # Probing fired (on whichever gateway wrote the fourth refusal into the shared state) and
        # its suspension reaches both.
        _eventually(lambda: _suspended(b), "the second gateway did not suspend the person")
        _eventually(lambda: _suspended(a), "the first gateway did not suspend the person")
    with _contractor(first) as a:
        assert _suspended(a)  # new sessions too
    with psycopg.connect(first.conninfo("strict"), autocommit=True) as other:
        assert other.execute("SELECT 1").fetchone() == (1,)
    # One alarm, in both gateways' feeds; logged (and sent) once, by the gateway that raised it.
    _eventually(lambda: len(_probing(first_admin)) == 1, "the first gateway's feed lacks the alarm")
    _eventually(lambda: len(_probing(second_admin)) == 1, "the second gateway's feed lacks the alarm")
    assert _probing(first_admin)[0]["id"] == _probing(second_admin)[0]["id"]
    logged = [line for gw in (first, second) for line in gw.log().splitlines() if '"event": "alarm"' in line]
    assert [json.loads(line)["rule"] for line in logged if '"rule": "probing"' in line] == ["probing"]


def test_detection_state_and_suspensions_survive_a_restart(upstream: Upstream, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "policy.yaml").write_text(TEST_POLICY + ALARMS)
    gateway = start_gateway(directory, upstream.dsn)
    try:
        with _contractor(gateway) as conn:
            _refused(conn)
            _refused(conn)
    finally:
        gateway.stop()
    gateway = start_gateway(directory, upstream.dsn)  # the same SQLite store next to the users file
    try:
        with _contractor(gateway) as conn:
            assert not _suspended(conn)
            _refused(conn)
            _refused(conn)  # the fourth, counting the two before the restart
            _eventually(lambda: _suspended(conn), "the refusals before the restart were forgotten")
    finally:
        gateway.stop()
    gateway = start_gateway(directory, upstream.dsn)
    try:
        with _contractor(gateway) as conn:
            _eventually(lambda: _suspended(conn), "the suspension did not survive the restart", timeout=5)
    finally:
        gateway.stop()


def test_a_redis_outage_leaves_service_working_and_detection_resumes(
    factory: Factory, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    gateway, admin = _watched(factory, quotas={"store": url})
    try:
        with _contractor(gateway) as conn:
            _refused(conn)
            _refused(conn)
            server.terminate()
            server.wait(10)
            # Service goes on: unprotected statements run, refusals are still refusals...
            assert conn.execute("SELECT 1").fetchone() == (1,)
            _refused(conn)
            _refused(conn)
            # ...and detection goes on in the gateway: four refusals, one alarm, a suspension.
            _eventually(lambda: _suspended(conn), "detection stopped with the store")
            assert len(_probing(admin)) == 1
            _eventually(lambda: '"detection_store_unavailable"' in gateway.log(), "the outage was not logged")
            server = start_redis(port, tmp_path)  # back, and empty: it kept nothing on disk
            # The gateway writes back what it learned and shares the suspension again.
            client = redis.Redis(port=port)
            _eventually(
                lambda: client.hexists("sekisho:detect:tightenings", "contractor"), "not shared again"
            )
            _eventually(
                lambda: client.exists("sekisho:detect:person:contractor") == 1, "state not written back"
            )
            client.close()
        # A gateway started now on the same Redis sees the suspension.
        other, _ = _watched(factory, quotas={"store": url})
        with _contractor(other) as conn:
            _eventually(lambda: _suspended(conn), "a new gateway did not see the suspension")
        assert '"detection_store_back"' in gateway.log()
    finally:
        server.terminate()
        server.wait(10)
