"""Upstream connections reused across clients: reset when a client leaves, parked, handed out again.

Theory of operation
-------------------
A PostgreSQL backend costs milliseconds to start, more than a short session spends on its
statements, so under connection churn (``pgbench -C``) a gateway that opens one backend per client
is bound by backend starts. A backend's database, user and startup parameters are fixed when it
starts; everything else a session does to it can be undone with ``DISCARD ALL``, which PostgreSQL
documents as ``CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *;
SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES``: cursors (WITH
HOLD too), every SET back to its startup value (``SET ROLE`` and ``SET SESSION AUTHORIZATION``
included), prepared statements (SQL and protocol), listens, session advisory locks, temporary
tables, sequence state. Being a simple Query, it also drops the unnamed prepared statement.

A link moves through these states, each transition made here:

    lent (a session relays on it) --release--> resetting --DISCARD ALL ok--> parked --acquire--> lent
                                       |             |                          |
                                       +-> closed <--+ failed, in doubt         +-> closed: data or
                                                                                    EOF while parked,
                                                                                    idle timeout,
                                                                                    evicted, check failed

The session decides whether its link may be released at all (``Session._reusable``): the client
left between statements (last ReadyForQuery 'I', nothing pending, no extended batch, no COPY), the
upstream never said FATAL, no cancel was sent to it on the client's behalf (a cancel in flight
could land on the next client's statement), and no statement ran that leaves state DISCARD ALL
does not reset (``leaves_session_state``). Anything else closes the link.

A reset that fails, times out, or leaves any reported parameter (ParameterStatus) different from
its startup value closes the link: its state is in doubt. Parked links are keyed by the startup
parameters they were opened with (application_name, client_encoding, DateStyle, options, ...; the
database and the service account are the gateway's own): only a client asking for exactly those
gets one, so its welcome (ParameterStatus, startup notices) is the one a fresh backend would have
sent. A parked link that receives anything (PostgreSQL's FATAL before it closes a terminated
backend) or reaches EOF is dropped at once; one parked for longer than ``check_after`` seconds is
checked with a Sync round trip before it is lent, and a failed check falls back to the next parked
link or a new connection, before anything was sent to the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gateway import upstream
from gateway.config import PoolConfig, UpstreamConfig
from gateway.endpoint import ConnectionClosed
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from policy.facts import Analysis, FunctionClass

log = structlog.get_logger("sekisho.upstream_pool")

PoolKey = tuple[tuple[str, str], ...]

_RESET = m.Query("DISCARD ALL").encode()
_RESET_TAG = b"DISCARD ALL\x00"
_CHECK = m.Sync().encode()  # outside an extended batch, PostgreSQL answers a Sync with ReadyForQuery
_TERMINATE = m.Terminate().encode()

# Session state that DISCARD ALL leaves behind, by what creates it:
# - set_config of a name with a dot, or SET of one, creates a placeholder variable that RESET ALL
#   empties but does not remove (current_setting(name, true) is '' instead of NULL): the name shows;
# - setseed: the backend's random() sequence stays seeded;
# - dblink and postgres_fdw keep connections to other servers open; LOAD keeps a library loaded;
# - DO blocks, user-defined functions and unanalyzable strings may do any of these.
_STATEFUL_CLASSES = frozenset(
    {FunctionClass.SESSION, FunctionClass.REMOTE, FunctionClass.DYNAMIC_SQL, FunctionClass.USER_DEFINED}
)
_STATEFUL_COMMANDS = frozenset({"load"})
_STATEFUL_FUNCTIONS = frozenset({"setseed"})


def pool_key(params: Sequence[tuple[str, str]]) -> PoolKey:
    """The startup parameters a link was opened with, in a canonical order."""
    return tuple(sorted(params))


def leaves_session_state(analysis: Analysis) -> bool:
    """Whether running this string may leave session state that ``DISCARD ALL`` does not reset.

    A link that ran such a string is closed rather than reused. Conservative: it may also say so
    for state that would have been reset (``set_config('search_path', ...)``).
    """
    if analysis.error is not None:
        return True
    for stmt in analysis.statements:
        if (
            stmt.unanalyzable is not None
            or stmt.do_block
            or stmt.command in _STATEFUL_COMMANDS
            or stmt.function_classes & _STATEFUL_CLASSES
            or any("." in name for name, _ in stmt.settings)
            or any(name.rpartition(".")[2] in _STATEFUL_FUNCTIONS for name in stmt.functions)
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    idle: int  # parked now
    resetting: int  # released, DISCARD ALL under way
    opened: int  # new upstream connections made for clients
    reused: int  # clients served by a parked link
    parked: int  # links reset and parked
    closed_in_doubt: int  # resets that failed or left a parameter changed; checks that failed
    dropped_idle: int  # parked links that timed out, were evicted, or that the upstream closed


@dataclass(slots=True, eq=False)
class _Parked:
    key: PoolKey
    link: upstream.UpstreamLink
    since: float
    timer: asyncio.TimerHandle | None = None


class UpstreamPool:
    """Upstream links waiting between clients; one per gateway process (``Server.upstream_pool``)."""

    def __init__(self, upstream_config: UpstreamConfig, config: PoolConfig) -> None:
        self._upstream = upstream_config
        self._config = config
        self._idle: dict[PoolKey, list[_Parked]] = {}  # per key, the most recently parked last
        self._order: dict[_Parked, None] = {}  # every parked link, oldest first (for eviction)
        self._resets: dict[asyncio.Task[None], upstream.UpstreamLink] = {}
        self._closing = False
        self._opened = 0
        self._reused = 0
        self._parked = 0
        self._in_doubt = 0
        self._dropped = 0

    # ------------------------------------------------------------------ lending

    async def acquire(self, params: list[tuple[str, str]]) -> upstream.UpstreamLink:
        """A link for a client with these startup parameters: a parked one if any passes its
        check, else a new connection. Raises ``upstream.UpstreamError`` as ``upstream.connect``."""
        key = pool_key(params)
        while (entry := self._take(key)) is not None:
            link = entry.link
            if time.monotonic() - entry.since < self._config.check_after or await self._check(link):
                self._reused += 1
                return link
            self._in_doubt += 1
            log.info("upstream_parked_check_failed", upstream=self._upstream.describe())
            self._close(link)
        link = await upstream.connect(self._upstream, params)
        self._opened += 1
        return link

    def release(self, link: upstream.UpstreamLink, params: list[tuple[str, str]]) -> None:
        """Take back a link whose client left it idle; it is reset and parked, or closed.

        The caller has detached its callbacks and checked that the session may be reused at all.
        """
        if self._closing or self._config.max_idle == 0 or link.endpoint.closed or link.cancel_sent:
            self._close(link)
            return
        task = asyncio.get_running_loop().create_task(self._reset(pool_key(params), link))
        self._resets[task] = link
        task.add_done_callback(self._resets.pop)

    def close_link(self, link: upstream.UpstreamLink) -> None:
        """End a link that will not be reused (Terminate, then close)."""
        self._close(link)

    # ------------------------------------------------------------------ reset and park

    async def _reset(self, key: PoolKey, link: upstream.UpstreamLink) -> None:
        endpoint = link.endpoint
        reset = False
        try:
            async with asyncio.timeout(self._upstream.connect_timeout):
                endpoint.write(_RESET)
                reset = await self._discarded(link)
        except (TimeoutError, ConnectionClosed, ProtocolViolation) as exc:
            log.info("upstream_reset_failed", error=str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            self._close(link)
            raise
        if not (reset and link.as_started and not link.cancel_sent and not endpoint.closed):
            self._in_doubt += 1
            log.info("upstream_not_reused", reset=reset, parameters_changed=not link.as_started)
            self._close(link)
            return
        if self._closing:
            self._close(link)
            return
        self._park(key, link)

    @staticmethod
    async def _discarded(link: upstream.UpstreamLink) -> bool:
        """Read the answer to DISCARD ALL: True if it completed and left the link idle."""
        completed = False
        while True:
            frame = await link.endpoint.read_frame()
            kind = frame.type
            if kind == b"C":
                completed = frame.body == _RESET_TAG
            elif kind == b"S":
                link.parameter_status(frame.body)  # RESET ALL reports each parameter it changed back
            elif kind == b"Z":
                return completed and frame.body == b"I"
            elif kind not in b"NA":
                # An error (a cancel landed, the backend is ending) or anything unexpected: in doubt.
                # Notices and notifications still on their way to the departed client are dropped.
                return False

    def _park(self, key: PoolKey, link: upstream.UpstreamLink) -> None:
        while len(self._order) >= self._config.max_idle:
            oldest = next(iter(self._order))
            self._unpark(oldest)
            self._dropped += 1
            self._close(oldest.link)
        entry = _Parked(key, link, time.monotonic())
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(self._config.idle_timeout, self._expire, entry)
        endpoint = link.endpoint
        endpoint.on_data = lambda _data: self._parked_lost(entry, "data")
        endpoint.on_lost = lambda _exc: self._parked_lost(entry, "closed")
        self._idle.setdefault(key, []).append(entry)
        self._order[entry] = None
        self._parked += 1

    def _take(self, key: PoolKey) -> _Parked | None:
        stack = self._idle.get(key)
        while stack:
            entry = stack[-1]
            self._unpark(entry)
            endpoint = entry.link.endpoint
            endpoint.on_data = None
            endpoint.on_lost = None
            if not endpoint.closed:
                return entry
            self._dropped += 1
            stack = self._idle.get(key)
        return None

    def _unpark(self, entry: _Parked) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._order.pop(entry, None)
        stack = self._idle.get(entry.key)
        if stack is not None:
            stack.remove(entry)
            if not stack:
                del self._idle[entry.key]

    def _expire(self, entry: _Parked) -> None:
        entry.timer = None
        if entry in self._order:
            self._unpark(entry)
            self._dropped += 1
            self._close(entry.link)

    def _parked_lost(self, entry: _Parked, why: str) -> None:
        """A parked backend spoke or went away (terminated, restarted): it is never lent."""
        if entry in self._order:
            log.info("upstream_parked_dropped", reason=why)
            self._unpark(entry)
            self._dropped += 1
        self._close(entry.link)

    async def _check(self, link: upstream.UpstreamLink) -> bool:
        """One round trip: the link still answers, idle, with its startup parameters."""
        endpoint = link.endpoint
        try:
            async with asyncio.timeout(self._upstream.connect_timeout):
                endpoint.write(_CHECK)
                while True:
                    frame = await endpoint.read_frame()
                    if frame.type == b"S":
                        link.parameter_status(frame.body)
                    elif frame.type == b"Z":
                        return frame.body == b"I" and link.as_started
                    else:
                        return False
        except (TimeoutError, ConnectionClosed, ProtocolViolation):
            return False

    def _close(self, link: upstream.UpstreamLink) -> None:
        endpoint = link.endpoint
        endpoint.on_data = None
        endpoint.on_lost = None
        if not endpoint.closed:
            endpoint.write(_TERMINATE)
        endpoint.close()

    # ------------------------------------------------------------------ shutdown and figures

    async def close(self) -> None:
        """Stop parking; end resets under way and every parked link."""
        self._closing = True
        tasks = list(self._resets)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for entry in list(self._order):
            self._unpark(entry)
            self._close(entry.link)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            idle=len(self._order),
            resetting=len(self._resets),
            opened=self._opened,
            reused=self._reused,
            parked=self._parked,
            closed_in_doubt=self._in_doubt,
            dropped_idle=self._dropped,
        )
