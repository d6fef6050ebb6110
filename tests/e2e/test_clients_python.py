"""Python drivers through Sekisho: psycopg 3 (libpq) and asyncpg (its own protocol code).

Each check runs the same thing through Sekisho and directly against the upstream and compares what
the driver hands back. Between them the two drivers cover the protocol's paths: simple Query,
Parse/Bind/Describe/Execute/Sync, named prepared statements, pipelines (many Syncs in flight),
COPY in both directions, portals read in slices (Execute with a row limit and PortalSuspended),
transaction status in ReadyForQuery, errors inside a transaction, asynchronous NotificationResponse,
binary result formats and asyncpg's own SCRAM client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import psycopg
import pytest
from psycopg import pq
from psycopg.rows import Row

from tests.support import Gateway, Upstream

T = TypeVar("T")
ALL_CUSTOMERS = "SELECT * FROM customers ORDER BY id"


def both(gateway: Gateway, upstream: Upstream) -> list[tuple[str, str]]:
    """(label, conninfo) for Sekisho and for the upstream directly."""
    return [("gateway", gateway.conninfo("maint")), ("direct", upstream.conninfo())]


def direct_rows(upstream: Upstream, query: str, params: tuple[Any, ...] = ()) -> list[Row]:
    with psycopg.connect(upstream.conninfo()) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def scratch(upstream: Upstream) -> Iterator[str]:
    """A unique, empty table shaped like customers (without constraints), dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(upstream.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} AS SELECT * FROM customers WITH NO DATA")
    try:
        yield name
    finally:
        with psycopg.connect(upstream.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


# ----------------------------------------------------------------------------- psycopg 3


def test_psycopg_simple_protocol(gateway: Gateway, upstream: Upstream) -> None:
    query = "SELECT id, name, email, created_at FROM customers WHERE id <= 100 ORDER BY id"
    expected = direct_rows(upstream, query)
    with psycopg.connect(gateway.conninfo("maint"), cursor_factory=psycopg.ClientCursor) as conn:
        cur = conn.cursor()
        assert isinstance(cur, psycopg.ClientCursor)
        assert cur.execute(query).fetchall() == expected
        # A literal-parameter query is merged client-side and sent as one simple Query message.
        assert cur.execute("SELECT name FROM customers WHERE id = %s", (7,)).fetchall() == direct_rows(
            upstream, "SELECT name FROM customers WHERE id = 7"
        )
        # Several statements in one Query: one result set each, in order.
        cur.execute("SELECT 1; SELECT 2, 'two'")
        assert cur.fetchall() == [(1,)]
        assert cur.nextset()
        assert cur.fetchall() == [(2, "two")]
        assert not cur.nextset()
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        assert conn.execute(query, prepare=False).fetchall() == expected


def test_psycopg_extended_protocol_with_parameters(gateway: Gateway, upstream: Upstream) -> None:
    query = (
        "SELECT id, name, card_number FROM customers WHERE id BETWEEN %s AND %s AND name <> %s ORDER BY id"
    )
    params = (10, 400, "nobody")
    expected = direct_rows(upstream, query, params)
    assert len(expected) == 391
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        assert conn.execute(query, params, prepare=False).fetchall() == expected
        # Binary results and parameters through the same path.
        cur = conn.cursor(binary=True)
        assert cur.execute(query, params, binary=True).fetchall() == expected
        assert cur.pgresult is not None
        assert cur.pgresult.fformat(0) == pq.Format.BINARY


def test_psycopg_prepared_statements_repeated(gateway: Gateway, upstream: Upstream) -> None:
    query = "SELECT id, name, phone FROM customers WHERE id = %s"
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        for i in range(1, 9):
            assert conn.execute(query, (i,), prepare=True).fetchall() == direct_rows(upstream, query, (i,))
        # The statement lives on the upstream backend behind this session, under psycopg's name.
        prepared = conn.execute(
            "SELECT name, statement FROM pg_prepared_statements WHERE NOT from_sql", prepare=False
        ).fetchall()
    assert [stmt for _, stmt in prepared] == ["SELECT id, name, phone FROM customers WHERE id = $1"]
    assert prepared[0][0].startswith("_pg3_")


def test_psycopg_pipeline(gateway: Gateway, upstream: Upstream, scratch: str) -> None:
    results: dict[str, list[Any]] = {}
    for label, conninfo in both(gateway, upstream):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.pipeline() as pipeline:
                cursors = [
                    conn.execute("SELECT id, name FROM customers WHERE id = %s", (i,)) for i in range(1, 6)
                ]
                cursors.append(conn.execute("SELECT count(*) FROM orders"))
                conn.cursor().executemany(
                    f"INSERT INTO {scratch} (id, name) VALUES (%s, %s)",
                    [(i + (1000 if label == "gateway" else 0), f"n{i}") for i in range(20)],
                )
                pipeline.sync()
                cursors.append(conn.execute(f"SELECT count(*) FROM {scratch}"))
            results[label] = [cur.fetchall() for cur in cursors]
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert results["gateway"][:-1] == results["direct"][:-1]
    assert results["gateway"][-1] == [(20,)]
    assert results["direct"][-1] == [(40,)]


def pipeline_with_error(conn: psycopg.Connection[Any], cursors: list[psycopg.Cursor[Any]]) -> None:
    """Three queries in one pipeline, the second failing.

    psycopg reads results whenever the socket has them, so the error surfaces either at the third
    `execute` (the third cursor never exists) or when the block ends; which one is timing, not protocol.
    """
    with conn.pipeline():
        cursors.append(conn.execute("SELECT 1"))
        cursors.append(conn.execute("SELECT 1 / %s", (0,)))
        cursors.append(conn.execute("SELECT 3"))


def third_result(cursors: list[psycopg.Cursor[Any]]) -> str:
    """The statement after the failing one yields no result, whichever timing happened."""
    if len(cursors) < 3:
        return "no result"
    with pytest.raises(psycopg.ProgrammingError, match="no result available"):
        cursors[2].fetchall()
    return "no result"


def test_psycopg_pipeline_error_aborts_rest_like_direct(gateway: Gateway, upstream: Upstream) -> None:
    outcomes: dict[str, list[str]] = {}
    for label, conninfo in both(gateway, upstream):
        seen: list[str] = []
        cursors: list[psycopg.Cursor[Any]] = []
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.DivisionByZero):
                pipeline_with_error(conn, cursors)
            seen.append(repr(cursors[0].fetchall()))
            seen.append(third_result(cursors))
            seen.append(conn.info.transaction_status.name)
            seen.append(repr(conn.execute("SELECT 4").fetchall()))
        outcomes[label] = seen
    assert outcomes["gateway"] == outcomes["direct"]


