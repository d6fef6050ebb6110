"""`sekisho policy check` against a real PostgreSQL, and the live catalog loader it uses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from gateway.catalog import CatalogUnavailable, fetch_catalog, load_catalog
from gateway.config import parse_dsn
from gateway.pgcluster import free_port
from policy.analysis import functions
from policy.analysis.functions import FIRST_NORMAL_OBJECT_ID
from policy.catalog import MATVIEW, SEQUENCE, TABLE, VIEW, Catalog
from tests.support import ROOT, Upstream

DEMO = ROOT / "policies" / "demo.yaml"
CUSTOMERS = ("public", "customers")
ORDERS = ("public", "orders")


def _sekisho(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


def _dead_upstream() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    return f"postgresql://sekisho_svc:hunter2@127.0.0.1:{free_port()}/customers?connect_timeout=3"


# --------------------------------------------------------------------------- the command


def test_demo_policy_is_ok_against_the_live_catalog(upstream: Upstream) -> None:
    out = _sekisho("policy", "check", str(DEMO), "--upstream", upstream.dsn)
    assert out.returncode == 0, out.stdout + out.stderr
    where = parse_dsn(upstream.dsn).describe()
    assert out.stdout == (
        f"{DEMO}: OK (3 roles, 3 users, 1 protected table, 5 PII columns; "
        f"checked against the live catalog of {where})\n"
    )
    assert out.stderr == ""


def test_the_upstream_can_come_from_the_gateway_configuration(upstream: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "sekisho.yaml"
    config.write_text(
        yaml.safe_dump({"upstream": upstream.dsn, "users_file": "users.txt", "policy": str(DEMO)})
    )
    out = _sekisho("policy", "check", str(DEMO), "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"checked against the live catalog of {parse_dsn(upstream.dsn).describe()}" in out.stdout


def test_without_a_database_only_the_file_is_checked() -> None:
    out = _sekisho("policy", "check", str(DEMO))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"{DEMO}: OK (3 roles, 3 users, 1 protected table, 5 PII columns; "
        "not checked against a database (give --upstream or --config to do so))\n"
    )


def test_a_missing_column_or_table_is_named_with_its_line(upstream: Upstream, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "protected_tables:\n"
        "  public.customers:\n"
        "    pii:\n"
        "      name: full\n"
        "      phon: phone\n"
        "  public.invoices: {}\n"
        "roles:\n"
        "  maintenance: {max_rows: 100}\n"
    )
    out = _sekisho("policy", "check", str(policy), "--upstream", upstream.dsn)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        f'{policy}:6: protected_tables.public.customers.pii.phon: column "phon" does not exist in '
        'public.customers; did you mean "phone"?',
        f"{policy}:7: protected_tables.public.invoices: table public.invoices does not exist in the database",
    ]
    assert "2 problems in the live catalog of" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_invalid_policy_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nroles:\n  maintenance: {max_rows: 0, allow: [copy]}\n")
    # The database is not contacted for a policy that is itself invalid, so a dead one is fine.
    out = _sekisho("policy", "check", str(policy), "--upstream", _dead_upstream())
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{policy}:3: roles.maintenance.max_rows: must be at least 1, found 0"
    assert lines[1].startswith(
        f"{policy}:3: roles.maintenance.allow[0]: unknown rule class 'copy' (allowed: "
    )
    assert len(lines) == 2
    assert "2 problems; it was not checked against the database" in out.stderr


def test_an_unreachable_database_exits_2_and_says_the_catalog_was_not_checked() -> None:
    dsn = _dead_upstream()
    out = _sekisho("policy", "check", str(DEMO), "--upstream", dsn)
    assert out.returncode == 2, out.stdout + out.stderr
    where = parse_dsn(dsn).describe()
    assert f"sekisho: cannot connect to the database at {where}: " in out.stderr
    assert f"sekisho: {DEMO} is valid, but the check against the live catalog was NOT done" in out.stderr
    assert out.stdout == ""
    assert "hunter2" not in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    out = _sekisho("policy", "check", str(missing))
    assert out.returncode == 2
    assert out.stderr == (
        f"sekisho: cannot read the policy file {missing}: No such file or directory; nothing was checked\n"
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe\n")
    out = _sekisho("policy", "check", str(binary))
    assert out.returncode == 2
    assert "is not UTF-8 text; nothing was checked" in out.stderr


def test_a_bad_upstream_url_exits_2() -> None:
    out = _sekisho("policy", "check", str(DEMO), "--upstream", "mysql://x@y/z")
    assert out.returncode == 2
    assert "upstream: expected a postgresql:// URL" in out.stderr


# --------------------------------------------------------------------------- the catalog loader

SCRATCH = f"sekisho_catalog_{os.getpid()}"
SCRATCH_SQL = f"""
CREATE SCHEMA {SCRATCH};
CREATE SCHEMA {SCRATCH}_empty;
CREATE TABLE {SCRATCH}."Mixed Case" (a int, b int, c int);
ALTER TABLE {SCRATCH}."Mixed Case" DROP COLUMN b;
CREATE SEQUENCE {SCRATCH}.ticket;
CREATE VIEW {SCRATCH}.contact AS SELECT name, email FROM public.customers;
CREATE VIEW {SCRATCH}.contact_orders AS
    SELECT c.name, o.amount FROM {SCRATCH}.contact c JOIN public.orders o ON true;
