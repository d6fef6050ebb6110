"""repeated: escalation when a person's alarms of the named rules come back on several days.

One day of paging or of a volume far above habit can be honest work (a data incident, a report);
the same alarms on three days within a week are a drain that comes back for more. This rule sees
the alarms the detector raised about the person (``PersonRule.alarm``), keeps the local days on
which one of ``rules`` at ``at_least`` or above was raised (the latest such alarm per day), forgets
days older than ``within``, and at ``days`` distinct days raises one alarm of ``severity``. The
days counted are then spent, so the next escalation needs as many fresh days: a person held until
cleared who is cleared starts from nothing. Its own alarms are never counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Self

from policy.detect.alarm import Alarm, Finding, Plain
from policy.detect.base import Context, PersonRule
from policy.model import AlarmSettings


class Repeated(PersonRule):
    name = "repeated"

    def __init__(self, days: dict[int, tuple[float, list[str]]] | None = None) -> None:
        # local day (ordinal) -> (its latest counted alarm, POSIX seconds; the rules alarmed that day)
        self._days: dict[int, tuple[float, list[str]]] = days if days is not None else {}

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.repeated.enabled

    @property
    def days(self) -> tuple[date, ...]:
        """The days counted towards the next escalation, oldest first."""
        return tuple(date.fromordinal(day) for day in sorted(self._days))

    def alarm(self, alarm: Alarm, ctx: Context) -> list[Finding]:
        rule = ctx.settings.repeated
        if alarm.rule == self.name or alarm.rule not in rule.rules or not alarm.at_least(rule.at_least):
            return []
        horizon = ctx.at - rule.within.total_seconds()
        self._days = {day: seen for day, seen in self._days.items() if seen[0] > horizon}
        today = ctx.local.date().toordinal()
        _, seen_rules = self._days.get(today, (0.0, []))
        self._days[today] = (ctx.at, sorted({*seen_rules, alarm.rule}))
        if len(self._days) < rule.days:
            return []
        counted = sorted(self._days.items())
        self._days = {}
        days: list[Plain] = [date.fromordinal(day).isoformat() for day, _ in counted]
        window = round(rule.within.total_seconds() / 86400, 1)
        by_day: dict[str, Plain] = {}
        for day, (_, names) in counted:
            listed: list[Plain] = [*names]
            by_day[date.fromordinal(day).isoformat()] = listed
        return [
            Finding(
                rule=self.name,
                severity=rule.severity,
                key=ctx.local.date().isoformat(),
                summary=f"{alarm.user} has raised {'/'.join(sorted(rule.rules & _all(counted)))} alarms "
                f"on {len(counted)} days within {window:g} days ({', '.join(map(str, days))})",
                action="A pattern that comes back day after day is a drain, not a one-off task: review "
                "the person's statements on these days before letting them work on.",
                evidence={
                    "days": days,
                    "rules_by_day": by_day,
                    "window_days": window,
                    "at_least": rule.at_least,
                    "last_alarm": alarm.id,
                },
            )
        ]

    def to_dict(self) -> dict[str, Plain]:
        return {"days": [[day, at, list(rules)] for day, (at, rules) in sorted(self._days.items())]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            {int(day): (float(at), [str(r) for r in rules]) for day, at, rules in data.get("days", [])}
        )


def _all(counted: list[tuple[int, tuple[float, list[str]]]]) -> set[str]:
    return {rule for _, (_, rules) in counted for rule in rules}
