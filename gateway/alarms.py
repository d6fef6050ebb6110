"""Where alarms go: the structured log, a webhook, and the feed the admin API serves.

``AlarmHub.raise_`` is called on the event loop, on the statement path, so it never waits: it logs
the alarm (event ``alarm``, every field), appends it to the feed (a ring of the last ``feed``
alarms, each with a sequence number that only grows, seeded from the clock at start so that a
poller's ``since`` stays meaningful across restarts) and, with a webhook configured, puts it on a
bounded queue. One task, owned by the hub between ``start`` and ``stop``, POSTs the queue to the
webhook in order: each alarm is retried with exponential backoff on connection errors, timeouts,
5xx, 408 and 429, and given up after ``retries`` retries or at once on any other status. When the
queue is full the oldest waiting alarm is dropped, so a dead webhook costs bounded memory; drops
and give-ups are counted (``statistics``) and logged (``alarm_webhook_dropped``). The log and the
feed keep every alarm whatever the webhook does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from gateway.config import AlarmsConfig, WebhookConfig
from policy.detect.alarm import Alarm, Plain

log = structlog.get_logger("sekisho.alarms")

_LOG_LEVELS = {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}
_MAX_BACKOFF = 60.0  # seconds between retries, at most (also caps a webhook's Retry-After)
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class AlarmStatistics:
    raised: int
    delivered: int  # accepted by the webhook (2xx)
    dropped: int  # never delivered: pushed out of a full queue, given up after retries, or left at stop
    retried: int  # failed attempts that were tried again
    queued: int  # waiting for the webhook, the one being sent included
    last_seq: int


class AlarmHub:
    """Fans alarms out to the log, the feed and (if configured) the webhook."""

    def __init__(self, config: AlarmsConfig, *, first_seq: int | None = None) -> None:
        self._webhook: WebhookConfig | None = config.webhook
        self._feed: deque[dict[str, Plain]] = deque(maxlen=config.feed)
        self._seq = time.time_ns() // 1000 if first_seq is None else first_seq
        self._queue: deque[dict[str, Plain]] = deque()
        self._sending: dict[str, Plain] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._raised = self._delivered = self._dropped = self._retried = 0

    async def start(self) -> None:
        """Start delivering to the webhook (nothing to start without one)."""
        if self._webhook is None or self._task is not None:
            return
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._webhook.timeout),
            headers={"User-Agent": "sekisho"},
        )
        self._task = asyncio.create_task(self._deliver(self._webhook, self._http), name="alarm-webhook")

    async def stop(self, grace: float = 5.0) -> None:
        """Give the webhook up to ``grace`` seconds to take what is queued, then stop; what is
        left is counted as dropped."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        left = len(self._queue) + (self._sending is not None)
        if left:
            self._dropped += left
            log.warning("alarm_webhook_dropped", count=left, reason="stopping")
        self._queue.clear()
        self._sending = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def raise_(self, alarm: Alarm) -> int:
        """Log, keep and queue an alarm without waiting; returns its sequence number."""
        self._seq += 1
        self._raised += 1
        item: dict[str, Plain] = {"seq": self._seq, **alarm.to_dict()}
        self._feed.append(item)
        getattr(log, _LOG_LEVELS.get(alarm.severity, "critical"))("alarm", **item)
        if self._webhook is not None and not self._closing:
            if len(self._queue) >= self._webhook.queue:
                old = self._queue.popleft()
                self._dropped += 1
                log.warning("alarm_webhook_dropped", seq=old["seq"], id=old["id"], reason="queue full")
            self._queue.append(item)
            self._wake.set()
        return self._seq

    def mirror(self, alarm: Alarm) -> int:
        """Put an alarm another Sekisho process raised (and logged and delivered) into the feed
        only, so that any process's feed shows every process's alarms; returns its number here."""
        self._seq += 1
        self._feed.append({"seq": self._seq, **alarm.to_dict()})
        return self._seq

    def feed(self, since: int = 0, limit: int = 1000) -> list[dict[str, Plain]]:
        """Alarms with a sequence number above ``since``, oldest first, at most ``limit``."""
        if not self._feed or limit <= 0:
            return []
        first = self._feed[0]["seq"]
        assert isinstance(first, int)
        start = max(since - first + 1, 0)
        return list(itertools.islice(self._feed, start, start + limit))

    def statistics(self) -> AlarmStatistics:
        return AlarmStatistics(
            raised=self._raised,
            delivered=self._delivered,
            dropped=self._dropped,
            retried=self._retried,
            queued=len(self._queue) + (self._sending is not None),
            last_seq=self._seq,
        )

    async def _deliver(self, webhook: WebhookConfig, http: aiohttp.ClientSession) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._sending = item = self._queue.popleft()
            try:
                await self._send(webhook, http, item)
            except Exception:  # a fault here must not end delivery of the alarms behind it
                self._dropped += 1
                log.exception("alarm_webhook_error", seq=item["seq"], id=item["id"])
            self._sending = None

    async def _send(
        self, webhook: WebhookConfig, http: aiohttp.ClientSession, item: dict[str, Plain]
    ) -> None:
        delay = webhook.backoff
        error = ""
        for attempt in range(webhook.retries + 1):
            wait: float | None = None
            try:
                async with http.post(
                    webhook.url, json=item, headers={"X-Sekisho-Alarm": str(item["id"])}
                ) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        self._delivered += 1
                        return
                    error = f"HTTP {r.status}"
                    if r.status < 500 and r.status not in _RETRY_STATUSES:
                        break
                    wait = _retry_after(r.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt == webhook.retries:
                break
            pause = min(wait if wait is not None else delay, _MAX_BACKOFF)
            self._retried += 1
            log.warning(
                "alarm_webhook_retry",
                seq=item["seq"],
                id=item["id"],
                webhook=webhook.describe(),
                attempt=attempt + 1,
                error=error,
                retry_in=pause,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, _MAX_BACKOFF)
        self._dropped += 1
        log.error(
            "alarm_webhook_failed", seq=item["seq"], id=item["id"], webhook=webhook.describe(), error=error
        )


def _retry_after(value: Any) -> float | None:
    """A Retry-After in seconds (the HTTP-date form is ignored: the backoff applies)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None
