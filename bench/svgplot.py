"""A small line chart as SVG text, written by hand: enough for bench figures, no plotting dependency.

``line_chart`` draws series as step-free polylines over linear axes with round-number ticks, point
markers (circle, triangle, square, diamond) with a hover title, and a legend. Output is plain
SVG 1.1 that browsers and GitHub render as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

FONT = "font-family='Helvetica, Arial, sans-serif'"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str
    dash: str | None = None  # an SVG stroke-dasharray, e.g. "6 4"
    width: float = 2.0


@dataclass(frozen=True, slots=True)
class Marker:
    x: float
    y: float
    color: str
    shape: str = "circle"  # circle, triangle, square or diamond
    title: str = ""  # shown on hover


@dataclass(frozen=True, slots=True)
class Legend:
    """A legend entry that is not a series (a marker shape, a shaded band)."""

    label: str
    color: str
    shape: str = "circle"


@dataclass(slots=True)
class _Frame:
    left: float
    top: float
    width: float
    height: float
    x0: float
    x1: float
    y0: float
    y1: float
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.width

    def py(self, y: float) -> float:
        return self.top + self.height - (y - self.y0) / (self.y1 - self.y0) * self.height

    def open(self, width: int, height: int, title: str, notes: Sequence[str]) -> list[str]:
        """Start the drawing: the SVG element, a white page, the title and the notes under it;
        the list of parts to go on appending to."""
        out = self.parts
        out.append(
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>"
        )
        out.append(f"<rect width='{width}' height='{height}' fill='white'/>")
        out.append(f"<text x='{self.left}' y='26' font-size='16' font-weight='bold'>{escape(title)}</text>")
        for i, note in enumerate(notes):
            out.append(f"<text x='{self.left}' y='{44 + 16 * i}' fill='#555'>{escape(note)}</text>")
        return out


def ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``low``..``high``."""
    span = max(high - low, 1e-9)
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    out = [round(first, 10)]
    while out[-1] < high - step * 1e-6:
        out.append(round(out[-1] + step, 10))
    return out


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1 or value == 0 else f"{value:g}"


def _shape(shape: str, x: float, y: float, color: str, size: float = 5.0) -> str:
    style = f"fill='{color}' stroke='white' stroke-width='1'"
    if shape == "triangle":
        points = (
            f"{x:.1f},{y - size:.1f} {x - size:.1f},{y + size * 0.8:.1f} {x + size:.1f},{y + size * 0.8:.1f}"
        )
        return f"<polygon points='{points}' {style}/>"
    if shape == "square":
        side = size * 1.6
        corner = f"x='{x - side / 2:.1f}' y='{y - side / 2:.1f}'"
        return f"<rect {corner} width='{side:.1f}' height='{side:.1f}' {style}/>"
    if shape == "diamond":
        points = (
            f"{x:.1f},{y - size:.1f} {x + size:.1f},{y:.1f} {x:.1f},{y + size:.1f} {x - size:.1f},{y:.1f}"
        )
        return f"<polygon points='{points}' {style}/>"
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{size * 0.8:.1f}' {style}/>"


