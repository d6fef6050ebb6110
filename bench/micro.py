"""Micro-benchmarks of the hot pieces (`python -m bench.micro`): no database, no sockets, one core.

Issue 7 names four: frame decoding (splitting a byte stream into frames, and decoding the frontend
messages the relay reads), statement analysis cold and cached (including simple-protocol statements
that differ only in literals, as pgbench -S sends them: the target is a cached analysis under 5% of
a cold one), the decision, and masking per row.

Analysis runs against the demo's catalog (bench.insider) plus pgbench_accounts through the
gateway's own PolicyService and SessionGate, the objects a session calls: "cold" is a fresh
``policy.analyze`` of the text, "cached, same text" the exact-text hit, "cached, new literals" a
text never seen before whose normalized shape is cached, which is what every pgbench -S statement
costs: its shape comes from the skeleton of literals its first text verified (gateway.shapes: a
digit-free key, a dict lookup and one pattern match per literal, no parse), then the dict lookup.

The masking workload (bench/masking.py) measures the whole path, where Sekisho shares two cores with
pgbench and PostgreSQL. This separates what it cannot: each mask kind's own cost per cell
(policy.masks), what ``StreamMask.data_row`` adds around the masks (reading the DataRow's values and
encoding a new one), and what the relay's state machine spends per DataRow of a 100-row result when
nothing is masked or capped, when the rows are only counted against a cap, and when they are
masked too. The relay cases use a fixed decision, so they show per-row work, not analysis.

The audit trail's cost on Sekisho's side, per statement record (issue 6: the durable sink must
not become the bottleneck): building the record, accepting it (sealing it into the hash chain,
one write to the spool, queueing it for delivery) and making its table row for the COPY. What the
audit database spends storing it is measured by the harness (audit on against off), not here.

Values are synthetic customers in the demo's formats (Japanese names and addresses, ASCII phone,
email and card numbers). Each figure is the best of several repeats, the run least disturbed by
the rest of a shared machine; cells/s is per core, since all of this runs on one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.insider import demo_catalog
from gateway.audit import database as audit_database
from gateway.audit import records
from gateway.audit.record import GENESIS, seal
from gateway.audit.trail import AuditTrail
from gateway.config import AuditConfig
from gateway.gate import PolicyService, SessionGate
from gateway.relay import Relay
from gateway.result_masks import StreamMask, _values, maskers_for
from gateway.shapes import shape_of
from gateway.wire import messages as m
from gateway.wire.framing import Frame, FrameReader
from policy.analyze import analyze
from policy.catalog import TABLE, Catalog, Relation
from policy.decision import Allow, Decision
from policy.engine import Named, evaluate
from policy.facts import Analysis, StatementFacts
from policy.loader import load_policy
from policy.masking import ColumnMask, ResultMask
from policy.masks import masker
from policy.model import Mask
from tests.support import TEST_POLICY

KEY = bytes(range(32))  # any 32-byte key: token costs the same whatever the key
COLUMNS = ("name", "address", "phone", "email", "card_number")
ROWS = 100  # per result, as in the masking workload

_FAMILY = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤")
_FAMILY_LATIN = ("sato", "suzuki", "takahashi", "tanaka", "ito", "watanabe", "yamamoto", "nakamura")
_GIVEN = ("翔太", "陽菜", "蓮", "結衣", "大翔", "葵", "悠真", "さくら", "湊", "美咲")
_GIVEN_LATIN = ("shota", "hina", "ren", "yui", "hiroto", "aoi", "yuma", "sakura", "minato", "misaki")
_TOWNS = ("東京都新宿区西新宿", "大阪府大阪市北区梅田", "愛知県名古屋市中区栄", "福岡県福岡市博多区博多駅前")
_DOMAINS = ("example.jp", "mail.example.co.jp", "example.ne.jp", "example.or.jp")
_PREFIXES = ("090", "080", "070", "03", "06", "052")
_FULL_WIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789-"}  # to U+FF10..FF19 and U+FF0D


def customers(count: int, seed: int = 4) -> list[tuple[bytes, ...]]:
    """``count`` rows of (name, address, phone, email, card_number), as PostgreSQL sends them."""
    rnd = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        name = f"{rnd.choice(_FAMILY)} {rnd.choice(_GIVEN)}"
        address = f"{rnd.choice(_TOWNS)}{rnd.randint(1, 5)}丁目{rnd.randint(1, 30)}番{rnd.randint(1, 20)}号"
        phone = f"{rnd.choice(_PREFIXES)}-{rnd.randint(0, 9999):04}-{rnd.randint(0, 9999):04}"
        email = f"{rnd.choice(_FAMILY_LATIN)}.{rnd.choice(_GIVEN_LATIN)}{i}@{rnd.choice(_DOMAINS)}"
        card = f"4{rnd.randint(0, 10**15 - 1):015}"
        rows.append(tuple(v.encode() for v in (name, address, phone, email, card)))
    return rows


@dataclass(frozen=True, slots=True)
class Timer:
    """One figure: ``run()`` does ``units`` of the thing measured (cells, rows or results)."""

    label: str
    run: Callable[[], object]
    units: int


def best_seconds(timers: Sequence[Timer], repeats: int) -> list[float]:
    """Seconds per unit of each timer, the shortest of ``repeats`` timings. The repeats go round
    every timer in turn, as the harness alternates targets: when the shared machine slows down for
    a while, every figure has repeats outside that while, so the figures stay comparable."""
    best = [float("inf")] * len(timers)
    for _ in range(repeats):
        for index, timer in enumerate(timers):
            started = time.perf_counter()
            timer.run()
            best[index] = min(best[index], (time.perf_counter() - started) / timer.units)
    return best


# ----------------------------------------------------------------------------- per cell


@dataclass(frozen=True, slots=True)
class CellCase:
    label: str
    mask: Mask
    column: int  # which sample column it masks
    full_width: bool = False  # the values with full-width digits and dashes (the non-ASCII path)


CELL_CASES = (
    CellCase("full (name)", Mask("full"), 0),
    CellCase("partial keep_first 3 (address, non-ASCII)", Mask("partial", keep_first=3), 1),
    CellCase("partial keep_last 4 (email, ASCII)", Mask("partial", keep_last=4), 3),
    CellCase("phone", Mask("phone"), 2),
    CellCase("phone (full-width digits)", Mask("phone"), 2, full_width=True),
    CellCase("email", Mask("email"), 3),
    CellCase("card", Mask("card"), 4),
    CellCase("token (email)", Mask("token"), 3),
    CellCase("null", Mask("null"), 0),
)


def per_cell(rows: list[tuple[bytes, ...]], loops: int) -> list[Timer]:
    """Each mask kind called through policy.masks.masker, per cell."""
    out = []
    for case in CELL_CASES:
        values = [r[case.column] for r in rows]
        if case.full_width:
            values = [v.decode().translate(_FULL_WIDTH).encode() for v in values]
        mask = masker(case.mask, KEY)

        def run(mask: Callable[[bytes | None], bytes | None] = mask, values: list[bytes] = values) -> None:
            for _ in range(loops):
                for value in values:
                    mask(value)

        out.append(Timer(case.label, run, loops * len(values)))
    return out


# ----------------------------------------------------------------------------- per DataRow


def policy_plan() -> ResultMask:
    """The test policy's masks of the five customer columns, as masking.plan makes them for the
    ``pii`` query of the masking workload (a direct column keeps its own kind)."""
    policy = load_policy(TEST_POLICY, "tests/support.py")
    pii = policy.tables["public", "customers"].pii
    columns = tuple(
        ColumnMask(i, pii[c], derived=False, source=f"public.customers.{c}") for i, c in enumerate(COLUMNS)
    )
    return ResultMask(len(COLUMNS), columns)


def per_row(rows: list[tuple[bytes, ...]], loops: int) -> list[Timer]:
    """StreamMask.data_row and its parts, per 5-column DataRow."""
    plan = policy_plan()
    maskers = maskers_for(KEY)
    stream = StreamMask(plan, maskers)
    bodies = [m.DataRow(r).encode()[5:] for r in rows]
    column_maskers = [maskers.readable(c) for c in plan.columns]
    cells = [list(r) for r in rows]

    def data_row() -> None:
        for _ in range(loops):
            for body in bodies:
                stream.data_row(body)

    def read_values() -> None:
        for _ in range(loops):
            for body in bodies:
                _values(body)

    def masks_only() -> None:
        for _ in range(loops):
            for values in cells:
                for index, mask in enumerate(column_maskers):
                    mask(values[index])

    def encode() -> None:
        for _ in range(loops):
            for values in cells:
                m.DataRow(tuple(values)).encode()

    count = loops * len(bodies)
    return [
        Timer("StreamMask.data_row (5 masked cells)", data_row, count),
        Timer("  of which: read the values (_values)", read_values, count),
        Timer("  of which: the 5 masks", masks_only, count),
        Timer("  of which: encode the new DataRow", encode, count),
    ]


# ----------------------------------------------------------------------------- the relay, per result


def _frame(raw: bytes) -> Frame:
    return Frame(raw[:1], raw)


def _check(relay: Relay, query: Frame, answers: list[Frame], *, masked: bool) -> None:
    """The relay passes all 100 rows, masked only when it should be: else the figure is not the one
    its label claims."""
    relay.client_frame(query)
    relay.to_upstream.clear()
    for frame in answers:
        relay.upstream_frame(frame)
    reader = FrameReader()
    reader.feed(b"".join(relay.to_client))
    relay.to_client.clear()
    sent = [f.raw for f in reader.read_all() if f.type == b"D"]
    clear = [f.raw for f in answers if f.type == b"D"]
    if len(sent) != ROWS or (sent == clear) == masked:
        raise SystemExit(f"bench.micro: the relay sent {len(sent)} rows, masked: {sent != clear}")


def per_result(rows: list[tuple[bytes, ...]], loops: int) -> list[Timer]:
    """A 100-row simple-query result through Relay (client Query in, every upstream answer
    through ``upstream_frame``), for three decisions on the same rows."""
    sql = "SELECT name, address, phone, email, card_number FROM customers WHERE id BETWEEN 1 AND 100"
    analysis = Analysis((StatementFacts(sql, "SelectStmt", "select", returns_rows=True),))
    query = _frame(m.Query(sql).encode())
    fields = tuple(m.FieldDescription(c, type_oid=25) for c in COLUMNS)
    data = [_frame(m.DataRow(r).encode()) for r in rows[:ROWS]]
    described = [_frame(m.RowDescription(fields).encode()), *data]
    done = [_frame(m.CommandComplete(f"SELECT {ROWS}").encode()), _frame(m.ReadyForQuery("I").encode())]
    # A capped simple query is driven as Parse/Bind/Describe/Execute/Sync: two more answers.
    driven = [_frame(m.ParseComplete().encode()), _frame(m.BindComplete().encode())]
    cases: list[tuple[str, Decision, bool]] = [
        ("unrestricted: nothing masked or capped", Allow(), False),
        ("restricted, capped at 100, nothing masked", Allow(100, "max_rows"), True),
        (
            "restricted, capped at 100, 5 columns masked",
            Allow(100, "max_rows", masks=(policy_plan(),), redact=True),
            True,
        ),
    ]
    out = []
    for label, decision, restricted in cases:

        def decide(_sql: str, _named: Named, decision: Decision = decision) -> tuple[Analysis, Decision]:
            return analysis, decision

        relay = Relay(decide, restricted, maskers_for(KEY) if restricted else None)
        answers = (driven if restricted else []) + described + done

        def run(relay: Relay = relay, answers: list[Frame] = answers) -> None:
            for _ in range(loops):
                relay.client_frame(query)
                relay.to_upstream.clear()
                for frame in answers:
                    relay.upstream_frame(frame)
                relay.to_client.clear()

        _check(relay, query, answers, masked=bool(decision.masks) if isinstance(decision, Allow) else False)
        run()  # once unmeasured: the relay's first statement builds caches (maskers)
        out.append(Timer(label, run, loops))
    return out


# ----------------------------------------------------------------------------- frames


def per_frame(loops: int) -> list[Timer]:
    """Framing and decoding, per frame: the upstream's answer to a pgbench -S statement in the
    extended protocol (6 frames, split by FrameReader only, as forwarded frames are), and the
    client's Parse/Bind/Describe/Execute/Sync (split and decoded with messages.FRONTEND)."""
    fields = (m.FieldDescription("abalance", type_oid=23),)
    answer = b"".join(
        (
            m.ParseComplete().encode(), m.BindComplete().encode(), m.RowDescription(fields).encode(),
            m.DataRow((b"-4242",)).encode(), m.CommandComplete("SELECT 1").encode(),
            m.ReadyForQuery("I").encode(),
        )
    )  # fmt: skip
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
    request = b"".join(
        (
            m.Parse("", sql).encode(), m.Bind("", "", (0,), (b"12345",), (0,)).encode(),
            m.Describe("P", "").encode(), m.Execute("", 0).encode(), m.Sync().encode(),
        )
    )  # fmt: skip
    answers, requests = answer * 20, request * 20  # fed in chunks of 20 statements, as a socket would

    def split() -> None:
        reader = FrameReader()
        for _ in range(loops):
            reader.feed(answers)
            reader.read_all()

    def decode() -> None:
        reader = FrameReader()
        for _ in range(loops):
            reader.feed(requests)
            for frame in reader.read_all():
                m.FRONTEND[frame.type](frame.body)

    return [
        Timer("FrameReader: split upstream frames", split, loops * 20 * 6),
        Timer("FrameReader + FRONTEND decode (P/B/D/E/S)", decode, loops * 20 * 5),
    ]


