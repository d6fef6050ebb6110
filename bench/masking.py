"""The masking workload (`python -m bench --workloads masking`): 100-row results, masked and not.

Issue 4 asks two things of masking: that it keep up where it works (at least 200,000 masked cells
per second per core) and cost nothing where it does not (no per-row Python work for a result with
no masked column). So two pgbench scripts read 100 rows by a random primary-key range:

- ``pii``: the five PII columns of customers (name, address, phone, email, card_number), which the
  test policy masks for its maintenance role with five different kinds;
- ``plain``: five columns of orders, none of them PII, the same width of result with nothing to mask.

Each runs directly against PostgreSQL, through Sekisho as an unrestricted person (the relay's own
cost for 100-row results: nothing masked, nothing capped) and as the restricted ``contractor``
(the maintenance role: masks applied, 100-row cap). The cap is exactly the result's size, so the
relay counts the rows but never cuts them; a pgbench run that receives a NOTICE (the cap's cut
notice) fails instead of being counted. Before measuring, every query, mode and target is run
with a real libpq client (psycopg, in the same protocol mode as pgbench) and checked: 100 rows of
five columns, each PII cell different from its clear value for the restricted person, and every
other result identical to PostgreSQL's own.

Throughput here is rows and masked cells per second of wall time, all targets sharing the same
cores with pgbench and PostgreSQL; Sekisho's CPU per row (from /proc) is the steadier figure, and
masked cells per Sekisho CPU-second is the per-core figure the target is stated in.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench import pgbench
from bench.procstat import sample
from gateway.demo import seed

if TYPE_CHECKING:
    from bench.harness import Settings, Target

CUSTOMERS = 10_000  # customers 1..N and orders 1..2N, ids contiguous: every range below has 100 rows
ROWS = 100
LAST_START = CUSTOMERS - ROWS + 1


@dataclass(frozen=True, slots=True)
class Query:
    """A 100-row query; ``sql`` uses pgbench's ``:a`` for the first id of the range."""

    name: str
    sql: str
    masked_columns: int  # columns the restricted person sees masked

    def script(self) -> str:
        return f"\\set a random(1, {LAST_START})\n{self.sql};\n"


PII = Query(
    "pii",
    "SELECT name, address, phone, email, card_number FROM customers WHERE id BETWEEN :a AND :a + 99",
    5,
)
PLAIN = Query(
    "plain",
    "SELECT id, customer_id, amount, status, created_at FROM orders WHERE id BETWEEN :a AND :a + 99",
    0,
)
QUERIES = (PII, PLAIN)


class CheckError(Exception):
    """A target did not return what the workload claims to measure."""


@dataclass
class MaskRun:
    """One pgbench run of one query against one target; ``error`` replaces the figures on failure."""

    mode: str
    query: str
    target: str
    round: int
    masked_columns: int
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    rss_kib: int | None = None
    error: str | None = None

    @property
    def rows_per_second(self) -> float | None:
        return None if self.tps is None else self.tps * ROWS

    @property
    def masked_cells_per_second(self) -> float | None:
        rows = self.rows_per_second
        return None if rows is None else rows * self.masked_columns

    @property
    def cpu_ms_per_1k_rows(self) -> float | None:
        if self.cpu_seconds is None or not self.transactions:
            return None
        return self.cpu_seconds / (self.transactions * ROWS) * 1e6

    @property
    def masked_cells_per_cpu_second(self) -> float | None:
        if not self.cpu_seconds or not self.transactions or not self.masked_columns:
            return None
        return self.transactions * ROWS * self.masked_columns / self.cpu_seconds

    def figures(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rows_per_second": self.rows_per_second,
            "masked_cells_per_second": self.masked_cells_per_second,
            "cpu_ms_per_1k_rows": self.cpu_ms_per_1k_rows,
            "masked_cells_per_cpu_second": self.masked_cells_per_cpu_second,
        }


@dataclass
class MaskSummary:
    mode: str
    query: str
    target: str
    runs: int
    failed: int
    median_rows_per_second: float | None
    median_masked_cells_per_second: float | None
    vs_direct: float | None
    cpu_ms_per_1k_rows: float | None
    masked_cells_per_cpu_second: float | None
    cpu_share_of_core: float | None
    rss_mib: float | None


