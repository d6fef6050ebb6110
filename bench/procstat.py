"""CPU time and memory of a running process, read from /proc.

Sampled before and after each round so the report can say how much CPU a relay spends per
transaction: on a 2-core machine where pgbench, PostgreSQL and the relay share the cores, CPU per
transaction is a steadier measure of the relay's own cost than TPS alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading: user+system CPU seconds so far, resident and peak-resident memory in KiB."""

    cpu_seconds: float
    rss_kib: int
    hwm_kib: int


def sample(pid: int) -> ProcSample | None:
    """Read /proc/<pid>; None if the process is gone (the caller reports it rather than crashing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are
    # fixed: state is field 3, utime field 14 and stime field 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    memory = {"VmRSS": 0, "VmHWM": 0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in memory:
            memory[key] = int(value.split()[0])
    return ProcSample(cpu, memory["VmRSS"], memory["VmHWM"])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``sekisho run --workers N`` forks its workers; the
    analysis pool's processes are children too), read from /proc/<pid>/task/*/children."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def sample_tree(pid: int) -> ProcSample | None:
    """One reading summed over ``pid`` and its descendants (CPU and RSS add up across processes;
    the peak is the sum of each one's peak, an upper bound). None if ``pid`` is gone."""
    samples = [s for s in map(sample, descendants(pid)) if s is not None]
    if not Path(f"/proc/{pid}").exists() or not samples:
        return None
    return ProcSample(
        sum(s.cpu_seconds for s in samples), sum(s.rss_kib for s in samples), sum(s.hwm_kib for s in samples)
    )
