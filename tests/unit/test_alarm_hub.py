"""Alarm sinks: the log, a real local webhook (failing, slow, dead) and the admin API's feed."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from gateway.admin.api import AdminAPI
from gateway.alarms import AlarmHub
from gateway.config import AlarmsConfig, ConfigError, WebhookConfig, config_from_mapping
from gateway.server import Server
from policy.detect import Alarm

AT = datetime(2024, 4, 1, 1, 0, tzinfo=UTC)


def alarm(n: int, severity: str = "high") -> Alarm:
    return Alarm(
        id=f"alarm{n}",
        at=AT,
        severity=severity,
        rule="paging",
        user="maint",
        summary=f"alarm number {n}",
        evidence={"pages": n, "tables": ["public.customers"]},
        action="ask",
        key=str(n),
    )


class Webhook:
    """A real HTTP server on a free local port that answers with the statuses it is given (then 200)
    and records what it accepted, in order. ``hold`` keeps every request waiting until it is set."""

    def __init__(self, statuses: list[int] | None = None, hold: asyncio.Event | None = None) -> None:
        self.statuses = list(statuses or [])
        self.hold = hold
        self.received: list[dict[str, Any]] = []
        self.headers: list[str] = []
        self.attempts = 0
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.json()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append(body)
            self.headers.append(request.headers.get("X-Sekisho-Alarm", ""))
        headers = {"Retry-After": "0.05"} if status == 429 else {}
        return web.Response(status=status, text="ok" if status == 200 else "no", headers=headers)

    async def __aenter__(self) -> Webhook:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.hold is not None:
            self.hold.set()
        await self._runner.cleanup()


def hub_for(url: str, **changes: Any) -> AlarmHub:
    settings: dict[str, Any] = {"timeout": 2.0, "retries": 5, "backoff": 0.01, "queue": 100}
    settings.update(changes)
    return AlarmHub(AlarmsConfig(webhook=WebhookConfig(url=url, **settings)), first_seq=0)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_webhook_gets_every_alarm_in_order_through_failures() -> None:
    async def scenario() -> None:
        async with Webhook(statuses=[500, 503, 500]) as hook:
            hub = hub_for(hook.url)
            await hub.start()
            with capture_logs() as logs:
                seqs = [hub.raise_(alarm(n)) for n in range(1, 4)]
                await until(lambda: len(hook.received) == 3)
            await hub.stop()
        assert seqs == [1, 2, 3]
        assert [body["seq"] for body in hook.received] == [1, 2, 3]
        assert hook.received[0] == {"seq": 1, **alarm(1).to_dict()}
        assert hook.headers == ["alarm1", "alarm2", "alarm3"]
        assert hook.attempts == 6
        stats = hub.statistics()
        assert (stats.raised, stats.delivered, stats.retried, stats.dropped, stats.queued) == (3, 3, 3, 0, 0)
        retries = [entry for entry in logs if entry["event"] == "alarm_webhook_retry"]
        assert [entry["error"] for entry in retries] == ["HTTP 500", "HTTP 503", "HTTP 500"]
        assert retries[0]["webhook"] == hook.url

    run(scenario)


def test_an_alarm_is_given_up_after_its_retries_and_the_next_goes_on() -> None:
    async def scenario() -> None:
        async with Webhook(statuses=[500, 500, 500]) as hook:
            hub = hub_for(hook.url, retries=2)
            await hub.start()
            with capture_logs() as logs:
                hub.raise_(alarm(1))
                hub.raise_(alarm(2))
                await until(lambda: len(hook.received) == 1)
            await hub.stop()
        assert [body["id"] for body in hook.received] == ["alarm2"]
        assert hook.attempts == 4  # 1 + 2 retries for the first, 1 for the second
        assert (hub.statistics().delivered, hub.statistics().dropped) == (1, 1)
        [failed] = [entry for entry in logs if entry["event"] == "alarm_webhook_failed"]
        assert (failed["id"], failed["error"]) == ("alarm1", "HTTP 500")

    run(scenario)


def test_client_errors_are_not_retried_but_429_is() -> None:
    async def scenario() -> None:
        async with Webhook(statuses=[400, 429]) as hook:
            hub = hub_for(hook.url)
            await hub.start()
            with capture_logs() as logs:
                hub.raise_(alarm(1))
                hub.raise_(alarm(2))
                await until(lambda: len(hook.received) == 1)
            await hub.stop()
        assert hook.attempts == 3  # 400 once (given up), 429 then 200
        [retry] = [entry for entry in logs if entry["event"] == "alarm_webhook_retry"]
        assert (retry["error"], retry["retry_in"]) == ("HTTP 429", 0.05)  # the webhook's Retry-After
        assert [body["id"] for body in hook.received] == ["alarm2"]
        assert hub.statistics().dropped == 1

    run(scenario)


def test_a_stuck_webhook_keeps_memory_bounded_and_counts_what_it_drops() -> None:
    async def scenario() -> None:
        hold = asyncio.Event()
        async with Webhook(hold=hold) as hook:
            hub = hub_for(hook.url, queue=3)
            await hub.start()
            hub.raise_(alarm(1))
            await until(lambda: hook.attempts == 1)  # alarm 1 is in flight, held by the webhook
            with capture_logs() as logs:
                started = time.perf_counter()
                for n in range(2, 1002):
                    hub.raise_(alarm(n))
                elapsed = time.perf_counter() - started
            assert elapsed < 2  # raising never waits for the webhook
            stats = hub.statistics()
            assert (stats.queued, stats.dropped) == (4, 997)  # 1 in flight, the newest 3 waiting
            dropped = [entry for entry in logs if entry["event"] == "alarm_webhook_dropped"]
            assert len(dropped) == 997
            assert dropped[0]["id"] == "alarm2"
            hold.set()
            await until(lambda: len(hook.received) == 4)
            await hub.stop()
        assert [body["id"] for body in hook.received] == ["alarm1", "alarm999", "alarm1000", "alarm1001"]
        assert hub.statistics().delivered == 4
        # The feed and the log kept every alarm.
        assert len(hub.feed(0, 10_000)) == 1000

    run(scenario)


def test_a_fault_in_one_delivery_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        async with Webhook() as hook:
            hub = hub_for(hook.url)
            await hub.start()
            broken = dataclasses.replace(alarm(1), evidence={"not json": cast(Any, {1, 2})})
            with capture_logs() as logs:
                hub.raise_(broken)
                hub.raise_(alarm(2))
                await until(lambda: len(hook.received) == 1)
            await hub.stop()
        assert [body["id"] for body in hook.received] == ["alarm2"]
        assert hub.statistics().dropped == 1
        assert [entry["id"] for entry in logs if entry["event"] == "alarm_webhook_error"] == ["alarm1"]

    run(scenario)


def test_a_dead_webhook_is_retried_then_given_up() -> None:
    async def scenario() -> None:
        async with Webhook() as hook:
            url = hook.url  # the port is free again once the server is gone
        hub = hub_for(url, retries=3)
        await hub.start()
        hub.raise_(alarm(1))
        await until(lambda: hub.statistics().dropped == 1)
        assert hub.statistics().retried == 3
        await hub.stop()

    run(scenario)


def test_stop_gives_the_webhook_a_grace_period_then_counts_the_rest_as_dropped() -> None:
    async def scenario() -> None:
        hold = asyncio.Event()
        async with Webhook(hold=hold) as hook:
            hub = hub_for(hook.url)
            await hub.start()
            for n in range(3):
                hub.raise_(alarm(n))
            await until(lambda: hook.attempts == 1)
            await hub.stop(grace=0.1)
            assert hub.statistics().dropped == 3
            assert hub.statistics().queued == 0

    run(scenario)


def test_every_alarm_is_logged_with_every_field_at_its_severity() -> None:
    hub = AlarmHub(AlarmsConfig(), first_seq=41)
    with capture_logs() as logs:
        hub.raise_(alarm(1, "low"))
        hub.raise_(alarm(2, "critical"))
    assert [(entry["event"], entry["log_level"], entry["seq"]) for entry in logs] == [
        ("alarm", "info", 42),
        ("alarm", "critical", 43),
    ]
    expected = {**alarm(2, "critical").to_dict(), "seq": 43, "event": "alarm", "log_level": "critical"}
    assert logs[1] == expected


def test_the_feed_is_a_ring_with_growing_sequence_numbers() -> None:
    hub = AlarmHub(AlarmsConfig(feed=5), first_seq=100)
    assert hub.feed() == []
    for n in range(8):
        hub.raise_(alarm(n))
    assert [item["seq"] for item in hub.feed()] == [104, 105, 106, 107, 108]
    assert [item["seq"] for item in hub.feed(106)] == [107, 108]
    assert [item["seq"] for item in hub.feed(0, limit=2)] == [104, 105]
    assert hub.feed(108) == []
    assert hub.feed(5000) == []
    # Without first_seq the numbers start from the clock, so that they still grow after a restart.
    later = AlarmHub(AlarmsConfig())
    assert later.raise_(alarm(1)) > 108


def test_admin_api_serves_the_feed() -> None:
    async def scenario() -> None:
        hub = AlarmHub(AlarmsConfig(), first_seq=0)
        for n in range(1, 4):
            hub.raise_(alarm(n))
        admin = AdminAPI(cast(Server, None), "127.0.0.1", 0, hub)
        async with TestClient(TestServer(admin.app)) as client:
            response = await client.get("/alarms")
            assert response.status == 200
            items = await response.json()
            assert [item["seq"] for item in items] == [1, 2, 3]
            assert items[0] == {"seq": 1, **alarm(1).to_dict()}
            response = await client.get("/alarms", params={"since": "2"})
            assert [item["id"] for item in await response.json()] == ["alarm3"]
            response = await client.get("/alarms", params={"since": "1", "limit": "1"})
            assert [item["seq"] for item in await response.json()] == [2]
            for bad in ({"since": "x"}, {"limit": "0"}):
                assert (await client.get("/alarms", params=bad)).status == 400
            stats = await (await client.get("/alarms/stats")).json()
            assert (stats["raised"], stats["last_seq"]) == (3, 3)
        empty = AdminAPI(cast(Server, None), "127.0.0.1", 0)
        async with TestClient(TestServer(empty.app)) as client:
            assert await (await client.get("/alarms")).json() == []

    run(scenario)


# ---------------------------------------------------------------------------- configuration


def _config(alarms: Any) -> AlarmsConfig:
    data = {"upstream": "postgresql://db/app", "users_file": "u", "policy": "p.yaml", "alarms": alarms}
    return config_from_mapping(data, base=Path()).alarms


def test_alarm_configuration() -> None:
    assert _config(None) == AlarmsConfig()
    assert _config({"feed": 50}) == AlarmsConfig(feed=50)
    full = _config(
        {
            "feed": 10,
            "webhook": {
                "url": "https://hooks.example/x?token=s3cret",
                "timeout": 3,
                "retries": 2,
                "backoff": 0.5,
                "queue": 7,
            },
        }
    )
    assert full == AlarmsConfig(
        feed=10,
        webhook=WebhookConfig(
            url="https://hooks.example/x?token=s3cret", timeout=3.0, retries=2, backoff=0.5, queue=7
        ),
    )
    assert full.webhook is not None
    assert full.webhook.describe() == "https://hooks.example/x"  # no token in the logs
    assert _config({"webhook": {"url": "http://127.0.0.1:9000/"}}).webhook == WebhookConfig(
        url="http://127.0.0.1:9000/"
    )


@pytest.mark.parametrize(
    ("alarms", "message"),
    [
        ({"webhook": {}}, "alarms.webhook.url: required"),
        ({"webhook": {"url": "ftp://x/"}}, "alarms.webhook.url: expected an http:// or https:// URL"),
        ({"webhook": {"url": "http:///path"}}, "alarms.webhook.url: expected an http:// or https:// URL"),
        ({"webhook": {"url": "http://h/", "timeout": 0}}, "alarms.webhook.timeout: expected a positive"),
        ({"webhook": {"url": "http://h/", "retries": -1}}, "alarms.webhook.retries: expected 0 or more"),
        ({"webhook": {"url": "http://h/", "backoff": 0}}, "alarms.webhook.backoff: expected a positive"),
        ({"webhook": {"url": "http://h/", "queue": 0}}, "alarms.webhook.queue: expected at least 1"),
        ({"webhook": {"url": "http://h/", "retry": 3}}, "alarms.webhook.retry: unknown key"),
        ({"webhook": {"url": "http://h/", "retries": "5"}}, "alarms.webhook.retries: expected int, got str"),
        ({"webhook": "http://h/"}, "alarms.webhook: expected a mapping, got str"),
        ({"feed": 0}, "alarms.feed: expected at least 1"),
        ({"fed": 5}, "alarms.fed: unknown key"),
    ],
)
def test_alarm_configuration_errors_name_the_key(alarms: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(alarms)
    assert str(caught.value).startswith(message)
