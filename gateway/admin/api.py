"""The admin HTTP API (aiohttp): health, live statistics and the alarm feed for operators.

``GET /audit/search`` streams audit records (JSON lines) for investigators, with the filters of
``sekisho audit search``; ``GET /audit/stats`` says how the trail is doing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from gateway.audit import search as audit_search
from gateway.config import parse_dsn

if TYPE_CHECKING:
    from gateway.alarms import AlarmHub
    from gateway.server import Server

MAX_FEED_PAGE = 1000  # alarms per GET /alarms response


class AdminAPI:
    """Serves /health, /stats, /alarms and /alarms/stats on the admin address."""

    def __init__(self, server: Server, host: str, port: int, alarms: AlarmHub | None = None) -> None:
        self._server = server
        self._alarms = alarms
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/alarms", self._alarm_feed)
        app.router.add_get("/alarms/stats", self._alarm_stats)
        app.router.add_get("/audit/search", self._audit_search)
        app.router.add_get("/audit/stats", self._audit_stats)
        self.app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self._server.statistics()))

    async def _alarm_feed(self, request: web.Request) -> web.Response:
        """``GET /alarms?since=SEQ&limit=N``: a JSON list of the alarms after sequence number
        ``since`` (default 0: all the feed still holds), oldest first, at most ``limit`` (1000).
        Poll with the last ``seq`` seen; a gap before the first ``seq`` returned means the feed
        dropped alarms in between (the log has every one)."""
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", str(MAX_FEED_PAGE)))
        except ValueError:
            raise web.HTTPBadRequest(text="since and limit must be whole numbers") from None
        if limit < 1:
            raise web.HTTPBadRequest(text="limit must be at least 1")
        if self._alarms is None:
            return web.json_response([])
        return web.json_response(self._alarms.feed(since, min(limit, MAX_FEED_PAGE)))

    async def _alarm_stats(self, request: web.Request) -> web.Response:
        if self._alarms is None:
            raise web.HTTPNotFound(text="alarms are not set up in this process")
        return web.json_response(dataclasses.asdict(self._alarms.statistics()))

    async def _audit_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self._server.audit.statistics()))

    async def _audit_search(self, request: web.Request) -> web.StreamResponse:
        """``GET /audit/search?person=&table=&since=&until=&decision=&kind=&limit=``: matching
        records, oldest first, one JSON object per line, streamed as the database yields them."""
        database = self._server.config.audit.database
        if database is None:
            raise web.HTTPNotFound(text="no audit database is configured (audit.database)")
        query = request.query
        unknown = set(query) - {"person", "table", "since", "until", "decision", "kind", "limit"}
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown parameters: {', '.join(sorted(unknown))}")
        try:
            filters = audit_search.Filters(
                person=query.get("person"),
                table=query.get("table"),
                since=audit_search.parse_time(query["since"], "since") if "since" in query else None,
                until=audit_search.parse_time(query["until"], "until") if "until" in query else None,
                decision=query.get("decision"),
                kind=query.get("kind"),
                limit=int(query["limit"]) if "limit" in query else None,
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        target = parse_dsn(database)
        try:
            conn = await asyncpg.connect(
                host=target.host, port=target.port, user=target.user, password=target.password,
                database=target.database, timeout=target.connect_timeout,
                ssl=None if target.sslmode in ("disable", "allow", "prefer") else target.sslmode,
            )  # fmt: skip
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise web.HTTPServiceUnavailable(text=f"the audit database is unreachable: {exc}") from None
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await response.prepare(request)
            async for record in audit_search.search(conn, filters):
                await response.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n")
        finally:
            await conn.close()
        await response.write_eof()
        return response
