"""The `sekisho` command's own behaviour: passwd, and clear errors for broken configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from gateway.users import load_users
from tests.conftest import GatewayFactory
from tests.e2e.test_bad_input import scram_challenge
from tests.support import ROOT, TEST_POLICY, Upstream, start_gateway


def _sekisho(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


def test_passwd_writes_a_verifier_that_the_running_gateway_accepts(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    users = gw.directory / "users.txt"
    out = _sekisho("passwd", "newcomer", "--users-file", str(users), "--password-stdin", stdin="N3w-secret\n")
    assert out.returncode == 0, out.stderr
    text = users.read_text()
    assert "N3w-secret" not in text
    assert "newcomer:SCRAM-SHA-256$4096:" in text
    assert set(load_users(users)) >= {"maint", "newcomer"}
    # Picked up without a restart.
    with psycopg.connect(gw.conninfo("newcomer", password="N3w-secret")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_run_with_a_broken_configuration_says_what_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "sekisho.yaml"
    config.write_text(
        "upstream: postgresql://x@127.0.0.1/db\nusers_file: u.txt\npolicy: policy.yaml\n"
        "limits: {startup_timeout: soon}\n"
    )
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "limits.startup_timeout: expected float, got str 'soon'" in out.stderr
    assert "Traceback" not in out.stderr

    config.write_text(
        "upstream: postgresql://x@127.0.0.1/db\nusers_file: u.txt\npolicy: policy.yaml\nlisten: {prot: 1}\n"
    )
    out = _sekisho("run", "--config", str(config))
    assert "listen.prot: unknown key" in out.stderr

    config.write_text("upstream: [unclosed\n")
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "not valid YAML" in out.stderr


def test_run_with_a_missing_users_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(TEST_POLICY)
    config = tmp_path / "sekisho.yaml"
    config.write_text("upstream: postgresql://x@127.0.0.1/db\nusers_file: nowhere.txt\npolicy: policy.yaml\n")
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "nowhere.txt: cannot read users file" in out.stderr


def test_a_users_file_broken_while_running_keeps_the_last_good_one(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    users = gw.directory / "users.txt"
    users.write_text(users.read_text() + "this line is not a user\n")
    with psycopg.connect(gw.conninfo("maint")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "users_file_invalid_keeping_previous" in gw.log()


def test_unknown_users_salt_survives_a_restart(gateway_factory: GatewayFactory, upstream: Upstream) -> None:
    """A mock salt that changed on restart while real salts stay put would reveal who exists."""
    gw = gateway_factory()
    before = scram_challenge(gw.port, "ghost", gw.database)["s"]
    gw.stop()
    again = start_gateway(gw.directory, upstream.dsn)
    try:
        assert scram_challenge(again.port, "ghost", again.database)["s"] == before
    finally:
        again.stop()
    assert (gw.directory / ".sekisho-mock-secret").stat().st_mode & 0o777 == 0o600


def test_unknown_upstream_url_parameters_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "sekisho.yaml"
    config.write_text(
        "upstream: postgresql://x@127.0.0.1/db?ssl_mode=require\nusers_file: u.txt\npolicy: policy.yaml\n"
    )
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "unknown URL parameter 'ssl_mode'" in out.stderr


def test_run_with_a_missing_or_broken_policy_says_so(tmp_path: Path) -> None:
    config = tmp_path / "sekisho.yaml"
    config.write_text("upstream: postgresql://x@127.0.0.1/db\nusers_file: u.txt\npolicy: policy.yaml\n")
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "policy.yaml: cannot read the policy file" in out.stderr
    (tmp_path / "policy.yaml").write_text("version: 1\nroles:\n  maintenance: {max_rows: 0}\n")
    out = _sekisho("run", "--config", str(config))
    assert out.returncode == 2
    assert "policy.yaml:3: roles.maintenance.max_rows" in out.stderr
    assert "Traceback" not in out.stderr


def test_explain_shows_facts_and_the_deciding_rule(upstream: Upstream, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TEST_POLICY)
    allowed = _sekisho(
        "explain", "--policy", str(policy), "--upstream", upstream.dsn, "--user", "contractor",
        "SELECT c.name, upper(c.phone) AS p FROM customers c WHERE c.email = 'a@example.jp'",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    out = allowed.stdout
    assert "public.customers (read)  [protected]" in out
    assert "where:     public.customers.email (exact value)" in out
    assert "name <- public.customers.name (direct)" in out
    assert "p <- public.customers.phone (derived)" in out
    assert "ALLOW, at most 100 rows (max_rows of role maintenance)" in out
    assert "rows:       at most" not in out  # no key lookup: no proven bound

    point = _sekisho(
        "explain", "--policy", str(policy), "--upstream", upstream.dsn, "--user", "contractor",
        "SELECT name FROM customers WHERE id = 7",
    )  # fmt: skip
    assert point.returncode == 0, point.stderr
    assert "rows:       at most 1 (proven: sent as written under a larger cap)" in point.stdout

    refused = _sekisho(
        "explain", "--policy", str(policy), "--upstream", upstream.dsn, "--user", "contractor",
        "COPY (SELECT * FROM customers) TO PROGRAM 'gzip > /tmp/c.gz'",
    )  # fmt: skip
    assert refused.returncode == 0, refused.stderr
    assert "DENY 42501 (rule copy_server)" in refused.stdout
    assert "copy:       to program, of a query" in refused.stdout

    pattern = _sekisho(
        "explain", "--policy", str(policy), "--upstream", upstream.dsn, "--user", "contractor",
        "SELECT name, phone FROM customers WHERE phone LIKE '090%'",
    )  # fmt: skip
    assert pattern.returncode == 0, pattern.stderr
    assert "DENY 42501 (rule pii_inference)" in pattern.stdout
    assert "masked PII: where equality, join equality, group_by refuse" in pattern.stdout


def test_explain_without_a_database_says_names_are_not_resolved(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TEST_POLICY)
    out = _sekisho("explain", "--policy", str(policy), "--user", "contractor", "COPY customers TO STDOUT")
    assert out.returncode == 0
    assert "not resolved against a live catalog" in out.stderr
    assert "DENY 42501 (rule copy_protected)" in out.stdout
