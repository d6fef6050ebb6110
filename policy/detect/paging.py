"""paging and cursor_paging: reading a protected table page by page.

A page is a statement of the same shape (fingerprint) as the last one, by the same person, that
moves on from where the last one ended. Moving on is seen two ways, so that both plain and
parameterized statements are caught:

- the literals: the values where the fingerprint has ``$n`` are read back from the client's text,
  and a value compared with ``>``, ``>=``, ``<``, ``<=`` or ``BETWEEN``, or given to ``OFFSET``,
  that keeps moving the same way is a keyset or OFFSET loop (``WHERE id > 4200 ORDER BY id LIMIT
  100``, then ``> 4300``, ...);
- the keys: when the statement is paging-shaped (a range comparison, or ORDER BY with LIMIT) and the
  sampled primary keys of this page all lie beyond those of the last page (a parameterized
  ``WHERE id > $1`` whose values the text does not show).

Lookups by equality (``WHERE id = 7``, then ``= 9``) are not pages, whatever their order. A run of
pages ends at a page that does not move on, or after ``max_gap`` without one. FETCH loops are runs
of FETCHes (or resumed portals) that return rows from one cursor. A run alarms at ``pages`` pages,
or at ``rows`` rows over three pages or more, once per run.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, touch
from policy.events import StatementEvent
from policy.model import AlarmSettings

Value = float | str
_MAX_RUNS = 64  # statement shapes and cursors followed per person
_MAX_TEXT = 8192  # longer client texts are not matched against their fingerprint (bounded work)
_MAX_PLACEHOLDERS = 32
_MIN_PAGES_FOR_ROWS = 3  # the rows threshold needs a loop, not one big read

_PLACEHOLDER = re.compile(r"(?<![\w$])\$(\d+)")
# What precedes a placeholder that pages move on: a range comparison (not <> or !=), OFFSET, BETWEEN.
_ADVANCING = re.compile(r"(?:(?<![<>!=])[<>]=?|\bOFFSET|\bBETWEEN)\s*\(?\s*$", re.IGNORECASE)
_ORDERED = re.compile(r"\bORDER\s+BY\b", re.IGNORECASE)
_LIMITED = re.compile(r"\b(?:LIMIT|FETCH\s+(?:FIRST|NEXT))\b", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a fingerprint says about paging: how to read its literals back, and which ones page."""

    pattern: re.Pattern[str] | None  # captures the literals in text order
    advancing: tuple[int, ...]  # indices (text order) of the placeholders pages move on
    keyset: bool  # ordered and limited: pages can be told by their keys

    @property
    def pages(self) -> bool:
        return bool(self.advancing) or self.keyset


@functools.lru_cache(maxsize=2048)
def shape_of(fingerprint: str) -> Shape | None:
    """The paging shape of a fingerprint, or None if statements of this shape cannot be pages."""
    parts = _PLACEHOLDER.split(fingerprint)
    texts = parts[0::2]  # the text around the placeholders
    count = len(texts) - 1
    advancing = tuple(i for i in range(count) if _ADVANCING.search(texts[i]))
    keyset = bool(_ORDERED.search(fingerprint) and _LIMITED.search(fingerprint))
    if not advancing and not keyset:
        return None
    pattern = None
    if 0 < count <= _MAX_PLACEHOLDERS:
        pattern = re.compile("(.+?)".join(_loose(text) for text in texts), re.DOTALL)
    return Shape(pattern, advancing, keyset)


def literal_values(sql: str, shape: Shape) -> tuple[Value | None, ...]:
    """The values of the shape's advancing placeholders in ``sql`` (None where unreadable)."""
    if shape.pattern is None or not shape.advancing or len(sql) > _MAX_TEXT:
        return ()
    match = shape.pattern.fullmatch(sql)
    if match is None:
        return ()
    return tuple(_value(match.group(i + 1)) for i in shape.advancing)


def _loose(text: str) -> str:
    """``text`` as a pattern in which any run of white space matches any other."""
    return r"\s+".join(re.escape(word) for word in re.split(r"\s+", text))


def _value(text: str) -> Value | None:
    text = text.strip()
    if _NUMBER.fullmatch(text) and math.isfinite(number := float(text)):
        return number
    quoted = text[1:] if text[:1] in ("E", "e") else text
    if len(quoted) >= 2 and quoted[0] == quoted[-1] == "'":
        return quoted[1:-1].replace("''", "'")
    return text if text and not text.startswith("$") else None


def _direction(old: Sequence[Value | None], new: Sequence[Value | None]) -> int:
    """+1 or -1 when every comparable value that moved moved that way, else 0."""
    signs = set()
    for before, after in zip(old, new, strict=False):
        if before is None or after is None or type(before) is not type(after) or before == after:
            continue
        signs.add(1 if after > before else -1)  # type: ignore[operator]  # same type, checked above
    return signs.pop() if len(signs) == 1 else 0


def _key_range(keys: Sequence[str]) -> tuple[Value, Value] | None:
    if not keys:
        return None
    if all(_NUMBER.fullmatch(k) for k in keys):
        numbers = [float(k) for k in keys]
        if all(math.isfinite(n) for n in numbers):
            return min(numbers), max(numbers)
    return min(keys), max(keys)


@dataclass(slots=True)
class _Run:
    started: float
    last: float
    values: tuple[Value | None, ...]
    keys: tuple[Value, Value] | None
    direction: int = 0
    pages: int = 1
    rows: int = 0
    alarmed: bool = False

    def to_list(self) -> list[Plain]:
        return [
            self.started,
            self.last,
            list(self.values),
            list(self.keys) if self.keys else None,
            self.direction,
            self.pages,
            self.rows,
            self.alarmed,
        ]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> _Run:
        started, last, values, keys, direction, pages, rows, alarmed = data
        return cls(
            float(started),
            float(last),
            tuple(values),
            (keys[0], keys[1]) if keys else None,
            int(direction),
            int(pages),
            int(rows),
            bool(alarmed),
        )


