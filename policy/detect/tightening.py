"""Automatic tightening: what a person's alarms do to their limits, per the policy's ``on_alarm``.

Each ``on_alarm`` entry applies to alarms of its severity or higher (and of its rules, when it
names some) for its duration from the alarm. While several apply, the strictest wins: the smallest
row cap, suspension if any suspends, until the last of them ends. The gateway merges the result
into the person's permissions (``tighten``) and refuses every statement of a suspended person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from policy.detect.alarm import Alarm
from policy.model import AlarmSettings
from policy.permissions import Permissions


@dataclass(frozen=True, slots=True)
class Tightening:
    max_rows: int | None  # rows per statement; None: the permissions' own cap
    suspend: bool  # no statements at all
    until: datetime  # when the last of the effects behind it ends
    alarms: tuple[str, ...] = ()  # ids of the alarms behind it, for the refusal message and the audit


def tightening_for(
    user: str, alarms: Iterable[Alarm], settings: AlarmSettings, now: datetime
) -> Tightening | None:
    """The tightening in force for ``user`` at ``now`` from ``alarms`` (any people's; others are
    skipped), or None when no ``on_alarm`` entry applies."""
    max_rows: int | None = None
    suspend = False
    until: datetime | None = None
    behind: list[str] = []
    for alarm in alarms:
        if alarm.user != user:
            continue
        for entry in settings.on_alarm:
            if not alarm.at_least(entry.severity) or (entry.rules and alarm.rule not in entry.rules):
                continue
            ends = alarm.at + entry.duration
            if not alarm.at <= now < ends:
                continue
            if entry.max_rows is not None:
                max_rows = entry.max_rows if max_rows is None else min(max_rows, entry.max_rows)
            suspend |= entry.suspend
            until = ends if until is None else max(until, ends)
            if alarm.id not in behind:
                behind.append(alarm.id)
    if until is None:
        return None
    return Tightening(max_rows=max_rows, suspend=suspend, until=until, alarms=tuple(behind))


def tighten(permissions: Permissions, tightening: Tightening | None) -> Permissions:
    """``permissions`` with the tightening's row cap merged in (the smallest cap wins, as between
    roles). Suspension is not a permission: the gateway refuses a suspended person's statements."""
    if tightening is None or tightening.max_rows is None:
        return permissions
    cap = tightening.max_rows
    current = permissions.max_rows
    return dataclasses.replace(permissions, max_rows=cap if current is None else min(current, cap))
