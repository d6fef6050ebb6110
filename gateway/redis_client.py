"""The Redis connection the shared stores (quotas, detection, elevations) each open, set up once:
short timeouts and no retries, so an unreachable Redis becomes ``StoreUnavailable`` in seconds."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=2, socket_connect_timeout=2, retry_on_timeout=False, decode_responses=True
    )


def describe(url: str) -> str:
    """Where the Redis is, never its password (for logs and errors)."""
    parts = urlsplit(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}{parts.path}"
    return f"{parts.scheme}://{where}"
