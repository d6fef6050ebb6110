"""Automatic tightening: what a person's alarms do to their limits, per the policy's ``on_alarm``.

Each ``on_alarm`` entry applies to alarms of its severity or higher (and of its rules, when it
names some) for its duration from the alarm, or, for ``for: until_cleared``, until a second person
records a clearance. While several apply, the strictest wins: the smallest row cap, suspension if
any suspends, until the last of them ends (never, while one lasts until cleared). The gateway
merges the result into the person's permissions (``tighten``) and refuses every statement of a
suspended person.

An alarm is forgotten by the gateway after a while, and a restart forgets them all, but a hold
until cleared must outlast both: ``Holds`` keeps the alarms behind each hold and the clearances,
as plain data the gateway persists. A clearance is data too (who, when, whom, why); it lifts
whatever the alarms raised up to it did to the person, and nobody may clear themselves.

Where several processes share holds (through the gateway's detection store), each keeps a
``Holds`` as its copy and ``adopt``s the shared picture: a hold or clearance that only the copy
has is one the store has not taken yet (or lost), so it is kept and written back, never dropped,
and a store that lost its data cannot free anyone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policy.detect.alarm import Alarm, Plain
from policy.model import AlarmSettings, OnAlarm
from policy.permissions import Permissions

HELD_ALARMS = 64  # alarms kept per held person (the earliest ones: what started the hold)
_CLEARANCES = 1000  # clearances kept for the record (the audit log has every one)


@dataclass(frozen=True, slots=True)
class Tightening:
    max_rows: int | None  # rows per statement; None: the permissions' own cap
    suspend: bool  # no statements at all
    until: datetime | None  # when the last of the effects behind it ends; None: until cleared
    alarms: tuple[str, ...] = ()  # ids of the alarms behind it, for the refusal message and the audit

    def lapsed(self, now: datetime) -> bool:
        return self.until is not None and now >= self.until

    def describe_until(self) -> str:
        """For messages: a time, or who ends it."""
        if self.until is None:
            return "a compliance reviewer clears them"
        return self.until.strftime("%Y-%m-%d %H:%M UTC")


class ClearanceRefused(ValueError):
    """A clearance that may not be recorded (``code`` says why, for the console and the API)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Clearance:
    """A second person's decision that ``user`` may work again after review."""

    user: str  # whose hold (and tightening) is lifted
    by: str  # who cleared: never ``user``
    at: datetime
    reason: str

    def to_dict(self) -> dict[str, Plain]:
        return {"user": self.user, "by": self.by, "at": self.at.isoformat(), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Clearance:
        return cls(
            str(data["user"]), str(data["by"]), datetime.fromisoformat(str(data["at"])), str(data["reason"])
        )


@dataclass(frozen=True, slots=True)
class Resync:
    """What ``Holds.adopt`` found: whose hold or clearance changed (their tightening must be worked
    out again), and what the copy had that the shared picture lacks (to be written back)."""

    changed: frozenset[str]
    unshared_holds: dict[str, list[Alarm]] = field(default_factory=dict)
    unshared_clearances: list[Clearance] = field(default_factory=list)


def _applies(entry: OnAlarm, alarm: Alarm) -> bool:
    return alarm.at_least(entry.severity) and (not entry.rules or alarm.rule in entry.rules)


class Holds:
    """Who is held until cleared (the alarms that did it) and the clearances recorded.

    ``note`` the alarms as they are raised; ``clear`` records a clearance. Pure and plain data
    (``to_dict``/``from_dict``): the gateway keeps it across restarts, the simulation in memory.
    """

    def __init__(
        self, held: dict[str, list[Alarm]] | None = None, clearances: list[Clearance] | None = None
    ) -> None:
        self._held: dict[str, list[Alarm]] = held if held is not None else {}
        self._clearances: list[Clearance] = clearances if clearances is not None else []
        self._cleared: dict[str, datetime] = {}
        for clearance in self._clearances:
            self._cleared[clearance.user] = max(clearance.at, self._cleared.get(clearance.user, clearance.at))

    def note(self, alarms: Iterable[Alarm], settings: AlarmSettings) -> list[str]:
        """Hold the people whose alarms meet an ``until_cleared`` entry; who was newly held."""
        entries = [entry for entry in settings.on_alarm if entry.until_cleared]
        newly: list[str] = []
        for alarm in alarms:
            if not any(_applies(entry, alarm) for entry in entries):
                continue
            cleared = self._cleared.get(alarm.user)
            if cleared is not None and alarm.at <= cleared:
                continue
            held = self._held.setdefault(alarm.user, [])
            if not held:
                newly.append(alarm.user)
            if len(held) < HELD_ALARMS and all(a.id != alarm.id for a in held):
                held.append(alarm)
        return newly

    def held(self, user: str) -> tuple[Alarm, ...]:
        """The alarms holding ``user`` until cleared (empty: not held)."""
        return tuple(self._held.get(user, ()))

    def people(self) -> list[str]:
        return sorted(self._held)

    def cleared_at(self, user: str) -> datetime | None:
        """The latest clearance of ``user``: alarms up to it no longer tighten them."""
        return self._cleared.get(user)

    @property
    def clearances(self) -> tuple[Clearance, ...]:
        return tuple(self._clearances)

    def check(self, clearance: Clearance) -> None:
        """Raise ClearanceRefused when ``clearance`` may not be recorded: the clearer is the person,
        the reason is empty, or a later clearance of the person is already recorded."""
        if clearance.by == clearance.user:
            raise ClearanceRefused("self_clearance", f"{clearance.by} may not clear themselves")
        if not clearance.reason.strip():
            raise ClearanceRefused("no_reason", "a clearance needs a reason, for the record")
        last = self._cleared.get(clearance.user)
        if last is not None and clearance.at < last:
            raise ClearanceRefused(
                "out_of_order", f"{clearance.user} was already cleared at {last.isoformat()}"
            )

    def clear(self, clearance: Clearance) -> None:
        """Record ``clearance`` (raises ClearanceRefused as ``check`` does): the alarms up to it
        no longer hold the person."""
        self.check(clearance)
        held = [a for a in self._held.get(clearance.user, ()) if a.at > clearance.at]
        if held:
            self._held[clearance.user] = held
        else:
            self._held.pop(clearance.user, None)
        self._cleared[clearance.user] = clearance.at
        self._clearances.append(clearance)
        del self._clearances[:-_CLEARANCES]

    def latest_clearances(self) -> dict[str, Clearance]:
        """Each cleared person's latest clearance."""
        latest: dict[str, Clearance] = {}
        for clearance in self._clearances:
            if clearance.user not in latest or clearance.at >= latest[clearance.user].at:
                latest[clearance.user] = clearance
        return latest

    def adopt(self, shared: Holds, pending: Mapping[str, Sequence[Alarm]] | None = None) -> Resync:
        """Become ``shared`` (the picture every process shares) plus what it lacks: the alarms in
        ``pending`` (noted here, not written yet), the holds of people it does not hold at all
        (less the alarms up to their latest clearance), and clearances later than its own. Keeps
        the latest clearance per person. Returns who changed and what ``shared`` lacked besides
        ``pending``, to be written back."""
        before = {user: {a.id for a in alarms} for user, alarms in self._held.items()}
        before_cleared = dict(self._cleared)
        latest = shared.latest_clearances()
        unshared_clearances: list[Clearance] = []
        for user, clearance in self.latest_clearances().items():
            known = latest.get(user)
            if known is None or clearance.at > known.at:
                latest[user] = clearance
                unshared_clearances.append(clearance)
        cleared = {user: c.at for user, c in latest.items()}

        def standing(alarm: Alarm) -> bool:
            at = cleared.get(alarm.user)
            return at is None or alarm.at > at

        held = {user: [a for a in alarms if standing(a)] for user, alarms in shared._held.items()}
        unshared_holds: dict[str, list[Alarm]] = {}
        for user, alarms in self._held.items():
            if user not in shared._held and (kept := [a for a in alarms if standing(a)]):
                held[user] = unshared_holds[user] = kept
        for user, noted in (pending or {}).items():
            mine = held.setdefault(user, [])
            for alarm in noted:
                if standing(alarm) and len(mine) < HELD_ALARMS and all(a.id != alarm.id for a in mine):
                    mine.append(alarm)
        self._held = {user: sorted(alarms, key=lambda a: a.at) for user, alarms in held.items() if alarms}
        self._clearances = sorted(latest.values(), key=lambda c: c.at)
        self._cleared = cleared
        after = {user: {a.id for a in alarms} for user, alarms in self._held.items()}
        changed = {u for u in before.keys() | after.keys() if before.get(u) != after.get(u)}
        changed |= {
            u for u in before_cleared.keys() | cleared.keys() if before_cleared.get(u) != cleared.get(u)
        }
        return Resync(frozenset(changed), unshared_holds, unshared_clearances)

    def to_dict(self) -> dict[str, Plain]:
        return {
            "held": {user: [a.to_dict() for a in alarms] for user, alarms in self._held.items()},
            "clearances": [c.to_dict() for c in self._clearances],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Holds:
        held = {
            str(user): [Alarm.from_dict(a) for a in alarms] for user, alarms in data.get("held", {}).items()
        }
        return cls(held, [Clearance.from_dict(c) for c in data.get("clearances", [])])


def tightening_for(
    user: str, alarms: Iterable[Alarm], settings: AlarmSettings, now: datetime, holds: Holds | None = None
) -> Tightening | None:
    """The tightening in force for ``user`` at ``now`` from ``alarms`` (any people's; others are
    skipped) and from what ``holds`` keeps of them, or None when no ``on_alarm`` entry applies.
    Alarms at or before the person's latest clearance in ``holds`` count for nothing."""
    max_rows: int | None = None
    suspend = False
    until: datetime | None = None
    forever = False
    behind: list[str] = []
    cleared = holds.cleared_at(user) if holds is not None else None
    held = holds.held(user) if holds is not None else ()
    for alarm in (*held, *alarms):
        if alarm.user != user or (cleared is not None and alarm.at <= cleared):
            continue
        for entry in settings.on_alarm:
            if not _applies(entry, alarm) or alarm.at > now:
                continue
            if entry.until_cleared:
                forever = True
            else:
                ends = alarm.at + entry.duration
                if now >= ends:
                    continue
                until = ends if until is None else max(until, ends)
            if entry.max_rows is not None:
                max_rows = entry.max_rows if max_rows is None else min(max_rows, entry.max_rows)
            suspend |= entry.suspend
            if alarm.id not in behind:
                behind.append(alarm.id)
    if until is None and not forever:
        return None
    return Tightening(
        max_rows=max_rows, suspend=suspend, until=None if forever else until, alarms=tuple(behind)
    )


def tighten(permissions: Permissions, tightening: Tightening | None) -> Permissions:
    """``permissions`` with the tightening's row cap merged in (the smallest cap wins, as between
    roles). Suspension is not a permission: the gateway refuses a suspended person's statements."""
    if tightening is None or tightening.max_rows is None:
        return permissions
    cap = tightening.max_rows
    current = permissions.max_rows
    return dataclasses.replace(permissions, max_rows=cap if current is None else min(current, cap))
