"""The policy enforced inline, through real clients, for restricted people.

People (tests/support.py TEST_POLICY): contractor is the demo's maintenance role (100 rows per
statement, truncated); strict gets 10 rows and an error beyond; clerk may write public.orders.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.conftest import GatewayFactory
from tests.support import Gateway, Upstream


def connect(gateway: Gateway, user: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(gateway.conninfo(user), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def contractor(gateway: Gateway) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with connect(gateway, "contractor", autocommit=True) as conn:
        yield conn


REFUSED = [
    ("COPY customers TO STDOUT", "copy_protected"),
    ("COPY (SELECT name, phone FROM customers) TO STDOUT", "copy_protected"),
    ("COPY orders TO '/tmp/orders.csv'", "copy_server"),
    ("COPY (SELECT 1) TO PROGRAM 'cat > /tmp/x'", "copy_server"),
    ("SELECT pg_read_file('/etc/passwd')", "server_files"),
    ("SELECT * FROM pg_ls_dir('.')", "server_files"),
    ("SELECT lo_import('/etc/passwd')", "server_files"),
    ("CREATE TABLE loot AS SELECT * FROM customers", "derived_objects"),
    ("SELECT * INTO loot FROM customers", "derived_objects"),
    ("CREATE VIEW loot AS SELECT name, phone FROM customers", "derived_objects"),
    ("INSERT INTO orders (id, customer_id, amount, status, created_at) "
     "SELECT id + 1000000, id, 0, phone, now() FROM customers", "derived_objects"),
    ("SELECT query_to_xml('select * from customers', true, false, '')", "dynamic_sql"),
    ("DO $$ BEGIN PERFORM 1; END $$", "do_blocks"),
    ("SET ROLE postgres", "role_switch"),
    ("SET SESSION AUTHORIZATION postgres", "role_switch"),
    ("SELECT set_config('role', 'postgres', false)", "role_switch"),
    ("DELETE FROM customers WHERE id = 1", "protected_writes"),
    ("UPDATE customers SET phone = '0' WHERE id = 1", "protected_writes"),
    ("TRUNCATE customers", "protected_writes"),
    ("ALTER TABLE customers ADD COLUMN x int", "protected_ddl"),
    ("EXPLAIN ANALYZE DELETE FROM customers", "protected_writes"),
    ("SET client_encoding = 'LATIN1'", "session_settings"),
    ("SELECT id FROM customers ORDER BY phone", "pii_inference"),
    ("SELECT id FROM customers WHERE phone LIKE '090%'", "pii_inference"),
    ("SELECT email, count(*) FROM customers GROUP BY 1", "pii_inference"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
def test_refused_with_42501_naming_the_rule(
    contractor: psycopg.Connection[tuple[object, ...]], sql: str, rule: str
) -> None:
    with pytest.raises(psycopg.Error) as caught:
        contractor.execute(sql)
    diag = caught.value.diag
    assert diag.sqlstate == "42501", diag.message_primary
    assert f"(rule {rule})" in (diag.message_primary or "")
    assert diag.message_hint
    # The session stays usable.
    assert contractor.execute("SELECT 1").fetchone() == (1,)


def test_refusal_hint_names_the_elevation_that_would_allow_it(
    contractor: psycopg.Connection[tuple[object, ...]],
) -> None:
    with pytest.raises(psycopg.Error) as caught:
        contractor.execute("COPY customers TO STDOUT")
    assert "bulk_export" in (caught.value.diag.message_hint or "")


def test_refusal_inside_a_transaction_aborts_it_as_postgresql_would(gateway: Gateway) -> None:
    with connect(gateway, "contractor") as conn:
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY customers TO STDOUT")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)


def test_refused_prepared_statement_can_never_run(gateway: Gateway) -> None:
    with connect(gateway, "contractor", autocommit=True) as conn:
        for _ in range(3):  # extended protocol, and psycopg's automatic prepare after repeats
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_read_file(%s)", ("/etc/passwd",), prepare=True)
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
        with pytest.raises(psycopg.Error):
            conn.execute("PREPARE p AS SELECT pg_read_file('/etc/passwd')")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("EXECUTE p")
        assert caught.value.diag.sqlstate in ("26000", "SK003")


def test_whole_multi_statement_string_is_refused(
    contractor: psycopg.Connection[tuple[object, ...]], upstream: Upstream
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        contractor.execute("CREATE TEMP TABLE ran_first(a int); COPY customers TO STDOUT")
    with pytest.raises(psycopg.errors.UndefinedTable):
        contractor.execute("SELECT * FROM ran_first")


def test_unparseable_sql_is_refused_by_sekisho_with_42601(
    contractor: psycopg.Connection[tuple[object, ...]],
) -> None:
    with pytest.raises(psycopg.errors.SyntaxError) as caught:
        contractor.execute("SELEC * FROM customers")
    assert "Sekisho could not parse" in (caught.value.diag.message_primary or "")


LEGITIMATE = [
    "SELECT count(*) FROM customers",
    "SELECT name, phone FROM customers WHERE id = 5",
    "SELECT * FROM customers WHERE email = 'x@example.com'",
    "SELECT id FROM customers WHERE phone IN ('090-0000-0000', '080-0000-0000') ORDER BY id",
    "SELECT c.id, count(o.id) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY 1 ORDER BY 2",
    "SELECT c.id, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 7",
    "EXPLAIN SELECT * FROM customers WHERE id = 1",
    "VACUUM customers",
    "ANALYZE orders",
    "SELECT * FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "SHOW search_path",
    "SET search_path = public",
    "SET application_name = 'maintenance-ticket-4711'",
    "BEGIN; SELECT 1; COMMIT",
    "LISTEN maintenance",
    "SELECT now(), version()",
]


@pytest.mark.parametrize("sql", LEGITIMATE)
def test_legitimate_maintenance_work_stays_allowed(
    contractor: psycopg.Connection[tuple[object, ...]], sql: str
) -> None:
    contractor.execute(sql)


def test_masked_pii_may_be_looked_up_exactly_but_not_sorted_by(
    contractor: psycopg.Connection[tuple[object, ...]], upstream: Upstream
) -> None:
    with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
        row = direct.execute("SELECT id, phone, email FROM customers WHERE id = 42").fetchone()
    assert row is not None
    customer, phone, email = row
    found = contractor.execute("SELECT id FROM customers WHERE phone = %s", (phone,)).fetchall()
    assert (customer,) in found
    by_email = contractor.execute("SELECT id FROM customers WHERE email = ANY(%s)", ([email],)).fetchall()
    assert (customer,) in by_email
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        contractor.execute("SELECT id FROM customers ORDER BY phone LIMIT 5")
    diag = caught.value.diag
    assert diag.message_primary == (
        "Sekisho policy refuses the PII column public.customers.phone in ORDER BY for contractor "
        "(rule pii_inference)"
    )
    assert "look the customer up by id or by an exact value" in (diag.message_hint or "")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a prefix test, one digit at a time
        contractor.execute("SELECT id FROM customers WHERE phone LIKE %s", (phone[:3] + "%",))
    assert contractor.execute("SELECT count(*) FROM customers").fetchone() == (2000,)


def test_psql_catalog_commands_pass_for_restricted_people(gateway: Gateway, upstream: Upstream) -> None:
    for command in (r"\d customers", r"\dt", r"\d+ orders", r"\l", r"\dn", r"\df", r"\du", r"\dv", r"\di"):
        out = subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", command],
            env=gateway.env("contractor"), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, f"{command}: {out.stderr}"
        assert "Sekisho" not in out.stderr, f"{command}: {out.stderr}"


# ----------------------------------------------------------------------------- row caps


def test_cap_truncates_with_a_notice_and_a_normal_completion(
    contractor: psycopg.Connection[tuple[object, ...]],
) -> None:
    notices: list[str] = []
    contractor.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    cur = contractor.execute("SELECT id, name FROM customers ORDER BY id")
    rows = cur.fetchall()
    assert [r[0] for r in rows] == list(range(1, 101))
    assert cur.statusmessage == "SELECT 100"
    assert notices == ["Sekisho cut the result at 100 rows (max_rows of role maintenance)"]


def test_cap_counts_across_the_statements_of_one_string(gateway: Gateway) -> None:
    with connect(gateway, "contractor", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id FROM orders ORDER BY id LIMIT 60; SELECT id FROM orders ORDER BY id LIMIT 60")
        first = cur.fetchall()
        assert cur.nextset()
        second = cur.fetchall()
        assert (len(first), len(second)) == (60, 40)


def test_cap_with_psql(gateway: Gateway) -> None:
    out = subprocess.run(
        ["psql", "-X", "-At", "-c", "SELECT id FROM customers ORDER BY id"],
        env=gateway.env("contractor"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(i) for i in range(1, 101)]
    assert "Sekisho cut the result at 100 rows" in out.stderr


def test_cap_holds_across_fetches_of_a_server_side_cursor(gateway: Gateway) -> None:
    with connect(gateway, "contractor") as conn, conn.cursor(name="paging") as cur:
        cur.itersize = 30
        cur.execute("SELECT id FROM customers ORDER BY id")
        ids = [r[0] for r in cur]
        assert ids == list(range(1, 101))


def test_cap_holds_across_fetches_of_a_sql_cursor(gateway: Gateway) -> None:
    with connect(gateway, "contractor") as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT id FROM customers ORDER BY id")
        got = []
        for _ in range(5):
            got += [r[0] for r in conn.execute("FETCH 40 FROM c").fetchall()]
        assert got == list(range(1, 101))


def test_cap_with_asyncpg_cursor_prefetch(gateway: Gateway) -> None:
    async def run() -> list[int]:
        conn = await asyncpg.connect(gateway.url("contractor"))
        try:
            async with conn.transaction():
                return [
                    r["id"] async for r in conn.cursor("SELECT id FROM customers ORDER BY id", prefetch=30)
                ]
        finally:
            await conn.close()

    assert asyncio.run(run()) == list(range(1, 101))


def test_cap_with_asyncpg_fetch_and_binary_results(gateway: Gateway) -> None:
    async def run() -> int:
        conn = await asyncpg.connect(gateway.url("contractor"))
        try:
            return len(await conn.fetch("SELECT id, created_at FROM customers WHERE id > $1", 0))
        finally:
            await conn.close()

    assert asyncio.run(run()) == 100


def test_cap_in_error_mode_fails_the_statement(gateway: Gateway) -> None:
    with connect(gateway, "strict") as conn:
        assert len(conn.execute("SELECT id FROM customers ORDER BY id LIMIT 10").fetchall()) == 10
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT id FROM customers ORDER BY id").fetchall()
        assert caught.value.diag.sqlstate == "SK001"
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_capped_read_stops_the_upstream_scan_promptly(gateway: Gateway, upstream: Upstream) -> None:
    """The cap is enforced with Execute's row limit: PostgreSQL reads a few rows, not the table."""
    rows = 3_000_000
    with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
        direct.execute("DROP TABLE IF EXISTS big_scan")
        direct.execute(
            "CREATE UNLOGGED TABLE big_scan AS "
            f"SELECT g AS id, md5(g::text) AS filler FROM generate_series(1, {rows}) g"
        )
        direct.execute("ANALYZE big_scan")
        before = direct.execute(
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'big_scan'"
        ).fetchone()
        try:
            with connect(gateway, "contractor", autocommit=True) as conn:
                assert len(conn.execute("SELECT * FROM big_scan").fetchall()) == 100
            direct.execute("SELECT pg_stat_force_next_flush()")
            after = direct.execute(
                "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'big_scan'"
            ).fetchone()
            assert before is not None
            assert after is not None
            assert after[0] - before[0] < 10_000, f"the scan read {after[0] - before[0]} rows"
        finally:
            direct.execute("DROP TABLE big_scan")


