"""pgJDBC and node-postgres through Sekisho, each compared with the same program run directly.

The programs live in tests/clients: JdbcCheck.java (compiled here into a temporary directory and run
with Debian's pgJDBC jar) and node/check.js (node-postgres, installed by scripts/provision). Both
print only what a server-independent run must reproduce, so the comparison is exact.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_dsn
from tests.support import ROOT, Gateway, Upstream

CLIENTS = ROOT / "tests" / "clients"
PGJDBC = Path("/usr/share/java/postgresql.jar")


def run(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr}"
    return done.stdout


# ----------------------------------------------------------------------------- pgJDBC


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jdbc")
    run(["javac", "-d", str(out), "-cp", str(PGJDBC), str(CLIENTS / "java" / "JdbcCheck.java")])
    return out


def jdbc_url(host: str, port: int, database: str, user: str, password: str | None) -> str:
    url = f"jdbc:postgresql://{host}:{port}/{database}?user={user}&sslmode=disable"
    return url if password is None else f"{url}&password={password}"


def run_jdbc(classes: Path, url: str) -> list[str]:
    return run(["java", "-cp", f"{PGJDBC}:{classes}", "JdbcCheck", url]).splitlines()


def test_pgjdbc_matches_direct(gateway: Gateway, upstream: Upstream, jdbc_classes: Path) -> None:
    cfg = parse_dsn(upstream.dsn)
    direct = run_jdbc(jdbc_classes, jdbc_url(cfg.host, cfg.port, cfg.database, cfg.user, cfg.password))
    through = run_jdbc(jdbc_classes, jdbc_url("127.0.0.1", gateway.port, gateway.database, "alice", "alice"))
    assert through == direct
    assert through[-1] == "done"
    assert "count 2000 1 2000" in through
    assert sum(line.startswith("prepared ") for line in through) == 24
    # Past prepareThreshold the statement was prepared by name on the upstream behind Sekisho.
    assert "server-side prepared statements 1" in through
    assert "cursor rows 2000" in through
    assert sum(line.startswith("cursor id=") for line in through) == 2000
    assert any(line.startswith("orders cursor 4000 ") for line in through)
    assert "error 22012 ERROR: division by zero" in through
    assert any(line.startswith("error 25P02 ") for line in through)
    assert "after rollback 3" in through
    assert "table public.customers TABLE" in through
    assert "table public.orders TABLE" in through
    assert "primary key id" in through
    assert "batch inserted 50" in through


# ----------------------------------------------------------------------------- node-postgres


def run_node(url: str) -> dict[str, Any]:
    out = run(["node", str(CLIENTS / "node" / "check.js"), url], cwd=CLIENTS / "node")
    result: dict[str, Any] = json.loads(out)
    return result


def test_node_postgres_matches_direct(gateway: Gateway, upstream: Upstream) -> None:
    cfg = parse_dsn(upstream.dsn)
    secret = f":{cfg.password}" if cfg.password else ""
    direct = run_node(f"postgresql://{cfg.user}{secret}@{cfg.host}:{cfg.port}/{cfg.database}?sslmode=disable")
    through = run_node(gateway.url("lead"))
    assert through == direct
    assert through["simple"]["rowCount"] == 25
    assert through["multi"] == [[{"one": 1}], [{"two": 2}]]
    assert len(through["parameterized"]) == 81
    assert [len(rows) for rows in through["prepared"]] == [1] * 8
    assert through["preparedOnServer"] == [
        {
            "name": "customer-by-id",
            "statement": "SELECT id, name, card_number, created_at FROM customers WHERE id = $1",
        }
    ]
    assert through["allCount"] == 2000
    assert through["errors"] == [
        ["22012", "division by zero"],
        ["25P02", "current transaction is aborted, commands ignored until end of transaction block"],
    ]
    assert through["afterRollback"] == [{"n": 42}]
