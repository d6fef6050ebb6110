"""probing: many refusals in a short time (``refusals`` within ``within``, 5 in 10 minutes by
default): someone trying statement after statement to find what the policy lets through, or
password after password. Refused statements and refused connections both count, except refusals
of a suspended person (rule ``suspended``): they probe nothing, and counting them would raise an
alarm an hour for as long as the suspension lasts."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule
from policy.events import ConnectionEvent, StatementEvent
from policy.model import AlarmSettings

SUSPENDED = "suspended"  # the rule of a suspended person's refusals (gateway.gate, bench.insider)
_KEPT = 64  # refusals remembered (a policy asking for more in one window is capped here)


class Probing(PersonRule):
    name = "probing"

    def __init__(self, refusals: deque[tuple[float, str]] | None = None) -> None:
        self._refusals: deque[tuple[float, str]] = refusals if refusals is not None else deque(maxlen=_KEPT)

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.probing.enabled

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if ev.allowed or ev.rule == SUSPENDED:
            return []
        return self._refused(ev.user, ev.rule or ev.sqlstate or "refused", ctx)

    def connection(self, ev: ConnectionEvent, ctx: Context) -> list[Finding]:
        if ev.accepted:
            return []
        return self._refused(ev.user, f"connection: {ev.reason or 'refused'}", ctx)

    def _refused(self, user: str, what: str, ctx: Context) -> list[Finding]:
        rule = ctx.settings.probing
        self._refusals.append((ctx.at, what))
        window = rule.within.total_seconds()
        while self._refusals and ctx.at - self._refusals[0][0] > window:
            self._refusals.popleft()
        needed = min(rule.refusals, _KEPT)
        if len(self._refusals) < needed:
            return []
        reasons: dict[str, int] = {}
        for _, reason in self._refusals:
            reasons[reason] = reasons.get(reason, 0) + 1
        count = len(self._refusals)
        seconds = ctx.at - self._refusals[0][0]
        self._refusals.clear()  # the next alarm needs as many refusals again
        return [
            Finding(
                rule=self.name,
                severity=rule.severity,
                key="",
                summary=f"{user} was refused {count} times in {seconds / 60:.1f} minutes",
                action="Review the refused statements in the audit trail and ask the person what they "
                "were trying to do; repeated attempts around a refusal are how policies are probed.",
                evidence={"refusals": count, "seconds": round(seconds, 1), "reasons": dict(reasons)},
            )
        ]

    def to_dict(self) -> dict[str, Plain]:
        return {"refusals": [[at, what] for at, what in self._refusals]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        refusals = deque(((float(at), str(what)) for at, what in data.get("refusals", [])), maxlen=_KEPT)
        return cls(refusals)
