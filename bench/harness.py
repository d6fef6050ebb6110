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

from bench import masking, pgbench
from bench.pgbouncer import (
    SESSION_DB,
    TRANSACTION_DB,
    PgBouncer,
    PgBouncerError,
    find_pgbouncer,
    start_pgbouncer,
)
from bench.procstat import ProcSample, sample
from gateway.demo import ensure_database, install_sigterm_as_interrupt
from gateway.pgcluster import Cluster, ClusterError, find_bindir, free_port
from tests.support import Gateway, start_gateway

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench"
MODES = ("simple", "extended", "prepared")
# select: pgbench -S against every target (the relay's per-statement cost); masking: 100-row
# results with and without masked columns (bench/masking.py).
WORKLOADS = ("select", "masking")
DIRECT = "direct"
BOUNCER_SESSION = "pgbouncer-session"
BOUNCER_TRANSACTION = "pgbouncer-transaction"
SEKISHO = "sekisho"
# The same gateway, as a restricted person (the test policy's maintenance role: every statement
# analyzed, decided and capped at 100 rows): the full policy path.
SEKISHO_RESTRICTED = "sekisho-maint"
# The same two people through a second gateway whose audit trail goes durably to an audit database
# on the bench's cluster (the first gateway records nothing: audit.log none, no database).
SEKISHO_AUDITED = "sekisho+audit"
SEKISHO_RESTRICTED_AUDITED = "sekisho-maint+audit"
AUDIT_DATABASE = "sekisho_audit"


@dataclass
class Target:
    """Somewhere pgbench connects to; ``pid`` is the relay process sampled around its rounds."""

    name: str
    env: dict[str, str]
    pid: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    """One pgbench run against one target; ``error`` is set instead of the figures when it failed."""

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
    error: str | None = None

    @property
    def cpu_us_per_tx(self) -> float | None:
        if self.cpu_seconds is None or not self.transactions:
            return None
        return self.cpu_seconds / self.transactions * 1e6


@dataclass
class Summary:
    mode: str
    target: str
    runs: int
    failed: int
    median_tps: float | None
    median_latency_ms: float | None
    vs_direct: float | None
    vs_pgbouncer_session: float | None
    cpu_us_per_tx: float | None
    cpu_share_of_core: float | None
    rss_mib: float | None


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


