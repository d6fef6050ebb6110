"""Key lookups through a real gateway: forwarded as the client sent them, still charged and cut.

A capped simple Query that provably returns few rows (``StatementFacts.max_rows``) is forwarded
as it came instead of being driven with Execute row limits. Its rows are still counted against the
cap and the quota; a bound that turned out wrong (here, a key dropped after Sekisho read the
catalog) costs PostgreSQL the rows it produces in vain, never a row past the cap. ``drip``
(tests/support.py) has 250 rows of protected tables per hour; contractor 100 rows per statement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import GatewayFactory
from tests.support import Gateway, Upstream

CUT = "Sekisho cut the result at 100 rows (max_rows of role maintenance)"
TABLE = "row_bounds_stale_key"
Connection = psycopg.Connection[tuple[object, ...]]


def _connect(gateway: Gateway, user: str) -> Connection:
    """A session once the gateway has its catalog (restricted people wait for it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(gateway.conninfo(user), autocommit=True)
        except psycopg.OperationalError as exc:
            if "loading the database catalog" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_point_selects_by_primary_key_are_masked_and_charged(
    gateway_factory: GatewayFactory, upstream: Upstream
) -> None:
    with psycopg.connect(upstream.conninfo()) as direct:
        real = direct.execute("SELECT name FROM customers WHERE id = 7").fetchone()
    gw = gateway_factory()
    with _connect(gw, "drip") as conn:
        point = conn.execute("SELECT id, name FROM customers WHERE id = 7").fetchall()
        assert point == conn.execute("SELECT id, name FROM customers WHERE id IN (7)").fetchall()  # driven
        assert len(point) == 1
        assert point[0][0] == 7
        assert real is not None
        assert point[0][1] != real[0]  # masked
        cur = conn.execute("SELECT id FROM customers WHERE id = 1; SELECT id FROM customers WHERE id = 2")
        assert cur.fetchall() == [(1,)]
        assert cur.nextset()
        assert cur.fetchall() == [(2,)]
        # 4 rows so far; 2 x 100 more, then 46 point selects reach the 250 of the quota.
        for _ in range(2):
            assert len(conn.execute("SELECT id FROM customers").fetchall()) == 100
        for key in range(1, 47):
            assert conn.execute(f"SELECT id FROM customers WHERE id = {key}").fetchall() == [(key,)]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT id FROM customers WHERE id = 47")
        assert caught.value.sqlstate == "SK002"  # the quota is exhausted: point selects count


@pytest.fixture
def stale_key(upstream: Upstream) -> Iterator[Connection]:
    """A table with a primary key, and a direct connection to drop the key behind Sekisho's back."""
    with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
        direct.execute(f"DROP TABLE IF EXISTS {TABLE}")
        direct.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v int)")
        try:
            yield direct
        finally:
            direct.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")


def _rows_read(direct: Connection, table: str = TABLE) -> int:
    """Rows PostgreSQL's sequential scans of ``table`` have read, as its statistics say."""
    row = direct.execute(
        "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = %s", (table,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_a_lookup_by_a_key_dropped_since_is_still_cut_at_the_cap(
    gateway_factory: GatewayFactory, stale_key: Connection
) -> None:
    gw = gateway_factory(limits={"catalog_refresh": 3600})
    lookup = f"SELECT v FROM {TABLE} WHERE id = 1"
    with _connect(gw, "contractor") as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        assert conn.execute(lookup).fetchall() == []  # the catalog Sekisho holds has the key
        stale_key.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey")
        stale_key.execute(f"INSERT INTO {TABLE} SELECT 1, g FROM generate_series(1, 500) g")
        stale_key.execute("SELECT pg_stat_force_next_flush()")
        before = _rows_read(stale_key)
        cur = conn.execute(lookup)
        assert [r[0] for r in cur.fetchall()] == list(range(1, 101))
        assert cur.statusmessage == "SELECT 100"
        assert notices == [CUT]
        # PostgreSQL ran it as sent, to its end (a driven one stops at the cap plus one): the
        # wrong bound cost rows produced in vain, not a row past the cap. Its statistics arrive
        # when the gateway's upstream session flushes them, within a second of going idle.
        deadline = time.monotonic() + 20
        while _rows_read(stale_key) - before < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _rows_read(stale_key) - before >= 500
        assert conn.execute("SELECT 1").fetchall() == [(1,)]  # the session goes on


def test_a_lookup_on_a_parent_table_is_driven_since_its_children_repeat_keys(
    gateway_factory: GatewayFactory, stale_key: Connection
) -> None:
    """The catalog knows inheritance children (relhassubclass): no bound, so the query is driven
    and PostgreSQL stops at the cap plus one."""
    child = f"{TABLE}_child"
    stale_key.execute(f"CREATE TABLE {child} () INHERITS ({TABLE})")
    stale_key.execute(f"INSERT INTO {child} SELECT 1, g FROM generate_series(1, 500) g")
    gw = gateway_factory(limits={"catalog_refresh": 3600})
    with _connect(gw, "contractor") as conn:
        before = _rows_read(stale_key, child)
        assert len(conn.execute(f"SELECT v FROM {TABLE} WHERE id = 1").fetchall()) == 100
        deadline = time.monotonic() + 20
        while _rows_read(stale_key, child) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # a later flush would only add to the count
        assert 0 < _rows_read(stale_key, child) - before <= 101
