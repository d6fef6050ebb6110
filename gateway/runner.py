"""Running the gateway process: event loop, logging, listener, admin API, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

import structlog
import uvloop

from gateway.admin.api import AdminAPI
from gateway.config import Config
from gateway.server import Server

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


async def _serve(config: Config, on_ready: Callable[[], None] | None) -> int:
    server = Server(config)
    await server.start()
    admin: AdminAPI | None = None
    if config.admin_port is not None:
        admin = AdminAPI(server, config.admin_host, config.admin_port)
        await admin.start()
    if on_ready is not None:
        on_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_policy)  # a broken file keeps the old policy
    await stop.wait()
    log.info("shutting_down")
    if admin is not None:
        await admin.stop()
    await server.shutdown()
    return 0


def serve(config: Config, log_level: str = "info", on_ready: Callable[[], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then drain; returns the process exit code. ``on_ready`` runs
    once the listener and the admin API accept connections."""
    configure_logging(log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(_serve(config, on_ready))
    return 0