def test_psycopg_copy_out_and_in(gateway: Gateway, upstream: Upstream, scratch: str) -> None:
    copy_out = "COPY (SELECT * FROM customers ORDER BY id) TO STDOUT"
    with psycopg.connect(upstream.conninfo()) as direct, direct.cursor().copy(copy_out) as copy:
        expected = b"".join(bytes(chunk) for chunk in copy)
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        with conn.cursor().copy(copy_out) as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert data == expected
        assert data.count(b"\n") == 2000
        cur = conn.cursor()
        with cur.copy(f"COPY {scratch} FROM STDIN") as copy:
            # Uneven pieces, so rows straddle CopyData messages.
            for start in range(0, len(data), 7777):
                copy.write(data[start : start + 7777])
        assert cur.rowcount == 2000
        conn.commit()
        # Row-wise COPY with typed values, binary format.
        with cur.copy(f"COPY {scratch} (id, name) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "text"])
            for i in range(5):
                copy.write_row((100_000 + i, f"binary {i}"))
        conn.commit()
    copied = direct_rows(upstream, f"SELECT * FROM {scratch} WHERE id < 100000 ORDER BY id")
    assert copied == direct_rows(upstream, ALL_CUSTOMERS)
    assert direct_rows(upstream, f"SELECT id, name FROM {scratch} WHERE id >= 100000 ORDER BY id") == [
        (100_000 + i, f"binary {i}") for i in range(5)
    ]


def test_psycopg_copy_from_stdin_error_rolls_back_like_direct(gateway: Gateway, upstream: Upstream) -> None:
    outcomes: dict[str, tuple[str, str, str]] = {}
    for label, conninfo in both(gateway, upstream):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE t (id int)")
            with (
                pytest.raises(psycopg.errors.InvalidTextRepresentation) as info,
                conn.cursor().copy("COPY t FROM STDIN") as copy,
            ):
                copy.write(b"1\nnot a number\n")
            outcomes[label] = (
                str(info.value.diag.message_primary),
                conn.info.transaction_status.name,
                repr(conn.execute("SELECT count(*) FROM t").fetchall()),
            )
    assert outcomes["gateway"] == outcomes["direct"]


def test_psycopg_server_side_cursor(gateway: Gateway, upstream: Upstream) -> None:
    expected = direct_rows(upstream, ALL_CUSTOMERS)
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        with conn.cursor(name="all_customers") as cur:
            cur.itersize = 137
            cur.execute(ALL_CUSTOMERS)
            first = cur.fetchone()
            some = cur.fetchmany(50)
            rest = list(cur)
        assert [first, *some, *rest] == expected
        with conn.cursor(name="scrolling", scrollable=True) as cur:
            cur.execute(ALL_CUSTOMERS)
            cur.scroll(1500, mode="absolute")
            assert cur.fetchone() == expected[1500]
            cur.scroll(-1000)
            assert cur.fetchmany(3) == expected[501:504]


def test_psycopg_transaction_status_matches_direct(gateway: Gateway, upstream: Upstream) -> None:
    steps: list[tuple[str, tuple[Any, ...]]] = [
        ("BEGIN", ()),
        ("SELECT count(*) FROM customers", ()),
        ("SAVEPOINT a", ()),
        ("SELECT 1 / %s", (0,)),
        ("ROLLBACK TO SAVEPOINT a", ()),
        ("SELECT name FROM customers WHERE id = %s", (3,)),
        ("ROLLBACK", ()),
        ("BEGIN", ()),
        ("SELECT * FROM no_such_table", ()),
        ("SELECT 1", ()),
        ("ROLLBACK", ()),
        ("START TRANSACTION READ ONLY", ()),
        ("COMMIT", ()),
    ]
    traces: dict[str, list[tuple[str, str, str | None]]] = {}
    for label, conninfo in both(gateway, upstream):
        trace = []
        with psycopg.connect(conninfo, autocommit=True) as conn:
            trace.append(("connect", conn.info.transaction_status.name, None))
            for sql, params in steps:
                error: str | None = None
                try:
                    conn.execute(sql, params)
                except psycopg.Error as exc:
                    error = f"{exc.sqlstate}: {exc.diag.message_primary}"
                trace.append((sql, conn.info.transaction_status.name, error))
        traces[label] = trace
    assert traces["gateway"] == traces["direct"]
    statuses = [status for _, status, _ in traces["gateway"]]
    assert statuses == [
        "IDLE", "INTRANS", "INTRANS", "INTRANS", "INERROR", "INTRANS", "INTRANS", "IDLE",
        "INTRANS", "INERROR", "INERROR", "IDLE", "INTRANS", "IDLE",
    ]  # fmt: skip
    errors = [error for _, _, error in traces["gateway"] if error]
    assert errors == [
        "22012: division by zero",
        '42P01: relation "no_such_table" does not exist',
        "25P02: current transaction is aborted, commands ignored until end of transaction block",
    ]


def test_psycopg_implicit_transaction_rollback_discards_writes(
    gateway: Gateway, upstream: Upstream, scratch: str
) -> None:
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        conn.execute(f"INSERT INTO {scratch} (id, name) VALUES (1, 'kept')")
        conn.commit()
        conn.execute(f"INSERT INTO {scratch} (id, name) VALUES (2, 'discarded')")
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE TEMP TABLE u (id int primary key); INSERT INTO u VALUES (1), (1)")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert direct_rows(upstream, f"SELECT id, name FROM {scratch} ORDER BY id") == [(1, "kept")]


def test_psycopg_listen_notify(gateway: Gateway, upstream: Upstream) -> None:
    channel = f"sekisho_{uuid.uuid4().hex[:8]}"
    with (
        psycopg.connect(gateway.conninfo("maint"), autocommit=True) as listener,
        psycopg.connect(gateway.conninfo("lead"), autocommit=True) as notifier,
    ):
        listener.execute(f"LISTEN {channel}")
        notifier.execute("SELECT pg_notify(%s, %s)", (channel, "through sekisho"))
        notifier.execute(f"NOTIFY {channel}, 'second'")
        received = list(listener.notifies(timeout=10, stop_after=2))
        assert [(n.channel, n.payload) for n in received] == [
            (channel, "through sekisho"),
            (channel, "second"),
        ]
        # Both sessions share the upstream service account but have separate backends.
        assert received[0].pid == notifier.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        # A notification from a direct connection reaches the listener behind Sekisho too.
        with psycopg.connect(upstream.conninfo(), autocommit=True) as direct:
            direct.execute(f"NOTIFY {channel}, 'from outside'")
        received = list(listener.notifies(timeout=10, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [(channel, "from outside")]
        # Notifications that arrive while idle are delivered with the next query's results as well.
        notifier.execute(f"NOTIFY {channel}, 'queued'")
        got: list[str] = []
        listener.add_notify_handler(lambda n: got.append(n.payload))
        for _ in range(50):
            listener.execute("SELECT pg_sleep(0.02)")
            if got:
                break
        assert got == ["queued"]


def test_psycopg_all_rows_match_direct(gateway: Gateway, upstream: Upstream) -> None:
    expected = direct_rows(upstream, ALL_CUSTOMERS)
    assert len(expected) == 2000
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        assert conn.execute(ALL_CUSTOMERS).fetchall() == expected
        orders = conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
    assert orders == direct_rows(upstream, "SELECT * FROM orders ORDER BY id")
    assert len(orders) == 4000


def test_psycopg_notices_and_parameter_status_match_direct(gateway: Gateway, upstream: Upstream) -> None:
    seen: dict[str, tuple[list[str], str | None, str | None]] = {}
    for label, conninfo in both(gateway, upstream):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            notices: list[str] = []
            conn.add_notice_handler(lambda d, out=notices: out.append(f"{d.severity}: {d.message_primary}"))
            conn.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
            conn.execute("SET application_name = 'renamed'")
            conn.execute("SET TimeZone = 'Asia/Tokyo'")
            seen[label] = (
                notices,
                conn.info.parameter_status("application_name"),
                conn.info.parameter_status("TimeZone"),
            )
    assert seen["gateway"] == seen["direct"]
    assert seen["gateway"] == (["NOTICE: hello 42", "WARNING: careful"], "renamed", "Asia/Tokyo")


# ----------------------------------------------------------------------------- asyncpg


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def asyncpg_dsns(gateway: Gateway, upstream: Upstream) -> list[tuple[str, str]]:
    return [("gateway", gateway.url("maint")), ("direct", upstream.dsn)]


async def on_both(gateway: Gateway, upstream: Upstream, check: Callable[[Any], Awaitable[T]]) -> dict[str, T]:
    """Run ``check(connection)`` through Sekisho and directly; return both results by label."""
    out: dict[str, T] = {}
    for label, dsn in asyncpg_dsns(gateway, upstream):
        conn = await asyncpg.connect(dsn)
        try:
            out[label] = await check(conn)
        finally:
            await conn.close()
    return out


def test_asyncpg_scram_login_and_identity(gateway: Gateway) -> None:
    async def check() -> tuple[Any, ...]:
        for user in ("maint", "lead", "auditor", "alice"):
            conn = await asyncpg.connect(gateway.url(user))
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host="127.0.0.1", port=gateway.port, user="alice", password="wrong",
                database=gateway.database, ssl=False,
            )  # fmt: skip
        return ()

    run(check)


def test_asyncpg_binary_typed_results(gateway: Gateway, upstream: Upstream) -> None:
    query = """
        SELECT c.id, c.name, c.created_at, o.id AS order_id,
               (c.id * 1.25)::numeric(12, 2) AS amount, c.card_number,
               ARRAY[c.id, c.id + 1] AS ids, c.created_at::date AS day, c.id % 2 = 0 AS even
        FROM customers c JOIN orders o ON o.customer_id = c.id
        ORDER BY o.id
        LIMIT 500
    """

    async def fetch(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await conn.fetch(query)]

    got = run(lambda: on_both(gateway, upstream, fetch))
    assert got["gateway"] == got["direct"]
    first = got["gateway"][0]
    assert isinstance(first[0], int)
    assert isinstance(first[2], dt.datetime)
    assert first[2].tzinfo is not None
    assert isinstance(first[4], Decimal)
    assert isinstance(first[6], list)
    assert isinstance(first[7], dt.date)
    assert isinstance(first[8], bool)


def test_asyncpg_prepared_statement_repeated(gateway: Gateway, upstream: Upstream) -> None:
    async def check(conn: asyncpg.Connection) -> list[Any]:
        stmt = await conn.prepare(
            "SELECT id, name, email, created_at FROM customers WHERE id = ANY($1::bigint[])"
        )
        out: list[Any] = [[a.name for a in stmt.get_attributes()], [t.name for t in stmt.get_parameters()]]
        for i in range(10):
            out.append([tuple(r) for r in await stmt.fetch([i * 17 + 1, i * 17 + 2, 1999 - i])])
        out.append(await stmt.fetchval([5], column=1))
        out.append(tuple(await stmt.fetchrow([6]) or ()))
        # Statements from conn.fetch() are cached server-side too; run one repeatedly.
        for i in range(5):
            out.append(await conn.fetchval("SELECT count(*) FROM orders WHERE customer_id <= $1", i * 100))
        return out

    got = run(lambda: on_both(gateway, upstream, check))
    assert got["gateway"] == got["direct"]
    assert got["gateway"][0] == ["id", "name", "email", "created_at"]
    assert got["gateway"][1] == ["int8[]"]
    assert all(len(rows) == 3 for rows in got["gateway"][2:12])


def test_asyncpg_cursor_with_prefetch(gateway: Gateway, upstream: Upstream) -> None:
    async def check(conn: asyncpg.Connection) -> list[Any]:
        out: list[Any] = []
        async with conn.transaction():
            async for r in conn.cursor(ALL_CUSTOMERS, prefetch=50):
                out.append(tuple(r))
            cur = await conn.cursor("SELECT id, name FROM customers WHERE id > $1 ORDER BY id", 1000)
            out.append([tuple(r) for r in await cur.fetch(7)])
            await cur.forward(100)
            out.append(tuple(await cur.fetchrow() or ()))
        return out

    got = run(lambda: on_both(gateway, upstream, check))
    assert got["gateway"] == got["direct"]
    assert len(got["gateway"]) == 2002
    assert got["gateway"][2001][0] == 1108


def test_asyncpg_executemany_and_transaction(gateway: Gateway, upstream: Upstream, scratch: str) -> None:
    rows = [(i, f"person {i}", f"{i} Main St", f"+81-{i:04d}") for i in range(1, 301)]

    async def failing_transaction(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {scratch} (id) VALUES (9999)")
            await conn.execute("CREATE TEMP TABLE u (id int primary key)")
            await conn.executemany("INSERT INTO u VALUES ($1)", [(1,), (2,), (1,)])

    async def check() -> None:
        conn = await asyncpg.connect(gateway.url("maint"))
        try:
            await conn.executemany(
                f"INSERT INTO {scratch} (id, name, address, phone) VALUES ($1, $2, $3, $4)", rows
            )
            with pytest.raises(asyncpg.UniqueViolationError):
                await failing_transaction(conn)
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f"SELECT count(*) FROM {scratch}") == 300
        finally:
            await conn.close()

    run(check)
    assert direct_rows(upstream, f"SELECT id, name, address, phone FROM {scratch} ORDER BY id") == rows


def test_asyncpg_copy_both_ways(gateway: Gateway, upstream: Upstream, scratch: str) -> None:
    async def copy_out(conn: asyncpg.Connection) -> bytes:
        buf = io.BytesIO()
        await conn.copy_from_query(
            "SELECT * FROM customers WHERE id > $1 ORDER BY id", 0, output=buf, format="csv"
        )
        return buf.getvalue()

    got = run(lambda: on_both(gateway, upstream, copy_out))
    assert got["gateway"] == got["direct"]
    assert got["gateway"].count(b"\n") == 2000

    async def copy_in() -> tuple[str, str]:
        conn = await asyncpg.connect(gateway.url("maint"))
        try:
            status = await conn.copy_to_table(scratch, source=io.BytesIO(got["gateway"]), format="csv")
            records = await conn.fetch("SELECT * FROM customers WHERE id <= 50 ORDER BY id")
            status_records = await conn.copy_records_to_table(
                scratch, records=[(100_000 + r["id"], *tuple(r)[1:]) for r in records]
            )
            return status, status_records
        finally:
            await conn.close()

    assert run(copy_in) == ("COPY 2000", "COPY 50")
    assert direct_rows(upstream, f"SELECT * FROM {scratch} WHERE id < 100000 ORDER BY id") == direct_rows(
        upstream, ALL_CUSTOMERS
    )
    assert direct_rows(upstream, f"SELECT count(*) FROM {scratch} WHERE id >= 100000") == [(50,)]


def test_asyncpg_errors_and_listen(gateway: Gateway, upstream: Upstream) -> None:
    channel = f"sekisho_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def check(conn: asyncpg.Connection) -> list[Any]:
        out: list[Any] = []
        try:
            await conn.fetch("SELECT 1 / $1::int", 0)
        except asyncpg.PostgresError as exc:
            out.append((type(exc).__name__, exc.sqlstate, str(exc)))
        out.append(await conn.fetchval("SELECT 41 + 1"))
        got: asyncio.Queue[str] = asyncio.Queue()
        await conn.add_listener(channel, lambda *args: got.put_nowait(args[3]))
        other = await asyncpg.connect(gateway.url("lead"))
        try:
            await other.execute(f"NOTIFY {channel}, 'hi'")
        finally:
            await other.close()
        out.append(await asyncio.wait_for(got.get(), 10))
        return out

    got = run(lambda: on_both(gateway, upstream, check))
    assert got["gateway"] == got["direct"]
    assert got["gateway"] == [("DivisionByZeroError", "22012", "division by zero"), 42, "hi"]
