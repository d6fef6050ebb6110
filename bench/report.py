"""Pure pieces of the bench report: targets and verdicts, Markdown tables, the ratio chart.

No I/O here, so the arithmetic the report's PASS/FAIL column rests on is unit-tested with data
(tests/unit/test_bench_report.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import svgplot


@dataclass(frozen=True, slots=True)
class Goal:
    """Issue 7's throughput target for a workload: at least ``minimum`` x PgBouncer session mode."""

    minimum: float
    text: str


GOALS = {
    "select": Goal(0.8, ">= 0.8x PgBouncer session"),
    "churn": Goal(1.0, ">= 1.0x PgBouncer session"),
    "tpcb": Goal(0.9, ">= 0.9x PgBouncer session"),
}
ANALYSIS_CACHED_SHARE = 0.05  # a cached analysis costs under 5% of a cold parse
MASKED_CELLS_PER_SECOND = 200_000  # per core


def verdict(value: float | None, minimum: float) -> str:
    """PASS when ``value`` reaches ``minimum``, FAIL below it, n/a when it was not measured."""
    if value is None:
        return "n/a"
    return "PASS" if value >= minimum else "FAIL"


def verdict_below(value: float | None, maximum: float) -> str:
    """PASS when ``value`` stays under ``maximum`` (costs and memory), FAIL at or above it."""
    if value is None:
        return "n/a"
    return "PASS" if value < maximum else "FAIL"


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``; None when either is unknown or the base is zero."""
    if value is None or not base:
        return None
    return value / base


def num(value: float | None, spec: str, missing: str = "-") -> str:
    """``value`` formatted with ``spec`` (format() syntax), or ``missing`` when unknown."""
    return missing if value is None else format(value, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A GitHub Markdown table, columns padded to their widest cell; ``right`` marks the columns
    aligned right (numbers). Pipes in cells are escaped so a cell cannot split a row."""
    if len(right) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("every row needs one cell per column")
    cells = [[c.replace("|", "\\|") for c in row] for row in (header, *rows)]
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(row) for row in cells[1:])])


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def ratio_chart(groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], *, notes: Sequence[str]) -> str:
    """SVG bars of TPS ratios to PgBouncer session: one group per workload, one bar per target,
    with the issue's target ratios drawn as reference lines."""
    targets = list(dict.fromkeys(t for _, bars in groups for t, _ in bars))
    colors = {t: COLORS[i % len(COLORS)] for i, t in enumerate(targets)}
    return svgplot.bar_chart(
        [(label, [(t, value, colors[t]) for t, value in bars]) for label, bars in groups],
        title="TPS relative to PgBouncer session mode (medians of the rounds)",
        y_label="ratio to PgBouncer session",
        references=[(1.0, "PgBouncer session"), (0.8, "target -S: 0.8"), (0.9, "target TPC-B: 0.9")],
        legend=[(t, colors[t]) for t in targets],
        notes=notes,
    )
