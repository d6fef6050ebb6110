"""libpq's own tools through Sekisho: psql and pgbench, with output identical to a direct connection.

psql is run twice per check, once with ``gateway.env()`` and once with the upstream's coordinates,
and the two outputs are compared byte for byte: Sekisho relays a session, so nothing psql prints
(catalog descriptions, COPY row counts, the results of several statements in one string) may differ.
pgbench's tables are created directly on the upstream; the benchmark runs go through Sekisho in each
query mode and must finish with no failed transaction.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.config import parse_dsn
from tests.support import Gateway, Upstream


def direct_env(upstream: Upstream) -> dict[str, str]:
    """Environment for libpq tools to reach the upstream itself, as its service account."""
    cfg = parse_dsn(upstream.dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=cfg.host, PGPORT=str(cfg.port), PGDATABASE=cfg.database, PGUSER=cfg.user, PGSSLMODE="disable"
    )
    if cfg.password:
        env["PGPASSWORD"] = cfg.password
    return env


def psql(env: dict[str, str], *args: str) -> str:
    """Run psql without ~/.psqlrc, stopping at the first error; return its standard output."""
    done = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"psql {args} exited {done.returncode}: {done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "command",
    [
        r"\d customers",
        r"\d orders",
        r"\dt",
        r"\l",
        r"\dn+",
        r"\df pg_catalog.now",
        "select 1; select 2",
        "SELECT id, name, created_at FROM customers ORDER BY id LIMIT 20",
    ],
)
def test_psql_output_matches_direct(gateway: Gateway, upstream: Upstream, command: str) -> None:
    through = psql(gateway.env("maint"), "-c", command)
    direct = psql(direct_env(upstream), "-c", command)
    assert through == direct
    assert through.strip()


def test_psql_multi_statement_string_prints_every_result(gateway: Gateway) -> None:
    # Both statements go in one simple Query message; psql prints each result set.
    out = psql(gateway.env("maint"), "-A", "-t", "-c", "select 1; select 2")
    assert out == "1\n2\n"


def test_psql_script_with_error_reports_it_like_direct(gateway: Gateway, upstream: Upstream) -> None:
    script = "select 1;\nselect * from no_such_table;\nselect 3;\n"
    runs = []
    for env in (gateway.env("maint"), direct_env(upstream)):
        done = subprocess.run(
            ["psql", "-X", "-A", "-t"], input=script, env=env, capture_output=True, text=True, timeout=60
        )
        runs.append((done.returncode, done.stdout, done.stderr))
    assert runs[0] == runs[1]
    assert 'relation "no_such_table" does not exist' in runs[0][2]
    assert runs[0][1] == "1\n3\n"


@pytest.fixture
def scratch_table(upstream: Upstream) -> Iterator[str]:
    name = f"scratch_copy_{os.getpid()}"
    with psycopg.connect(upstream.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} AS SELECT * FROM customers WITH NO DATA")
    try:
        yield name
    finally:
        with psycopg.connect(upstream.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_psql_copy_both_ways(
    gateway: Gateway, upstream: Upstream, scratch_table: str, tmp_path: Path
) -> None:
    exported = tmp_path / "through.csv"
    exported_direct = tmp_path / "direct.csv"
    query = "select * from customers order by id"
    out = psql(gateway.env("maint"), "-c", rf"\copy ({query}) to '{exported}' with (format csv, header)")
    assert out == "COPY 2000\n"
    psql(direct_env(upstream), "-c", rf"\copy ({query}) to '{exported_direct}' with (format csv, header)")
    assert exported.read_bytes() == exported_direct.read_bytes()
    assert len(exported.read_text().splitlines()) == 2001

    out = psql(
        gateway.env("maint"), "-c", rf"\copy {scratch_table} from '{exported}' with (format csv, header)"
    )
    assert out == "COPY 2000\n"
    with psycopg.connect(upstream.conninfo()) as direct:
        copied = direct.execute(f"SELECT * FROM {scratch_table} ORDER BY id").fetchall()
        original = direct.execute(query).fetchall()
    assert copied == original

    # And back out through Sekisho, as text, compared with the same from the original table.
    back = psql(gateway.env("maint"), "-c", rf"\copy (select * from {scratch_table} order by id) to stdout")
    orig = psql(direct_env(upstream), "-c", rf"\copy ({query}) to stdout")
    assert back == orig


def test_psql_copy_from_stdin_inline(gateway: Gateway, upstream: Upstream, scratch_table: str) -> None:
    script = (
        f"COPY {scratch_table} (id, name) FROM STDIN;\n"
        "1\tfirst\n2\tsecond\n\\.\n"
        f"SELECT id, name FROM {scratch_table} ORDER BY id;\n"
    )
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
        input=script,
        env=gateway.env("maint"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "COPY 2\n1|first\n2|second\n"


# ----------------------------------------------------------------------------- pgbench

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)$", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+) ", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def pgbench_tables(upstream: Upstream) -> Iterator[None]:
    """pgbench's tables, created directly on the upstream (scale 1) and dropped afterwards."""
    done = subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q"],
        env=direct_env(upstream),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        subprocess.run(
            ["pgbench", "-i", "-I", "d"], env=direct_env(upstream), capture_output=True, text=True, timeout=60
        )


@pytest.mark.usefixtures("pgbench_tables")
@pytest.mark.parametrize(
    ("mode", "clients"), [("simple", 4), ("extended", 4), ("prepared", 4), ("prepared", 8)]
)
def test_pgbench_select_only(gateway: Gateway, mode: str, clients: int) -> None:
    done = subprocess.run(
        ["pgbench", "-n", "-S", "-T", "3", "-c", str(clients), "-j", "2", "-M", mode],
        env=gateway.env("maint"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"pgbench exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert f"query mode: {mode}" in done.stdout
    assert f"number of clients: {clients}" in done.stdout
    failed = _FAILED.search(done.stdout)
    assert failed is not None, done.stdout
    assert int(failed.group(1)) == 0
    processed = _PROCESSED.search(done.stdout)
    assert processed is not None, done.stdout
    assert int(processed.group(1)) > 0
    tps = _TPS.search(done.stdout)
    assert tps is not None, done.stdout
    assert float(tps.group(1)) > 0
