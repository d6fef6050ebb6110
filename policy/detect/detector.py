"""The detector: every person's rule state, fed the gateway's events, returning deduplicated alarms.

Time comes only from the events, so a recorded month replays exactly as it ran live (and fast:
each event costs a few dictionary operations per rule). Days are counted in the alarms' time zone;
when a person's first event of a new day arrives, each rule closes the last one (baselines learn
from it). The alarms raised are fed back to the rules once (``PersonRule.alarm``), which is how
``repeated`` escalates. The same rule, person and key is not raised again within ``dedup``; rules that should
speak once per day or per run also keep their own memory of having spoken.

The whole state is plain data (``to_dict``/``from_dict``), for the gateway to persist across
restarts and for a replay to resume; so is each person's (``person_state``/``load_person``), which
is how gateway processes share one picture of a person through a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from policy.detect.addresses import NewAddress
from policy.detect.alarm import Alarm, Finding, Plain
from policy.detect.base import Context, PersonRule
from policy.detect.coverage import Coverage
from policy.detect.dump import Dump
from policy.detect.first_access import FirstAccess
from policy.detect.hours import Hours
from policy.detect.paging import Paging
from policy.detect.probing import Probing
from policy.detect.quota import QuotaThresholds
from policy.detect.repeated import Repeated
from policy.detect.volume import VolumeBaseline
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent
from policy.model import AlarmSettings, Policy

# One state object per person and family, fed in this order (the order alarms of one event come in).
RULES: tuple[type[PersonRule], ...] = (
    QuotaThresholds,
    Probing,
    Dump,
    Paging,
    Coverage,
    VolumeBaseline,
    FirstAccess,
    Hours,
    NewAddress,
    Repeated,  # sees the alarms of the others (``PersonRule.alarm``), so it comes last
)
STATE_VERSION = 1
_PRUNE_FLOOR = 4096  # dedup entries kept before expired ones are swept

R = TypeVar("R", bound=PersonRule)


@dataclass(slots=True)
class _Person:
    day: int  # the local date (ordinal) of the person's latest event
    active: bool  # that day had statements or connections
    days: int  # active days before it
    rules: dict[str, PersonRule]


class Detector:
    """Detection over the event stream of every person (pure: no I/O, no clock).

    ``policy`` gives the settings (its ``alarms`` section) and the hours each person is allowed;
    ``settings`` overrides the policy's. ``table_rows`` (schema.table -> rows) is what coverage is
    measured against; tell the detector again when tables grow (``set_table_rows``). With a policy,
    events of people it does not know (and who have no default role) are ignored, so that failed
    logins with invented names cannot grow the state.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        settings: AlarmSettings | None = None,
        table_rows: Mapping[str, int] | None = None,
    ) -> None:
        self._people: dict[str, _Person] = {}
        self._raised: dict[tuple[str, str, str], float] = {}  # (rule, user, key) -> when
        self._prune_at = _PRUNE_FLOOR
        self._table_rows: Mapping[str, int] = dict(table_rows or {})
        self.update(policy, settings=settings)

    # ------------------------------------------------------------------ configuration

    @property
    def settings(self) -> AlarmSettings:
        return self._settings

    def update(self, policy: Policy | None, *, settings: AlarmSettings | None = None) -> None:
        """Use a new policy (a reload): new thresholds apply from the next event; memory stays."""
        self._policy = policy
        self._settings = settings or (policy.alarms if policy is not None else AlarmSettings())
        self._zone = ZoneInfo(self._settings.timezone)
        self._enabled = {rule.name: rule.enabled(self._settings) for rule in RULES}

    def set_table_rows(self, table_rows: Mapping[str, int]) -> None:
        self._table_rows = dict(table_rows)

    # ------------------------------------------------------------------ events

    def observe_statement(self, ev: StatementEvent) -> list[Alarm]:
        """Alarms raised by one statement event (refused statements included)."""
        return self._observe(ev.user, ev.at, True, lambda rule, ctx: rule.statement(ev, ctx))

    def observe_connection(self, ev: ConnectionEvent) -> list[Alarm]:
        """Alarms raised by one connection attempt (accepted or refused)."""
        return self._observe(ev.user, ev.at, ev.accepted, lambda rule, ctx: rule.connection(ev, ctx))

    def observe_quota(self, usage: QuotaUsage) -> list[Alarm]:
        """Alarms raised by a quota window's new use (after a charge)."""
        return self._observe(usage.user, usage.at, False, lambda rule, ctx: rule.quota(usage, ctx))

    def _observe(
        self, user: str, at: datetime, active: bool, hook: Callable[[PersonRule, Context], list[Finding]]
    ) -> list[Alarm]:
        policy = self._policy
        if policy is not None and user not in policy.users and policy.default_role is None:
            return []
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        local = at.astimezone(self._zone)
        ctx = Context(self._settings, policy, self._table_rows, at.timestamp(), local)
        day = local.date().toordinal()
        person = self._people.get(user)
        if person is None:
            person = self._people[user] = _Person(day, False, 0, {rule.name: rule() for rule in RULES})
        elif day > person.day:
            for rule in person.rules.values():
                if self._enabled[rule.name]:
                    rule.close_day(person.active, ctx)
            person.days += int(person.active)
            person.day, person.active = day, False
        person.active |= active
        findings: list[Finding] = []
        for rule in person.rules.values():
            if self._enabled[rule.name]:
                findings += hook(rule, ctx)
        if not findings:
            return []
        alarms = self._deduplicated(user, at, ctx.at, findings)
        # The raised alarms go back to the rules (escalation); one round, so what that raises is final.
        echoes = [
            echo
            for alarm in alarms
            for rule in person.rules.values()
            if self._enabled[rule.name]
            for echo in rule.alarm(alarm, ctx)
        ]
        return alarms + self._deduplicated(user, at, ctx.at, echoes) if echoes else alarms

    def _deduplicated(self, user: str, at: datetime, now: float, findings: list[Finding]) -> list[Alarm]:
        period = self._settings.dedup.total_seconds()
        out: list[Alarm] = []
        for finding in findings:
            key = (finding.rule, user, finding.key)
            last = self._raised.get(key)
            if last is not None and now - last < period:
                continue
            self._raised[key] = now
            out.append(Alarm.of(finding, user, at))
        if len(self._raised) > self._prune_at:
            self._raised = {k: t for k, t in self._raised.items() if now - t < period}
            self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._raised))
        return out

    # ------------------------------------------------------------------ inspection and state

    def state(self, user: str, rule: type[R]) -> R | None:
        """A person's state for one rule family (for tests, the bench and the admin views)."""
        person = self._people.get(user)
        found = person.rules.get(rule.name) if person is not None else None
        return found if isinstance(found, rule) else None

    def active_days(self, user: str) -> int:
        """Days with activity that have ended, for ``user``."""
        person = self._people.get(user)
        return person.days if person is not None else 0

    def watches(self, user: str) -> bool:
        """Whether events of ``user`` are followed at all (people the policy does not know, and
        who have no default role, are not: invented names must not grow any state)."""
        policy = self._policy
        return policy is None or user in policy.users or policy.default_role is not None

    def person_state(self, user: str) -> dict[str, Plain] | None:
        """One person's state (every rule family's memory and their deduplication entries) as
        JSON-ready data, for a store that several gateway processes share; None for a person
        the detector has not seen. ``load_person`` takes it back."""
        person = self._people.get(user)
        if person is None:
            return None
        return {
            "version": STATE_VERSION,
            "day": person.day,
            "active": person.active,
            "days": person.days,
            "rules": {name: rule.to_dict() for name, rule in person.rules.items()},
            "raised": [[rule, key, at] for (rule, who, key), at in self._raised.items() if who == user],
        }

    def load_person(self, user: str, data: Mapping[str, Any] | None) -> None:
        """Replace what the detector holds about ``user`` by ``person_state``'s data (None: forget
        them). Rule families added since start afresh; raises ValueError for data of another
        state version, and KeyError, TypeError or ValueError for malformed data, leaving the
        person as they were."""
        if data is None:
            self._people.pop(user, None)
            self._raised = {k: t for k, t in self._raised.items() if k[1] != user}
            return
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"person state version {data.get('version')!r}, expected {STATE_VERSION}")
        saved = data.get("rules", {})
        person = _Person(
            day=int(data["day"]),
            active=bool(data["active"]),
            days=int(data["days"]),
            rules={
                rule.name: rule.from_dict(saved[rule.name]) if rule.name in saved else rule()
                for rule in RULES
            },
        )
        raised = {(str(rule), user, str(key)): float(at) for rule, key, at in data.get("raised", [])}
        self._people[user] = person
        self._raised = {k: t for k, t in self._raised.items() if k[1] != user}
        self._raised.update(raised)

    def to_dict(self) -> dict[str, Plain]:
        """The whole state as JSON-ready data."""
        return {
            "version": STATE_VERSION,
            "people": {
                user: {
                    "day": p.day,
                    "active": p.active,
                    "days": p.days,
                    "rules": {name: rule.to_dict() for name, rule in p.rules.items()},
                }
                for user, p in self._people.items()
            },
            "raised": [[rule, user, key, at] for (rule, user, key), at in self._raised.items()],
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        policy: Policy | None = None,
        *,
        settings: AlarmSettings | None = None,
        table_rows: Mapping[str, int] | None = None,
    ) -> Detector:
        """A detector continuing from ``to_dict``'s data. Rule families added since start afresh;
        raises ValueError for data of another state version."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"detector state version {data.get('version')!r}, expected {STATE_VERSION}")
        detector = cls(policy, settings=settings, table_rows=table_rows)
        for user, person in data.get("people", {}).items():
            saved = person.get("rules", {})
            detector._people[str(user)] = _Person(
                day=int(person["day"]),
                active=bool(person["active"]),
                days=int(person["days"]),
                rules={
                    rule.name: rule.from_dict(saved[rule.name]) if rule.name in saved else rule()
                    for rule in RULES
                },
            )
        detector._raised = {(str(r), str(u), str(k)): float(t) for r, u, k, t in data.get("raised", [])}
        return detector
