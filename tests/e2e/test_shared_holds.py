"""Holds until cleared and clearances shared by every Sekisho process: `--workers 2` on the SQLite
store, and two gateways on one Redis (through an outage of it).

The policy holds a person until cleared at their third refusal in ten minutes. In each test the
process that raises the alarm is not the one that clears it, so the clearance only works if it
reaches the other process's own tightening and hold.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from gateway.pgcluster import free_port
from gateway.wire import messages as m
from tests.e2e.test_alarms import HOLDING, _clear_over_http, _command, _console, _probe, _suspended
from tests.e2e.test_workers import _on_each_worker, _query, _workers
from tests.support import TEST_POLICY, Gateway, RawClient, Upstream, eventually, start_gateway, start_redis

REASON = "Reviewed with the team lead: a mistyped script"


_eventually = functools.partial(eventually, timeout=15.0)


def _held(client: RawClient) -> bool:
    """Whether this connection's person is refused as held until cleared (any other error fails)."""
    error = _query(client, "SELECT 1")
    if error is None:
        return False
    assert error.get("C") == "42501"
    assert "until a compliance reviewer clears them" in (error.get("M") or ""), error.get("M")
    return True


def _probe_raw(client: RawClient) -> None:
    """Refusals until the person is held (the third at most, counting refusals still in the window)."""
    for _ in range(3):
        error = _query(client, "COPY customers TO STDOUT")
        assert isinstance(error, m.ErrorResponse)
        assert error.get("C") == "42501"
        if "until a compliance reviewer" in (error.get("M") or ""):
            return


def _lists_the_hold(gateway: Gateway) -> bool:
    return [row[:4] for row in _console(gateway, "lead", "SHOW HOLDS")] == [
        ("contractor", "yes", None, "cleared")
    ]


def test_workers_share_holds_and_clearances_which_survive_a_restart(
    upstream: Upstream, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(TEST_POLICY + HOLDING)
    admin = free_port()
    workers = contextlib.contextmanager(_workers)
    with workers(upstream, tmp_path, admin) as gateway:
        clients = _on_each_worker(gateway, "contractor")
        try:
            _probe_raw(clients[1])  # worker 1 raises the alarm and holds the person...
            _eventually(lambda: _held(clients[1]), "worker 1 did not hold the person")
            _eventually(lambda: _held(clients[0]), "worker 0 did not hold the person")  # ...and so does 0
            # Each console connection reaches either worker (the kernel chooses): all list the hold.
            _eventually(lambda: _lists_the_hold(gateway), "SHOW HOLDS does not list the hold")
            assert all(_lists_the_hold(gateway) for _ in range(6))
            # Cleared through worker 0 (it serves the admin API), which did not raise the alarm:
            # worker 1 lifts its own hold and tightening within moments.
            status, body = _clear_over_http(admin, "contractor", ("lead", "lead"), REASON)
            assert status == 200, body
            assert not _held(clients[0])
            _eventually(lambda: not _held(clients[1]), "the clearance did not reach worker 1", timeout=10)
            assert _console(gateway, "lead", "SHOW HOLDS") == []
            assert _clear_over_http(admin, "contractor", ("lead", "lead"), REASON)[0] == 409
        finally:
            for client in clients.values():
                client.close()
    # After a restart the clearance stands on both workers, from their first statement.
    with workers(upstream, tmp_path, admin) as gateway:
        clients = _on_each_worker(gateway, "contractor")
        try:
            assert not _held(clients[0])
            assert not _held(clients[1])
            _probe_raw(clients[0])  # held again, by worker 0 this time
            _eventually(lambda: _held(clients[1]), "worker 1 did not hold the person again")
            assert _held(clients[0])
        finally:
            for client in clients.values():
                client.close()
    # And the new hold is in force on both workers as soon as they accept connections.
    with workers(upstream, tmp_path, admin) as gateway:
        clients = _on_each_worker(gateway, "contractor")
        try:
            assert _held(clients[0])
            assert _held(clients[1])
            assert _lists_the_hold(gateway)
        finally:
            for client in clients.values():
                client.close()
    cleared = [line for line in gateway.log().splitlines() if '"person_cleared"' in line]
    assert len(cleared) == 1  # logged once, by the worker that recorded it


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A private Redis that the test can stop and start again (empty) on the same port."""
    port = free_port()
    servers = [start_redis(port, tmp_path)]

    def stop() -> None:
        servers[-1].terminate()
        servers[-1].wait(10)

    def start() -> None:
        servers.append(start_redis(port, tmp_path))

    yield f"redis://127.0.0.1:{port}/0", stop, start
    stop()


def test_gateways_on_one_redis_share_holds_and_clear_only_through_the_store(
    upstream: Upstream, tmp_path: Path, redis_server: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, stop_redis, start_redis_again = redis_server
    started: list[Gateway] = []

    def gateway(name: str, admin: int) -> Gateway:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        (directory / "policy.yaml").write_text(TEST_POLICY + HOLDING)
        started.append(
            start_gateway(
                directory, upstream.dsn, quotas={"store": url}, admin={"host": "127.0.0.1", "port": admin}
            )
        )
        return started[-1]

    first_admin, second_admin = free_port(), free_port()
    try:
        first, second = gateway("first", first_admin), gateway("second", second_admin)
        _probe(first, "contractor", 3)  # the first gateway raises the alarm
        assert _suspended(first, "contractor")
        _eventually(lambda: _suspended(second, "contractor"), "the second gateway did not hold the person")
        _eventually(lambda: _lists_the_hold(second), "the second gateway's SHOW HOLDS lacks the hold")
        # Without the store nobody is cleared, anywhere, and the console and the API say why.
        stop_redis()
        with pytest.raises(psycopg.Error) as caught:
            _command(second, "lead", f"CLEAR contractor '{REASON}'")
        assert caught.value.sqlstate == "SK002"
        assert "detection store is unreachable" in str(caught.value)
        status, body = _clear_over_http(second_admin, "contractor", ("lead", "lead"), REASON)
        assert status == 503, body
        assert _suspended(first, "contractor")
        assert _suspended(second, "contractor")
        # The store comes back empty: the gateways write the hold back, and nobody was freed.
        start_redis_again()
        client = redis.Redis.from_url(url)
        _eventually(
            lambda: bool(client.sismember("sekisho:detect:held", "contractor")), "hold not written back"
        )
        client.close()
        assert _suspended(first, "contractor")
        assert _suspended(second, "contractor")
        # Cleared through the second gateway: the first, which raised the alarm, lets them work.
        assert _command(second, "lead", f"CLEAR contractor '{REASON}'") == "CLEAR contractor"
        assert not _suspended(second, "contractor")
        _eventually(
            lambda: not _suspended(first, "contractor"), "the clearance did not reach the first gateway"
        )
        with pytest.raises(psycopg.Error) as caught:
            _command(first, "lead", f"CLEAR contractor '{REASON}'")
        assert "neither suspended nor tightened" in str(caught.value)
        # A restarted gateway keeps the clearance (its own copy and the store agree).
        first.stop()
        first = gateway("first", first_admin)
        assert not _suspended(first, "contractor")
        assert _console(first, "lead", "SHOW HOLDS") == []
        cleared = [line for gw in started for line in gw.log().splitlines() if '"person_cleared"' in line]
        assert len(cleared) == 1
    finally:
        for gw in started:
            gw.stop()
    for gw in started:
        assert "Traceback" not in gw.log(), gw.log()[-4000:]
