"""The admin HTTP API (aiohttp): health and live statistics for operators.

Later issues add the console, quota views, elevation approval and audit search here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.server import Server


class AdminAPI:
    """Serves /health and /stats on the admin address."""

    def __init__(self, server: Server, host: str, port: int) -> None:
        self._server = server
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        self._app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self._server.statistics()))