def _moved(run: _Run, values: tuple[Value | None, ...], keys: tuple[Value, Value] | None) -> int:
    step = _direction(run.values, values)
    if step:
        return step
    if keys is not None and run.keys is not None and type(keys[0]) is type(run.keys[0]):
        if keys[0] > run.keys[1]:  # type: ignore[operator]  # same type, checked above
            return 1
        if keys[1] < run.keys[0]:  # type: ignore[operator]
            return -1
    return 0


class Paging(PersonRule):
    name = "paging"

    def __init__(
        self, shapes: OrderedDict[str, _Run] | None = None, cursors: OrderedDict[str, _Run] | None = None
    ) -> None:
        self._shapes: OrderedDict[str, _Run] = shapes if shapes is not None else OrderedDict()
        self._cursors: OrderedDict[str, _Run] = cursors if cursors is not None else OrderedDict()

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.paging.enabled

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if not ev.allowed or not (ev.tables or ev.protected_rows):
            return []
        if ev.cursor:
            return self._fetch(ev, ctx)
        shape = shape_of(ev.fingerprint)
        if shape is None:
            return []
        values = literal_values(ev.sql, shape)
        keys = _key_range(ev.keys)
        key = _digest(ev.fingerprint)
        run = self._shapes.get(key)
        gap = ctx.settings.paging.max_gap.total_seconds()
        step = 0 if run is None or ctx.at - run.last > gap else _moved(run, values, keys)
        if run is None or not step or (run.direction and step != run.direction):
            run = _Run(started=ctx.at, last=ctx.at, values=values, keys=keys, rows=ev.rows)
        else:
            run.pages += 1
            run.rows += ev.rows
            run.direction = step
            run.last, run.values, run.keys = ctx.at, values, keys
        touch(self._shapes, key, run, _MAX_RUNS)
        if not self._due(run, ctx):
            return []
        how = "OFFSET" if any(_is_offset(ev.fingerprint, i) for i in shape.advancing) else "keyset"
        return [
            self._finding(
                "paging",
                key,
                f"{ev.user} is paging through {', '.join(ev.tables) or 'protected rows'} with one "
                f"statement ({how}, {run.pages} pages, {run.rows} rows)",
                ev=ev,
                run=run,
                ctx=ctx,
                statement=ev.fingerprint[:500],
                last_values=[_plain(v) for v in values],
                how=how,
            )
        ]

    def _fetch(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        if ev.rows <= 0:
            return []
        key = f"{ev.session}/{ev.cursor}"
        run = self._cursors.get(key)
        if run is None or ctx.at - run.last > ctx.settings.paging.max_gap.total_seconds():
            run = _Run(started=ctx.at, last=ctx.at, values=(), keys=None, rows=ev.rows)
        else:
            run.pages += 1
            run.rows += ev.rows
            run.last = ctx.at
        touch(self._cursors, key, run, _MAX_RUNS)
        if not self._due(run, ctx):
            return []
        return [
            self._finding(
                "cursor_paging",
                _digest(key),
                f"{ev.user} is fetching {', '.join(ev.tables) or 'protected rows'} through cursor "
                f"{ev.cursor} page by page ({run.pages} fetches, {run.rows} rows)",
                ev=ev,
                run=run,
                ctx=ctx,
                cursor=ev.cursor,
                statement=ev.fingerprint[:500],
            )
        ]

    @staticmethod
    def _due(run: _Run, ctx: Context) -> bool:
        rule = ctx.settings.paging
        due = run.pages >= rule.pages or (run.pages >= _MIN_PAGES_FOR_ROWS and run.rows >= rule.rows)
        if not due or run.alarmed:
            return False
        run.alarmed = True
        return True

    @staticmethod
    def _finding(
        rule: str, key: str, summary: str, *, ev: StatementEvent, run: _Run, ctx: Context, **extra: Plain
    ) -> Finding:
        return Finding(
            rule=rule,
            severity=ctx.settings.paging.severity,
            key=key,
            summary=summary,
            action="Sequential reading of a protected table is how bulk copies evade row caps; ask the "
            "person what the work needs, and suspend the account if nobody can say.",
            evidence={
                "tables": list(ev.tables),
                "session": ev.session,
                "pages": run.pages,
                "rows": run.rows,
                "seconds": round(run.last - run.started, 1),
                "application_name": ev.application_name,
                **extra,
            },
        )

    def close_day(self, active: bool, ctx: Context) -> None:
        # Runs older than the gap can never continue: forget them, so idle state does not pile up.
        horizon = ctx.at - ctx.settings.paging.max_gap.total_seconds()
        for table in (self._shapes, self._cursors):
            for key in [k for k, run in table.items() if run.last < horizon]:
                del table[key]

    def to_dict(self) -> dict[str, Plain]:
        return {
            "shapes": [[k, run.to_list()] for k, run in self._shapes.items()],
            "cursors": [[k, run.to_list()] for k, run in self._cursors.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        shapes = OrderedDict((str(k), _Run.from_list(v)) for k, v in data.get("shapes", []))
        cursors = OrderedDict((str(k), _Run.from_list(v)) for k, v in data.get("cursors", []))
        return cls(shapes, cursors)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _is_offset(fingerprint: str, index: int) -> bool:
    before = _PLACEHOLDER.split(fingerprint)[2 * index]
    return bool(re.search(r"\bOFFSET\s*\(?\s*$", before, re.IGNORECASE))


def _plain(value: Value | None) -> Plain:
    return int(value) if isinstance(value, float) and value.is_integer() else value
