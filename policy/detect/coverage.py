"""coverage: how much of a protected table one person has seen, over a long window.

The slow drip that no per-day or per-hour limit notices (ten years of a few thousand rows a day)
shows as coverage: the share of the table's distinct rows that have reached one person. Distinct
primary keys (``StatementEvent.keys``, attributed to the first table of ``tables``) are counted in
a HyperLogLog per person and table; the share is the estimate over the table's row count, which
the detector is told (``table_rows``). Two sketches rotate every ``window``: one since the start
of the current window and one since the start of the previous one, which is the one read, so the
count always covers between one and two windows of history. Each level is raised once per window.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, touch
from policy.detect.hll import HyperLogLog, key_hash
from policy.events import StatementEvent
from policy.model import AlarmSettings

_MAX_TABLES = 64  # tables followed per person


@dataclass(slots=True)
class _Cover:
    counted: HyperLogLog  # since ``since``: what coverage reads
    current: HyperLogLog  # since ``epoch``: becomes ``counted`` at the next rotation
    since: float
    epoch: float
    level: float = 0.0  # the highest level raised since ``since``


class Coverage(PersonRule):
    name = "coverage"

    def __init__(self, tables: OrderedDict[str, _Cover] | None = None) -> None:
        self._tables: OrderedDict[str, _Cover] = tables if tables is not None else OrderedDict()

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.coverage.enabled

    def distinct(self, table: str) -> float:
        """The estimated distinct rows of ``table`` this person has seen in the counted window."""
        cover = self._tables.get(table)
        return cover.counted.estimate() if cover is not None else 0.0

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if not ev.allowed or not ev.keys or not ev.tables:
            return []
        table = ev.tables[0]
        rule = ctx.settings.coverage
        cover = self._tables.get(table)
        if cover is None:
            cover = _Cover(HyperLogLog(), HyperLogLog(), since=ctx.at, epoch=ctx.at)
        elif ctx.at - cover.epoch >= rule.window.total_seconds():
            # The previous window falls out of the count; levels already met by what stays are not
            # raised again.
            cover.counted, cover.current = cover.current, HyperLogLog()
            cover.since, cover.epoch = cover.epoch, ctx.at
            cover.level = self._level(cover, table, ctx)[0]
        touch(self._tables, table, cover, _MAX_TABLES)
        for key in ev.keys:
            hashed = key_hash(key)
            cover.counted.add_hash(hashed)
            cover.current.add_hash(hashed)
        level, severity, percent = self._level(cover, table, ctx)
        if level <= cover.level:
            return []
        cover.level = level
        distinct = round(cover.counted.estimate())
        rows = ctx.table_rows[table]
        since = datetime.fromtimestamp(cover.since, UTC)
        return [
            Finding(
                rule=self.name,
                severity=severity,
                key=f"{table}:{level:g}",
                summary=f"{ev.user} has seen about {percent:.0f}% of {table} ({distinct} of {rows} rows) "
                f"since {since:%Y-%m-%d}",
                action="No one's work needs a large share of all customers; review what this person has "
                "read over the period and whether their access should continue.",
                evidence={
                    "table": table,
                    "distinct_rows": distinct,
                    "table_rows": rows,
                    "percent": round(percent, 1),
                    "level": level,
                    "since": since.isoformat(),
                    "window_days": round(rule.window.total_seconds() / 86400, 1),
                },
            )
        ]

    @staticmethod
    def _level(cover: _Cover, table: str, ctx: Context) -> tuple[float, str, float]:
        """The highest level the count meets, its severity, and the share in percent."""
        rows = ctx.table_rows.get(table)
        distinct = cover.counted.estimate()
        if not rows or distinct < ctx.settings.coverage.min_rows:
            return 0.0, "", 0.0
        percent = 100.0 * distinct / rows
        met = [(level, severity) for level, severity in ctx.settings.coverage.levels if percent >= level]
        return (*met[-1], percent) if met else (0.0, "", percent)

    def to_dict(self) -> dict[str, Plain]:
        return {
            "tables": [
                [t, c.counted.to_text(), c.current.to_text(), c.since, c.epoch, c.level]
                for t, c in self._tables.items()
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        tables: OrderedDict[str, _Cover] = OrderedDict()
        for table, counted, current, since, epoch, level in data.get("tables", []):
            tables[str(table)] = _Cover(
                HyperLogLog.from_text(counted),
                HyperLogLog.from_text(current),
                float(since),
                float(epoch),
                float(level),
            )
        return cls(tables)