def test_clerk_may_write_orders_but_not_customers(gateway: Gateway, upstream: Upstream) -> None:
    with connect(gateway, "clerk", autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders (id, customer_id, amount, status, created_at) "
            "VALUES (9000001, 1, 100, 'paid', now())"
        )
        cur = conn.execute("UPDATE orders SET status = 'shipped' WHERE id = 9000001 RETURNING status")
        assert cur.fetchall() == [("shipped",)]
        conn.execute("DELETE FROM orders WHERE id = 9000001")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE customers SET name = 'x' WHERE id = 1")
    with (
        connect(gateway, "contractor", autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("DELETE FROM orders WHERE id = 9000001")


def _wait_for_log(gw: Gateway, marker: str) -> None:
    for _ in range(100):
        if marker in gw.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{marker} never appeared in the gateway log")


def test_people_outside_the_policy_cannot_connect(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    policy = gw.directory / "policy.yaml"
    policy.write_text(policy.read_text().replace("  alice: {roles: [relay]}\n", ""))
    # The running gateway keeps its policy until told to reload.
    with connect(gw, "alice") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert gw.process is not None
    gw.process.send_signal(signal.SIGHUP)
    _wait_for_log(gw, "policy_reloaded")
    with pytest.raises(psycopg.OperationalError) as caught:
        connect(gw, "alice")
    assert 'Sekisho policy has no role for user "alice"' in str(caught.value)


def test_a_broken_policy_never_replaces_the_working_one(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    (gw.directory / "policy.yaml").write_text("roles: {maintenance: {max_rows: -5}}\n")
    assert gw.process is not None
    gw.process.send_signal(signal.SIGHUP)
    _wait_for_log(gw, "policy_invalid_keeping_previous")
    with connect(gw, "contractor", autocommit=True) as conn:
        assert len(conn.execute("SELECT id FROM customers").fetchall()) == 100


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ({"options": "-c role=postgres"}, 'setting "role" at connection time is not allowed'),
        ({"options": "-c session_preload_libraries=auto_explain"}, "session_preload_libraries"),
        ({"client_encoding": "SJIS"}, 'client_encoding "SJIS" is not allowed'),
        ({"options": "-c standard_conforming_strings=off"}, "standard_conforming_strings"),
    ],
)
def test_restricted_people_cannot_change_identity_or_lexing_at_connect(
    gateway: Gateway, extra: dict[str, str], text: str
) -> None:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(gateway.conninfo("contractor", **extra))
    assert text in str(caught.value)


def test_ordinary_connection_settings_stay_allowed(gateway: Gateway) -> None:
    info = gateway.conninfo(
        "contractor", options="-c search_path=public -c DateStyle=German", application_name="x"
    )
    with psycopg.connect(info) as conn:
        assert conn.execute("SHOW DateStyle").fetchone() == ("German, DMY",)


def test_a_failed_redefinition_cannot_uncap_a_prepared_statement(
    contractor: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Red-team finding: PREPARE p (customers); PREPARE p AS SELECT 1 (fails, 42P05); EXECUTE p."""
    contractor.execute("PREPARE p AS SELECT id FROM customers")
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        contractor.execute("PREPARE p AS SELECT 1")
    assert len(contractor.execute("EXECUTE p").fetchall()) == 100
    contractor.execute("DEALLOCATE p")


def test_error_mode_with_the_extended_protocol_answers(gateway: Gateway) -> None:
    """Red-team finding: the barrier held the client's Sync while PostgreSQL waited for it."""
    with connect(gateway, "strict") as conn:
        assert conn.execute("SELECT id FROM customers WHERE id = %s", (5,)).fetchall() == [(5,)]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT id FROM customers WHERE id > %s", (0,)).fetchall()
        assert caught.value.diag.sqlstate == "SK001"


def test_capped_queries_run_their_own_literals_after_a_same_shaped_statement(
    contractor: psycopg.Connection[tuple[object, ...]],
) -> None:
    """The shape cache once made a capped simple query run an earlier same-shaped statement's text."""
    assert len(contractor.execute("SELECT id FROM customers WHERE id > %s", (0,)).fetchall()) == 100
    ids = [
        r[0] for r in contractor.execute("SELECT id FROM customers WHERE id > 1990 ORDER BY id").fetchall()
    ]
    assert ids == list(range(1991, 2001))
    ids = [
        r[0] for r in contractor.execute("SELECT id FROM customers WHERE id > 1995 ORDER BY id").fetchall()
    ]
    assert ids == list(range(1996, 2001))
