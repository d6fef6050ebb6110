"""Sekisho processes for the bench: the test suite's policy plus a bulk reader, and ``--workers``.

The suite's policy (tests.support.TEST_POLICY) leaves the pgbench_* tables and ``big`` unprotected,
so every workload runs through the real statement path without being refused: ``maint`` is an
unrestricted person, ``contractor`` the demo's maintenance role (every read analyzed, decided and
capped at 100 rows). The bench adds ``bulkreader``, restricted with a large cap, so that the capped
full-table read also measures rows per second through the capping path, not only the cut-off.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from gateway.config import parse_dsn
from gateway.pgcluster import free_port
from gateway.users import set_password
from tests.support import PEOPLE, ROOT, TEST_POLICY, Gateway, wait_until_listening, write_gateway_config

BULK_READER = "bulkreader"


def policy_text(bulk_cap: int) -> str:
    """The suite's policy with the ``bulk`` role (restricted, ``bulk_cap`` rows per statement)."""
    document = yaml.safe_load(TEST_POLICY)
    document["roles"]["bulk"] = {"restricted": True, "max_rows": bulk_cap, "on_row_cap": "truncate"}
    document["users"][BULK_READER] = {"roles": ["bulk"]}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def start(
    directory: Path,
    upstream_dsn: str,
    *,
    bulk_cap: int,
    workers: int = 1,
    audit: Mapping[str, object] | None = None,
) -> Gateway:
    """Start `sekisho run --workers N` with the bench policy and wait until it accepts connections.

    The same as tests.support.start_gateway (debug log level included, so figures compare with
    earlier runs) except for the policy and ``--workers``; raises RuntimeError if it does not start."""
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users.txt"
    for person in (*PEOPLE, BULK_READER):
        set_password(users, person, person)
    (directory / "policy.yaml").write_text(policy_text(bulk_cap))
    port = free_port()
    config = write_gateway_config(directory, upstream_dsn, port, audit=dict(audit or {"log": "none"}))
    argv = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--log-level", "debug"]
    if workers != 1:
        argv += ["--workers", str(workers)]
    with (directory / "sekisho.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    gateway = Gateway(directory, port, parse_dsn(upstream_dsn).database, process)
    problem = wait_until_listening(process, port, 30)
    if problem is not None:
        gateway.stop()
        raise RuntimeError(f"sekisho {problem}:\n{gateway.log()[-3000:]}")
    return gateway
