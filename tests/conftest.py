"""Shared fixtures: one seeded PostgreSQL per test run and one Sekisho in front of it.

Tests that need a differently configured gateway (TLS, small limits, a dead upstream) start their
own with ``gateway_factory``; each gets a fresh directory and is stopped after the test.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.pgcluster import free_port
from tests.support import WORK, Gateway, Upstream, start_gateway, start_redis, start_upstream

_counter = itertools.count()

# Property tests check behaviour, not speed (speed is bench/'s job): on a loaded machine a slow
# example must not fail them.
settings.register_profile("sekisho", deadline=None)
settings.load_profile("sekisho")


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    up = start_upstream()
    try:
        yield up
    finally:
        if up.cluster is not None:
            up.cluster.stop("immediate")
            shutil.rmtree(up.cluster.data_dir, ignore_errors=True)
            up.cluster.log_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), upstream.dsn)
    try:
        yield gw
    finally:
        gw.stop()
    _assert_no_crash(gw)


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_factory(upstream: Upstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def make(upstream_dsn: str | None = None, **sections: object) -> Gateway:
        directory = tmp_path / f"gw{next(_counter)}"
        gw = start_gateway(directory, upstream_dsn or upstream.dsn, **sections)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()
    for gw in started:
        _assert_no_crash(gw)


def _assert_no_crash(gw: Gateway) -> None:
    """Whatever a test did to it, the gateway must not have logged an unhandled exception."""
    log = gw.log()
    for marker in ("Traceback (most recent call last)", "Exception in callback", "Task exception was never"):
        assert marker not in log, f"gateway logged an unhandled exception:\n{log[-4000:]}"


def pytest_sessionstart(session: pytest.Session) -> None:
    WORK.mkdir(exist_ok=True)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private Redis on a free loopback port for one test."""
    port = free_port()
    process = start_redis(port, tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
