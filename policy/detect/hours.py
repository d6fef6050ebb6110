"""outside_allowed_hours and unusual_hours: activity at a time the policy does not allow the person,
or at an hour of the day they have rarely worked.

Allowed hours come from the policy (``hours:`` of the person and their roles). Connections are
already refused outside them, so what remains to see is a session opened inside the hours and kept
working past them, and refused attempts (raised one severity lower: nothing ran). Usual hours are
learned per person: for each hour of the local day, the exponentially weighted share of active days
with activity in that hour. Once learned, an hour whose share, and its neighbours', is below
``min_share`` is unusual (a neighbour counts so that working a little late is not an alarm). Each
kind is raised at most once per person and day.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from policy.access import within_hours
from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, ewma_weight
from policy.events import ConnectionEvent, StatementEvent
from policy.model import SEVERITIES, Access, AlarmSettings, Policy


class Hours(PersonRule):
    name = "hours"

    def __init__(
        self,
        *,
        shares: list[float] | None = None,
        days: int = 0,
        today: int = 0,
        allowed_day: int = 0,
        attempt_day: int = 0,
        unusual_day: int = 0,
    ) -> None:
        self._shares = shares if shares is not None else [0.0] * 24  # per local hour, of active days
        self._days = days
        self._today = today  # bit h: active in hour h today
        self._allowed_day = allowed_day  # local date ordinal of the last outside_allowed_hours finding
        self._attempt_day = attempt_day  # the same, for refused connection attempts
        self._unusual_day = unusual_day

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.hours.enabled

    def share(self, hour: int) -> float:
        return self._shares[hour % 24]

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        return self._activity(ev.user, ctx, "worked")

    def connection(self, ev: ConnectionEvent, ctx: Context) -> list[Finding]:
        if ev.accepted:
            return self._activity(ev.user, ctx, "connected")
        day = ctx.local.date().toordinal()
        if self._attempt_day == day or _allowed(ctx.policy, ev.user, ctx.local):
            return []
        self._attempt_day = day
        rank = max(SEVERITIES.index(ctx.settings.hours.outside_allowed) - 1, 0)
        return [
            Finding(
                rule="outside_allowed_hours",
                severity=SEVERITIES[rank],
                key=f"attempt:{ctx.local.date().isoformat()}",
                summary=f"{ev.user} tried to connect at {ctx.local:%H:%M} ({ctx.local.tzname()}), "
                "outside the hours the policy allows them",
                action="The connection was refused; ask the person why they tried to work at this time.",
                evidence={"local_time": ctx.local.isoformat(), "address": ev.address, "reason": ev.reason},
            )
        ]

    def _activity(self, user: str, ctx: Context, what: str) -> list[Finding]:
        hour = ctx.local.hour
        self._today |= 1 << hour
        day = ctx.local.date().toordinal()
        out: list[Finding] = []
        when = f"{ctx.local:%a %H:%M} ({ctx.local.tzname()})"
        if self._allowed_day != day and not _allowed(ctx.policy, user, ctx.local):
            self._allowed_day = day
            out.append(
                Finding(
                    rule="outside_allowed_hours",
                    severity=ctx.settings.hours.outside_allowed,
                    key=ctx.local.date().isoformat(),
                    summary=f"{user} {what} at {when}, outside the hours the policy allows them",
                    action="A session opened within the allowed hours is still in use; ask the person "
                    "why, and end the session if nobody can say.",
                    evidence={"local_time": ctx.local.isoformat(), "hour": hour},
                )
            )
        unusual = ctx.settings.hours.unusual
        if (
            unusual is not None
            and self._unusual_day != day
            and self._days >= ctx.settings.learning_days
            and max(self.share(h) for h in (hour - 1, hour, hour + 1)) < ctx.settings.hours.min_share
        ):
            self._unusual_day = day
            usual = [h for h in range(24) if self._shares[h] >= ctx.settings.hours.min_share]
            out.append(
                Finding(
                    rule="unusual_hours",
                    severity=unusual,
                    key=ctx.local.date().isoformat(),
                    summary=f"{user} {what} at {when}, an hour they have rarely worked",
                    action="Confirm with the person that they are working at this hour; a stolen "
                    "password is often used when its owner is not.",
                    evidence={
                        "local_time": ctx.local.isoformat(),
                        "hour": hour,
                        "share_of_days": round(self.share(hour), 3),
                        "usual_hours": list(usual),
                        "learned_days": self._days,
                    },
                )
            )
        return out

    def close_day(self, active: bool, ctx: Context) -> None:
        if active:
            self._days += 1
            weight = ewma_weight(self._days, ctx.settings.memory_days)
            for hour in range(24):
                seen = 1.0 if self._today >> hour & 1 else 0.0
                self._shares[hour] += weight * (seen - self._shares[hour])
        self._today = 0

    def to_dict(self) -> dict[str, Plain]:
        return {
            "shares": list(self._shares),
            "days": self._days,
            "today": self._today,
            "allowed_day": self._allowed_day,
            "attempt_day": self._attempt_day,
            "unusual_day": self._unusual_day,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        shares = [float(v) for v in data.get("shares", [])]
        return cls(
            shares=shares if len(shares) == 24 else None,
            days=int(data.get("days", 0)),
            today=int(data.get("today", 0)),
            allowed_day=int(data.get("allowed_day", 0)),
            attempt_day=int(data.get("attempt_day", 0)),
            unusual_day=int(data.get("unusual_day", 0)),
        )


def _allowed(policy: Policy | None, user: str, now: datetime) -> bool:
    """Within every hours restriction of the person and their roles (none: always allowed)."""
    if policy is None:
        return True
    entry = policy.users.get(user)
    scopes: list[Access] = [entry.access] if entry is not None else []
    scopes += [role.access for role in policy.roles_of(user)]
    return all(within_hours(now, access) for access in scopes if access.hours)
