"""The protocol relayed exactly: the same message sequence through Sekisho as from PostgreSQL direct.

Each scenario is a list of messages sent in one write (pipelined); the frames received up to the
final ReadyForQuery are compared between a direct connection and a gateway connection, after
blanking only what legitimately differs (backend pids in notifications).
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from gateway.wire import messages as m
from gateway.wire.framing import Frame
from tests.support import Gateway, RawClient, Upstream, raw_client

INT4PL_OID = 177  # int4pl(int4, int4), a built-in function PostgreSQL will call over FunctionCall


def _direct(upstream: Upstream) -> RawClient:
    client = RawClient(upstream.port)
    client.send(m.StartupMessage((("user", "postgres"), ("database", "sekisho_test"))).encode())
    assert m.Authentication.decode(client.recv_frame().body).code == m.AUTH_OK
    client.recv_until(b"Z")
    return client


def _exchange(client: RawClient, messages: list[bytes], syncs: int = 1) -> list[Frame]:
    client.send(b"".join(messages))
    frames: list[Frame] = []
    for _ in range(syncs):
        frames += client.recv_until(b"Z")
    return frames


SCENARIOS: dict[str, tuple[list[bytes], int]] = {
    "multi-statement simple query": (
        [
            m.Query(
                "SELECT 1 AS a; SELECT id, name FROM customers WHERE id IN (1, 2) ORDER BY id; SHOW DateStyle"
            ).encode()
        ],
        1,
    ),
    "empty query": ([m.Query("").encode()], 1),
    "error mid multi-statement": ([m.Query("SELECT 1; SELECT 1/0; SELECT 2").encode()], 1),
    "extended with row limit and portal suspension": (
        [
            m.Parse("s1", "SELECT id FROM customers WHERE id <= $1 ORDER BY id", (20,)).encode(),
            m.Describe("S", "s1").encode(),
            m.Bind("p1", "s1", (0,), (b"25",), (0,)).encode(),
            m.Describe("P", "p1").encode(),
            m.Execute("p1", 10).encode(),
            m.Execute("p1", 10).encode(),
            m.Execute("p1", 10).encode(),
            m.Close("P", "p1").encode(),
            m.Close("S", "s1").encode(),
            m.Sync().encode(),
        ],
        1,
    ),
    "binary results, unnamed statement, Flush": (
        [
            m.Parse("", "SELECT id, created_at FROM customers WHERE id = $1").encode(),
            m.Bind("", "", (1,), ((7).to_bytes(8, "big"),), (1,)).encode(),
            m.Execute("", 0).encode(),
            m.Flush().encode(),
            m.Sync().encode(),
        ],
        1,
    ),
    "pipelined syncs with an error in the middle": (
        [
            m.Parse("", "SELECT 1").encode(),
            m.Bind("", "").encode(),
            m.Execute("").encode(),
            m.Sync().encode(),
            m.Parse("", "SELECT no_such_column FROM customers").encode(),
            m.Bind("", "").encode(),
            m.Execute("").encode(),
            m.Sync().encode(),
            m.Parse("", "SELECT 2").encode(),
            m.Bind("", "").encode(),
            m.Execute("").encode(),
            m.Sync().encode(),
        ],
        3,
    ),
    "transaction block states": (
        [
            m.Query("BEGIN").encode(),
            m.Query("SELECT 1/0").encode(),
            m.Query("SELECT 1").encode(),
            m.Query("ROLLBACK").encode(),
        ],
        4,
    ),
    "FunctionCall": (
        [m.FunctionCall(INT4PL_OID, (1,), ((2).to_bytes(4, "big"), (40).to_bytes(4, "big")), 1).encode()],
        1,
    ),
    "COPY TO STDOUT": (
        [m.Query("COPY (SELECT id, name FROM customers WHERE id < 6 ORDER BY id) TO STDOUT").encode()],
        1,
    ),
    "COPY FROM STDIN then CopyFail": (
        [
            m.Query("CREATE TEMP TABLE scratch(a int, b text)").encode(),
            m.Query("COPY scratch FROM STDIN").encode(),
            m.CopyData(b"1\tone\n2\ttwo\n").encode(),
            m.CopyDone().encode(),
            m.Query("COPY scratch FROM STDIN").encode(),
            m.CopyData(b"3\tthree\n").encode(),
            m.CopyFail("client gave up").encode(),
            m.Query("SELECT * FROM scratch ORDER BY a").encode(),
        ],
        4,
    ),
}


def _comparable(frames: list[Frame]) -> list[tuple[bytes, object]]:
    out: list[tuple[bytes, object]] = []
    table_numbers: dict[int, int] = {}  # tables created by the scenario get new oids on each side
    for frame in frames:
        decoded = m.decode_backend(frame.type, frame.body)
        if isinstance(decoded, m.RowDescription):
            decoded = m.RowDescription(
                tuple(
                    dataclasses.replace(
                        f, table_oid=table_numbers.setdefault(f.table_oid, len(table_numbers))
                    )
                    for f in decoded.fields
                )
            )
        if isinstance(decoded, m.ErrorResponse | m.NoticeResponse):
            # Source line numbers and routine names are PostgreSQL's; compare what clients read.
            decoded = tuple((k, v) for k, v in decoded.fields if k in "SVCMDHP")
        out.append((frame.type, decoded))
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_direct(name: str, gateway: Gateway, upstream: Upstream) -> None:
    messages, syncs = SCENARIOS[name]
    direct = _direct(upstream)
    try:
        expected = _comparable(_exchange(direct, messages, syncs))
    finally:
        direct.close()
    with raw_client(gateway.port) as client:
        client.login("maint", "maint", gateway.database)
        got = _comparable(_exchange(client, messages, syncs))
    assert got == expected
    assert len(got) > 1


def test_portal_suspension_is_visible(gateway: Gateway) -> None:
    messages, syncs = SCENARIOS["extended with row limit and portal suspension"]
    with raw_client(gateway.port) as client:
        client.login("maint", "maint", gateway.database)
        kinds = [f.type for f in _exchange(client, messages, syncs)]
    assert kinds.count(b"s") == 2  # 25 rows in pages of 10: suspended twice, then complete
    assert kinds.count(b"D") == 25


def test_startup_parameters_pass_through(gateway: Gateway) -> None:
    info = gateway.conninfo(
        "maint",
        application_name="dba-console",
        options="-c search_path=pg_catalog,public -c DateStyle=German",
    )
    with psycopg.connect(info) as conn:
        row = conn.execute(
            "SELECT current_setting('application_name'), current_setting('search_path'), "
            "current_setting('DateStyle'), (SELECT application_name FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid())"
        ).fetchone()
        assert row == ("dba-console", "pg_catalog,public", "German, DMY", "dba-console")
        assert conn.info.parameter_status("application_name") == "dba-console"


def test_client_encoding_from_startup_is_honoured(gateway: Gateway) -> None:
    with psycopg.connect(gateway.conninfo("maint", client_encoding="UTF8")) as conn:
        assert conn.info.encoding == "utf-8"
        name = conn.execute("SELECT name FROM customers WHERE id = 1").fetchone()
        assert name is not None
        assert any(ord(ch) > 0x3000 for ch in name[0])


def test_notifications_are_relayed(gateway: Gateway) -> None:
    with (
        psycopg.connect(gateway.conninfo("maint"), autocommit=True) as listener,
        psycopg.connect(gateway.conninfo("lead"), autocommit=True) as sender,
    ):
        listener.execute("LISTEN maintenance_window")
        sender.execute("NOTIFY maintenance_window, 'starts at 22:00'")
        notes = listener.notifies(timeout=5, stop_after=1)
        received = [(n.channel, n.payload) for n in notes]
        assert received == [("maintenance_window", "starts at 22:00")]


def test_notices_are_relayed(gateway: Gateway) -> None:
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'vacuum scheduled'; END $$")
        assert notices == ["vacuum scheduled"]


def test_own_notifications_carry_the_clients_backend_pid(gateway: Gateway) -> None:
    """The idiom `if notify.pid == conn.info.backend_pid: ignore` works as on a direct connection."""
    with psycopg.connect(gateway.conninfo("maint"), autocommit=True) as conn:
        conn.execute("LISTEN self_talk")
        conn.execute("NOTIFY self_talk, 'mine'")
        (note,) = list(conn.notifies(timeout=5, stop_after=1))
        assert note.pid == conn.info.backend_pid
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (conn.info.backend_pid,)
