"""The capped full-table read: ``SELECT * FROM big`` over a 10-million-row table.

A restricted person's row cap is only worth something if the scan behind it stops: a relay that
counts rows and drops the rest would still make PostgreSQL read, and send, every row. So for
``contractor`` (the maintenance role, 100 rows) and ``bulkreader`` (a large cap) this measures the
time from sending the statement to the client holding its capped result (ReadyForQuery), the rows
per second up to the cap, and how long after that the upstream backend is no longer running the
statement (polled from pg_stat_activity). The same LIMIT query straight to PostgreSQL is the
reference for each, and a direct full scan gives the cost of not stopping.

The client is a blocking socket that walks message lengths without decoding rows, so that the
direct full scan is not limited by the client more than it must be (it still is, somewhat: the
Python loop costs about half a microsecond per row; the same client reads every target).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import psycopg

from gateway.wire import messages as m
from tests.support import scram_client_final

TABLE = "big"
STATEMENT = f"SELECT * FROM {TABLE}"  # noqa: S608  a constant, no input
_HEADER = struct.Struct("!BI")


class ProtocolError(Exception):
    """The server answered something this client does not expect (or closed the connection)."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    rows: int
    seconds: float
    notices: tuple[str, ...]
    error: str | None


class Client:
    """One connection speaking just enough of the protocol: login (trust or SCRAM) and simple
    queries whose rows are counted, not decoded."""

    def __init__(self, port: int, *, timeout: float = 300.0, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting, so the window is advertised small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _frame(self) -> tuple[int, bytes]:
        while True:
            if len(self._buf) >= 5:
                kind, length = _HEADER.unpack_from(self._buf, 0)
                if len(self._buf) >= 1 + length:
                    body = bytes(self._buf[5 : 1 + length])
                    del self._buf[: 1 + length]
                    return kind, body
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ProtocolError("the server closed the connection")
            self._buf += chunk

    def login(self, user: str, database: str, password: str | None = None) -> None:
        """Startup, then trust or SCRAM-SHA-256 as libpq does it; returns at ReadyForQuery."""
        self.sock.sendall(m.StartupMessage((("user", user), ("database", database))).encode())
        first = ""
        while True:
            kind, body = self._frame()
            if kind == ord("E"):
                raise ProtocolError(f"login refused: {m.ErrorResponse.decode(body).get('M')}")
            if kind == ord("Z"):
                return
            if kind != ord("R"):
                continue
            auth = m.Authentication.decode(body)
            if auth.code == m.AUTH_SASL:
                if password is None:
                    raise ProtocolError("the server asks for a password")
                first = f"n,,n=,r={base64.b64encode(os.urandom(18)).decode()}"
                self.sock.sendall(m.sasl_initial_response("SCRAM-SHA-256", first.encode()).encode())
            elif auth.code == m.AUTH_SASL_CONTINUE:
                assert password is not None
                final = scram_client_final(first, auth.data.decode(), password)
                self.sock.sendall(m.AuthPayload(final.encode()).encode())

    def send_query(self, sql: str) -> None:
        self.sock.sendall(m.Query(sql).encode())

    def query(self, sql: str) -> QueryResult:
        """Send ``sql`` and read its whole answer; the time is from sending to ReadyForQuery."""
        started = time.perf_counter()
        self.send_query(sql)
        rows, error = 0, None
        notices: list[str] = []
        buf, pos = self._buf, 0
        while True:
            while len(buf) - pos >= 5:
                kind, length = _HEADER.unpack_from(buf, pos)
                end = pos + 1 + length
                if end > len(buf):
                    break
                if kind == 0x44:  # DataRow: counted, never decoded
                    rows += 1
                elif kind == 0x5A:  # ReadyForQuery
                    seconds = time.perf_counter() - started
                    del buf[:end]
                    return QueryResult(rows, seconds, tuple(notices), error)
                elif kind == 0x45:
                    error = m.ErrorResponse.decode(bytes(buf[pos + 5 : end])).get("M")
                elif kind == 0x4E:
                    notices.append(m.ErrorResponse.decode(bytes(buf[pos + 5 : end])).get("M") or "")
                pos = end
            del buf[:pos]
            pos = 0
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ProtocolError("the server closed the connection")
            buf += chunk


# ----------------------------------------------------------------------------- the table


async def _loaded_rows(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        comment = await conn.fetchval("SELECT obj_description(to_regclass($1), 'pg_class')", TABLE)
    finally:
        await conn.close()
    return int(comment.removeprefix("rows=")) if comment and comment.startswith("rows=") else None


async def _load(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await conn.execute(
            f"CREATE TABLE {TABLE} AS SELECT g::bigint AS id, (g % 1000)::int AS n,"  # noqa: S608  constants and an int
            f" lpad(g::text, 40, 'x') AS payload FROM generate_series(1, {rows}) AS g"
        )
        await conn.execute(f"ANALYZE {TABLE}")
        # Written last: the marker says the table is complete (an interrupted load has none).
        await conn.execute(f"COMMENT ON TABLE {TABLE} IS 'rows={rows}'")
    finally:
        await conn.close()


def prepare(dsn: str, rows: int, say: Any) -> None:
    """Create ``big`` with ``rows`` rows unless the cluster (kept under --out) already has it:
    10 million rows take a minute or more to write here, once."""
    if asyncio.run(_loaded_rows(dsn)) == rows:
        say(f"{TABLE}: {rows:,} rows already loaded")
        return
    say(f"{TABLE}: loading {rows:,} rows ...")
    started = time.monotonic()
    asyncio.run(_load(dsn, rows))
    say(f"  loaded in {time.monotonic() - started:.1f} s")


def wait_upstream_idle(conninfo: str, timeout: float = 60.0) -> float | None:
    """Seconds until no backend is running ``SELECT * FROM big`` (polled every 5 ms), or None if
    one still is after ``timeout``."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.perf_counter() - started < timeout:
            active = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s"
                " AND pid <> pg_backend_pid()",
                (STATEMENT,),
            ).fetchone()
            if active is not None and active[0] == 0:
                return time.perf_counter() - started
            time.sleep(0.005)
    return None


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Case:
    """One measured read: who sends what, and how many rows must come back."""

    name: str
    target: str  # direct, or the Sekisho person
    sql: str
    expected_rows: int
    capped: bool  # through Sekisho with a cap: also wait for the upstream to stop


@dataclass
class BigRun:
    case: str
    round: int
    rows: int | None = None
    seconds: float | None = None
    upstream_idle_ms: float | None = None
    error: str | None = None

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds else None


@dataclass
class BigSummary:
    case: str
    target: str
    sql: str
    runs: int
    failed: int
    rows: int
    median_seconds: float | None
    median_rows_per_second: float | None
    median_upstream_idle_ms: float | None


def cases(table_rows: int, cap: int, bulk_cap: int, restricted: str, bulk: str) -> list[Case]:
    return [
        Case("direct LIMIT cap", "direct", f"{STATEMENT} LIMIT {cap}", cap, False),
        Case(f"sekisho {restricted} (cap {cap:,})", restricted, STATEMENT, cap, True),
        Case("direct LIMIT bulk cap", "direct", f"{STATEMENT} LIMIT {bulk_cap}", bulk_cap, False),
        Case(f"sekisho {bulk} (cap {bulk_cap:,})", bulk, STATEMENT, bulk_cap, True),
        Case("direct full scan", "direct", STATEMENT, table_rows, False),
    ]


def measure(
    plan: list[Case], clients: dict[str, Client], direct_conninfo: str, rounds: int, say: Any
) -> list[BigRun]:
    """Rounds of every case in turn, on one open connection per person (logins not timed)."""
    runs: list[BigRun] = []
    for rnd in range(1, rounds + 1):
        for case in plan:
            run = BigRun(case.name, rnd)
            try:
                result = clients[case.target].query(case.sql)
            except (OSError, ProtocolError) as exc:
                run.error = f"{type(exc).__name__}: {exc}"
            else:
                run.rows, run.seconds = result.rows, result.seconds
                if result.error is not None:
                    run.error = f"error: {result.error}"
                elif result.rows != case.expected_rows:
                    run.error = f"{result.rows:,} rows, expected {case.expected_rows:,}"
                elif case.capped:
                    idle = wait_upstream_idle(direct_conninfo)
                    run.upstream_idle_ms = None if idle is None else idle * 1000
                    if idle is None:
                        run.error = "the upstream was still running the statement a minute later"
            runs.append(run)
            say(f"bigread   round {rnd}/{rounds}  {case.name:34} {describe(run)}")
    return runs


def describe(run: BigRun) -> str:
    if run.error is not None:
        return f"FAILED: {run.error}"
    assert run.seconds is not None
    assert run.rows is not None
    line = f"{run.rows:>10,} rows {run.seconds * 1000:10.1f} ms {run.rows_per_second or 0:12,.0f} rows/s"
    if run.upstream_idle_ms is not None:
        line += f"  upstream idle {run.upstream_idle_ms:6.1f} ms later"
    return line


def summarize(runs: list[BigRun], plan: list[Case]) -> list[BigSummary]:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    out = []
    for case in plan:
        mine = [r for r in runs if r.case == case.name]
        ok = [r for r in mine if r.error is None]
        out.append(
            BigSummary(
                case=case.name,
                target=case.target,
                sql=case.sql,
                runs=len(mine),
                failed=len(mine) - len(ok),
                rows=case.expected_rows,
                median_seconds=median([r.seconds for r in ok]),
                median_rows_per_second=median([r.rows_per_second for r in ok]),
                median_upstream_idle_ms=median([r.upstream_idle_ms for r in ok]),
            )
        )
    return out


def figures(runs: list[BigRun], rows: list[BigSummary]) -> dict[str, Any]:
    return {"runs": [{**asdict(r), "rows_per_second": r.rows_per_second} for r in runs],
            "summary": [asdict(r) for r in rows]}  # fmt: skip
