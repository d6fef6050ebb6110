"""The policy's ``alarms:`` section: defaults, every key, and problems named by file, line and key."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from policy.errors import PolicyInvalid
from policy.loader import load_policy
from policy.model import (
    AddressAlarms,
    AlarmSettings,
    CoverageAlarms,
    DumpAlarms,
    FirstAccessAlarms,
    HoursAlarms,
    OnAlarm,
    PagingAlarms,
    ProbingAlarms,
    QuotaAlarms,
    RepeatedAlarms,
    VolumeAlarms,
)

ROOT = Path(__file__).resolve().parents[2]
HEAD = """\
version: 1
roles: {maintenance: {max_rows: 100}}
users: {maint: {roles: [maintenance]}}
"""  # three lines: the alarms section starts on line 4


def alarms(section: str) -> AlarmSettings:
    return load_policy(HEAD + textwrap.dedent(section), "p.yaml").alarms


def problems(section: str) -> list[str]:
    with pytest.raises(PolicyInvalid) as caught:
        alarms(section)
    return [str(p) for p in caught.value.problems]


def test_without_the_section_every_default_applies() -> None:
    assert load_policy(HEAD, "p.yaml").alarms == AlarmSettings()
    assert alarms("alarms:\n") == AlarmSettings()
    assert alarms("alarms: {}\n") == AlarmSettings()


def test_every_key() -> None:
    settings = alarms(
        """\
        alarms:
          timezone: Asia/Tokyo
          dedup: 2h
          learning_days: 10
          memory_days: 60
          quota: {levels: {50: low, 80: medium, 100: high}}
          volume: {factor: 2.5, deviations: 3, min_rows: 500, severity: medium}
          hours: {outside_allowed: critical, unusual: medium, min_share: 0.1}
          new_address: {severity: high, prefix_v4: 32, prefix_v6: 48}
          first_access: {severity: medium}
          probing: {refusals: 3, within: 5m, severity: critical}
          paging: {pages: 10, rows: 500, max_gap: 30m, severity: critical}
          dump: {applications: [pg_dump, mydumper], tables: 3, severity: critical}
          coverage: {window: 365d, min_rows: 100, levels: {1: low, 2.5: medium, 50: critical}}
          repeated: {rules: [paging, coverage], at_least: medium, days: 2, within: 3d, severity: high}
          on_alarm:
            - {severity: high, tighten: {max_rows: 10, for: 12h}}
            - {severity: critical, action: suspend, for: 7d}
            - {severity: medium, rules: [dump_tool, paging], tighten: {max_rows: 1}}
            - {severity: critical, rules: [repeated], action: suspend, for: until_cleared}
            - {severity: high, tighten: {max_rows: 5, for: until_cleared}}
        """
    )
    assert settings == AlarmSettings(
        timezone="Asia/Tokyo",
        dedup=timedelta(hours=2),
        learning_days=10,
        memory_days=60,
        quota=QuotaAlarms(levels=((50.0, "low"), (80.0, "medium"), (100.0, "high"))),
        volume=VolumeAlarms(factor=2.5, deviations=3.0, min_rows=500, severity="medium"),
        hours=HoursAlarms(outside_allowed="critical", unusual="medium", min_share=0.1),
        new_address=AddressAlarms(severity="high", prefix_v4=32, prefix_v6=48),
        first_access=FirstAccessAlarms(severity="medium"),
        probing=ProbingAlarms(refusals=3, within=timedelta(minutes=5), severity="critical"),
        paging=PagingAlarms(pages=10, rows=500, max_gap=timedelta(minutes=30), severity="critical"),
        dump=DumpAlarms(applications=("pg_dump", "mydumper"), tables=3, severity="critical"),
        coverage=CoverageAlarms(
            window=timedelta(days=365),
            min_rows=100,
            levels=((1.0, "low"), (2.5, "medium"), (50.0, "critical")),
        ),
        repeated=RepeatedAlarms(
            rules=frozenset({"paging", "coverage"}),
            at_least="medium",
            days=2,
            within=timedelta(days=3),
            severity="high",
        ),
        on_alarm=(
            OnAlarm(severity="high", max_rows=10, duration=timedelta(hours=12)),
            OnAlarm(severity="critical", suspend=True, duration=timedelta(days=7)),
            OnAlarm(severity="medium", rules=frozenset({"dump_tool", "paging"}), max_rows=1),
            OnAlarm(severity="critical", rules=frozenset({"repeated"}), suspend=True, until_cleared=True),
            OnAlarm(severity="high", max_rows=5, until_cleared=True),
        ),
    )
    assert settings.on_alarm[2].duration == timedelta(hours=24)  # the default


def test_rules_can_be_switched_off() -> None:
    settings = alarms(
        """\
        alarms:
          paging: false
          first_access: false
          hours: {unusual: false}
          probing: true
        """
    )
    assert settings.paging == PagingAlarms(enabled=False)
    assert settings.first_access == FirstAccessAlarms(enabled=False)
    assert settings.hours == HoursAlarms(unusual=None)
    assert settings.probing == ProbingAlarms()


def test_the_demo_policy_has_an_alarms_section() -> None:
    path = ROOT / "policies" / "demo.yaml"
    settings = load_policy(path.read_text(encoding="utf-8"), str(path)).alarms
    assert settings.timezone == "Asia/Tokyo"
    assert settings.coverage.levels[-1] == (25.0, "critical")
    # A full hourly quota is the quota working: not high, so it tightens nobody.
    assert settings.quota.levels[-1] == (100.0, "medium")
    # The 10-row cap follows only alarms that mean rows leaving in bulk.
    [cap] = [entry for entry in settings.on_alarm if entry.max_rows is not None]
    assert (cap.severity, cap.max_rows, cap.duration) == ("high", 10, timedelta(hours=24))
    assert cap.rules == {"paging", "cursor_paging", "coverage"}
    # A drain that comes back on three days of a week is suspended until a second person clears it.
    assert (settings.repeated.days, settings.repeated.within, settings.repeated.severity) == (
        3,
        timedelta(days=7),
        "critical",
    )
    assert OnAlarm(severity="critical", suspend=True, until_cleared=True) in settings.on_alarm


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "alarms: [quota]\n",
            "p.yaml:4: alarms: expected a mapping (indented key: value lines), found a list",
        ),
        ("alarms: {quotas: {}}\n", "p.yaml:4: alarms.quotas: unknown key (allowed: timezone, dedup, "),
        ("alarms: {timezone: Mars/Base}\n", "p.yaml:4: alarms.timezone: unknown time zone 'Mars/Base'"),
        ("alarms: {dedup: 0m}\n", "p.yaml:4: alarms.dedup: must be longer than zero"),
        ("alarms: {dedup: soon}\n", "p.yaml:4: alarms.dedup: expected a duration such as 30m, 2h or 1d12h"),
        ("alarms: {learning_days: 0}\n", "p.yaml:4: alarms.learning_days: must be at least 1, found 0"),
        (
            "alarms: {quota: {levels: {}}}\n",
            "p.yaml:4: alarms.quota.levels: expected percentages and severities",
        ),
        (
            "alarms: {quota: {levels: {80: high, 100: medium}}}\n",
            "p.yaml:4: alarms.quota.levels: 100% is medium but the lower level 80% is high; "
            "a higher level must not be less severe",
        ),
        (
            "alarms: {quota: {levels: {eighty: high}}}\n",
            "p.yaml:4: alarms.quota.levels.eighty: expected a number",
        ),
        ("alarms: {quota: {levels: {0: low}}}\n", "p.yaml:4: alarms.quota.levels.0: must be more than 0"),
        (
            "alarms: {coverage: {levels: {150: high}}}\n",
            "p.yaml:4: alarms.coverage.levels.150: must be between 0 and 100",
        ),
        (
            "alarms: {volume: {severity: urgent}}\n",
            "p.yaml:4: alarms.volume.severity: unknown severity 'urgent'",
        ),
        (
            "alarms: {volume: {factor: 0.5}}\n",
            "p.yaml:4: alarms.volume.factor: must be at least 1, found 0.5",
        ),
        ("alarms: {volume: {deviations: .nan}}\n", "p.yaml:4: alarms.volume.deviations: expected a number"),
        (
            "alarms: {hours: {min_share: 2}}\n",
            "p.yaml:4: alarms.hours.min_share: must be between 0 and 1, found 2",
        ),
        ("alarms: {hours: {unusual: true}}\n", "p.yaml:4: alarms.hours.unusual: expected a severity"),
        (
            "alarms: {new_address: {prefix_v4: 33}}\n",
            "p.yaml:4: alarms.new_address.prefix_v4: must be a prefix",
        ),
        (
            "alarms: {probing: {refusals: 0}}\n",
            "p.yaml:4: alarms.probing.refusals: must be at least 1, found 0",
        ),
        ("alarms: {paging: {max_gap: 20000d}}\n", "p.yaml:4: alarms.paging.max_gap: 20000d is longer than"),
        ("alarms: {paging: {page: 5}}\n", "p.yaml:4: alarms.paging.page: unknown key (allowed: pages, "),
        (
            "alarms: {dump: [pg_dump]}\n",
            "p.yaml:4: alarms.dump: expected a mapping of applications, tables, ",
        ),
        (
            "alarms: {dump: {applications: []}}\n",
            "p.yaml:4: alarms.dump.applications: list at least one name",
        ),
        ("alarms: {on_alarm: {severity: high}}\n", "p.yaml:4: alarms.on_alarm: expected a list of entries"),
        ("alarms: {on_alarm: [high]}\n", "p.yaml:4: alarms.on_alarm[0]: expected a mapping with severity"),
        (
            "alarms: {on_alarm: [{severity: high}]}\n",
            "p.yaml:4: alarms.on_alarm[0]: give either tighten: {max_rows: N, for: 24h} or action: suspend",
        ),
        (
            "alarms: {on_alarm: [{severity: high, action: suspend, tighten: {max_rows: 1}}]}\n",
            "p.yaml:4: alarms.on_alarm[0]: give either tighten: {max_rows: N, for: 24h} or action: suspend, "
            "not both",
        ),
        ("alarms: {on_alarm: [{action: suspend}]}\n", "p.yaml:4: alarms.on_alarm[0].severity: required"),
        (
            "alarms: {on_alarm: [{severity: bad, action: suspend}]}\n",
            "p.yaml:4: alarms.on_alarm[0].severity: unknown severity",
        ),
        (
            "alarms: {on_alarm: [{severity: high, action: ban}]}\n",
            "p.yaml:4: alarms.on_alarm[0].action: unknown action 'ban'",
        ),
        (
            "alarms: {on_alarm: [{severity: high, tighten: {for: 1h}}]}\n",
            "p.yaml:4: alarms.on_alarm[0].tighten.max_rows: required: the row cap per statement",
        ),
        (
            "alarms: {on_alarm: [{severity: high, tighten: {max_rows: 1, for: 1h}, for: 2h}]}\n",
            "p.yaml:4: alarms.on_alarm[0].tighten.for: for is given twice; keep one",
        ),
        (
            "alarms: {on_alarm: [{severity: high, action: suspend, rules: [pagin]}]}\n",
            "p.yaml:4: alarms.on_alarm[0].rules[0]: unknown alarm rule 'pagin' (allowed: ",
        ),
        (
            "alarms: {repeated: {rules: [paging, repeated]}}\n",
            "p.yaml:4: alarms.repeated.rules[1]: repeated cannot count its own alarms",
        ),
        (
            "alarms: {repeated: {rules: [pagin]}}\n",
            "p.yaml:4: alarms.repeated.rules[0]: unknown alarm rule 'pagin' (allowed: ",
        ),
        ("alarms: {repeated: {rules: []}}\n", "p.yaml:4: alarms.repeated.rules: list at least one rule"),
        ("alarms: {repeated: {rules: paging}}\n", "p.yaml:4: alarms.repeated.rules: expected a list"),
        (
            "alarms: {repeated: {at_least: urgent}}\n",
            "p.yaml:4: alarms.repeated.at_least: unknown severity 'urgent'",
        ),
        ("alarms: {repeated: {days: 0}}\n", "p.yaml:4: alarms.repeated.days: must be at least 1, found 0"),
        ("alarms: {repeated: {within: 0d}}\n", "p.yaml:4: alarms.repeated.within: must be longer than zero"),
        ("alarms: {repeated: {day: 3}}\n", "p.yaml:4: alarms.repeated.day: unknown key (allowed: rules, "),
        (
            "alarms: {on_alarm: [{severity: critical, action: suspend, for: until_clear}]}\n",
            "p.yaml:4: alarms.on_alarm[0].for: expected a duration such as 24h or 7d, or until_cleared, "
            "found the text 'until_clear'; did you mean until_cleared?",
        ),
        (
            "alarms: {on_alarm: [{severity: critical, action: suspend, for: forever}]}\n",
            "p.yaml:4: alarms.on_alarm[0].for: expected a duration such as 24h or 7d, or until_cleared",
        ),
        (
            "alarms: {on_alarm: [{severity: high, tighten: {max_rows: 1, for: until cleared}}]}\n",
            "p.yaml:4: alarms.on_alarm[0].tighten.for: expected a duration such as 24h or 7d, "
            "or until_cleared",
        ),
    ],
)
def test_problems_name_file_line_and_key(section: str, expected: str) -> None:
    found = problems(section)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_on_its_own_line() -> None:
    found = problems(
        """\
        alarms:
          dedup: never
          quota:
            levels: {80: urgent}
          on_alarm:
            - {severity: high, tighten: {max_rows: 10, for: 24h}}
            - {severity: high, rules: [dump_tol], action: suspend}
        """
    )
    assert [p.split(": ")[0] + ": " + p.split(": ")[1] for p in found] == [
        "p.yaml:5: alarms.dedup",
        "p.yaml:7: alarms.quota.levels.80",
        "p.yaml:10: alarms.on_alarm[1].rules[0]",
    ]
    assert "did you mean dump_tool?" in found[2]
