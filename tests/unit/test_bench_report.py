"""The bench's pure parts: percentiles from pgbench logs, report parsing, verdicts, tables, chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench import harness, pgbench, report

REPORT_C = """\
transaction type: <builtin: select only>
number of transactions actually processed: 345
number of failed transactions: 0 (0.000%)
latency average = 23.374 ms
average connection time = 11.501 ms
tps = 171.132226 (including reconnection times)
"""
REPORT_S = """\
number of transactions actually processed: 2194
number of failed transactions: 0 (0.000%)
latency average = 3.650 ms
initial connection time = 12.424 ms
tps = 1095.768356 (without initial connection time)
"""


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert pgbench.percentile(values, 50) == 50
    assert pgbench.percentile(values, 99) == 99
    assert pgbench.percentile(values, 100) == 100
    assert pgbench.percentile([7.0], 99) == 7.0
    # Never interpolates: p50 of two values is the lower one, p99 the higher.
    assert pgbench.percentile([1.0, 9.0], 50) == 1.0
    assert pgbench.percentile([1.0, 9.0], 99) == 9.0


def test_percentile_rejects_empty_input_and_bad_ranks() -> None:
    with pytest.raises(ValueError, match="no values"):
        pgbench.percentile([], 50)
    with pytest.raises(ValueError, match="not in"):
        pgbench.percentile([1.0], 0)


def test_latencies_are_read_from_per_transaction_log_lines() -> None:
    lines = [
        "0 1 9557 0 1796673301 424985\n",
        "3 4 13950 0 1796673301 501911 0\n",
        "\n",
        "2 7 failed 0 1796673301 501999\n",  # a failed transaction has no latency
    ]
    assert pgbench.read_latencies_us(lines) == [9557, 13950]
    with pytest.raises(ValueError, match="not a pgbench"):
        pgbench.read_latencies_us(["tps = 3\n"])


def test_reports_with_and_without_reconnection_parse() -> None:
    churn = pgbench.parse(REPORT_C, "", 0)
    assert (churn.tps, churn.latency_ms, churn.transactions, churn.connection_ms) == (
        171.132226,
        23.374,
        345,
        11.501,
    )
    plain = pgbench.parse(REPORT_S, "", 0)
    assert (plain.tps, plain.transactions, plain.connection_ms) == (1095.768356, 2194, None)
    with pytest.raises(pgbench.PgbenchError):
        pgbench.parse(REPORT_S.replace("failed transactions: 0", "failed transactions: 3"), "", 0)


def test_verdicts_compare_against_the_goal() -> None:
    assert report.verdict(0.8, 0.8) == "PASS"
    assert report.verdict(0.79, 0.8) == "FAIL"
    assert report.verdict(None, 0.8) == "n/a"
    assert report.verdict_below(0.049, 0.05) == "PASS"
    assert report.verdict_below(0.05, 0.05) == "FAIL"
    assert report.ratio(5.0, 10.0) == 0.5
    assert report.ratio(5.0, 0.0) is None
    assert report.ratio(None, 2.0) is None


def test_markdown_table_pads_aligns_and_escapes() -> None:
    text = report.markdown_table(["name", "tps"], [["a|b", "1.0"], ["long name", "22.5"]], [False, True])
    assert text.splitlines() == [
        "| name      |  tps |",
        "|-----------|-----:|",
        "| a\\|b      |  1.0 |",
        "| long name | 22.5 |",
    ]
    with pytest.raises(ValueError, match="one cell per column"):
        report.markdown_table(["a", "b"], [["only one"]], [False, False])


def _run(workload: str, target: str, rnd: int, tps: float, p99: float) -> harness.Run:
    return harness.Run(workload, "simple", target, rnd, tps=tps, latency_ms=1.0, transactions=100, p99_ms=p99)


def test_summary_takes_medians_and_judges_sekisho_against_pgbouncer_session() -> None:
    targets = [
        harness.Target(name, {}) for name in (harness.DIRECT, harness.BOUNCER_SESSION, harness.SEKISHO)
    ]
    runs = [
        *(_run("select", harness.DIRECT, r, tps, 1.0) for r, tps in enumerate((100.0, 300.0, 200.0))),
        *(_run("select", harness.BOUNCER_SESSION, r, tps, 1.0) for r, tps in enumerate((100.0, 90.0, 110.0))),
        *(
            _run("select", harness.SEKISHO, r, tps, p)
            for r, (tps, p) in enumerate(((70.0, 3.0), (85.0, 5.0), (95.0, 4.0)))
        ),
        *(_run("churn", harness.BOUNCER_SESSION, r, 50.0, 1.0) for r in range(3)),
        *(_run("churn", harness.SEKISHO, r, 49.0, 1.0) for r in range(3)),
    ]
    runs.append(harness.Run("select", "simple", harness.SEKISHO, 4, error="pgbench failed"))
    rows = harness.summarize(runs, targets, [("select", "simple"), ("churn", "simple")])
    by = {(r.workload, r.target): r for r in rows}
    sekisho = by["select", harness.SEKISHO]
    assert sekisho.median_tps == 85.0
    assert sekisho.p99_ms == 4.0
    assert sekisho.vs_direct == pytest.approx(85.0 / 200.0)
    assert sekisho.vs_pgbouncer_session == pytest.approx(85.0 / 100.0)
    assert (sekisho.verdict, sekisho.goal) == ("PASS", ">= 0.8x PgBouncer session")
    assert (sekisho.failed, sekisho.runs) == (1, 4)
    assert by["select", harness.BOUNCER_SESSION].verdict == ""  # only Sekisho is judged
    churn = by["churn", harness.SEKISHO]
    assert churn.vs_pgbouncer_session == pytest.approx(0.98)
    assert churn.verdict == "FAIL"  # churn asks for at least PgBouncer's TPS
    assert churn.vs_direct is None  # direct was not measured for churn here


def test_ratio_chart_is_well_formed_svg_with_every_bar(tmp_path: Path) -> None:
    svg = report.ratio_chart(
        [("-S simple", [("pgbouncer-session", 1.0), ("sekisho", 0.42)]), ("churn", [("sekisho", 0.05)])],
        notes=["a note & <escaped>"],
    )
    root = ET.fromstring(svg)  # noqa: S314  our own output
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert titles == [
        "-S simple, pgbouncer-session: 1.00",
        "-S simple, sekisho: 0.42",
        "churn, sekisho: 0.05",
    ]
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "a note & <escaped>" in texts
    assert "target -S: 0.8" in texts


def test_churn_is_also_compared_with_scram_pgbouncer_but_judged_against_trust() -> None:
    targets = [
        harness.Target(harness.BOUNCER_SESSION, {}),
        harness.Target(harness.BOUNCER_SCRAM, {}, only=("churn",)),
        harness.Target(harness.SEKISHO_RESTRICTED_AUDITED, {}),
    ]
    runs = [
        *(_run("churn", harness.BOUNCER_SESSION, r, 2000.0, 1.0) for r in range(3)),
        *(_run("churn", harness.BOUNCER_SCRAM, r, tps, 1.0) for r, tps in enumerate((190.0, 200.0, 210.0))),
        *(_run("churn", harness.SEKISHO_RESTRICTED_AUDITED, r, 180.0, 1.0) for r in range(3)),
        *(_run("select", harness.BOUNCER_SESSION, r, 100.0, 1.0) for r in range(3)),
        *(_run("select", harness.SEKISHO_RESTRICTED_AUDITED, r, 50.0, 1.0) for r in range(3)),
    ]
    rows = harness.summarize(runs, targets, [("churn", "simple"), ("select", "simple")])
    by = {(r.workload, r.target): r for r in rows}
    assert ("select", harness.BOUNCER_SCRAM) not in by  # measured in churn only
    assert by["select", harness.SEKISHO_RESTRICTED_AUDITED].vs_pgbouncer_scram is None
    churn = by["churn", harness.SEKISHO_RESTRICTED_AUDITED]
    assert churn.vs_pgbouncer_session == pytest.approx(0.09)
    assert (churn.goal, churn.verdict) == (
        ">= 1.0x PgBouncer session",
        "FAIL",
    )  # the target, unchanged
    assert churn.vs_pgbouncer_scram == pytest.approx(0.9)
    assert by["churn", harness.BOUNCER_SCRAM].verdict == ""
    lines = harness.targets_table(harness.Results(rows=rows)).splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["churn -M simple: Sekisho, restricted person, audit on", ">= 1.0x PgBouncer session",
                        "0.09x", "FAIL"]  # fmt: skip
    assert cells[1][0].startswith("churn: Sekisho vs PgBouncer with SCRAM clients, same client work")
    assert cells[1][2:] == ["0.90x", "info"]
    assert cells[2][0].startswith("select -M simple")
    assert len(cells) == 3  # no SCRAM row for select
    assert "vs PgBouncer SCRAM (info)" in harness.throughput_table(rows)
