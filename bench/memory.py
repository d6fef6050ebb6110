"""Sekisho's memory under many idle clients and under a client that stops reading.

Issue 7's targets: 1,000 concurrent idle clients with resident memory under 150 MB, and a client
that stops reading never grows memory past a fixed bound. The idle clients log in for real
(startup and SCRAM-SHA-256, each with its own upstream connection, as every Sekisho session has),
run one statement as drivers do at connect, and then hold their connection without a word while
Sekisho's resident memory is sampled (all of its processes, from /proc). The stalled client sends
``SELECT * FROM big`` as an unrestricted person, so nothing caps the result, with a small receive
buffer, and never reads: Sekisho must stop reading the upstream when the client's socket backs up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

from bench.bigread import STATEMENT, Client, wait_upstream_idle
from bench.procstat import sample_tree
from gateway.wire import messages as m
from tests.support import scram_client_final

TARGET_MB = 150.0  # the bound for 1,000 idle clients, in MB (10^6 bytes)
FLAT_BOUND_MIB = 8.0  # growth allowed while the stalled client holds its result unread
_HEADER = struct.Struct("!BI")


@dataclass
class IdleResult:
    clients: int
    opened: int
    failures: list[str]
    seconds_to_open: float
    rss_before_mib: float
    rss_held_mib: float  # the highest sample while every client was connected and idle
    rss_after_close_mib: float | None

    @property
    def rss_held_mb(self) -> float:
        return self.rss_held_mib * 1024 * 1024 / 1e6

    @property
    def per_client_kib(self) -> float | None:
        return (self.rss_held_mib - self.rss_before_mib) * 1024 / self.opened if self.opened else None

    @property
    def passed(self) -> bool:
        return self.opened == self.clients and self.rss_held_mb < TARGET_MB


@dataclass
class StallResult:
    seconds: float
    samples_mib: list[tuple[float, float]]  # (seconds since the query was sent, RSS MiB)
    rss_before_mib: float
    upstream_idle_ms: float | None  # after the client closed: Sekisho ended the statement upstream
    error: str | None = None

    @property
    def growth_mib(self) -> float:
        """Growth from the first sample after one second (buffers filling) to the highest later one."""
        settled = [rss for t, rss in self.samples_mib if t >= 1.0]
        return max(settled) - settled[0] if settled else 0.0

    @property
    def flat(self) -> bool:
        return self.error is None and self.growth_mib <= FLAT_BOUND_MIB


def _rss_mib(pid: int) -> float:
    found = sample_tree(pid)
    if found is None:
        raise RuntimeError(f"Sekisho (pid {pid}) is gone")
    return found.rss_kib / 1024


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, length = _HEADER.unpack(await reader.readexactly(5))
    return kind, await reader.readexactly(length - 4)


async def _until_ready(reader: asyncio.StreamReader) -> None:
    while True:
        kind, body = await _read_frame(reader)
        if kind == ord("E"):
            raise RuntimeError(m.ErrorResponse.decode(body).get("M") or "error")
        if kind == ord("Z"):
            return


async def _open_idle(port: int, user: str, database: str) -> asyncio.StreamWriter:
    """A logged-in connection that has run ``SELECT 1``; the caller holds it idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(m.StartupMessage((("user", user), ("database", database))).encode())
        first = f"n,,n=,r={base64.b64encode(os.urandom(18)).decode()}"
        while True:
            kind, body = await _read_frame(reader)
            if kind == ord("E"):
                raise RuntimeError(m.ErrorResponse.decode(body).get("M") or "login refused")
            if kind == ord("Z"):
                break
            if kind != ord("R"):
                continue
            auth = m.Authentication.decode(body)
            if auth.code == m.AUTH_SASL:
                writer.write(m.sasl_initial_response("SCRAM-SHA-256", first.encode()).encode())
            elif auth.code == m.AUTH_SASL_CONTINUE:
                final = scram_client_final(first, auth.data.decode(), user)  # password = user name
                writer.write(m.AuthPayload(final.encode()).encode())
        writer.write(m.Query("SELECT 1").encode())
        await _until_ready(reader)
    except BaseException:
        writer.close()
        raise
    return writer


async def _idle(
    port: int, pid: int, *, user: str, database: str, clients: int, hold: float, say: Any
) -> IdleResult:
    before = _rss_mib(pid)
    gate = asyncio.Semaphore(32)  # logins in flight: each forks a PostgreSQL backend
    writers: list[asyncio.StreamWriter] = []
    failures: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                writers.append(await asyncio.wait_for(_open_idle(port, user, database), 120))
            except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    started = time.monotonic()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(one())
        opened = time.monotonic() - started
        say(f"idle      {len(writers)}/{clients} clients logged in as {user} in {opened:.1f} s;"
            f" holding them idle {hold:.0f} s")  # fmt: skip
        held = before
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            held = max(held, _rss_mib(pid))
            await asyncio.sleep(0.5)
        held = max(held, _rss_mib(pid))
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    await asyncio.sleep(2)
    after = sample_tree(pid)
    return IdleResult(
        clients, len(writers), failures[:5], opened, before, held, after.rss_kib / 1024 if after else None
    )


def idle_clients(
    port: int, pid: int, *, user: str, database: str, clients: int, hold: float, say: Any
) -> IdleResult:
    """Open ``clients`` real sessions, hold them idle ``hold`` seconds sampling RSS, close them."""
    result = asyncio.run(_idle(port, pid, user=user, database=database, clients=clients, hold=hold, say=say))
    say(f"idle      rss {result.rss_before_mib:.1f} MiB before, {result.rss_held_mib:.1f} MiB"
        f" ({result.rss_held_mb:.1f} MB) with {result.opened} idle clients;"
        f" target < {TARGET_MB:.0f} MB: {'PASS' if result.passed else 'FAIL'}")  # fmt: skip
    for failure in result.failures:
        say(f"    failed: {failure}")
    return result


def stalled_reader(
    port: int, pid: int, *, user: str, database: str, seconds: float, direct_conninfo: str, say: Any
) -> StallResult:
    """Send ``SELECT * FROM big`` and never read, sampling Sekisho's RSS every 0.5 s."""
    before = _rss_mib(pid)
    client = Client(port, timeout=30, receive_buffer=64 * 1024)
    samples: list[tuple[float, float]] = []
    error: str | None = None
    try:
        client.login(user, database, user)
        started = time.monotonic()
        client.send_query(STATEMENT)
        while (elapsed := time.monotonic() - started) < seconds:
            samples.append((elapsed, _rss_mib(pid)))
            time.sleep(0.5)
    except (OSError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    idle = wait_upstream_idle(direct_conninfo)
    result = StallResult(seconds, samples, before, None if idle is None else idle * 1000, error)
    if idle is None and result.error is None:
        result.error = "the upstream still ran the statement a minute after the client left"
    shown = " ".join(f"{rss:.1f}" for _, rss in samples[:: max(1, len(samples) // 10)])
    verdict = "flat" if result.flat else "NOT flat"
    say(f"stalled   rss MiB every ~{seconds / 10:.1f} s: {shown}; growth after 1 s"
        f" {result.growth_mib:.1f} MiB ({verdict}, bound {FLAT_BOUND_MIB:.0f} MiB)")  # fmt: skip
    if result.error:
        say(f"    {result.error}")
    return result