CREATE MATERIALIZED VIEW {SCRATCH}.order_report AS SELECT * FROM {SCRATCH}.contact_orders WITH NO DATA;
CREATE VIEW {SCRATCH}.constant AS SELECT 1 AS one;
CREATE VIEW {SCRATCH}.tables_view AS SELECT table_name FROM information_schema.tables;
CREATE FUNCTION {SCRATCH}.shout(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN upper(t); END $$;
"""


async def _scratch_catalog(dsn: str) -> Catalog:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCRATCH_SQL)
        try:
            return await load_catalog(conn)
        finally:
            await conn.execute(f"DROP SCHEMA {SCRATCH} CASCADE; DROP SCHEMA {SCRATCH}_empty")
    finally:
        await conn.close()


def test_load_catalog_reads_relations_columns_views_and_functions(upstream: Upstream) -> None:
    catalog = asyncio.run(_scratch_catalog(upstream.dsn))
    rel = catalog.relations

    customers = rel[CUSTOMERS]
    assert customers.kind == TABLE
    assert customers.columns == ("id", "name", "address", "phone", "email", "card_number", "created_at")
    assert rel[ORDERS].columns == ("id", "customer_id", "amount", "status", "created_at")
    assert customers.reads == frozenset()

    # Names as PostgreSQL stores them; dropped columns are gone, attnum order kept.
    assert rel[(SCRATCH, "Mixed Case")].columns == ("a", "c")
    assert rel[(SCRATCH, "ticket")].kind == SEQUENCE

    # View dependencies, transitively through views and materialized views.
    contact = (SCRATCH, "contact")
    contact_orders = (SCRATCH, "contact_orders")
    assert rel[contact].kind == VIEW
    assert rel[contact].columns == ("name", "email")
    assert rel[contact].reads == {CUSTOMERS}
    assert rel[contact_orders].reads == {contact, CUSTOMERS, ORDERS}
    report = rel[(SCRATCH, "order_report")]
    assert report.kind == MATVIEW
    assert report.reads == {contact_orders, contact, CUSTOMERS, ORDERS}
    assert rel[(SCRATCH, "constant")].reads == frozenset()

    # System catalogs are part of the snapshot: analysis must resolve them too.
    assert rel[("pg_catalog", "pg_class")].kind == TABLE
    assert rel[("information_schema", "tables")].kind == VIEW
    # (Views made by initdb have no pg_depend rows, so their reads are empty: they read only
    # system catalogs. A user's view over one records it.)
    assert rel[(SCRATCH, "tables_view")].reads == {("information_schema", "tables")}

    assert {f.language for f in catalog.functions[("pg_catalog", "pg_read_file")]} == {"internal"}
    assert {f.language for f in catalog.functions[(SCRATCH, "shout")]} == {"plpgsql"}
    # What each function runs: the C entry point and library, and an OID telling initdb's from later ones.
    read_file = catalog.functions[("pg_catalog", "pg_read_file")]
    assert {"pg_read_file_all", "pg_read_file_off_len"} <= {f.symbol for f in read_file}
    assert all(0 < f.oid < FIRST_NORMAL_OBJECT_ID and f.library is None for f in read_file)
    (handler,) = catalog.functions[("pg_catalog", "plpgsql_call_handler")]
    assert (handler.symbol, handler.library) == ("plpgsql_call_handler", "$libdir/plpgsql")
    (shout,) = catalog.functions[(SCRATCH, "shout")]
    assert shout.oid >= FIRST_NORMAL_OBJECT_ID
    assert (shout.symbol, shout.library) == (None, None)
    assert {SCRATCH, f"{SCRATCH}_empty", "public", "pg_catalog"} <= catalog.schemas


def test_the_live_builtins_keep_the_classes_of_their_names(upstream: Upstream) -> None:
    """Judging functions by what they run changes nothing for PostgreSQL's own: every function in
    pg_catalog and information_schema (SQL-language ones included) is initdb's and keeps the
    classes of its name, and every built-in classified by name calls an entry point Sekisho knows."""
    catalog = asyncio.run(fetch_catalog(parse_dsn(upstream.dsn)))
    by_name_only = Catalog.of([])
    system = [(key, fs) for key, fs in catalog.functions.items() if key[0] in functions.SYSTEM_SCHEMAS]
    assert len(system) > 2000
    for (schema, name), fs in system:
        qualified = f"{schema}.{name}"
        for nargs in (0, 1, 2, 3):
            assert functions.classes_of(catalog, qualified, nargs) == functions.classes_of(
                by_name_only, qualified, nargs
            ), qualified
        for f in fs:
            assert functions.built_in(f), f
            if f.language in ("internal", "c") and functions.classes_of(by_name_only, qualified):
                assert name in functions.SYMBOL_NAMES.get(f.symbol or "", ()), f


def test_fetch_catalog_connects_with_the_upstream_configuration(upstream: Upstream) -> None:
    catalog = asyncio.run(fetch_catalog(parse_dsn(upstream.dsn)))
    assert CUSTOMERS in catalog.relations


def test_fetch_catalog_reports_an_unreachable_database_without_credentials() -> None:
    cfg = parse_dsn(_dead_upstream())
    with pytest.raises(CatalogUnavailable, match=r"^cannot connect to the database at ") as info:
        asyncio.run(fetch_catalog(cfg))
    assert cfg.describe() in str(info.value)
    assert "hunter2" not in str(info.value)
    assert info.value.code == "catalog_unavailable"
