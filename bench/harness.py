"""The harness: a private cluster, PgBouncer and Sekisho in front of it, and alternating pgbench rounds.

Why alternate: this machine is small and shared, so throughput drifts by tens of percent over minutes.
Running every target once per round, round after round, exposes all targets to the same drift; the
median of each target's rounds and the ratios between medians are then comparable, even when the
absolute TPS of one run is not comparable with another run's.

Sekisho's and PgBouncer's CPU time and memory are read from /proc around each of their rounds, because
CPU per transaction is the relay's own cost, while TPS on two shared cores is also limited by pgbench
and PostgreSQL competing for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from bench import bigread, masking, memory, micro, pgbench, report, sekisho
from bench.pgbouncer import (
    SCRAM_DB,
    SESSION_DB,
    TRANSACTION_DB,
    PgBouncer,
    PgBouncerError,
    find_pgbouncer,
    start_pgbouncer,
)
from bench.procstat import ProcSample, sample_tree
from gateway.demo import ensure_database, install_sigterm_as_interrupt
from gateway.pgcluster import Cluster, ClusterError, find_bindir, free_port
from gateway.users import ITERATIONS
from tests.support import Gateway

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench"
MODES = ("simple", "extended", "prepared")
# select: pgbench -S against every target (the relay's per-statement cost); tpcb: pgbench's default
# TPC-B-like script; churn: pgbench -C -S (a connection per transaction); masking: 100-row results
# with and without masked columns (bench/masking.py); bigread: the capped read of a 10-million-row
# table (bench/bigread.py); workers: `sekisho run --workers 1` against `--workers 2` on pgbench -S;
# memory: 1,000 idle clients and a client that stops reading (bench/memory.py); micro: the
# micro-benchmarks (bench/micro.py).
WORKLOADS = ("select", "tpcb", "churn", "masking", "bigread", "workers", "memory", "micro")
PGBENCH_WORKLOADS = {"select": pgbench.SELECT_ONLY, "tpcb": pgbench.TPCB, "churn": pgbench.CHURN}
DIRECT = "direct"
BOUNCER_SESSION = "pgbouncer-session"
BOUNCER_TRANSACTION = "pgbouncer-transaction"
# PgBouncer session mode whose clients log in with SCRAM-SHA-256 at Sekisho's iteration count, so
# that under churn pgbench does the same PBKDF2 work per connection as against Sekisho: an
# informative comparison of the relays alone. Issue 7's churn target stays against BOUNCER_SESSION.
# Only churn: elsewhere pgbench's TPS excludes connecting, so it would repeat BOUNCER_SESSION.
BOUNCER_SCRAM = "pgbouncer-session-scram"
SEKISHO = "sekisho"
# The same gateway, as a restricted person (the test policy's maintenance role: every statement
# analyzed, decided and capped at 100 rows): the full policy path.
SEKISHO_RESTRICTED = "sekisho-maint"
# The same two people through a second gateway whose audit trail goes durably to an audit database
# on the bench's cluster (the first gateway records nothing: audit.log none, no database).
SEKISHO_AUDITED = "sekisho+audit"
SEKISHO_RESTRICTED_AUDITED = "sekisho-maint+audit"
AUDIT_DATABASE = "sekisho_audit"
SEKISHO_TARGETS = (SEKISHO, SEKISHO_RESTRICTED, SEKISHO_AUDITED, SEKISHO_RESTRICTED_AUDITED)
WORKERS_1 = "sekisho-maint --workers 1"
WORKERS_2 = "sekisho-maint --workers 2"
SCRAM_NOTE = (
    f"PgBouncer session mode with clients logging in by SCRAM-SHA-256 ({ITERATIONS:,} iterations, as"
    " Sekisho asks), so pgbench computes the same PBKDF2 per connection on both; issue 7's churn target"
    " stays against PgBouncer session with trust."
)
# pgbench logs this fraction of transactions for p50/p99 (all of them under churn, which is slow).
SAMPLING = {"select": 0.1, "tpcb": 0.2, "churn": 1.0}


@dataclass
class Target:
    """Somewhere pgbench connects to; ``pid`` is the relay process sampled around its rounds."""

    name: str
    env: dict[str, str]
    pid: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    only: tuple[str, ...] | None = None  # the workloads it is measured in; None: all

    def measured(self, workload: str, mode: str) -> bool:
        return mode not in self.unsupported and (self.only is None or workload in self.only)


@dataclass
class Run:
    """One pgbench run against one target; ``error`` is set instead of the figures when it failed."""

    workload: str
    mode: str
    target: str
    round: int
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    rss_kib: int | None = None
    hwm_kib: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    connection_ms: float | None = None
    error: str | None = None

    @property
    def cpu_us_per_tx(self) -> float | None:
        if self.cpu_seconds is None or not self.transactions:
            return None
        return self.cpu_seconds / self.transactions * 1e6


@dataclass
class Summary:
    workload: str
    mode: str
    target: str
    runs: int
    failed: int
    median_tps: float | None
    median_latency_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    vs_direct: float | None
    vs_pgbouncer_session: float | None
    vs_pgbouncer_scram: float | None  # informative: against BOUNCER_SCRAM, where it was measured
    cpu_us_per_tx: float | None
    cpu_share_of_core: float | None
    rss_mib: float | None
    goal: str = ""
    verdict: str = ""


@dataclass(frozen=True)
class Settings:
    duration: int
    rounds: int
    clients: int
    threads: int
    modes: tuple[str, ...]
    workloads: tuple[str, ...]
    scale: int
    warmup: int
    out: Path
    churn_duration: int = 5  # pgbench -C runs: a fixed short duration (new backends are slow)
    big_rows: int = 10_000_000
    bulk_cap: int = 1_000_000
    idle_clients: int = 1000
    idle_hold: int = 10
    stall_seconds: int = 10
    micro_scale: float = 1.0


# ----------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pgbench against PostgreSQL directly, PgBouncer and Sekisho, alternating rounds.",
    )
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10; --quick 1)")
    parser.add_argument("--rounds", type=int, help="rounds per mode (default 3; --quick 1)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="pgbench threads, -j (default 2)")
    parser.add_argument(
        "--modes", help="comma-separated pgbench -M modes for -S and masking (default all; --quick simple)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, default all: {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--scale", type=int, help="pgbench -i -s scale (default 10; --quick 1)")
    parser.add_argument("--warmup", type=int, help="seconds of direct pgbench before measuring (default 2)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (well under a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="work and results directory")
    args = parser.parse_args(argv)
    # --quick measures one protocol mode unless told otherwise: every mode of every target would
    # not fit well under a minute.
    chosen_modes = args.modes or ("simple" if args.quick else ",".join(MODES))
    modes = tuple(m.strip() for m in chosen_modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f"--modes: expected some of {', '.join(MODES)}, got {args.modes!r}")
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    if not workloads or any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: expected some of {', '.join(WORKLOADS)}, got {args.workloads!r}")

    def pick(value: int | None, normal: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else normal)

    settings = Settings(
        duration=pick(args.duration, 10, 1),
        rounds=pick(args.rounds, 3, 1),
        clients=args.clients,
        threads=min(args.threads, args.clients),
        modes=modes,
        workloads=workloads,
        scale=pick(args.scale, 10, 1),
        warmup=pick(args.warmup, 2, 1),
        out=args.out.resolve(),
        churn_duration=pick(args.duration, 5, 1),
        big_rows=pick(None, 10_000_000, 200_000),
        bulk_cap=pick(None, 1_000_000, 10_000),
        idle_clients=pick(None, 1000, 100),
        idle_hold=pick(None, 10, 2),
        stall_seconds=pick(None, 10, 3),
        micro_scale=0.1 if args.quick else 1.0,
    )
    for name in ("duration", "rounds", "clients", "threads", "scale"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name}: expected a positive number")
    return settings


# ----------------------------------------------------------------------------- set-up


def say(line: str) -> None:
    print(line, flush=True)


def direct_env(cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGDATABASE": DATABASE,
        "PGUSER": "postgres",
        "PGSSLMODE": "disable",
    }


async def _loaded_scale(dsn: str) -> int | None:
    """The scale of existing pgbench tables if they are complete, else None."""
    conn = await asyncpg.connect(dsn)
    try:
        try:
            branches = await conn.fetchval("SELECT count(*) FROM pgbench_branches")
            accounts = await conn.fetchval("SELECT count(*) FROM pgbench_accounts")
        except asyncpg.UndefinedTableError:
            return None
    finally:
        await conn.close()
    return int(branches) if accounts == branches * 100_000 else None


def prepare_data(cluster: Cluster, scale: int) -> None:
    """pgbench -i unless the cluster (kept under --out between runs) already holds this scale.

    -S never writes, so a previous run's tables are as good as fresh ones and re-initialising scale
    10 on this machine would cost most of a --quick run's budget.
    """
    asyncio.run(ensure_database(cluster.dsn(), DATABASE))
    if asyncio.run(_loaded_scale(cluster.dsn(DATABASE))) == scale:
        say(f"pgbench tables at scale {scale} already loaded")
        return
    say(f"pgbench -i -s {scale} ...")
    started = time.monotonic()
    pgbench.initialize(direct_env(cluster), scale)
    say(f"  loaded in {time.monotonic() - started:.1f} s")


def versions() -> dict[str, str]:
    def first_line(*argv: str) -> str:
        with contextlib.suppress(OSError):
            out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return "unknown"

    pgbouncer: str | None = None
    with contextlib.suppress(PgBouncerError):
        pgbouncer = find_pgbouncer()
    return {
        "postgres": first_line(str(find_bindir() / "postgres"), "--version"),
        "pgbench": first_line(pgbench.PGBENCH, "--version"),
        "pgbouncer": first_line(pgbouncer, "--version") if pgbouncer else "not installed",
        "python": sys.version.split()[0],
    }


# ----------------------------------------------------------------------------- measuring


def measure_once(target: Target, workload: str, mode: str, rnd: int, settings: Settings) -> Run:
    run = Run(workload, mode, target.name, rnd)
    before: ProcSample | None = sample_tree(target.pid) if target.pid else None
    started = time.monotonic()
    duration = settings.churn_duration if workload == "churn" else settings.duration
    try:
        result = pgbench.run(
            PGBENCH_WORKLOADS[workload], target.env, mode, clients=settings.clients,
            threads=settings.threads, duration=duration, sampling=SAMPLING[workload],
        )  # fmt: skip
    except pgbench.PgbenchError as exc:
        run.error = str(exc)
        return run
    run.wall_seconds = time.monotonic() - started
    run.tps, run.latency_ms, run.transactions = result.tps, result.latency_ms, result.transactions
    run.p50_ms, run.p99_ms, run.connection_ms = result.p50_ms, result.p99_ms, result.connection_ms
    after = sample_tree(target.pid) if target.pid else None
    if before is not None and after is not None:
        run.cpu_seconds = after.cpu_seconds - before.cpu_seconds
        run.rss_kib, run.hwm_kib = after.rss_kib, after.hwm_kib
    return run


def describe(run: Run) -> str:
    if run.error is not None:
        return f"FAILED: {run.error.splitlines()[0]}"
    assert run.tps is not None
    assert run.latency_ms is not None
    line = f"{run.tps:9.1f} tps  {run.latency_ms:6.3f} ms"
    if run.p50_ms is not None and run.p99_ms is not None:
        line += f" (p50 {run.p50_ms:6.3f} p99 {run.p99_ms:7.3f})"
    if run.cpu_us_per_tx is not None and run.cpu_seconds is not None and run.wall_seconds:
        share = run.cpu_seconds / run.wall_seconds
        line += f"  relay cpu {run.cpu_us_per_tx:6.1f} us/tx ({share:4.0%} of a core)"
    if run.rss_kib is not None:
        line += f"  rss {run.rss_kib / 1024:5.1f} MiB"
    return line


def reset_tpcb(env: dict[str, str]) -> None:
    """Before each TPC-B round: empty pgbench_history and vacuum the small hot tables, as pgbench
    does without -n, so rounds do not slow down as dead rows pile up (directly, not measured)."""
    for sql in ("TRUNCATE pgbench_history", "VACUUM pgbench_branches", "VACUUM pgbench_tellers"):
        subprocess.run(["psql", "-q", "-X", "-c", sql], env=env, capture_output=True, check=False)


def measure(
    targets: list[Target], settings: Settings, gateways: list[Gateway], cases: list[tuple[str, str]]
) -> list[Run]:
    """Every (workload, mode): rounds of (each target once, in order); progress as runs finish."""
    runs: list[Run] = []
    for workload, mode in cases:
        for rnd in range(1, settings.rounds + 1):
            if workload == "tpcb":
                reset_tpcb(targets[0].env)
            for target in targets:
                if not target.measured(workload, mode):
                    continue
                run = measure_once(target, workload, mode, rnd, settings)
                runs.append(run)
                label = f"{workload} {mode}"
                say(f"{label:15} round {rnd}/{settings.rounds}  {target.name:26} {describe(run)}")
                if run.error is not None:
                    say("    " + run.error.replace("\n", "\n    "))
                    for gateway in gateways:
                        if gateway.process is not None and gateway.process.poll() is not None:
                            raise RuntimeError(
                                f"Sekisho exited ({gateway.process.returncode}):\n{gateway.log()[-3000:]}"
                            )
    return runs


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[Run], targets: list[Target], cases: list[tuple[str, str]]) -> list[Summary]:
    rows: list[Summary] = []
    for workload, mode in cases:
        medians: dict[str, float | None] = {}
        for target in targets:
            ok = [r for r in runs if (r.workload, r.mode, r.target) == (workload, mode, target.name)]
            medians[target.name] = _median([r.tps for r in ok if r.error is None and r.tps is not None])
        for target in targets:
            if not target.measured(workload, mode):
                continue
            mine = [r for r in runs if (r.workload, r.mode, r.target) == (workload, mode, target.name)]
            ok = [r for r in mine if r.error is None]
            tps = medians[target.name]
            cpu = [r.cpu_us_per_tx for r in ok if r.cpu_us_per_tx is not None]
            share = [
                r.cpu_seconds / r.wall_seconds for r in ok if r.cpu_seconds is not None and r.wall_seconds
            ]
            rss = [r.rss_kib for r in ok if r.rss_kib is not None]
            vs_bouncer = report.ratio(tps, medians.get(BOUNCER_SESSION))
            goal = report.GOALS.get(workload)
            judged = goal is not None and target.name.startswith("sekisho")
            rows.append(
                Summary(
                    workload=workload,
                    mode=mode,
                    target=target.name,
                    runs=len(mine),
                    failed=len(mine) - len(ok),
                    median_tps=tps,
                    median_latency_ms=_median([r.latency_ms for r in ok if r.latency_ms is not None]),
                    p50_ms=_median([r.p50_ms for r in ok if r.p50_ms is not None]),
                    p99_ms=_median([r.p99_ms for r in ok if r.p99_ms is not None]),
                    vs_direct=report.ratio(tps, medians.get(DIRECT)),
                    vs_pgbouncer_session=vs_bouncer,
                    vs_pgbouncer_scram=report.ratio(tps, medians.get(BOUNCER_SCRAM)),
                    cpu_us_per_tx=_median(cpu),
                    cpu_share_of_core=_median(share),
                    rss_mib=max(rss) / 1024 if rss else None,
                    goal=goal.text if judged and goal else "",
                    verdict=report.verdict(vs_bouncer, goal.minimum) if judged and goal else "",
                )
            )
    return rows


def table(rows: list[Summary]) -> str:
    """The console table (fixed-width); results.md has the Markdown one."""

    def cell(value: float | None, spec: str) -> str:
        return report.num(value, spec, "-".rjust(int(spec.partition(".")[0])))

    header = (
        f"{'workload':8} {'mode':9} {'target':26} {'median tps':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'vs direct':>9} {'vs pgb-sess':>11} {'vs pgb-scram':>12} {'relay us/tx':>11} {'rss MiB':>7}"
        f" {'failed':>6} target"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.workload:8} {r.mode:9} {r.target:26} {cell(r.median_tps, '11.1f')}"
            f" {cell(r.p50_ms, '7.3f')} {cell(r.p99_ms, '7.3f')}"
            f" {cell(r.vs_direct, '9.2f')} {cell(r.vs_pgbouncer_session, '11.2f')}"
            f" {cell(r.vs_pgbouncer_scram, '12.2f')}"
            f" {cell(r.cpu_us_per_tx, '11.1f')} {cell(r.rss_mib, '7.1f')}"
            f" {f'{r.failed}/{r.runs}':>6} {r.verdict} {r.goal}".rstrip()
        )
    return "\n".join(lines)


@dataclass
class Results:
    """Everything one run measured; each part is None or empty when its workload was not chosen."""

    runs: list[Run] = field(default_factory=list)
    rows: list[Summary] = field(default_factory=list)
    masked: tuple[list[masking.MaskRun], list[masking.MaskSummary]] | None = None
    big: tuple[list[bigread.BigRun], list[bigread.BigSummary]] | None = None
    worker_runs: list[Run] = field(default_factory=list)
    worker_rows: list[Summary] = field(default_factory=list)
    idle: memory.IdleResult | None = None
    stall: memory.StallResult | None = None
    micro: micro.MicroReport | None = None

    def failures(self) -> int:
        failed = len([r for r in [*self.runs, *self.worker_runs] if r.error is not None])
        failed += len([r for r in self.masked[0] if r.error is not None]) if self.masked else 0
        failed += len([r for r in self.big[0] if r.error is not None]) if self.big else 0
        failed += 1 if self.idle is not None and self.idle.opened < self.idle.clients else 0
        return failed + (1 if self.stall is not None and self.stall.error else 0)


def command_line() -> str:
    return " ".join([".venv/bin/python", "-m", "bench", *sys.argv[1:]])


def write_results(path: Path, settings: Settings, results: Results, started: dt.datetime) -> None:
    settings_json = {
        **asdict(settings),
        "out": str(settings.out),
        "modes": list(settings.modes),
        "workloads": list(settings.workloads),
    }
    document: dict[str, object] = {
        "date": started.isoformat(timespec="seconds"),
        "command": command_line(),
        "nproc": os.cpu_count(),
        "versions": versions(),
        "settings": settings_json,
        "runs": [{**asdict(r), "cpu_us_per_tx": r.cpu_us_per_tx} for r in results.runs],
        "summary": [asdict(r) for r in results.rows],
        "workers": {
            "runs": [{**asdict(r), "cpu_us_per_tx": r.cpu_us_per_tx} for r in results.worker_runs],
            "summary": [asdict(r) for r in results.worker_rows],
        },
    }
    if results.masked is not None:
        document["masking"] = {
            "queries": {q.name: q.sql for q in masking.QUERIES},
            "rows_per_query": masking.ROWS,
            "runs": [r.figures() for r in results.masked[0]],
            "summary": [asdict(r) for r in results.masked[1]],
        }
    if results.big is not None:
        document["bigread"] = bigread.figures(*results.big)
    if results.idle is not None:
        document["idle"] = {**asdict(results.idle), "rss_held_mb": results.idle.rss_held_mb}
    if results.stall is not None:
        document["stalled_reader"] = {**asdict(results.stall), "growth_mib": results.stall.growth_mib}
    if results.micro is not None:
        document["micro"] = asdict(results.micro)
    path.write_text(json.dumps(document, indent=2) + "\n")


def throughput_table(rows: list[Summary]) -> str:
    num = report.num
    return report.markdown_table(
        ["workload", "mode", "target", "median TPS", "p50 ms", "p99 ms", "vs direct", "vs PgBouncer session",
         "vs PgBouncer SCRAM (info)", "relay µs/tx", "rss MiB", "failed", "target", "verdict"],
        [
            [r.workload, r.mode, r.target, num(r.median_tps, ".1f"), num(r.p50_ms, ".3f"),
             num(r.p99_ms, ".3f"),
             num(r.vs_direct, ".2f"), num(r.vs_pgbouncer_session, ".2f"), num(r.vs_pgbouncer_scram, ".2f"),
             num(r.cpu_us_per_tx, ".1f"), num(r.rss_mib, ".1f"), f"{r.failed}/{r.runs}", r.goal, r.verdict]
            for r in rows
        ],
        [False, False, False, True, True, True, True, True, True, True, True, True, False, False],
    )  # fmt: skip


def targets_table(results: Results) -> str:
    """Issue 7's targets against this run's medians, one line each."""
    num = report.num
    lines: list[list[str]] = []
    for r in results.rows:
        if r.target == SEKISHO_RESTRICTED_AUDITED and r.goal:
            lines.append([f"{r.workload} -M {r.mode}: Sekisho, restricted person, audit on", r.goal,
                          f"{num(r.vs_pgbouncer_session, '.2f')}x", r.verdict])  # fmt: skip
            if r.vs_pgbouncer_scram is not None:
                lines.append([f"{r.workload}: Sekisho vs PgBouncer with SCRAM clients, same client work"
                              " (restricted person, audit on)", "none (informative; the target is"
                              " against trust)", f"{r.vs_pgbouncer_scram:.2f}x", "info"])  # fmt: skip
    if results.micro is not None:
        share = results.micro.cached_share
        lines.append(["cached analysis, new literals (pgbench -S) / cold", "< 5%", f"{share:.1%}",
                      report.verdict_below(share, report.ANALYSIS_CACHED_SHARE)])  # fmt: skip
        cells = results.micro.masked_cells_per_second
        lines.append(["masked cells/s per core (StreamMask.data_row, micro)", ">= 200,000", f"{cells:,.0f}",
                      report.verdict(cells, report.MASKED_CELLS_PER_SECOND)])  # fmt: skip
    if results.masked is not None:
        per_cpu = [r.masked_cells_per_cpu_second for r in results.masked[1] if r.masked_cells_per_cpu_second]
        best = min(per_cpu) if per_cpu else None
        lines.append(["masked cells per Sekisho CPU-second (masking workload, worst mode)", ">= 200,000",
                      num(best, ",.0f"), report.verdict(best, report.MASKED_CELLS_PER_SECOND)])  # fmt: skip
    if results.idle is not None:
        idle = results.idle
        lines.append([f"{idle.clients:,} idle clients: Sekisho RSS", f"< {memory.TARGET_MB:.0f} MB",
                      f"{idle.rss_held_mb:.1f} MB ({idle.opened:,} connected)",
                      "PASS" if idle.passed else "FAIL"])  # fmt: skip
    if results.stall is not None:
        stall = results.stall
        lines.append([f"client that stops reading, {stall.seconds:.0f} s: RSS growth after 1 s",
                      f"<= {memory.FLAT_BOUND_MIB:.0f} MiB (flat)", f"{stall.growth_mib:.1f} MiB",
                      "PASS" if stall.flat else "FAIL"])  # fmt: skip
    if results.worker_rows:
        tps = {r.target: r.median_tps for r in results.worker_rows}
        scaling = report.ratio(tps.get(WORKERS_2), tps.get(WORKERS_1))
        lines.append(["--workers 2 / --workers 1 TPS (pgbench -S simple)", "scales with cores (no ratio set)",
                      f"{num(scaling, '.2f')}x", "info"])  # fmt: skip
    if results.big is not None:
        for summary in results.big[1]:
            if summary.median_upstream_idle_ms is not None:
                lines.append([f"capped read: {summary.case}, upstream idle after the result",
                              "stops promptly (no ratio set)", f"{summary.median_upstream_idle_ms:.0f} ms",
                              "info"])  # fmt: skip
    return report.markdown_table(
        ["target", "issue 7", "measured", "verdict"], lines, [False, False, True, False]
    )


def write_markdown(
    path: Path, settings: Settings, results: Results, started: dt.datetime, plot: str | None
) -> None:
    """bench/out/results.md: the command, machine and versions, the targets, every table."""
    num = report.num
    v = versions()
    out = [
        f"# Sekisho bench, {started.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Command: `{command_line()}` (from the repository root)",
        "",
        f"Machine: {os.cpu_count()} cores (`nproc`), shared with other work. PostgreSQL `{v['postgres']}`,"
        f" `{v['pgbench']}`, PgBouncer `{v['pgbouncer']}`, Python {v['python']}.",
        "",
        f"Settings: {settings.rounds} round(s) of {settings.duration} s per target (churn"
        f" {settings.churn_duration} s), {settings.clients} clients, -j {settings.threads},"
        f" scale {settings.scale},"
        f" workloads {', '.join(settings.workloads)}; targets alternate within each round and figures are"
        " medians of the rounds. p50/p99 come from pgbench's per-transaction log (a sample of"
        f" {SAMPLING['select']:.0%} of -S transactions, {SAMPLING['tpcb']:.0%} of TPC-B, all under churn);"
        " relay µs/tx is Sekisho's (or PgBouncer's) user+system CPU per transaction, from /proc.",
        "",
        "## Targets",
        "",
        targets_table(results),
        "",
    ]
    if results.rows:
        out += ["## pgbench", "", throughput_table(results.rows), ""]
        if any(r.target == BOUNCER_SCRAM for r in results.rows):
            out += [
                f"vs PgBouncer SCRAM (informative, churn only): against `{BOUNCER_SCRAM}`, {SCRAM_NOTE}",
                "",
            ]
        if plot:
            out += [f"Plot: `{plot}`.", ""]
    if results.worker_rows:
        out += ["## --workers 1 vs 2 (pgbench -S, restricted person, audit off)", "",
                throughput_table(results.worker_rows), ""]  # fmt: skip
    if results.masked is not None:
        out += [
            "## Masking workload",
            "",
            "```",
            masking.table(results.masked[1]),
            "```",
            "",
            masking.LEGEND,
            "",
        ]
    if results.big is not None:
        out += [
            f"## Capped read of `{bigread.TABLE}` ({settings.big_rows:,} rows)",
            "",
            report.markdown_table(
                ["case", "statement", "rows", "median ms", "rows/s", "upstream idle after (ms)", "failed"],
                [
                    [
                        b.case,
                        f"`{b.sql}`",
                        f"{b.rows:,}",
                        num(b.median_seconds and b.median_seconds * 1000, ".1f"),
                        num(b.median_rows_per_second, ",.0f"),
                        num(b.median_upstream_idle_ms, ".1f"),
                        f"{b.failed}/{b.runs}",
                    ]
                    for b in results.big[1]
                ],
                [False, False, True, True, True, True, True],
            ),
            "",
            "ms: from sending the statement to ReadyForQuery at the client; upstream idle: from then until"
            " pg_stat_activity shows no backend running it.",
            "",
        ]
    if results.idle is not None or results.stall is not None:
        out += ["## Memory", ""]
        if results.idle is not None:
            idle = results.idle
            out.append(
                f"- {idle.opened:,} of {idle.clients:,} idle clients (SCRAM login, `SELECT 1`, then silent)"
                " opened in"
                f" {idle.seconds_to_open:.1f} s: Sekisho RSS {idle.rss_before_mib:.1f} MiB before,"
                f" {idle.rss_held_mib:.1f} MiB ({idle.rss_held_mb:.1f} MB) at most while held,"
                f" {num(idle.per_client_kib, '.0f')} KiB per client,"
                f" {num(idle.rss_after_close_mib, '.1f')} MiB after they closed."
            )
        if results.stall is not None:
            stall = results.stall
            series = ", ".join(f"{t:.1f} s: {rss:.1f}" for t, rss in stall.samples_mib)
            out.append(
                f"- A client that sent `{bigread.STATEMENT}` and never read (64 KiB receive buffer):"
                f" RSS {stall.rss_before_mib:.1f} MiB before; MiB at {series}; growth after 1 s"
                f" {stall.growth_mib:.1f} MiB; upstream idle {num(stall.upstream_idle_ms, '.0f')} ms"
                " after the"
                f" client closed.{' Error: ' + stall.error if stall.error else ''}"
            )
        out.append("")
    if results.micro is not None:
        out += ["## Micro-benchmarks", "", "```", results.micro.text, "```", ""]
    path.write_text("\n".join(out))


def write_plot(path: Path, results: Results, started: dt.datetime) -> bool:
    """The SVG of TPS ratios to PgBouncer session per workload and target; False if nothing to plot."""
    groups: list[tuple[str, list[tuple[str, float]]]] = []
    for workload, mode in dict.fromkeys((r.workload, r.mode) for r in results.rows):
        bars = [
            (r.target, r.vs_pgbouncer_session)
            for r in results.rows
            if (r.workload, r.mode) == (workload, mode) and r.vs_pgbouncer_session is not None
        ]
        if bars:
            label = workload if workload != "select" else f"-S {mode}"
            groups.append((label, [(t, v) for t, v in bars if v is not None]))
    if not groups:
        return False
    notes = [f"{command_line()} | {os.cpu_count()} cores | {started.strftime('%Y-%m-%d %H:%M UTC')}"]
    path.write_text(report.ratio_chart(groups, notes=notes))
    return True


# ----------------------------------------------------------------------------- the whole run


async def _max_connections(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()


async def _set_max_connections(dsn: str, value: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET max_connections = {int(value)}")
    finally:
        await conn.close()


def ensure_connections(cluster: Cluster, needed: int) -> None:
    """Every Sekisho session has its own upstream connection, so the idle-clients test needs a
    cluster that accepts them all: raise max_connections (ALTER SYSTEM, kept) and restart."""
    if asyncio.run(_max_connections(cluster.dsn())) >= needed:
        return
    say(f"max_connections -> {needed} (restart)")
    asyncio.run(_set_max_connections(cluster.dsn(), needed))
    cluster.stop()
    cluster.start()


def run_bench(settings: Settings) -> int:
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("sekisho", "sekisho-audited", "sekisho-w1", "sekisho-w2", "pgbouncer"):
        shutil.rmtree(out / stale, ignore_errors=True)  # fresh logs and configuration each run
    chosen = set(settings.workloads)
    pgbench_workloads: list[str] = [w for w in ("select", "tpcb", "churn") if w in chosen]
    needs_tables = bool(pgbench_workloads) or "workers" in chosen
    cluster: Cluster | None = None
    bouncer: PgBouncer | None = None
    gateways: list[Gateway] = []
    started = dt.datetime.now(dt.UTC)
    results = Results()
    try:
        say(f"bench: {settings.rounds} round(s) x {settings.duration} s, {settings.clients} clients, "
            f"-j {settings.threads}, modes {','.join(settings.modes)}, "
            f"workloads {','.join(settings.workloads)}, scale {settings.scale}, "
            f"{os.cpu_count()} cores")  # fmt: skip
        cluster = Cluster(out / "pg", free_port())
        cluster.start()
        if "memory" in chosen:
            ensure_connections(cluster, settings.idle_clients + 200)
        asyncio.run(ensure_database(cluster.dsn(), DATABASE))
        if needs_tables:
            prepare_data(cluster, settings.scale)
        if "masking" in chosen:
            masking.prepare(cluster.dsn(DATABASE))  # before Sekisho starts, so its catalog has the tables
        if chosen & {"bigread", "memory"}:
            bigread.prepare(cluster.dsn(DATABASE), settings.big_rows, say)
        if pgbench_workloads or "workers" in chosen:
            bouncer = start_pgbouncer(out / "pgbouncer", cluster.port, DATABASE, settings.clients)
        gateway = sekisho.start(out / "sekisho", cluster.dsn(DATABASE), bulk_cap=settings.bulk_cap)
        gateways.append(gateway)
        asyncio.run(ensure_database(cluster.dsn(), AUDIT_DATABASE))
        audit = {"log": "none", "database": cluster.dsn(AUDIT_DATABASE)}
        audited = sekisho.start(
            out / "sekisho-audited", cluster.dsn(DATABASE), bulk_cap=settings.bulk_cap, audit=audit
        )
        gateways.append(audited)
        if pgbench_workloads:
            assert bouncer is not None
            results.runs, results.rows = run_pgbench(
                cluster, bouncer, [gateway, audited], settings, pgbench_workloads
            )
        if "workers" in chosen:
            assert bouncer is not None
            results.worker_runs, results.worker_rows = run_workers(cluster, bouncer, settings, gateways)
        if "masking" in chosen:
            results.masked = run_masking(cluster, gateway, settings)
        if "bigread" in chosen:
            results.big = run_bigread(cluster, audited, settings)
        if "memory" in chosen:
            assert audited.process is not None
            direct = f"host=127.0.0.1 port={cluster.port} dbname={DATABASE} user=postgres sslmode=disable"
            results.stall = memory.stalled_reader(
                audited.port,
                audited.process.pid,
                user="maint",
                database=DATABASE,
                seconds=settings.stall_seconds,
                direct_conninfo=direct,
                say=say,
            )
            results.idle = memory.idle_clients(
                audited.port, audited.process.pid, user=SEKISHO_CONTRACTOR, database=DATABASE,
                clients=settings.idle_clients, hold=settings.idle_hold, say=say,
            )  # fmt: skip
        if "micro" in chosen:
            say("micro-benchmarks ...")
            results.micro = micro.run(
                repeats=5 if settings.micro_scale < 1 else 9, scale=settings.micro_scale
            )
            say(results.micro.text)
        for gateway_ in gateways:
            if gateway_.process is not None and gateway_.process.poll() is not None:
                raise RuntimeError(
                    f"Sekisho exited ({gateway_.process.returncode}):\n{gateway_.log()[-3000:]}"
                )
        write_results(out / "results.json", settings, results, started)
        plot = out / "ratios.svg"
        plotted = write_plot(plot, results, started)
        write_markdown(out / "results.md", settings, results, started, plot.name if plotted else None)
        say("")
        say(targets_table(results))
        say(f"\nresults: {out / 'results.md'}, {out / 'results.json'}" + (f", {plot}" if plotted else ""))
        failed = results.failures()
        if failed:
            say(f"bench: {failed} run(s) failed; see the messages above and the logs under {out}")
            return 1
        return 0
    finally:
        for gateway_ in gateways:
            gateway_.stop()
        if bouncer is not None:
            bouncer.stop()
        if cluster is not None:
            cluster.stop()


SEKISHO_CONTRACTOR = "contractor"


def pgbench_targets(cluster: Cluster, bouncer: PgBouncer, gateways: list[Gateway]) -> list[Target]:
    gateway, audited = gateways
    assert gateway.process is not None
    assert audited.process is not None
    no_prepared = "PgBouncer 1.18 does not track prepared statements in transaction pooling"
    return [
        Target(DIRECT, direct_env(cluster)),
        Target(BOUNCER_SESSION, bouncer.env(SESSION_DB), bouncer.process.pid),
        Target(
            BOUNCER_TRANSACTION, bouncer.env(TRANSACTION_DB), bouncer.process.pid, {"prepared": no_prepared}
        ),
        Target(BOUNCER_SCRAM, bouncer.env(SCRAM_DB), bouncer.process.pid, only=("churn",)),
        Target(SEKISHO, gateway.env("maint"), gateway.process.pid),
        Target(SEKISHO_RESTRICTED, gateway.env(SEKISHO_CONTRACTOR), gateway.process.pid),
        Target(SEKISHO_AUDITED, audited.env("maint"), audited.process.pid),
        Target(SEKISHO_RESTRICTED_AUDITED, audited.env(SEKISHO_CONTRACTOR), audited.process.pid),
    ]


def run_pgbench(
    cluster: Cluster, bouncer: PgBouncer, gateways: list[Gateway], settings: Settings, workloads: list[str]
) -> tuple[list[Run], list[Summary]]:
    """pgbench -S (every mode), TPC-B and churn (simple protocol) against every target."""
    targets = pgbench_targets(cluster, bouncer, gateways)
    if settings.warmup:
        say(f"warm-up: {settings.warmup} s direct")
        with contextlib.suppress(pgbench.PgbenchError):
            pgbench.select_only(targets[0].env, "simple", settings.clients, settings.threads, settings.warmup)
    cases = [(w, mode) for w in workloads for mode in (settings.modes if w == "select" else ("simple",))]
    runs = measure(targets, settings, gateways, cases)
    rows = summarize(runs, targets, cases)
    say("")
    say(table(rows))
    say(f"\n{BOUNCER_TRANSACTION} skips prepared: PgBouncer 1.18 does not track prepared statements there.")
    say("relay us/tx: the relay process's user+system CPU per transaction (from /proc around each run).")
    if "churn" in workloads:
        say(f"vs pgb-scram (informative): against {BOUNCER_SCRAM}, {SCRAM_NOTE}")
    return runs, rows


def run_workers(
    cluster: Cluster, bouncer: PgBouncer, settings: Settings, gateways: list[Gateway]
) -> tuple[list[Run], list[Summary]]:
    """pgbench -S (simple) as the restricted person through `--workers 1` and `--workers 2`."""
    out = settings.out
    one = sekisho.start(out / "sekisho-w1", cluster.dsn(DATABASE), bulk_cap=settings.bulk_cap, workers=1)
    gateways.append(one)
    two = sekisho.start(out / "sekisho-w2", cluster.dsn(DATABASE), bulk_cap=settings.bulk_cap, workers=2)
    gateways.append(two)
    assert one.process is not None
    assert two.process is not None
    targets = [
        Target(DIRECT, direct_env(cluster)),
        Target(BOUNCER_SESSION, bouncer.env(SESSION_DB), bouncer.process.pid),
        Target(WORKERS_1, one.env(SEKISHO_CONTRACTOR), one.process.pid),
        Target(WORKERS_2, two.env(SEKISHO_CONTRACTOR), two.process.pid),
    ]
    cases = [("select", "simple")]
    try:
        runs = measure(targets, settings, [one, two], cases)
    finally:
        for stopped in (one, two):
            stopped.stop()
            gateways.remove(stopped)  # stopped on purpose: not a gateway that died
    rows = summarize(runs, targets, cases)
    for row in rows:
        row.workload, row.goal, row.verdict = "workers", "", ""
    say("")
    say(table(rows))
    return runs, rows


def run_masking(
    cluster: Cluster, gateway: Gateway, settings: Settings
) -> tuple[list[masking.MaskRun], list[masking.MaskSummary]]:
    """The masking workload: direct, Sekisho unrestricted and Sekisho restricted (masks applied)."""
    assert gateway.process is not None
    targets = [
        Target(DIRECT, direct_env(cluster)),
        Target(SEKISHO, gateway.env("maint"), gateway.process.pid),
        Target(SEKISHO_RESTRICTED, gateway.env(SEKISHO_CONTRACTOR), gateway.process.pid),
    ]
    scripts = masking.write_scripts(settings.out / "scripts")
    try:
        runs, rows = masking.run(targets, SEKISHO_RESTRICTED, settings, scripts)
    except masking.CheckError as exc:
        raise RuntimeError(f"masking workload: {exc}") from exc
    if any(r.error is not None for r in runs) and gateway.process.poll() is not None:
        raise RuntimeError(f"Sekisho exited ({gateway.process.returncode}):\n{gateway.log()[-3000:]}")
    say("")
    say(masking.table(rows))
    say(masking.LEGEND)
    return runs, rows


def run_bigread(
    cluster: Cluster, gateway: Gateway, settings: Settings
) -> tuple[list[bigread.BigRun], list[bigread.BigSummary]]:
    """The capped read of ``big``: the restricted person and the bulk reader through Sekisho
    (audit on), the same LIMIT queries directly, and a direct full scan."""
    plan = bigread.cases(settings.big_rows, 100, settings.bulk_cap, SEKISHO_CONTRACTOR, sekisho.BULK_READER)
    clients: dict[str, bigread.Client] = {}
    try:
        clients["direct"] = bigread.Client(cluster.port)
        clients["direct"].login("postgres", DATABASE)
        for person in (SEKISHO_CONTRACTOR, sekisho.BULK_READER):
            clients[person] = bigread.Client(gateway.port)
            clients[person].login(person, DATABASE, person)
        direct = f"host=127.0.0.1 port={cluster.port} dbname={DATABASE} user=postgres sslmode=disable"
        runs = bigread.measure(plan, clients, direct, settings.rounds, say)
    except (OSError, bigread.ProtocolError) as exc:
        raise RuntimeError(f"capped read: {exc}") from exc
    finally:
        for client in clients.values():
            client.close()
    return runs, bigread.summarize(runs, plan)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    install_sigterm_as_interrupt()
    try:
        return run_bench(settings)
    except KeyboardInterrupt:
        say("bench: interrupted; everything it started has been stopped")
        return 130
    except (ClusterError, PgBouncerError, pgbench.PgbenchError, RuntimeError, OSError) as exc:
        say(f"bench: {exc}")
        return 2
