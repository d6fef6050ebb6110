"""Quota arithmetic: rolling windows as buckets, what remains, and the refusal that says so.

A window of W seconds is counted in 60 buckets of W/60 seconds (at least one second): the amount
used in a window is the sum of the buckets whose start lies within the last W seconds. Stores
(``gateway/quota_store.py``: SQLite for one host, Redis for many) keep the buckets; this module is
the arithmetic they share, and the message a person gets when a quota runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from policy.catalog import QualifiedName
from policy.decision import QUOTA_EXHAUSTED, Deny
from policy.model import Policy, Quota, show_duration

BUCKETS_PER_WINDOW = 60


@dataclass(frozen=True, slots=True)
class Limit:
    """One budget of one metric over one window, as the stores count it."""

    metric: str  # "rows" (of statements reading protected tables) or "bytes" (of every result)
    budget: int
    window: int  # seconds
    table: QualifiedName | None = None

    @property
    def key(self) -> str:
        return f"{self.metric}:{self.window}s:{'.'.join(self.table) if self.table else '*'}"

    @property
    def bucket(self) -> int:
        """Seconds per bucket."""
        return max(1, self.window // BUCKETS_PER_WINDOW)

    @property
    def buckets(self) -> int:
        return -(-self.window // self.bucket)

    def index(self, at: float) -> int:
        """The bucket a moment (epoch seconds) falls in."""
        return int(at // self.bucket)

    def describe(self) -> str:
        what = f"rows of {'.'.join(self.table) if self.table else 'protected tables'}"
        unit = what if self.metric == "rows" else "bytes returned"
        return f"{self.budget:,} {unit} per {show_duration(timedelta(seconds=self.window))}"


def limits_of(quotas: Iterable[Quota]) -> tuple[Limit, ...]:
    """Every limit a person's quotas set; the same metric, window and table keep the smallest."""
    best: dict[str, Limit] = {}
    for quota in quotas:
        window = int(quota.window.total_seconds())
        for metric, budget in (("rows", quota.rows), ("bytes", quota.bytes)):
            if budget is None:
                continue
            limit = Limit(metric, budget, window, quota.table if metric == "rows" else None)
            if limit.key not in best or budget < best[limit.key].budget:
                best[limit.key] = limit
    return tuple(sorted(best.values(), key=lambda lim: lim.key))


def row_limits(limits: Iterable[Limit], tables: Iterable[QualifiedName]) -> tuple[Limit, ...]:
    """The row limits a statement reading ``tables`` (protected ones) draws on."""
    read = frozenset(tables)
    return tuple(lim for lim in limits if lim.metric == "rows" and (lim.table is None or lim.table in read))


def byte_limits(limits: Iterable[Limit]) -> tuple[Limit, ...]:
    return tuple(lim for lim in limits if lim.metric == "bytes")


def used(counts: Mapping[int, int], limit: Limit, now: float) -> int:
    """The amount used within the window ending now, from bucket counts by index."""
    first = limit.index(now) - limit.buckets + 1
    return sum(amount for index, amount in counts.items() if index >= first)


def frees_at(counts: Mapping[int, int], limit: Limit, now: float) -> float | None:
    """When the oldest use still in the window leaves it (epoch seconds), or None if none is."""
    first = limit.index(now) - limit.buckets + 1
    live = [index for index, amount in counts.items() if index >= first and amount > 0]
    return None if not live else (min(live) + limit.buckets) * limit.bucket


@dataclass(frozen=True, slots=True)
class Usage:
    limit: Limit
    used: int
    frees_at: float | None  # epoch seconds

    @property
    def remaining(self) -> int:
        return max(self.limit.budget - self.used, 0)


def exhausted(user: str, usage: Usage, elevation_hint: str) -> Deny:
    """SK002: the window, the budget, what was used, when it frees up, and what to do."""
    when = (
        "as soon as older use leaves the window"
        if usage.frees_at is None
        else datetime.fromtimestamp(usage.frees_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    return Deny(
        "quota",
        QUOTA_EXHAUSTED,
        f"Sekisho quota exhausted for {user}: {usage.limit.describe()}, {usage.used:,} used; "
        f"it frees up from {when}",
        detail="Statements that do not read protected tables still run.",
        hint=elevation_hint,
    )


def elevation_hint(policy: Policy) -> str:
    """What a person whose quota ran out can do: the elevations the policy offers, by name."""
    offers = [
        f"the elevation '{e.name}' (approved by {' or '.join(e.approvers) or 'an approver'})"
        for e in policy.elevations.values()
        if e.grants_roles or e.grants_max_rows
    ]
    if offers:
        return f"If your work needs more now, request {', or '.join(offers)}."
    return "If your work needs more now, ask your compliance lead for an elevation."


def unavailable(user: str, reason: str) -> Deny:
    """The quota store cannot be reached: fail closed for protected tables only."""
    return Deny(
        "quota",
        QUOTA_EXHAUSTED,
        f"Sekisho cannot check {user}'s volume quota right now ({reason}), so statements that read "
        "protected tables are refused until it can",
        detail="Statements that do not read protected tables still run; service resumes by itself.",
        hint="Try again in a moment; if it persists, tell the Sekisho operators.",
    )
