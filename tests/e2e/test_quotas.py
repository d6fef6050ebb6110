"""Volume quotas through the gateway: cut at the budget, refused after it, shared, persistent.

``drip`` (tests/support.py) is maintenance with 100 rows per statement, 250 rows of protected
tables per hour and 2 MB per day. Each test gets gateways of its own, so counters start at zero.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from gateway.pgcluster import free_port
from gateway.wire import messages as m
from tests.conftest import GatewayFactory
from tests.support import Gateway, Upstream, raw_client, start_gateway, start_redis


def _drip(gateway: Gateway) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(gateway.conninfo("drip"), autocommit=True)


def _read(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    return len(conn.execute("SELECT id FROM customers").fetchall())


def _read_or_refused(conn: psycopg.Connection[tuple[object, ...]]) -> int | str | None:
    """Rows of an uncapped-by-WHERE read, or the SQLSTATE that refused it."""
    try:
        return _read(conn)
    except psycopg.Error as exc:
        return exc.sqlstate


def test_a_quota_cuts_at_the_budget_then_refuses_protected_reads(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    with _drip(gw) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        assert _read(conn) == 100
        assert _read(conn) == 100
        assert _read(conn) == 50  # the statement that would cross the budget is cut at it
        assert notices[-1].startswith(
            "Sekisho cut the result at 50 rows (quota: 250 rows of protected tables"
        )
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT id FROM customers WHERE id = 1")
        assert caught.value.sqlstate == "SK002"
        message = str(caught.value)
        assert "quota exhausted for drip: 250 rows of protected tables per 1h, 250 used" in message
        assert "frees up from 20" in message  # a UTC date and time
        assert caught.value.diag.message_hint is not None
        assert "elevation" in caught.value.diag.message_hint
        # Unprotected reads still work, and the session is usable.
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone() is not None
    # A new session of the same person: still exhausted (the budget is the person's).
    with _drip(gw) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT name FROM customers WHERE id = 2")
    assert caught.value.sqlstate == "SK002"


def test_unsent_rows_go_back_to_the_budget(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    with _drip(gw) as conn:
        for _ in range(20):  # 20 statements of 10 rows: 200 rows, within 250
            assert len(conn.execute("SELECT id FROM customers WHERE id <= 10").fetchall()) == 10
        assert len(conn.execute("SELECT id FROM customers").fetchall()) == 50


def test_extended_protocol_portals_draw_on_the_quota(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    with _drip(gw) as conn:
        sent = [
            len(conn.execute("SELECT id FROM customers WHERE id > %s", (0,)).fetchall()) for _ in range(3)
        ]
        assert sent == [100, 100, 50]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT id FROM customers WHERE id = %s", (1,))
        assert caught.value.sqlstate == "SK002"
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)


def test_counters_survive_a_restart(upstream: Upstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw", upstream.dsn)
    try:
        with _drip(gw) as conn:
            assert len(conn.execute("SELECT id FROM customers").fetchall()) == 100
            assert len(conn.execute("SELECT id FROM customers").fetchall()) == 100
    finally:
        gw.stop()
    again = start_gateway(tmp_path / "gw", upstream.dsn)
    try:
        with _drip(again) as conn:
            assert len(conn.execute("SELECT id FROM customers").fetchall()) == 50
    finally:
        again.stop()


# ---------------------------------------------------------------------- Redis, shared by gateways


def test_gateways_sharing_redis_share_one_budget(gateway_factory: GatewayFactory, redis_url: str) -> None:
    first = gateway_factory(quotas={"store": redis_url})
    second = gateway_factory(quotas={"store": redis_url})
    with _drip(first) as a, _drip(second) as b:
        got = [_read_or_refused(c) for c in (a, b, a, b)]
    assert got == [100, 100, 50, "SK002"]  # not 400 rows: one budget for the person, both gateways


def test_an_unreachable_store_refuses_protected_reads_and_recovers(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    port = free_port()
    redis = start_redis(port, tmp_path)
    gw = gateway_factory(quotas={"store": f"redis://127.0.0.1:{port}/0"})
    try:
        with _drip(gw) as conn:
            assert len(conn.execute("SELECT id FROM customers WHERE id <= 5").fetchall()) == 5
            redis.terminate()
            redis.wait(10)
            with pytest.raises(psycopg.Error) as caught:
                conn.execute("SELECT id FROM customers")  # needs a new reservation: none to be had
            assert caught.value.sqlstate == "SK002"
            assert "quota store is unreachable" in str(caught.value)
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the rest keeps working
            redis = start_redis(port, tmp_path)
            deadline = time.monotonic() + 15
            while (got := _read_or_refused(conn)) == "SK002":  # service resumes by itself
                assert time.monotonic() < deadline, "the gateway did not recover"
                time.sleep(0.5)
            assert got == 100
    finally:
        redis.terminate()
        redis.wait(10)


def test_the_console_shows_a_person_their_quota(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    with _drip(gw) as conn:
        assert _read(conn) == 100
    console = gw.conninfo("drip").replace(f"dbname={gw.database}", "dbname=sekisho")
    with psycopg.connect(console, autocommit=True) as conn:
        cur = conn.execute("SHOW QUOTA;")
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        by_window = {r["window"]: r for r in rows}
        assert by_window["3600s"]["limit_on"] == "rows of protected tables"
        assert (by_window["3600s"]["budget"], by_window["3600s"]["used"]) == ("250", "100")
        assert by_window["3600s"]["remaining"] == "150"
        assert by_window["3600s"]["frees_up_at"] is not None
        assert by_window["86400s"]["limit_on"] == "bytes"
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SHOW QUOTAS")
        assert caught.value.sqlstate == "42501"
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT * FROM customers")
        assert caught.value.sqlstate == "42601"
    # Unrestricted people (and approvers) see everyone's.
    admin = gw.conninfo("maint").replace(f"dbname={gw.database}", "dbname=sekisho")
    with psycopg.connect(admin, autocommit=True) as conn:
        people = {row[0] for row in conn.execute("SHOW QUOTAS").fetchall()}
        assert "drip" in people


def test_parallel_clients_on_two_gateways_never_overshoot_one_budget(
    gateway_factory: GatewayFactory, redis_url: str
) -> None:
    """Eight clients at once, four per gateway process, all reading until refused: together they
    get exactly the person's 250 rows (each session reserves in chunks from one Redis)."""
    gateways = [gateway_factory(quotas={"store": redis_url, "chunk": 30}) for _ in range(2)]
    totals: list[int] = []
    lock = threading.Lock()

    def drain(gw: Gateway) -> None:
        got = 0
        with _drip(gw) as conn:
            while True:
                try:
                    got += len(conn.execute("SELECT id FROM customers WHERE id <= 40").fetchall())
                except psycopg.Error as exc:
                    if exc.sqlstate != "SK002":
                        raise
                    break
        with lock:
            totals.append(got)

    threads = [threading.Thread(target=drain, args=(gateways[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(totals) == 8
    assert sum(totals) == 250, totals


def test_fetch_from_a_sql_cursor_draws_on_the_quota(gateway_factory: GatewayFactory) -> None:
    """Rows read through DECLARE ... FETCH count like any other read of the table."""
    gw = gateway_factory()
    with _drip(gw) as conn:
        conn.execute("BEGIN")
        fetched = []
        for name in ("a", "b", "c"):
            conn.execute(f"DECLARE {name} CURSOR FOR SELECT id FROM customers")
            fetched.append(len(conn.execute(f"FETCH 100 FROM {name}").fetchall()))
        assert fetched == [100, 100, 50]  # the third cursor is cut at the 250-row budget
        conn.execute("DECLARE d CURSOR FOR SELECT id FROM customers")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("FETCH 10 FROM d")
        assert caught.value.sqlstate == "SK002"


def test_a_sql_cursor_is_not_read_by_protocol_execute(gateway_factory: GatewayFactory) -> None:
    """A DECLAREd cursor's rows through a protocol Execute would have no quota claim: refused."""
    gw = gateway_factory()
    with raw_client(gw.port) as client:
        client.login("drip", "drip", gw.database)
        client.send(m.Query("BEGIN; DECLARE c CURSOR FOR SELECT id FROM customers").encode())
        client.recv_until(b"Z")
        client.send(m.Execute("c", 0).encode() + m.Sync().encode())
        frames = client.recv_until(b"Z")
        errors = [m.ErrorResponse.decode(f.body) for f in frames if f.type == b"E"]
        assert [e.get("C") for e in errors] == ["SK003"]
        assert "only with FETCH" in (errors[0].get("M") or "")
        assert not [f for f in frames if f.type == b"D"]
        client.send(m.Query("FETCH 5 FROM c").encode())  # the transaction failed, as PostgreSQL does
        after = client.recv_until(b"Z")
        assert [m.ErrorResponse.decode(f.body).get("C") for f in after if f.type == b"E"] == ["25P02"]
