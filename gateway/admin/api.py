"""The admin HTTP API (aiohttp): health, live statistics, the alarm feed, and clearances.

Reading health, stats and the feed needs no credentials: the API listens on loopback by default and
says nothing a log reader could not see. Clearing a person (``POST /people/{name}/clear``) changes
who may work, and ``GET /audit/search`` (audit records as JSON lines, with the filters of
``sekisho audit search``) shows what everyone did, so both take the caller's own Sekisho identity:
HTTP Basic with their name and password, checked against the same users file (SCRAM verifiers)
that the gateway authenticates with, and the console's rule for compliance people
(``console.may_see_everyone``; nobody clears themselves). ``GET /audit/stats`` says how the trail
is doing. ``POST /elevations/{id}/approve`` (also ``deny`` with a reason, and ``revoke``) decides
an elevation request as the console's ``APPROVE ELEVATION`` does, with the same credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from scramp import ScramMechanism

from gateway.audit import search as audit_search
from gateway.config import parse_dsn
from gateway.console import may_see_everyone
from gateway.elevation_store import UnknownRequest
from gateway.quota_store import StoreUnavailable
from gateway.users import Verifier
from policy.detect import ClearanceRefused
from policy.elevation import ElevationRefused

if TYPE_CHECKING:
    from gateway.alarms import AlarmHub
    from gateway.server import Server

MAX_FEED_PAGE = 1000  # alarms per GET /alarms response
MAX_REASON = 2000  # characters of a clearance's reason
_REALM = 'Basic realm="sekisho", charset="UTF-8"'


class AdminAPI:
    """Serves /health, /stats, /alarms, /alarms/stats and /people/{name}/clear on the admin address."""

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
        app.router.add_post("/people/{name}/clear", self._clear)
        app.router.add_post("/elevations/{id}/{verdict:approve|deny|revoke}", self._decide_elevation)
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
        records, oldest first, one JSON object per line, streamed as the database yields them.
        For compliance people only (HTTP Basic, as for clearances): 401 or 403 otherwise."""
        investigator = await self._authenticated(request)
        if not may_see_everyone(self._server.policy.policy, investigator):
            raise web.HTTPForbidden(text=f"{investigator} may not search the audit trail")
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

    async def _clear(self, request: web.Request) -> web.Response:
        """``POST /people/{name}/clear`` with JSON ``{"reason": "..."}`` and HTTP Basic credentials
        of a compliance person: lifts ``name``'s suspension or tightening and returns the recorded
        clearance. 401 without valid credentials, 403 for people who may not clear (or clearing
        themselves), 409 when there is nothing to clear, 400 without a reason, 503 when the
        detection store is unreachable (nobody is cleared then, in any process)."""
        clearer = await self._authenticated(request)
        policy = self._server.policy.policy
        if not may_see_everyone(policy, clearer):
            raise web.HTTPForbidden(text=f"{clearer} may not clear people (approvers of elevations may)")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                text='expected a JSON body such as {"reason": "reviewed with ..."}'
            ) from None
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise web.HTTPBadRequest(
                text=f"give a reason (a non-empty string of at most {MAX_REASON} characters)"
            )
        try:
            clearance = await self._server.clear(request.match_info["name"], clearer, reason)
        except ClearanceRefused as exc:
            status = {"self_clearance": web.HTTPForbidden, "no_reason": web.HTTPBadRequest}.get(
                exc.code, web.HTTPConflict
            )
            raise status(text=str(exc)) from None
        except StoreUnavailable as exc:
            raise web.HTTPServiceUnavailable(
                text=f"the detection store is unreachable; nobody was cleared ({exc})"
            ) from None
        return web.json_response(clearance.to_dict())

    async def _decide_elevation(self, request: web.Request) -> web.Response:
        """``POST /elevations/{id}/approve`` (or ``deny``, with JSON ``{"reason": "..."}``, or
        ``revoke``) with HTTP Basic credentials: the request as stored afterwards. 401 without valid
        credentials, 403 for people who may not decide it (not an approver, their own request),
        404 for an unknown id, 409 when it is already decided or ended, 400 without a reason for a
        denial, 503 when the elevation store cannot be reached."""
        person = await self._authenticated(request)
        verdict = request.match_info["verdict"]
        reason = ""
        if verdict == "deny":
            try:
                body = await request.json()
            except ValueError:
                body = None
            found = body.get("reason") if isinstance(body, dict) else None
            if not isinstance(found, str) or not found.strip() or len(found) > MAX_REASON:
                raise web.HTTPBadRequest(
                    text=f'give a reason: {{"reason": "..."}}, at most {MAX_REASON} characters'
                )
            reason = found
        try:
            decided = await self._server.elevations.decide(request.match_info["id"], person, verdict, reason)
        except ElevationRefused as exc:
            status = {"42501": web.HTTPForbidden, "22023": web.HTTPBadRequest}.get(
                exc.sqlstate, web.HTTPConflict
            )
            raise status(text=str(exc)) from None
        except UnknownRequest as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except StoreUnavailable as exc:
            raise web.HTTPServiceUnavailable(text=f"the elevation store is unreachable: {exc}") from None
        return web.json_response(decided.to_dict())

    async def _authenticated(self, request: web.Request) -> str:
        """The Sekisho user whose name and password the request carries (HTTP Basic)."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep:
            raise web.HTTPUnauthorized(text="credentials required", headers={"WWW-Authenticate": _REALM})
        verifier = self._server.users().get(name)
        if not await asyncio.to_thread(_password_matches, verifier, password):
            raise web.HTTPUnauthorized(text="wrong name or password", headers={"WWW-Authenticate": _REALM})
        return name


_NOBODY = Verifier(4096, b"sekisho-no-user!", b"\0" * 32, b"\0" * 32)  # same work for unknown names


def _password_matches(verifier: Verifier | None, password: str) -> bool:
    """Whether ``password`` is the one behind the SCRAM-SHA-256 verifier (RFC 5802's StoredKey)."""
    known = verifier or _NOBODY
    try:
        _, stored, _, _ = ScramMechanism("SCRAM-SHA-256").make_auth_info(
            password, iteration_count=known.iterations, salt=known.salt
        )
    except ValueError:  # a password SASLprep refuses
        return False
    return verifier is not None and hmac.compare_digest(bytes(stored), verifier.stored_key)
