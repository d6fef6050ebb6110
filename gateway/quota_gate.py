"""One session's share of its person's quotas: rows reserved ahead from the store, spent inline.

The relay is synchronous, the store is not. So a session reserves rows from the store in chunks
(at least a statement's cap) and keeps them as a local balance; each row source (a simple-query
string, a portal) claims its cap from that balance before it runs, and gives back what it did not
send. When the balance is short the relay holds the statement while the session tops it up; what
the store grants is all there is, so parallel sessions of one person overshoot by nothing (each
holds at most one chunk it has not used, given back when the session ends). Bytes are counted as
they are sent and recorded after each batch: a byte budget refuses the next protected read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import structlog

from gateway.quota_store import QuotaStore, StoreUnavailable
from policy.catalog import QualifiedName
from policy.decision import Deny
from policy.events import QuotaUsage
from policy.quota import Limit, Usage, byte_limits, exhausted, row_limits, unavailable

log = structlog.get_logger("sekisho.quota")

RETRY_AFTER = 2.0  # seconds before an unreachable store is tried again
RECHECK_AFTER = 10.0  # seconds before an exhausted quota is asked again (windows roll on)


class Need(Enum):
    TOP_UP = "top_up"  # the relay waits while the session reserves more rows


@dataclass(slots=True)
class Claim:
    """Rows a row source may send, taken from the balance of these limits."""

    limits: tuple[Limit, ...]
    rows: int
    rule: str


class QuotaGate:
    def __init__(
        self,
        user: str,
        limits: Sequence[Limit],
        store: QuotaStore,
        chunk: int,
        elevation_hint: str,
        *,
        on_usage: Callable[[QuotaUsage], None] | None = None,
    ) -> None:
        self.user = user
        self._on_usage = on_usage
        self._rows = tuple(lim for lim in limits if lim.metric == "rows")
        self._bytes = byte_limits(limits)
        self.store = store
        self.chunk = chunk
        self._hint = elevation_hint
        self._balance: dict[str, int] = {}
        self._reserved_at: dict[str, float] = {}
        # Limits the store could not grant more of, until when to take its word for it.
        self._exhausted: dict[str, tuple[Usage, float]] = {}
        self._bytes_over: Usage | None = None
        self._unsent_bytes = 0
        self._down_until = 0.0
        self._down_reason = ""
        self.wanted: tuple[tuple[Limit, ...], int] | None = None  # a top-up the relay waits for

    @property
    def active(self) -> bool:
        return bool(self._rows or self._bytes)

    # ------------------------------------------------------------------ synchronous, for the relay

    def claim(self, tables: frozenset[QualifiedName], cap: int | None) -> Claim | Need | Deny | None:
        """What a row source reading ``tables`` may send: None (no quota applies), a Claim, a
        refusal, or ``Need.TOP_UP`` (ask again after ``top_up``)."""
        if not tables:
            return None
        if self._bytes_over is not None:
            return exhausted(self.user, self._bytes_over, self._hint)
        limits = row_limits(self._rows, tables)
        if not limits:
            return None
        if time.time() < self._down_until:
            return unavailable(self.user, self._down_reason)
        want = cap if cap is not None else self.chunk
        have = min(self._balance.get(lim.key, 0) for lim in limits)
        now = time.time()
        spent = [
            self._exhausted[lim.key][0] for lim in limits if self._exhausted.get(lim.key, (0, 0.0))[1] > now
        ]
        if have < want and not spent:
            self.wanted = (limits, want - have)
            return Need.TOP_UP
        if have == 0:
            return exhausted(self.user, spent[0], self._hint)
        take = min(have, want)
        for lim in limits:
            self._balance[lim.key] -= take
        tight = min(limits, key=lambda lim: self._balance.get(lim.key, 0))
        rule = f"quota: {tight.describe()}" if take < want else ""
        return Claim(limits, take, rule)

    def settle(self, claim: Claim, sent: int) -> None:
        """A row source finished: what it did not send goes back to the balance."""
        unused = max(claim.rows - sent, 0)
        for lim in claim.limits:
            self._balance[lim.key] = self._balance.get(lim.key, 0) + unused

    def sent_bytes(self, amount: int) -> None:
        if self._bytes:
            self._unsent_bytes += amount

    # ------------------------------------------------------------------ asynchronous, for the session

    async def top_up(self) -> None:
        """Reserve what the waiting claim needs (at least a chunk) from the store."""
        wanted, self.wanted = self.wanted, None
        if wanted is None:
            return
        limits, need = wanted
        now = time.time()
        asked = max(need, self.chunk)
        try:
            grant = await self.store.reserve(self.user, limits, asked, now)
            usages = await self.store.usage(self.user, limits, now)
            for usage in usages:
                if grant < asked and usage.remaining == 0:
                    self._exhausted[usage.limit.key] = (usage, now + RECHECK_AFTER)
            self._report(usages, now)
        except StoreUnavailable as exc:
            log.warning("quota_store_unavailable", user=self.user, error=str(exc))
            self._down_until = time.time() + RETRY_AFTER
            self._down_reason = "the quota store is unreachable"
            return
        self._down_until = 0.0
        for lim in limits:
            self._balance[lim.key] = self._balance.get(lim.key, 0) + grant
            self._reserved_at[lim.key] = now
        if grant == 0 and not any(lim.key in self._exhausted for lim in limits):
            self._exhausted[limits[0].key] = (Usage(limits[0], limits[0].budget, None), now + RECHECK_AFTER)

    async def flush_bytes(self) -> None:
        """Record the bytes sent since the last flush; note a byte budget that ran out."""
        amount, self._unsent_bytes = self._unsent_bytes, 0
        if not amount or not self._bytes:
            return
        now = time.time()
        try:
            await self.store.add(self.user, self._bytes, amount, now)
            usages = await self.store.usage(self.user, self._bytes, now)
            self._report(usages, now)
            for usage in usages:
                if usage.remaining == 0:
                    self._bytes_over = usage
                    break
            else:
                self._bytes_over = None
        except StoreUnavailable as exc:
            self._unsent_bytes += amount
            log.warning("quota_store_unavailable", user=self.user, error=str(exc))

    def _report(self, usages: Sequence[Usage], now: float) -> None:
        """Usage after a charge, for detection's quota thresholds."""
        if self._on_usage is None:
            return
        at = datetime.fromtimestamp(now, UTC)
        for u in usages:
            lim = u.limit
            table = ".".join(lim.table) if lim.table else None
            self._on_usage(QuotaUsage(at, self.user, lim.window, lim.metric, u.used, lim.budget, table))

    async def close(self) -> None:
        """Give back every row reserved and not spent; record the last bytes."""
        await self.flush_bytes()
        for lim in self._rows:
            unused = self._balance.get(lim.key, 0)
            if unused > 0:
                try:
                    await self.store.add(
                        self.user, (lim,), -unused, self._reserved_at.get(lim.key, time.time())
                    )
                except StoreUnavailable as exc:
                    log.warning("quota_refund_failed", user=self.user, error=str(exc))
        self._balance.clear()