# ----------------------------------------------------------------------------- analysis and decision

PGBENCH_S = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
POINT = "SELECT id, name, email FROM customers WHERE id = {}"


def bench_catalog() -> Catalog:
    """The demo's catalog (customers, orders, psql's catalog relations) plus pgbench_accounts."""
    demo = demo_catalog()
    accounts = Relation("public", "pgbench_accounts", TABLE, ("aid", "bid", "abalance", "filler"))
    return Catalog.of([*demo.relations.values(), accounts])


class _Literals:
    """Statement texts never seen before: each call of ``next_batch`` moves on to new literals, so
    no exact-text cache (the gate's, the shape lru_caches) can answer them. The texts are made
    before timing starts (``batches`` of them, one per timed run), so that what is timed is the
    gateway's work on a new text, not the formatting of it."""

    def __init__(self, template: str, size: int, batches: int) -> None:
        start = 1_000_000
        self._batches = [[template.format(start + b * size + i) for i in range(size)] for b in range(batches)]

    def next_batch(self) -> list[str]:
        return self._batches.pop()


def analysis_timers(loops: int, runs: int) -> tuple[list[Timer], list[Timer]]:
    """(analysis timers, decision timers): cold analyses, cached ones, and decisions for the
    restricted ``contractor`` (cached per shape, and evaluated afresh)."""
    policy = load_policy(TEST_POLICY, "tests/support.py")
    catalog = bench_catalog()
    service = PolicyService(policy, catalog)
    path = ("public",)
    n = max(1, loops)
    timers: list[Timer] = []
    for label, template in (("pgbench -S", PGBENCH_S), ("customers point select", POINT)):
        fresh = _Literals(template, n, 2 * runs)  # the cold and the new-literals timers each take one a run
        known = template.format(42)
        service.analyze(known)  # the shape is cached from here on

        def cold(fresh: _Literals = fresh) -> None:
            for sql in fresh.next_batch():
                analyze(sql, catalog, path)

        def same_text(known: str = known) -> None:
            for _ in range(n):
                service.analyze(known)

        def new_literals(fresh: _Literals = fresh) -> None:
            for sql in fresh.next_batch():
                service.analyze(sql)

        timers += [
            Timer(f"{label}: cold (policy.analyze)", cold, n),
            Timer(f"{label}: cached, same text", same_text, n),
            Timer(f"{label}: cached, new literals", new_literals, n),
        ]
    gate = SessionGate(service, "contractor")
    sql = POINT.format(7)
    analysis, _ = service.analyze(sql)
    gate.decide(sql, Named())

    def decide_cached() -> None:
        for _ in range(n):
            gate.decide(sql, Named())

    def evaluate_fresh() -> None:
        for _ in range(n):
            evaluate(analysis, policy, gate.permissions, Named())

    decisions = [
        Timer("SessionGate.decide, cached (analysis+decision)", decide_cached, n),
        Timer("policy.engine.evaluate, uncached", evaluate_fresh, n),
    ]
    return timers, decisions


