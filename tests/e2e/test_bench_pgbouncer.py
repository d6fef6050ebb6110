"""The bench's PgBouncer (bench/pgbouncer.py) against the real PostgreSQL: each pool authenticates
its clients the way its figures are labelled, since a churn comparison with SCRAM clients means
nothing if that pool quietly trusts them."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from bench.pgbouncer import (
    SCRAM_DB,
    SESSION_DB,
    TRANSACTION_DB,
    PgBouncer,
    PgBouncerError,
    check_authentication,
    find_pgbouncer,
    start_pgbouncer,
)
from tests.support import TEST_DATABASE, WORK, Upstream


@pytest.fixture
def bouncer(upstream: Upstream) -> Iterator[PgBouncer]:
    try:
        find_pgbouncer()
    except PgBouncerError:
        pytest.skip("pgbouncer is not installed")
    if upstream.cluster is None:
        pytest.skip("the bench's PgBouncer needs the suite's own trust cluster, not SEKISHO_TEST_DSN")
    # Under WORK, not tmp_path: as root PgBouncer runs as ``postgres``, which must read its files.
    directory = WORK / f"pgbouncer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        started = start_pgbouncer(directory, upstream.port, TEST_DATABASE, 2)
        try:
            yield started
        finally:
            started.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _psql(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-c", "SELECT current_database()"],
        env=env, capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def test_trust_pools_need_no_password_and_the_scram_pool_needs_the_right_one(bouncer: PgBouncer) -> None:
    for database in (SESSION_DB, TRANSACTION_DB):
        env = {k: v for k, v in bouncer.env(database).items() if k != "PGPASSWORD"}
        done = _psql(env)
        assert (done.returncode, done.stdout.strip()) == (0, TEST_DATABASE), done.stderr
    done = _psql(bouncer.env(SCRAM_DB))
    assert (done.returncode, done.stdout.strip()) == (0, TEST_DATABASE), done.stderr
    wrong = _psql({**bouncer.env(SCRAM_DB), "PGPASSWORD": "not the password"})
    assert wrong.returncode != 0
    assert "SASL authentication failed" in wrong.stderr
    missing = _psql(
        {k: v for k, v in bouncer.env(SCRAM_DB).items() if k != "PGPASSWORD"} | {"PGPASSFILE": "/dev/null"}
    )
    assert missing.returncode != 0
    assert "no password supplied" in missing.stderr


def test_a_pool_that_lets_clients_in_without_scram_is_refused(bouncer: PgBouncer, upstream: Upstream) -> None:
    check_authentication(bouncer.port)  # the bench's own PgBouncer passes
    # The suite's PostgreSQL trusts every client, SCRAM_DB included: labelled SCRAM, it must not pass.
    with pytest.raises(PgBouncerError, match=f"{SCRAM_DB} should ask for SCRAM-SHA-256, 4096 iterations"):
        check_authentication(upstream.port)
