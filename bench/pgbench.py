"""Running pgbench and reading its report.

Only the figures the harness compares are parsed: TPS excluding connection time (so Sekisho's SCRAM
handshake, paid once per client, does not count against the relay), average latency, transactions
processed and failed. A run that exits non-zero, reports failures or prints no TPS is an error with
pgbench's own words attached, never a silent zero.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PGBENCH = "pgbench"

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_NOTICE = re.compile(r"^(?:NOTICE|WARNING):.*$", re.MULTILINE)


class PgbenchError(Exception):
    """pgbench failed; the message carries the tail of its output."""


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def initialize(env: dict[str, str], scale: int) -> None:
    """`pgbench -i -s SCALE` (quietly); raises PgbenchError on failure."""
    out = subprocess.run(
        [PGBENCH, "-i", "-q", "-s", str(scale)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise PgbenchError(f"pgbench -i failed (exit {out.returncode}):\n{_tail(out.stderr + out.stdout)}")


def select_only(env: dict[str, str], mode: str, clients: int, threads: int, duration: int) -> PgbenchResult:
    """One `pgbench -n -S` run; -n because vacuuming through a relay is not what is measured."""
    return _run(["-S"], env, mode, clients=clients, threads=threads, duration=duration)


def script(
    env: dict[str, str], path: Path, mode: str, *, clients: int, threads: int, duration: int
) -> PgbenchResult:
    """One `pgbench -n -f PATH` run of a custom script.

    A NOTICE or WARNING on stderr is an error too: a script's statements are chosen to run
    cleanly, so a notice means the result was not what is being measured (Sekisho's row-cap
    notice says the rows were cut)."""
    return _run(
        ["-f", str(path)], env, mode, clients=clients, threads=threads, duration=duration, notices_fail=True
    )


def _run(
    workload: list[str],
    env: dict[str, str],
    mode: str,
    *,
    clients: int,
    threads: int,
    duration: int,
    notices_fail: bool = False,
) -> PgbenchResult:
    argv = [PGBENCH, "-n", *workload, "-M", mode, "-c", str(clients), "-j", str(threads), "-T", str(duration)]
    try:
        out = subprocess.run(
            argv, env=env, capture_output=True, text=True, check=False, timeout=duration + 60
        )
    except subprocess.TimeoutExpired as exc:
        raise PgbenchError(f"pgbench did not finish within {duration + 60} s") from exc
    if notices_fail and (notice := _NOTICE.search(out.stderr)) is not None:
        raise PgbenchError(f"the server sent a notice, so the result is not the one measured: {notice[0]}")
    return parse(out.stdout, out.stderr, out.returncode)


def parse(stdout: str, stderr: str, returncode: int) -> PgbenchResult:
    """The figures from a pgbench report; PgbenchError if the run did not succeed cleanly."""
    tps = _TPS.search(stdout)
    latency = _LATENCY.search(stdout)
    processed = _PROCESSED.search(stdout)
    failed = _FAILED.search(stdout)
    failures = int(failed.group(1)) if failed else 0
    if returncode != 0 or tps is None or latency is None or processed is None or failures:
        raise PgbenchError(
            f"pgbench exit {returncode}, failed transactions {failures}:\n{_tail(stderr + stdout)}"
        )
    return PgbenchResult(float(tps.group(1)), float(latency.group(1)), int(processed.group(1)), failures)