# ----------------------------------------------------------------------------- audit


def audit_timers(loops: int, spool: Path) -> tuple[list[Timer], AuditTrail]:
    """One pgbench -S statement's audit record, in the three steps the trail takes: build it
    (gateway.audit.records.statement), accept it (seal into the chain, append to the spool: one
    write, queue for delivery) and make its table row for the delivery's COPY. The spool is a real
    file in ``spool``; no database is involved."""
    service = PolicyService(load_policy(TEST_POLICY, "tests/support.py"), bench_catalog())
    who = records.Who(person="maint", roles=("dba",), session="0123456789abcdef", address="127.0.0.1",
                      application_name="pgbench")  # fmt: skip
    sql = PGBENCH_S.format(42)
    analysis, _ = service.analyze(sql)
    shape = shape_of(sql)
    # Never started: records are accepted and queued (a batch this large keeps them all queued, as
    # while delivery keeps up), and nothing is delivered.
    config = AuditConfig(database="postgresql://bench@127.0.0.1:1/none", log="none", batch=1_000_000)
    trail = AuditTrail(config, spool, "micro")
    trail.open()
    n = max(1, loops)

    def build() -> dict[str, object]:
        return records.statement(
            who, started=time.time(), sql=sql, fingerprint=shape, redact=False, command="select",
            analysis=analysis, decision=Allow(), rows=1, size=13, duration=0.0001,
        )  # fmt: skip

    record = build()
    sealed = seal(1, GENESIS, record)

    def builds() -> None:
        for _ in range(n):
            build()

    def accepts() -> None:
        for _ in range(n):
            trail.record(record)

    def rows() -> None:
        for _ in range(n):
            audit_database.row("micro", sealed, record)

    timers = [
        Timer("build the record", builds, n),
        Timer("accept it (seal, spool write, queue)", accepts, n),
        Timer("its table row for COPY", rows, n),
    ]
    return timers, trail


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class MicroReport:
    """The printed report and the figures the harness checks against issue 7's targets."""

    text: str
    cached_share: float  # pgbench -S: cached analysis with new literals / cold analysis
    masked_cells_per_second: float  # through StreamMask.data_row, per core


