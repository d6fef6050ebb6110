"""A capped FETCH stops PostgreSQL after the cap, through real clients.

PostgreSQL runs a FETCH to completion into its portal's store whatever Execute's row limit says, so
Sekisho sends a FETCH of the budget plus one instead. Whether PostgreSQL stopped shows in the cursor:
``MOVE FORWARD ALL`` afterwards reports how many rows were still ahead of it (0 had the FETCH read
everything). contractor has 100 rows per statement (truncated), strict 10 (an error beyond).
"""

from __future__ import annotations

import subprocess

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.support import TEST_ROWS, Gateway, Upstream

REPEAT = 500
TOTAL = TEST_ROWS * REPEAT  # a million rows, streamed by a nested loop: no sort, no materialization
BIG = f"SELECT c.id, g FROM customers c CROSS JOIN generate_series(1, {REPEAT}) g"
CUT = "Sekisho cut the result at 100 rows (max_rows of role maintenance)"


def connect(gateway: Gateway, user: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(gateway.conninfo(user))


def notices_of(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    return notices


def direct_rows(upstream: Upstream, declare: str, *statements: str) -> list[tuple[object, ...]]:
    """What PostgreSQL itself returns for the last of ``statements`` on a cursor declared so."""
    with psycopg.connect(upstream.conninfo()) as direct:
        direct.execute(declare)
        for sql in statements[:-1]:
            direct.execute(sql)
        return direct.execute(statements[-1]).fetchall()


def rows_left(conn: psycopg.Connection[tuple[object, ...]], direction: str = "FORWARD") -> int:
    status = conn.execute(f"MOVE {direction} ALL FROM c").statusmessage or ""
    assert status.startswith("MOVE "), status
    return int(status.split()[1])


@pytest.mark.parametrize("fetch", ["FETCH ALL FROM c", "FETCH FORWARD ALL IN c", "FETCH 1000000 FROM c"])
def test_fetch_all_stops_the_upstream_after_the_cap(gateway: Gateway, upstream: Upstream, fetch: str) -> None:
    expected = direct_rows(upstream, f"DECLARE c CURSOR FOR {BIG}", "FETCH 100 FROM c")
    with connect(gateway, "contractor") as conn:  # simple protocol (no parameters), in a transaction
        notices = notices_of(conn)
        conn.execute(f"DECLARE c CURSOR FOR {BIG}")
        cur = conn.execute(fetch)
        assert cur.fetchall() == expected
        assert cur.statusmessage == "FETCH 100"
        assert notices == [CUT]
        assert rows_left(conn) == TOTAL - 101  # PostgreSQL read the cap plus one, not the million


def test_fetch_backward_all_stops_the_upstream_after_the_cap(gateway: Gateway, upstream: Upstream) -> None:
    declare = f"DECLARE c SCROLL CURSOR FOR {BIG}"
    expected = direct_rows(upstream, declare, "MOVE ABSOLUTE 5000 IN c", "FETCH BACKWARD 100 FROM c")
    with connect(gateway, "contractor") as conn:
        notices = notices_of(conn)
        conn.execute(declare)
        conn.execute("MOVE ABSOLUTE 5000 IN c")
        cur = conn.execute("FETCH BACKWARD ALL FROM c")
        assert cur.fetchall() == expected
        assert cur.statusmessage == "FETCH 100"
        assert notices == [CUT]
        assert rows_left(conn, "BACKWARD") == 4999 - 101


def test_a_prepared_fetch_stops_the_upstream_in_every_transaction(gateway: Gateway) -> None:
    """Extended protocol, a named statement reused on a cursor declared anew in each transaction."""
    with connect(gateway, "contractor") as conn:
        notices = notices_of(conn)
        for _ in range(2):
            conn.execute(f"DECLARE c CURSOR FOR {BIG}")
            cur = conn.execute("FETCH FORWARD ALL FROM c", prepare=True)
            assert len(cur.fetchall()) == 100
            assert cur.statusmessage == "FETCH 100"
            assert rows_left(conn) == TOTAL - 101
            conn.commit()
        assert notices == [CUT, CUT]


def test_a_fetch_within_the_budget_runs_as_sent(gateway: Gateway) -> None:
    with connect(gateway, "contractor") as conn:
        notices = notices_of(conn)
        conn.execute(f"DECLARE c CURSOR FOR {BIG}")
        assert len(conn.execute("FETCH 60 FROM c").fetchall()) == 60
        cur = conn.execute("FETCH 41 FROM c", binary=True)  # extended protocol, unnamed statement
        assert len(cur.fetchall()) == 40  # the cursor's budget has 40 left
        assert notices == [CUT]
        assert rows_left(conn) == TOTAL - 101


def test_a_fetch_in_a_multi_statement_string(gateway: Gateway) -> None:
    with connect(gateway, "contractor") as conn:
        cur = conn.execute(f"DECLARE c CURSOR FOR {BIG}; FETCH ALL FROM c; MOVE FORWARD ALL FROM c")
        statuses = [cur.statusmessage]
        while cur.nextset():
            statuses.append(cur.statusmessage)
        assert statuses == ["DECLARE CURSOR", "FETCH 100", f"MOVE {TOTAL - 101}"]


def test_fetch_all_with_psql(gateway: Gateway) -> None:
    script = f"BEGIN; DECLARE c CURSOR FOR {BIG}; FETCH ALL FROM c; MOVE FORWARD ALL FROM c; COMMIT"
    out = subprocess.run(
        ["psql", "-X", "-At", "-c", script],
        env=gateway.env("contractor"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sum("|" in line for line in out.stdout.splitlines()) == 100
    assert f"MOVE {TOTAL - 101}" in out.stdout
    assert CUT in out.stderr


def test_fetch_all_in_error_mode_fails_after_reading_the_cap_plus_one(gateway: Gateway) -> None:
    with connect(gateway, "strict") as conn:
        conn.execute(f"DECLARE c CURSOR FOR {BIG}")
        conn.execute("SAVEPOINT before_fetch")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("FETCH ALL FROM c").fetchall()
        assert caught.value.diag.sqlstate == "SK001"
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.execute("ROLLBACK TO SAVEPOINT before_fetch")  # a cursor's position is not rolled back
        assert rows_left(conn) == TOTAL - 11


@pytest.mark.parametrize(
    ("execute", "stopped"),
    [("EXECUTE probe", True), ("EXECUTE probe_n(4000)", True), ("EXECUTE probe_n(4000 + 0)", False)],
)
def test_sql_execute_with_literal_arguments_stops_the_upstream_after_the_cap(
    gateway: Gateway, upstream: Upstream, execute: str, stopped: bool
) -> None:
    """SQL EXECUTE runs its whole query before a row limit applies; with literal arguments Sekisho
    binds the same prepared statement instead, so Execute's limit stops PostgreSQL. A sequence
    drawn once per row produced shows how far PostgreSQL got (an expression argument still runs
    the whole query: the known gap)."""
    with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
        direct.execute("DROP SEQUENCE IF EXISTS public.exec_probe")
        direct.execute("CREATE SEQUENCE public.exec_probe")
        direct.execute("GRANT USAGE ON SEQUENCE public.exec_probe TO PUBLIC")
    try:
        with psycopg.connect(gateway.conninfo("contractor"), autocommit=True) as conn:
            notices = notices_of(conn)
            conn.execute("PREPARE probe AS SELECT nextval('public.exec_probe'), id FROM orders")
            conn.execute(
                "PREPARE probe_n(int) AS SELECT nextval('public.exec_probe'), id FROM orders WHERE id <= $1"
            )
            cur = conn.execute(execute)
            assert len(cur.fetchall()) == 100
            assert cur.statusmessage == "SELECT 100"
            assert notices == [CUT]
        with psycopg.connect(upstream.conninfo()) as direct:
            drawn = direct.execute("SELECT last_value FROM public.exec_probe").fetchone()
        assert drawn is not None
        assert (drawn[0] <= 101) is stopped, drawn  # 4,000 orders when the whole query ran
    finally:
        with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
            direct.execute("DROP SEQUENCE IF EXISTS public.exec_probe")
