"""Running the gateway process: event loop, logging, listener, admin API, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import structlog
import uvloop

from gateway.admin.api import AdminAPI
from gateway.alarms import AlarmHub
from gateway.config import Config
from gateway.pgcluster import free_port
from gateway.server import Server, Worker

log = structlog.get_logger("sekisho")


def configure_logging(level: str = "info") -> None:
    """Structured JSON lines on stderr, one event per line, for any log shipper."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


_GC_YOUNG = 10_000  # allocations between collections of young objects (CPython's default: 700)


async def _serve(config: Config, on_ready: Callable[[], None] | None, worker: Worker | None = None) -> int:
    alarms = AlarmHub(config.alarms)  # log, feed and webhook; the server's detector feeds it
    await alarms.start()
    server = Server(config, worker=worker, alarms=alarms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A SIGHUP that arrives while the server starts (it may already be listening) is kept for after.
    reload_wanted = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)
    await server.start()
    admin: AdminAPI | None = None
    if config.admin_port is not None and (worker is None or worker.index == 0):
        admin = AdminAPI(server, config.admin_host, config.admin_port, alarms)
        await admin.start()
    settle_garbage_collector()
    if on_ready is not None:
        on_ready()
    if reload_wanted.is_set():
        server.reload_policy()
    loop.add_signal_handler(signal.SIGHUP, server.reload_policy)  # a broken file keeps the old policy
    await stop.wait()
    log.info("shutting_down")
    if admin is not None:
        await admin.stop()
    await server.shutdown()
    await alarms.stop()  # after the sessions, so that alarms raised while draining still go out
    return 0


def settle_garbage_collector() -> None:
    """What start-up built (policy, catalog, caches' first entries, imported code) lives as long as
    the process: it is frozen out of the cyclic collector's scans, and young objects are collected
    less often. Per-statement garbage is short-lived and almost all freed by reference counting, so
    it need not trigger a scan every 700 allocations, nor full scans of the whole heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, 10, 10)


def serve(
    config: Config,
    log_level: str = "info",
    on_ready: Callable[[], None] | None = None,
    worker: Worker | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM, then drain; returns the process exit code. ``on_ready`` runs
    once the listener and the admin API accept connections."""
    configure_logging(log_level)
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker.index)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(_serve(config, on_ready, worker))
    return 0


def serve_workers(config: Config, workers: int, log_level: str = "info") -> int:
    """``sekisho run --workers N``: N processes accept on one port (SO_REUSEPORT, the kernel
    spreads connections), sharing quotas through the store (SQLite on this host, or Redis). This
    process supervises: it passes signals on, restarts a worker that dies, and exits when all
    have stopped after SIGINT/SIGTERM. The admin API is served by worker 0."""
    configure_logging(log_level)
    ports = tuple(free_port() for _ in range(workers))
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: no loop or thread exists yet in this process
            code = 1
            try:
                code = serve(config, log_level, worker=Worker(index, ports))
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGINT, signal.SIGTERM):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(workers):
        spawn(index)
    log.info("workers_started", workers=workers, pids=sorted(children))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        if not stopping:
            log.error("worker_died", worker=index, pid=pid, status=status)
            time.sleep(0.5)
            spawn(index)
    return 0