def run(repeats: int = 9, scale: float = 1.0) -> MicroReport:
    """Every micro-benchmark, ``repeats`` timings each (the best kept), loops scaled by ``scale``."""
    loops = max(1, round(20 * scale))
    rows = customers(1000)
    frames = per_frame(max(1, round(200 * scale)))
    analyses, decisions = analysis_timers(max(1, round(300 * scale)), repeats)
    cells, datarows = per_cell(rows, loops), per_row(rows, loops)
    results = per_result(rows, max(1, round(100 * scale)))
    with tempfile.TemporaryDirectory(prefix="sekisho-micro-") as spool:
        audits, trail = audit_timers(max(1, round(300 * scale)), Path(spool))
        try:
            timed = [*frames, *analyses, *decisions, *cells, *datarows, *results, *audits]
            best = iter(best_seconds(timed, repeats))
        finally:
            asyncio.run(trail.stop(grace=0))
    out = [f"bench.micro: Python {sys.version.split()[0]}, nproc {os.cpu_count()}, best of {repeats}"]
    out.append("\nframes, per frame:")
    for timer in frames:
        ns = next(best) * 1e9
        out.append(f"  {timer.label:46} {ns:7.0f} ns/frame")
    out.append("\nstatement analysis, per statement (PolicyService, the test policy, demo catalog):")
    analysis_us = [next(best) * 1e6 for _ in analyses]
    for timer, us in zip(analyses, analysis_us, strict=True):
        out.append(f"  {timer.label:46} {us:8.2f} us")
    shares = [analysis_us[i + 2] / analysis_us[i] for i in (0, 3)]
    out.append(f"  {'=> cached, new literals / cold: pgbench -S':46} {shares[0]:8.1%}  (target < 5%)")
    out.append(f"  {'=> cached, new literals / cold: point select':46} {shares[1]:8.1%}")
    out.append("\ndecision for the restricted contractor, per statement:")
    for timer in decisions:
        out.append(f"  {timer.label:46} {next(best) * 1e6:8.2f} us")
    out.append("\nmasking, per cell, policy.masks.masker(mask, key)(value):")
    for timer in cells:
        ns = next(best) * 1e9
        out.append(f"  {timer.label:46} {ns:7.0f} ns/cell {1e9 / ns:12,.0f} cells/s")
    out.append(
        "\nper 5-column DataRow (the test policy's masks of name, address, phone, email, card_number):"
    )
    row_us = [next(best) * 1e6 for _ in datarows]
    for timer, us in zip(datarows, row_us, strict=True):
        out.append(f"  {timer.label:46} {us:7.2f} us/row")
    out.append(f"  {'=> masked cells through StreamMask.data_row':46} {row_us[0] / 5 * 1000:7.0f} ns/cell"
               f" {5e6 / row_us[0]:12,.0f} cells/s  (target >= 200,000)")  # fmt: skip
    out.append(f"\nper {ROWS}-row simple-query result through gateway.relay.Relay (fixed decision):")
    result_us = [next(best) * 1e6 for _ in results]
    for timer, us in zip(results, result_us, strict=True):
        out.append(f"  {timer.label:46} {us:7.1f} us/result {us / ROWS:6.2f} us/row")
    extra = (result_us[2] - result_us[1]) / (ROWS * 5)
    out.append(
        f"  {'=> masking adds, per masked cell':46} {extra * 1000:7.0f} ns/cell {1e6 / extra:12,.0f} cells/s"
    )
    out.append("\naudit trail, per statement record (pgbench -S; Sekisho's side only, not the database's):")
    audit_us = [next(best) * 1e6 for _ in audits]
    for timer, us in zip(audits, audit_us, strict=True):
        out.append(f"  {timer.label:46} {us:8.2f} us")
    out.append(f"  {'=> per statement, in all':46} {sum(audit_us):8.2f} us")
    return MicroReport("\n".join(out), shares[0], 5e6 / row_us[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timings per figure; the best is kept")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the loop counts (0.1: a quick run)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.scale <= 0:
        parser.error("--repeats and --scale must be positive")
    print(run(args.repeats, args.scale).text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
