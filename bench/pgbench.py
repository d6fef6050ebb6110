"""Running pgbench and reading its report and per-transaction logs.

Only the figures the harness compares are parsed: TPS (excluding the initial connection time, so
Sekisho's SCRAM handshake, paid once per client, does not count against the relay; with ``-C`` every
transaction reconnects and pgbench's TPS includes those connections, which is what churn measures),
average latency, the average connection time under ``-C``, transactions processed and failed. A
run that exits non-zero, reports failures or prints no TPS is an error with pgbench's own words
attached, never a silent zero.

Latency percentiles come from pgbench's per-transaction log (``-l``) of a random sample of the
transactions (``--sampling-rate``): pgbench's report has only the mean, and a sample of tens of
thousands of transactions gives p50 and p99 for the cost of a buffered line per sampled one. The
log's latency excludes connecting, also under ``-C``.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PGBENCH = "pgbench"

_TPS = re.compile(
    r"^tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)", re.MULTILINE
)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_CONNECTION = re.compile(r"^average connection time = ([0-9.]+) ms", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_NOTICE = re.compile(r"^(?:NOTICE|WARNING):.*$", re.MULTILINE)

# pgbench -S: one indexed point select; tpcb: pgbench's default TPC-B-like script (three UPDATEs,
# a SELECT and an INSERT in a transaction); churn: -S with a new connection per transaction (-C).
SELECT_ONLY: tuple[str, ...] = ("-S",)
TPCB: tuple[str, ...] = ()
CHURN: tuple[str, ...] = ("-S", "-C")


class PgbenchError(Exception):
    """pgbench failed; the message carries the tail of its output."""


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int
    p50_ms: float | None = None  # from the sampled per-transaction log, when one was asked for
    p99_ms: float | None = None
    connection_ms: float | None = None  # average connection time, reported under -C


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def initialize(env: dict[str, str], scale: int) -> None:
    """`pgbench -i -s SCALE` (quietly); raises PgbenchError on failure."""
    out = subprocess.run(
        [PGBENCH, "-i", "-q", "-s", str(scale)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise PgbenchError(f"pgbench -i failed (exit {out.returncode}):\n{_tail(out.stderr + out.stdout)}")


def select_only(
    env: dict[str, str], mode: str, clients: int, threads: int, duration: int, *, sampling: float = 0.0
) -> PgbenchResult:
    """One `pgbench -n -S` run; -n because vacuuming through a relay is not what is measured."""
    return run(SELECT_ONLY, env, mode, clients=clients, threads=threads, duration=duration, sampling=sampling)


def script(
    env: dict[str, str],
    path: Path,
    mode: str,
    *,
    clients: int,
    threads: int,
    duration: int,
    sampling: float = 0.0,
) -> PgbenchResult:
    """One `pgbench -n -f PATH` run of a custom script.

    A NOTICE or WARNING on stderr is an error too: a script's statements are chosen to run
    cleanly, so a notice means the result was not what is being measured (Sekisho's row-cap
    notice says the rows were cut)."""
    return run(
        ("-f", str(path)), env, mode, clients=clients, threads=threads, duration=duration,
        notices_fail=True, sampling=sampling,
    )  # fmt: skip


def run(
    workload: Sequence[str],
    env: dict[str, str],
    mode: str,
    *,
    clients: int,
    threads: int,
    duration: int,
    notices_fail: bool = False,
    sampling: float = 0.0,
) -> PgbenchResult:
    """One `pgbench -n WORKLOAD -M MODE` run. With ``sampling`` > 0 that fraction of transactions
    is logged (in a temporary directory, removed afterwards) and the result carries p50 and p99."""
    argv = [PGBENCH, "-n", *workload, "-M", mode, "-c", str(clients), "-j", str(threads), "-T", str(duration)]
    logs = Path(tempfile.mkdtemp(prefix="sekisho-pgbench-")) if sampling > 0 else None
    try:
        if logs is not None:
            argv += ["-l", "--log-prefix", str(logs / "tx")]
            if sampling < 1:
                argv += ["--sampling-rate", f"{sampling:g}"]
        try:
            out = subprocess.run(
                argv, env=env, capture_output=True, text=True, check=False, timeout=duration + 60, cwd=logs
            )
        except subprocess.TimeoutExpired as exc:
            raise PgbenchError(f"pgbench did not finish within {duration + 60} s") from exc
        if notices_fail and (notice := _NOTICE.search(out.stderr)) is not None:
            raise PgbenchError(
                f"the server sent a notice, so the result is not the one measured: {notice[0]}"
            )
        result = parse(out.stdout, out.stderr, out.returncode)
        if logs is None:
            return result
        latencies = sorted(read_latencies_us(_lines(logs)))
        if not latencies:
            return result
        return PgbenchResult(
            result.tps, result.latency_ms, result.transactions, result.failed,
            percentile(latencies, 50) / 1000, percentile(latencies, 99) / 1000, result.connection_ms,
        )  # fmt: skip
    finally:
        if logs is not None:
            shutil.rmtree(logs, ignore_errors=True)


def _lines(directory: Path) -> Iterable[str]:
    for path in sorted(directory.iterdir()):
        with path.open() as log:
            yield from log


def parse(stdout: str, stderr: str, returncode: int) -> PgbenchResult:
    """The figures from a pgbench report; PgbenchError if the run did not succeed cleanly."""
    tps = _TPS.search(stdout)
    latency = _LATENCY.search(stdout)
    processed = _PROCESSED.search(stdout)
    failed = _FAILED.search(stdout)
    connection = _CONNECTION.search(stdout)
    failures = int(failed.group(1)) if failed else 0
    if returncode != 0 or tps is None or latency is None or processed is None or failures:
        raise PgbenchError(
            f"pgbench exit {returncode}, failed transactions {failures}:\n{_tail(stderr + stdout)}"
        )
    return PgbenchResult(
        float(tps.group(1)), float(latency.group(1)), int(processed.group(1)), failures,
        connection_ms=float(connection.group(1)) if connection else None,
    )  # fmt: skip


def read_latencies_us(lines: Iterable[str]) -> list[int]:
    """Transaction latencies (µs) from pgbench per-transaction log lines
    (``client_id transaction_no time script_no time_epoch time_us [...]``). Lines of failed or
    skipped transactions (``failed``, ``skipped`` in the time field) carry no latency and are left
    out; a line of another shape raises ValueError, so a format change is not read as figures."""
    out = []
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise ValueError(f"not a pgbench per-transaction log line: {line!r}")
        if fields[2] in ("failed", "skipped"):
            continue
        out.append(int(fields[2]))
    return out


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) of ascending ``ordered`` by the nearest-rank method:
    the smallest value with at least q% of the values at or below it. Always one of the values
    (no interpolation between a fast and a slow transaction). Raises ValueError when empty."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    rank = math.ceil(round(q * len(ordered) / 100, 9))  # round: 99 * 100 / 100 is not 99.000...01
    return ordered[max(rank, 1) - 1]
