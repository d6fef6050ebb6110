"""The insider simulation (bench/insider.py) on a short month: the facts its figures rest on.

Five days, three ordinary people and the insider, no warm-up (so learned habits cannot alarm and
what alarms on him is what watches for drains). Each run takes well under a second.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

from bench.insider import (
    CONFIGURATIONS,
    INSIDER,
    JST,
    PAGE,
    Figures,
    Run,
    Scenario,
    figures,
    simulate,
)
from policy.loader import load_policy
from policy.model import Policy

ROOT = Path(__file__).resolve().parents[2]
SHORT = Scenario(days=5, people=3, seed=1, warmup=0)
ALL, QUOTAS_ONLY, ON_ALARM_ONLY, NEITHER = CONFIGURATIONS
DAILY_BUDGET = 2000


@cache
def demo() -> Policy:
    path = ROOT / "policies" / "demo.yaml"
    return load_policy(path.read_text(encoding="utf-8"), str(path))


@cache
def tight_daily_quota() -> Policy:
    """The demo policy with maintenance's daily row quota lowered below the insider's daily drain."""
    text = (ROOT / "policies" / "demo.yaml").read_text(encoding="utf-8")
    tighter = text.replace("{window: 1d, rows: 5000}", f"{{window: 1d, rows: {DAILY_BUDGET}}}")
    assert tighter != text
    return load_policy(tighter, "demo-tight.yaml")


@cache
def run(index: int, tight: bool = False, seed: int = SHORT.seed) -> Run:
    scenario = Scenario(days=SHORT.days, people=SHORT.people, seed=seed, warmup=SHORT.warmup)
    return simulate(scenario, tight_daily_quota() if tight else demo(), CONFIGURATIONS[index])


def report(index: int, tight: bool = False, seed: int = SHORT.seed) -> Figures:
    return figures(run(index, tight, seed))


def test_the_drain_is_alarmed_on_within_its_first_day() -> None:
    fig = report(CONFIGURATIONS.index(ALL))
    assert fig.drain_start is not None
    assert fig.first_high is not None
    assert fig.first_high.user == INSIDER
    assert (fig.hours_to(fig.first_high) or 0) < 24
    on_him = {key.split()[1] for key in fig.insider_alarms}
    assert "paging" in on_him
    paging = next(a for a in run(0).alarms if a.user == INSIDER and a.rule == "paging")
    # The events carry the statement's shape, as the gateway's do: literals become $n.
    assert paging.evidence["statement"] == (
        "SELECT id, name, address, phone, email, created_at FROM customers WHERE id > $1 ORDER BY id LIMIT $2"
    )


def test_ordinary_people_raise_no_high_alarm() -> None:
    for index in range(len(CONFIGURATIONS)):
        others = [a for a in run(index).alarms if a.user != INSIDER]
        assert others, "first_access on everyone's first day, at least"
        assert not [a for a in others if a.at_least("high")], CONFIGURATIONS[index].name


def test_on_alarm_tightening_cuts_the_drain_to_the_tightened_cap() -> None:
    pages = run(CONFIGURATIONS.index(ON_ALARM_ONLY)).log.pages
    cut = [rows for _, rows, status in pages if status == "cut: tightened"]
    assert cut
    assert set(cut) == {10}  # the demo's on_alarm: max_rows 10 after a high alarm
    assert (
        report(CONFIGURATIONS.index(ON_ALARM_ONLY)).rows_total
        < report(CONFIGURATIONS.index(NEITHER)).rows_total
    )


def test_quotas_cut_the_insider_at_the_budget_and_refuse_him_after() -> None:
    index = CONFIGURATIONS.index(QUOTAS_ONLY)
    pages = run(index, tight=True).log.pages
    statuses = Counter(status.split(":")[0] for _, _, status in pages)
    assert statuses["refused"] > 0
    assert any(status.startswith("cut: quota") for _, _, status in pages)
    per_day: Counter[object] = Counter()
    for at, rows, _ in pages:
        per_day[at.astimezone(JST).date()] += rows
    # His ordinary reads share the budget, so the drain alone stays under it every day.
    assert max(per_day.values()) <= DAILY_BUDGET
    fig = report(index, tight=True)
    assert fig.stopped_by == "quota-refused for the rest of the day"
    assert fig.rows_before_stop <= DAILY_BUDGET
    unlimited = report(CONFIGURATIONS.index(NEITHER), tight=True)
    assert unlimited.stopped_at is None
    assert unlimited.rows_total > 2 * DAILY_BUDGET
    assert unlimited.rows_total % PAGE == 0  # nothing cut his pages


def test_a_seed_is_one_month() -> None:
    first = report(0).to_dict()
    again = figures(simulate(SHORT, demo(), ALL)).to_dict()
    assert {k: v for k, v in first.items() if k != "seconds"} == {
        k: v for k, v in again.items() if k != "seconds"
    }
    assert [a.id for a in run(0).alarms] == [a.id for a in simulate(SHORT, demo(), ALL).alarms]
    other = report(0, seed=2).to_dict()
    assert other["drain_start"] != first["drain_start"]


def test_repeated_alarms_hold_the_insider_until_cleared_and_nobody_else() -> None:
    index = CONFIGURATIONS.index(ALL)
    fig = report(index)
    assert "critical repeated" in fig.insider_alarms
    assert fig.held_from is not None
    assert fig.stopped_by == "suspended"
    assert fig.ordinary_held == 0
    # Nobody clears in the simulation: after the page that raised it, every drain page is refused.
    after = [status for at, _, status in run(index).log.pages if at > fig.held_from]
    assert after
    assert set(after) == {"refused: suspended"}
    assert fig.rows_total - fig.rows_before_hold <= PAGE  # the page that raised the hold
    # His refusals while suspended probe nothing, so they raise no alarms.
    assert not [a for a in run(index).alarms if a.user == INSIDER and a.rule == "probing"]
    # Without on_alarm the same escalation is raised, and holds no one.
    unheld = report(CONFIGURATIONS.index(NEITHER))
    assert "critical repeated" in unheld.insider_alarms
    assert unheld.held_from is None
    assert unheld.rows_total > 2 * fig.rows_total
