"""volume_baseline: a day's protected rows far above what this person usually reads in a day.

Each person's daily volume (rows of protected tables that reached them, on days they were active)
is learned as an exponentially weighted mean and variance over about ``memory_days`` days. Once
``learning_days`` days are learned, a day whose running total passes all of ``factor`` x the mean,
the mean plus ``deviations`` standard deviations, and ``min_rows`` raises one alarm for that day.
A day that raised the alarm is not learned at all: a streak of drain days keeps alarming day
after day. (Entering it capped at the threshold, as before, raised mean and deviation enough that
a steady drain taught the baseline within three days; entering it at the mean it had would still
shrink the deviation, making an honest busy day after a streak look stranger than it is.) The
cost: a person whose work really grows keeps alarming daily until the policy's thresholds change.
A volume that creeps up slowly, under the threshold, is the coverage rule's to catch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, ewma_weight
from policy.events import StatementEvent
from policy.model import AlarmSettings


class VolumeBaseline(PersonRule):
    name = "volume_baseline"

    def __init__(
        self,
        *,
        mean: float = 0.0,
        variance: float = 0.0,
        days: int = 0,
        today: int = 0,
        alarmed: bool = False,
        threshold: float | None = None,
    ) -> None:
        self._mean = mean
        self._variance = variance
        self._days = days
        self._today = today
        self._alarmed = alarmed
        self._threshold = threshold

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.volume.enabled

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def deviation(self) -> float:
        return math.sqrt(self._variance)

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if ev.protected_rows <= 0:
            return []
        self._today += ev.protected_rows
        if self._alarmed or self._threshold is None or self._today <= self._threshold:
            return []
        self._alarmed = True
        times = self._today / self._mean if self._mean > 0 else None
        return [
            Finding(
                rule=self.name,
                severity=ctx.settings.volume.severity,
                key=ctx.local.date().isoformat(),
                summary=f"{ev.user} has read {self._today} protected rows today, "
                + (f"{times:.1f} times their usual {self._mean:.0f}" if times else "far above their usual"),
                action="Ask the person what today's work needs this volume; review today's statements "
                "in the audit trail.",
                evidence={
                    "today_rows": self._today,
                    "baseline_mean": round(self._mean, 1),
                    "baseline_deviation": round(self.deviation, 1),
                    "threshold": round(self._threshold, 1),
                    "learned_days": self._days,
                    "day": ctx.local.date().isoformat(),
                },
            )
        ]

    def close_day(self, active: bool, ctx: Context) -> None:
        if active and not self._alarmed:
            value = float(self._today)
            self._days += 1
            weight = ewma_weight(self._days, ctx.settings.memory_days)
            diff = value - self._mean
            increment = weight * diff
            self._mean += increment
            self._variance = (1 - weight) * (self._variance + diff * increment)
        self._today = 0
        self._alarmed = False
        rule = ctx.settings.volume
        if self._days >= ctx.settings.learning_days:
            self._threshold = max(
                float(rule.min_rows), rule.factor * self._mean, self._mean + rule.deviations * self.deviation
            )

    def to_dict(self) -> dict[str, Plain]:
        return {
            "mean": self._mean,
            "variance": self._variance,
            "days": self._days,
            "today": self._today,
            "alarmed": self._alarmed,
            "threshold": self._threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        threshold = data.get("threshold")
        return cls(
            mean=float(data.get("mean", 0.0)),
            variance=float(data.get("variance", 0.0)),
            days=int(data.get("days", 0)),
            today=int(data.get("today", 0)),
            alarmed=bool(data.get("alarmed", False)),
            threshold=None if threshold is None else float(threshold),
        )
