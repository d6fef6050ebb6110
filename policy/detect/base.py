"""What every detection rule receives, and the shape of a rule: one object per person and rule family
holding that person's memory, fed each event in time order, serializable to plain data."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

from policy.detect.alarm import Alarm, Finding, Plain
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent
from policy.model import AlarmSettings, Policy

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Context:
    settings: AlarmSettings
    policy: Policy | None  # for the hours the policy allows; None: no allowed-hours alarms
    table_rows: Mapping[str, int]  # schema.table -> rows, for coverage
    at: float  # the event's time, POSIX seconds
    local: datetime  # the event's time in the alarms' time zone


class PersonRule:
    """One rule family's memory of one person.

    The detector makes one per person and family (``RULES`` in ``policy.detect.detector``), calls
    the hook for each event of that person in time order, and ``close_day`` when the person's
    local day changes (``active``: the closed day had statements or connections), and ``alarm``
    with each alarm raised about the person by the other rules. Hooks return
    findings; the detector turns them into alarms and drops repeats. Work per event must stay
    O(1)-ish and state bounded: a month of a busy person replays in seconds.
    """

    name: ClassVar[str]

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        raise NotImplementedError

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        return []

    def connection(self, ev: ConnectionEvent, ctx: Context) -> list[Finding]:
        return []

    def quota(self, usage: QuotaUsage, ctx: Context) -> list[Finding]:
        return []

    def alarm(self, alarm: Alarm, ctx: Context) -> list[Finding]:
        """An alarm the detector has just raised about this person (for escalation rules)."""
        return []

    def close_day(self, active: bool, ctx: Context) -> None:
        return None

    def to_dict(self) -> dict[str, Plain]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        raise NotImplementedError


def ewma_weight(days: int, memory_days: int) -> float:
    """The weight of the newest of ``days`` days: a plain mean while there are fewer days than the
    memory, then exponential forgetting, so early baselines are not dominated by the first day."""
    return max(1.0 / max(days, 1), 2.0 / (memory_days + 1))


def touch(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put ``key`` last (most recent) in a bounded LRU table, forgetting the oldest beyond ``limit``."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)
