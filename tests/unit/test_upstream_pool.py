"""The pure parts of upstream reuse: which strings leave state DISCARD ALL keeps, pool keys, the
configuration section. The pool itself is tested against PostgreSQL in tests/e2e/test_upstream_pool.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, PoolConfig, config_from_mapping
from gateway.upstream import UpstreamLink
from gateway.upstream_pool import leaves_session_state, pool_key
from gateway.wire import messages as m
from policy.analyze import analyze
from policy.catalog import Catalog

_CATALOG = Catalog.of([])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SET search_path = pg_catalog",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "PREPARE p AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "CREATE TEMP TABLE t (x int)",
        "LISTEN channel",
        "SELECT pg_advisory_lock(1)",
        "SET ROLE someone",
        "SET SESSION AUTHORIZATION someone",
        "SELECT nextval('s')",
    ],
)
def test_state_that_discard_all_resets(sql: str) -> None:
    assert not leaves_session_state(analyze(sql, _CATALOG))


@pytest.mark.parametrize(
    "sql",
    [
        "SET my.secret = 'x'",  # a placeholder variable outlives RESET ALL (emptied, not removed)
        "SET LOCAL my.secret = 'x'",
        "SELECT set_config('my.secret', 'x', false)",
        "SELECT 1; SELECT set_config('search_path', 'x', false)",
        "SELECT setseed(0.5)",  # random() stays seeded
        "LOAD 'auto_explain'",
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELECT my_function()",
        "CALL my_procedure()",
        "SELECT dblink_connect('other', 'dbname=x')",
        "SELEC 1",  # not analyzed: in doubt
    ],
)
def test_state_that_discard_all_keeps(sql: str) -> None:
    assert leaves_session_state(analyze(sql, _CATALOG))


def test_pool_key_ignores_the_order_of_startup_parameters() -> None:
    a = [("application_name", "psql"), ("client_encoding", "UTF8")]
    assert pool_key(a) == pool_key(list(reversed(a)))
    assert pool_key(a) != pool_key([("application_name", "pgbench"), ("client_encoding", "UTF8")])
    assert pool_key(a) != pool_key(a[:1])


def test_a_link_knows_when_its_parameters_came_back() -> None:
    link = UpstreamLink(None, [("DateStyle", "ISO, MDY"), ("TimeZone", "UTC")], None, [])  # type: ignore[arg-type]
    assert link.as_started
    link.parameter_status(m.ParameterStatus("DateStyle", "German, DMY").encode()[5:])
    assert not link.as_started
    link.parameter_status(m.ParameterStatus("DateStyle", "ISO, MDY").encode()[5:])
    assert link.as_started
    link.parameter_status(m.ParameterStatus("in_hot_standby", "off").encode()[5:])
    assert not link.as_started  # a parameter the welcome did not have: in doubt


def _config(section: Any) -> PoolConfig:
    data = {
        "upstream": "postgresql://db/app",
        "users_file": "u",
        "policy": "p.yaml",
        "upstream_pool": section,
    }
    return config_from_mapping(data, base=Path()).upstream_pool


def test_pool_configuration() -> None:
    assert _config(None) == PoolConfig(max_idle=50, idle_timeout=60.0, check_after=10.0)
    assert _config({"max_idle": 0, "idle_timeout": 5, "check_after": 0}) == PoolConfig(0, 5.0, 0.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_idle": -1}, "upstream_pool.max_idle: expected 0 or more"),
        ({"max_idle": "10"}, "upstream_pool.max_idle: expected int"),
        ({"idle_timeout": 0}, "upstream_pool.idle_timeout: expected a positive number"),
        ({"idle_timeout": float("nan")}, "upstream_pool.idle_timeout: expected a positive number"),
        ({"check_after": -1}, "upstream_pool.check_after: expected 0 or more"),
        ({"max_idel": 3}, "upstream_pool.max_idel: unknown key"),
        ([1], "upstream_pool: expected a mapping"),
    ],
)
def test_pool_configuration_errors(section: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(section)
    assert str(caught.value).startswith(message)