def _say(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------- set-up


def prepare(dsn: str) -> None:
    """Seed the demo's customers and orders into the benchmark database (kept between runs)."""
    started = time.monotonic()
    have = asyncio.run(seed(dsn, CUSTOMERS))
    _say(f"masking data: {have} customers, {2 * have} orders ({time.monotonic() - started:.1f} s)")


def write_scripts(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for query in QUERIES:
        path = directory / f"masking-{query.name}.sql"
        path.write_text(query.script())
        paths[query.name] = path
    return paths


Connection = psycopg.Connection[tuple[Any, ...]]


def _connect(env: dict[str, str]) -> Connection:
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=env["PGUSER"],
        password=env.get("PGPASSWORD", ""), sslmode="disable", autocommit=True,
    )  # fmt: skip


def _fetch(conn: Connection, query: Query, start: int, mode: str) -> list[tuple[Any, ...]]:
    """The query's rows, sent as pgbench sends it in ``mode``: psycopg uses the simple protocol for
    a statement without parameters, an unnamed statement with them, a named one with prepare."""
    with conn.cursor() as cur:  # bytes: psycopg types a str query as a LiteralString
        if mode == "simple":
            cur.execute(query.sql.replace(":a", str(start)).encode())
        else:
            cur.execute(query.sql.replace(":a", "%s").encode(), (start, start), prepare=mode == "prepared")
        return cur.fetchall()


def check(targets: Sequence[Target], restricted: str, modes: Sequence[str]) -> None:
    """Every query, mode and target returns 100 rows of five columns, masked exactly where the
    policy says: every cell of ``pii`` differs from its clear value for ``restricted``, and every
    other result equals PostgreSQL's own. Raises CheckError otherwise."""
    direct, *relayed = targets
    starts = (1, 4242, LAST_START)
    with _connect(direct.env) as conn:
        clear = {(q.name, s): _fetch(conn, q, s, "simple") for q in QUERIES for s in starts}
    for target in relayed:
        with _connect(target.env) as conn:
            for mode in modes:
                for query in QUERIES:
                    for start in starts:
                        rows = _fetch(conn, query, start, mode)
                        expected = clear[query.name, start]
                        where = f"{query.name} {mode} {target.name} from id {start}"
                        if len(rows) != ROWS or len(expected) != ROWS or any(len(r) != 5 for r in rows):
                            raise CheckError(f"{where}: {len(rows)} rows, expected {ROWS} of 5 columns")
                        if target.name != restricted or not query.masked_columns:
                            if rows != expected:
                                raise CheckError(f"{where}: the rows differ from PostgreSQL's own")
                            continue
                        for got, want in zip(rows, expected, strict=True):
                            if any(g == w for g, w in zip(got, want, strict=True)):
                                raise CheckError(f"{where}: a PII cell came through clear: {got}")
    _say(f"checked: {ROWS} rows per query, masked only for {restricted}, for every query, mode and target")


# ----------------------------------------------------------------------------- measuring


def warm_up(target: Target, scripts: dict[str, Path], settings: Settings) -> None:
    """Direct pgbench of both queries, so that the first measured run does not read cold pages."""
    _say(f"warm-up: {settings.warmup} s direct per query")
    try:
        for query in QUERIES:
            pgbench.script(
                target.env,
                scripts[query.name],
                "simple",
                clients=settings.clients,
                threads=settings.threads,
                duration=settings.warmup,
            )
    except pgbench.PgbenchError as exc:
        _say(f"warm-up failed (measuring anyway): {exc}")


def measure_once(
    target: Target, query: Query, script: Path, *, masked: bool, mode: str, rnd: int, settings: Settings
) -> MaskRun:
    run = MaskRun(mode, query.name, target.name, rnd, query.masked_columns if masked else 0)
    before = sample(target.pid) if target.pid else None
    started = time.monotonic()
    try:
        result = pgbench.script(
            target.env,
            script,
            mode,
            clients=settings.clients,
            threads=settings.threads,
            duration=settings.duration,
        )
    except pgbench.PgbenchError as exc:
        run.error = str(exc)
        return run
    run.wall_seconds = time.monotonic() - started
    run.tps, run.latency_ms, run.transactions = result.tps, result.latency_ms, result.transactions
    after = sample(target.pid) if target.pid else None
    if before is not None and after is not None:
        run.cpu_seconds = after.cpu_seconds - before.cpu_seconds
        run.rss_kib = after.rss_kib
    return run


def describe(run: MaskRun) -> str:
    if run.error is not None:
        return f"FAILED: {run.error.splitlines()[0]}"
    assert run.rows_per_second is not None
    line = f"{run.rows_per_second:9.0f} rows/s"
    if run.masked_cells_per_second:
        line += f" {run.masked_cells_per_second:9.0f} masked cells/s"
    if run.cpu_ms_per_1k_rows is not None and run.cpu_seconds is not None and run.wall_seconds:
        share = run.cpu_seconds / run.wall_seconds
        line += f"  relay cpu {run.cpu_ms_per_1k_rows:5.2f} ms/1k rows ({share:4.0%} of a core)"
    if run.masked_cells_per_cpu_second is not None:
        line += f"  {run.masked_cells_per_cpu_second:8.0f} masked cells/cpu-s"
    return line


def measure(
    targets: Sequence[Target], restricted: str, settings: Settings, scripts: dict[str, Path]
) -> list[MaskRun]:
    """Every mode: rounds of (each query against each target, in order), printed as they finish."""
    runs: list[MaskRun] = []
    for mode in settings.modes:
        for rnd in range(1, settings.rounds + 1):
            for query in QUERIES:
                for target in targets:
                    run = measure_once(
                        target, query, scripts[query.name],
                        masked=target.name == restricted, mode=mode, rnd=rnd, settings=settings,
                    )  # fmt: skip
                    runs.append(run)
                    progress = f"{mode:9} round {rnd}/{settings.rounds}  {query.name:5} {target.name:14}"
                    _say(f"{progress} {describe(run)}")
                    if run.error is not None:
                        _say("    " + run.error.replace("\n", "\n    "))
    return runs


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(runs: list[MaskRun], targets: Sequence[Target], modes: Sequence[str]) -> list[MaskSummary]:
    rows: list[MaskSummary] = []
    for mode in modes:
        for query in QUERIES:
            direct: float | None = None
            for target in targets:
                mine = [r for r in runs if (r.mode, r.query, r.target) == (mode, query.name, target.name)]
                ok = [r for r in mine if r.error is None]
                rate = _median([r.rows_per_second for r in ok])
                if target is targets[0]:
                    direct = rate
                shares: list[float | None] = [
                    r.cpu_seconds / r.wall_seconds for r in ok if r.cpu_seconds is not None and r.wall_seconds
                ]
                rss = [r.rss_kib for r in ok if r.rss_kib is not None]
                rows.append(
                    MaskSummary(
                        mode=mode,
                        query=query.name,
                        target=target.name,
                        runs=len(mine),
                        failed=len(mine) - len(ok),
                        median_rows_per_second=rate,
                        median_masked_cells_per_second=_median([r.masked_cells_per_second for r in ok]),
                        vs_direct=rate / direct if rate is not None and direct else None,
                        cpu_ms_per_1k_rows=_median([r.cpu_ms_per_1k_rows for r in ok]),
                        masked_cells_per_cpu_second=_median([r.masked_cells_per_cpu_second for r in ok]),
                        cpu_share_of_core=_median(shares),
                        rss_mib=max(rss) / 1024 if rss else None,
                    )
                )
    return rows


def table(rows: list[MaskSummary]) -> str:
    def num(value: float | None, fmt: str) -> str:
        width = int(fmt.partition(".")[0])
        return f"{'-':>{width}}" if not value else format(value, fmt)

    header = (
        f"{'mode':9} {'query':5} {'target':14} {'rows/s':>9} {'vs direct':>9} {'masked cells/s':>14}"
        f" {'cpu ms/1k rows':>14} {'cells/cpu-s':>11} {'relay cpu':>9} {'rss MiB':>7} {'failed':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.mode:9} {r.query:5} {r.target:14} {num(r.median_rows_per_second, '9.0f')}"
            f" {num(r.vs_direct, '9.2f')} {num(r.median_masked_cells_per_second, '14.0f')}"
            f" {num(r.cpu_ms_per_1k_rows, '14.2f')} {num(r.masked_cells_per_cpu_second, '11.0f')}"
            f" {num(r.cpu_share_of_core, '9.0%')} {num(r.rss_mib, '7.1f')} {f'{r.failed}/{r.runs}':>6}"
        )
    return "\n".join(lines)


LEGEND = """\
rows/s: 100 x pgbench transactions per second (medians of the rounds); vs direct: the same query and
mode straight to PostgreSQL. masked cells/s: rows/s x 5 for the restricted person's pii query.
cpu ms/1k rows: Sekisho's user+system CPU per 1,000 rows (= us per row); cells/cpu-s: masked cells per
second of Sekisho CPU, i.e. per core; relay cpu: Sekisho's CPU per second of wall time (from /proc)."""


def run(
    targets: Sequence[Target], restricted: str, settings: Settings, scripts: dict[str, Path]
) -> tuple[list[MaskRun], list[MaskSummary]]:
    """Check the targets, then measure; the caller has seeded the data (``prepare``)."""
    check(targets, restricted, settings.modes)
    if settings.warmup:
        warm_up(targets[0], scripts, settings)
    runs = measure(targets, restricted, settings, scripts)
    return runs, summarize(runs, targets, settings.modes)
