"""quota_threshold: a quota window's use crossing a level of its budget (80% and 100% by default).

An alarm is raised when the share used goes from below a level to at or above it, so a person who
hovers at 85% of a window is told once, and again only after the window has rolled below 80% and
climbed back. When one charge jumps several levels, only the highest is raised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, touch
from policy.events import QuotaUsage
from policy.model import AlarmSettings

_MAX_QUOTAS = 256  # windows remembered per person: quotas per table, metric and window


class QuotaThresholds(PersonRule):
    name = "quota_threshold"

    def __init__(self, shares: OrderedDict[str, float] | None = None) -> None:
        self._shares: OrderedDict[str, float] = shares if shares is not None else OrderedDict()

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.quota.enabled

    def quota(self, usage: QuotaUsage, ctx: Context) -> list[Finding]:
        if usage.budget <= 0:
            return []
        quota_key = f"{usage.table or '*'}:{usage.metric}:{usage.window}"
        percent = 100.0 * usage.used / usage.budget
        before = self._shares.get(quota_key, 0.0)
        touch(self._shares, quota_key, percent, _MAX_QUOTAS)
        crossed = [(level, sev) for level, sev in ctx.settings.quota.levels if before < level <= percent]
        if not crossed:
            return []
        level, severity = crossed[-1]
        scope = f"{usage.table}" if usage.table else "all protected tables"
        window = _show_window(usage.window)
        full = level >= 100
        return [
            Finding(
                rule=self.name,
                severity=severity,
                key=f"{quota_key}:{level:g}",
                summary=f"{usage.user} has used {percent:.0f}% of their {usage.metric} quota on {scope} "
                f"for the {window} window ({usage.used} of {usage.budget})",
                action=(
                    "Further reads are refused until the window rolls over; confirm with the person "
                    "what work needed this volume before raising the quota."
                    if full
                    else "Check with the person what work needs this volume; the quota stops reads at 100%."
                ),
                evidence={
                    "metric": usage.metric,
                    "window_seconds": usage.window,
                    "used": usage.used,
                    "budget": usage.budget,
                    "percent": round(percent, 1),
                    "level": level,
                    "table": usage.table,
                },
            )
        ]

    def to_dict(self) -> dict[str, Plain]:
        return {"shares": [[k, v] for k, v in self._shares.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(OrderedDict((str(k), float(v)) for k, v in data.get("shares", [])))


def _show_window(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count}-{unit}" if count != 1 else unit
    return f"{seconds}-second"