def line_chart(
    series: Sequence[Series],
    markers: Sequence[Marker] = (),
    *,
    title: str,
    x_label: str,
    y_label: str,
    legend: Sequence[Legend] = (),
    notes: Sequence[str] = (),
    bands: Sequence[tuple[float, float]] = (),
    x_max: float | None = None,
    width: int = 960,
    height: int = 560,
) -> str:
    """The chart as SVG text. Axes start at zero unless data go below, and reach ``x_max`` at least;
    ``bands`` are x ranges shaded grey (weekends, say); ``notes`` are small lines under the title
    (what the run was, how to read it)."""
    xs = [x for s in series for x, _ in s.points] + [m.x for m in markers]
    ys = [y for s in series for _, y in s.points] + [m.y for m in markers]
    x_ticks = ticks(min([0.0, *xs]), max([1.0, *xs, *([x_max] if x_max is not None else [])]))
    y_ticks = ticks(min([0.0, *ys]), max([1.0, *ys]) * 1.05)
    top = 48 + 16 * len(notes)
    frame = _Frame(
        left=84,
        top=top,
        width=width - 84 - 250,
        height=height - top - 56,
        x0=x_ticks[0],
        x1=x_ticks[-1],
        y0=y_ticks[0],
        y1=y_ticks[-1],
    )
    out = frame.open(width, height, title, notes)
    bottom = frame.top + frame.height
    for x0, x1 in bands:
        left, right = frame.px(max(x0, frame.x0)), frame.px(min(x1, frame.x1))
        if right > left:
            out.append(
                f"<rect x='{left:.1f}' y='{frame.top}' width='{right - left:.1f}' "
                f"height='{frame.height}' fill='#f3f3f3'/>"
            )
    for value in x_ticks:
        x = frame.px(value)
        out.append(f"<line x1='{x:.1f}' y1='{frame.top}' x2='{x:.1f}' y2='{bottom}' stroke='#eee'/>")
        out.append(f"<text x='{x:.1f}' y='{bottom + 16}' text-anchor='middle'>{_number(value)}</text>")
    for value in y_ticks:
        y = frame.py(value)
        right = frame.left + frame.width
        out.append(f"<line x1='{frame.left}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(f"<text x='{frame.left - 6}' y='{y + 4:.1f}' text-anchor='end'>{_number(value)}</text>")
    out.append(
        f"<rect x='{frame.left}' y='{frame.top}' width='{frame.width}' height='{frame.height}' "
        "fill='none' stroke='#888'/>"
    )
    out.append(
        f"<text x='{frame.left + frame.width / 2:.1f}' y='{height - 14}' text-anchor='middle'>"
        f"{escape(x_label)}</text>"
    )
    mid = frame.top + frame.height / 2
    out.append(
        f"<text x='18' y='{mid:.1f}' text-anchor='middle' transform='rotate(-90 18 {mid:.1f})'>"
        f"{escape(y_label)}</text>"
    )
    for s in reversed(series):  # the first series is drawn last, on top
        points = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in s.points)
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        out.append(
            f"<polyline points='{points}' fill='none' stroke='{s.color}' stroke-width='{s.width}'"
            f" stroke-linejoin='round'{dash}><title>{escape(s.name)}</title></polyline>"
        )
    for m in markers:
        shape = _shape(m.shape, frame.px(m.x), frame.py(m.y), m.color)
        out.append(f"<g>{shape}<title>{escape(m.title)}</title></g>" if m.title else shape)
    lx = frame.left + frame.width + 20
    ly = frame.top + 8
    for i, s in enumerate(series):
        y = ly + 20 * i
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        out.append(
            f"<line x1='{lx}' y1='{y}' x2='{lx + 28}' y2='{y}' stroke='{s.color}' "
            f"stroke-width='{s.width}'{dash}/>"
        )
        out.append(f"<text x='{lx + 36}' y='{y + 4}'>{escape(s.name)}</text>")
    for j, entry in enumerate(legend):
        y = ly + 20 * (len(series) + j) + 8
        out.append(_shape(entry.shape, lx + 14, y, entry.color))
        out.append(f"<text x='{lx + 36}' y='{y + 4}'>{escape(entry.label)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_chart(
    groups: Sequence[tuple[str, Sequence[tuple[str, float, str]]]],
    *,
    title: str,
    y_label: str,
    references: Sequence[tuple[float, str]] = (),
    legend: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    height: int = 520,
) -> str:
    """Grouped vertical bars as SVG text: ``groups`` are (label, [(name, value, color), ...]);
    ``references`` are horizontal dashed lines (value, label), e.g. a target ratio; ``legend`` is
    (label, color). The value axis starts at zero; each bar has its value on hover and on top."""
    bars_total = sum(len(bars) for _, bars in groups)
    bar, gap = 14.0, 18.0
    plot_width = max(360.0, bars_total * bar + len(groups) * gap + gap)
    width = int(84 + plot_width + 250)
    values = [v for _, bars in groups for _, v, _ in bars] + [r for r, _ in references]
    y_ticks = ticks(0.0, max([1.0, *values]) * 1.08)
    top = 48 + 16 * len(notes)
    frame = _Frame(84, top, plot_width, height - top - 72, 0.0, 1.0, y_ticks[0], y_ticks[-1])
    out = frame.open(width, height, title, notes)
    right = frame.left + frame.width
    bottom = frame.top + frame.height
    for value in y_ticks:
        y = frame.py(value)
        out.append(f"<line x1='{frame.left}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(f"<text x='{frame.left - 6}' y='{y + 4:.1f}' text-anchor='end'>{value:g}</text>")
    x = frame.left + gap
    for label, bars in groups:
        start = x
        for name, value, color in bars:
            y = frame.py(value)
            out.append(
                f"<g><rect x='{x:.1f}' y='{y:.1f}' width='{bar:.1f}' height='{bottom - y:.1f}' "
                f"fill='{color}'/><title>{escape(f'{label}, {name}: {value:.2f}')}</title></g>"
            )
            out.append(
                f"<text x='{x + bar / 2:.1f}' y='{y - 3:.1f}' text-anchor='middle' font-size='8'>"
                f"{value:.2f}</text>"
            )
            x += bar
        middle = (start + x) / 2
        out.append(
            f"<text x='{middle:.1f}' y='{bottom + 16}' text-anchor='middle' font-size='11'>"
            f"{escape(label)}</text>"
        )
        x += gap
    for value, label in references:
        y = frame.py(value)
        out.append(
            f"<line x1='{frame.left}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}' stroke='#333' "
            "stroke-dasharray='5 4'/>"
        )
        out.append(f"<text x='{right + 4}' y='{y + 4:.1f}' font-size='10'>{escape(label)}</text>")
    out.append(
        f"<rect x='{frame.left}' y='{frame.top}' width='{frame.width}' height='{frame.height}' "
        "fill='none' stroke='#888'/>"
    )
    mid = frame.top + frame.height / 2
    out.append(
        f"<text x='18' y='{mid:.1f}' text-anchor='middle' transform='rotate(-90 18 {mid:.1f})'>"
        f"{escape(y_label)}</text>"
    )
    lx, ly = right + 110, frame.top + 8
    for i, (label, color) in enumerate(legend):
        y = ly + 18 * i
        out.append(f"<rect x='{lx}' y='{y - 9}' width='12' height='12' fill='{color}'/>")
        out.append(f"<text x='{lx + 18}' y='{y + 1}'>{escape(label)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