# ----------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pgbench against PostgreSQL directly, PgBouncer and Sekisho, alternating rounds.",
    )
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10; --quick 2)")
    parser.add_argument("--rounds", type=int, help="rounds per mode (default 3; --quick 1)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="pgbench threads, -j (default 2)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated pgbench -M modes")
    parser.add_argument(
        "--workloads",
        default="select",
        help="comma-separated: select (pgbench -S, the default), masking (100-row masked results)",
    )
    parser.add_argument("--scale", type=int, help="pgbench -i -s scale (default 10; --quick 1)")
    parser.add_argument("--warmup", type=int, help="seconds of direct pgbench before measuring (default 2)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (well under a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="work and results directory")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f"--modes: expected some of {', '.join(MODES)}, got {args.modes!r}")
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    if not workloads or any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: expected some of {', '.join(WORKLOADS)}, got {args.workloads!r}")

    def pick(value: int | None, normal: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else normal)

    settings = Settings(
        duration=pick(args.duration, 10, 2),
        rounds=pick(args.rounds, 3, 1),
        clients=args.clients,
        threads=min(args.threads, args.clients),
        modes=modes,
        workloads=workloads,
        scale=pick(args.scale, 10, 1),
        warmup=pick(args.warmup, 2, 1),
        out=args.out.resolve(),
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


def measure_once(target: Target, mode: str, rnd: int, settings: Settings) -> Run:
    run = Run(mode, target.name, rnd)
    before: ProcSample | None = sample(target.pid) if target.pid else None
    started = time.monotonic()
    try:
        result = pgbench.select_only(target.env, mode, settings.clients, settings.threads, settings.duration)
    except pgbench.PgbenchError as exc:
        run.error = str(exc)
        return run
    run.wall_seconds = time.monotonic() - started
    run.tps, run.latency_ms, run.transactions = result.tps, result.latency_ms, result.transactions
    after = sample(target.pid) if target.pid else None
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
    if run.cpu_us_per_tx is not None and run.cpu_seconds is not None and run.wall_seconds:
        share = run.cpu_seconds / run.wall_seconds
        line += f"  relay cpu {run.cpu_us_per_tx:6.1f} us/tx ({share:4.0%} of a core)"
    if run.rss_kib is not None:
        line += f"  rss {run.rss_kib / 1024:5.1f} MiB"
    return line


def measure(targets: list[Target], settings: Settings, gateways: list[Gateway]) -> list[Run]:
    """Every mode: rounds of (each target once, in order); progress is printed as runs finish."""
    runs: list[Run] = []
    for mode in settings.modes:
        for rnd in range(1, settings.rounds + 1):
            for target in targets:
                if mode in target.unsupported:
                    continue
                run = measure_once(target, mode, rnd, settings)
                runs.append(run)
                say(f"{mode:9} round {rnd}/{settings.rounds}  {target.name:22} {describe(run)}")
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


def summarize(runs: list[Run], targets: list[Target], modes: tuple[str, ...]) -> list[Summary]:
    rows: list[Summary] = []
    for mode in modes:
        medians: dict[str, float | None] = {}
        for target in targets:
            ok = [r for r in runs if r.mode == mode and r.target == target.name and r.error is None]
            medians[target.name] = _median([r.tps for r in ok if r.tps is not None])
        for target in targets:
            if mode in target.unsupported:
                continue
            mine = [r for r in runs if r.mode == mode and r.target == target.name]
            ok = [r for r in mine if r.error is None]
            tps = medians[target.name]
            direct, bouncer = medians.get(DIRECT), medians.get(BOUNCER_SESSION)
            cpu = [r.cpu_us_per_tx for r in ok if r.cpu_us_per_tx is not None]
            share = [
                r.cpu_seconds / r.wall_seconds for r in ok if r.cpu_seconds is not None and r.wall_seconds
            ]
            rss = [r.rss_kib for r in ok if r.rss_kib is not None]
            rows.append(
                Summary(
                    mode=mode,
                    target=target.name,
                    runs=len(mine),
                    failed=len(mine) - len(ok),
                    median_tps=tps,
                    median_latency_ms=_median([r.latency_ms for r in ok if r.latency_ms is not None]),
                    vs_direct=tps / direct if tps is not None and direct else None,
                    vs_pgbouncer_session=tps / bouncer if tps is not None and bouncer else None,
                    cpu_us_per_tx=_median(cpu),
                    cpu_share_of_core=_median(share),
                    rss_mib=max(rss) / 1024 if rss else None,
                )
            )
    return rows


def table(rows: list[Summary]) -> str:
    def num(value: float | None, fmt: str) -> str:
        width = int(fmt.partition(".")[0])
        return f"{'-':>{width}}" if value is None else format(value, fmt)

    header = (
        f"{'mode':9} {'target':22} {'median tps':>11} {'lat ms':>7} {'vs direct':>9} {'vs pgb-sess':>11}"
        f" {'relay us/tx':>11} {'relay cpu':>9} {'rss MiB':>7} {'failed':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.mode:9} {r.target:22} {num(r.median_tps, '11.1f')} {num(r.median_latency_ms, '7.3f')}"
            f" {num(r.vs_direct, '9.2f')} {num(r.vs_pgbouncer_session, '11.2f')}"
            f" {num(r.cpu_us_per_tx, '11.1f')} {num(r.cpu_share_of_core, '9.0%')}"
            f" {num(r.rss_mib, '7.1f')} {f'{r.failed}/{r.runs}':>6}"
        )
    return "\n".join(lines)


def write_results(
    path: Path,
    settings: Settings,
    runs: list[Run],
    rows: list[Summary],
    masked: tuple[list[masking.MaskRun], list[masking.MaskSummary]] | None = None,
) -> None:
    settings_json = {
        **asdict(settings),
        "out": str(settings.out),
        "modes": list(settings.modes),
        "workloads": list(settings.workloads),
    }
    document: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, "-m", "bench", *sys.argv[1:]],
        "nproc": os.cpu_count(),
        "versions": versions(),
        "settings": settings_json,
        "runs": [{**asdict(r), "cpu_us_per_tx": r.cpu_us_per_tx} for r in runs],
        "summary": [asdict(r) for r in rows],
    }
    if masked is not None:
        document["masking"] = {
            "queries": {q.name: q.sql for q in masking.QUERIES},
            "rows_per_query": masking.ROWS,
            "runs": [r.figures() for r in masked[0]],
            "summary": [asdict(r) for r in masked[1]],
        }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ----------------------------------------------------------------------------- the whole run


def run_bench(settings: Settings) -> int:
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("sekisho", "pgbouncer"):  # fresh logs and configuration each run
        shutil.rmtree(out / stale, ignore_errors=True)
    selecting = "select" in settings.workloads
    cluster: Cluster | None = None
    bouncer: PgBouncer | None = None
    gateway: Gateway | None = None
    audited: Gateway | None = None
    try:
        say(f"bench: {settings.rounds} round(s) x {settings.duration} s, {settings.clients} clients, "
            f"-j {settings.threads}, modes {','.join(settings.modes)}, "
            f"workloads {','.join(settings.workloads)}, scale {settings.scale}, "
            f"{os.cpu_count()} cores")  # fmt: skip
        cluster = Cluster(out / "pg", free_port())
        cluster.start()
        if selecting:
            prepare_data(cluster, settings.scale)
        if "masking" in settings.workloads:
            asyncio.run(ensure_database(cluster.dsn(), DATABASE))
            masking.prepare(cluster.dsn(DATABASE))  # before Sekisho starts, so its catalog has the tables
        if selecting:
            bouncer = start_pgbouncer(out / "pgbouncer", cluster.port, DATABASE, settings.clients)
        gateway = start_gateway(out / "sekisho", cluster.dsn(DATABASE), audit={"log": "none"})
        assert gateway.process is not None
        if selecting:
            asyncio.run(ensure_database(cluster.dsn(), AUDIT_DATABASE))
            audit = {"log": "none", "database": cluster.dsn(AUDIT_DATABASE)}
            audited = start_gateway(out / "sekisho-audited", cluster.dsn(DATABASE), audit=audit)
        runs: list[Run] = []
        rows: list[Summary] = []
        if selecting:
            assert bouncer is not None
            assert audited is not None
            runs, rows = run_select(cluster, bouncer, [gateway, audited], settings)
        masked: tuple[list[masking.MaskRun], list[masking.MaskSummary]] | None = None
        if "masking" in settings.workloads:
            masked = run_masking(cluster, gateway, settings)
        results = out / "results.json"
        write_results(results, settings, runs, rows, masked)
        say(f"results: {results}")
        failed = len([r for r in runs if r.error is not None])
        failed += len([r for r in masked[0] if r.error is not None]) if masked else 0
        if failed:
            log = gateway.directory / "sekisho.log"
            say(f"bench: {failed} run(s) failed; see the messages above and {log}")
            return 1
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
        if audited is not None:
            audited.stop()
        if bouncer is not None:
            bouncer.stop()
        if cluster is not None:
            cluster.stop()


def run_select(
    cluster: Cluster, bouncer: PgBouncer, gateways: list[Gateway], settings: Settings
) -> tuple[list[Run], list[Summary]]:
    """pgbench -S against every target, PgBouncer included; ``gateways``: audit off, then on."""
    gateway, audited = gateways
    assert gateway.process is not None
    assert audited.process is not None
    no_prepared = "PgBouncer 1.18 does not track prepared statements in transaction pooling"
    targets = [
        Target(DIRECT, direct_env(cluster)),
        Target(BOUNCER_SESSION, bouncer.env(SESSION_DB), bouncer.process.pid),
        Target(
            BOUNCER_TRANSACTION,
            bouncer.env(TRANSACTION_DB),
            bouncer.process.pid,
            {"prepared": no_prepared},
        ),
        Target(SEKISHO, gateway.env("maint"), gateway.process.pid),
        Target(SEKISHO_RESTRICTED, gateway.env("contractor"), gateway.process.pid),
        Target(SEKISHO_AUDITED, audited.env("maint"), audited.process.pid),
        Target(SEKISHO_RESTRICTED_AUDITED, audited.env("contractor"), audited.process.pid),
    ]
    if settings.warmup:
        say(f"warm-up: {settings.warmup} s direct")
        with contextlib.suppress(pgbench.PgbenchError):
            pgbench.select_only(targets[0].env, "simple", settings.clients, settings.threads, settings.warmup)
    runs = measure(targets, settings, gateways)
    rows = summarize(runs, targets, settings.modes)
    say("")
    say(table(rows))
    say(f"\n{BOUNCER_TRANSACTION} skips prepared: {no_prepared}.")
    say("relay us/tx, relay cpu: the relay process's user+system CPU per transaction, and per second")
    say("of wall time as a share of one core (sampled from /proc around each run).")
    return runs, rows


def run_masking(
    cluster: Cluster, gateway: Gateway, settings: Settings
) -> tuple[list[masking.MaskRun], list[masking.MaskSummary]]:
    """The masking workload: direct, Sekisho unrestricted and Sekisho restricted (masks applied)."""
    assert gateway.process is not None
    targets = [
        Target(DIRECT, direct_env(cluster)),
        Target(SEKISHO, gateway.env("maint"), gateway.process.pid),
        Target(SEKISHO_RESTRICTED, gateway.env("contractor"), gateway.process.pid),
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
