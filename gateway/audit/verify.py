"""``sekisho audit verify``: walk every chain in the audit database and name the first broken record.

Each chain is read in sequence order and every record is checked against the one before it
(``gateway.audit.record.check_link``): its content against its hash, its sequence number, its link.
The chain's own records cannot show that its newest records were cut off, or that a whole chain was
removed; the spool's acknowledgement (the last record this gateway saw stored, with its hash) can,
so given the gateway's configuration, the check also confirms that record is still there, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from gateway.audit import database
from gateway.audit.record import GENESIS, Break, Sealed, check_link


@dataclass(slots=True)
class ChainReport:
    chain: str
    records: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    broken: Break | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a spool says was stored last: chain, sequence number and hash."""

    chain: str
    seq: int
    hash: bytes


async def verify_chain(
    conn: asyncpg.Connection, chain: str, progress: Callable[[int], None] | None = None
) -> ChainReport:
    report = ChainReport(chain)
    expected, prev = 1, GENESIS
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in database.chain_records(conn, chain):
            sealed = Sealed(row.seq, row.prev, row.hash, row.body)
            problem = check_link(expected, prev, sealed)
            report.records += 1
            if progress is not None:
                progress(report.records)
            if problem is not None:
                report.broken = problem
                return report
            expected, prev = sealed.seq + 1, sealed.hash
            report.last_seq, report.last_hash = sealed.seq, sealed.hash
    return report


def check_anchor(report: ChainReport, anchor: Anchor) -> None:
    """Whether the chain still reaches what the spool last saw stored (catches cut-off tails)."""
    if report.broken is not None:
        return
    if report.last_seq < anchor.seq:
        report.broken = Break(
            report.last_seq + 1,
            f"the chain ends at record {report.last_seq}, but this gateway stored records up to "
            f"{anchor.seq} (the newest records were deleted)",
        )
    elif report.last_seq == anchor.seq and report.last_hash != anchor.hash:
        report.broken = Break(anchor.seq, "it differs from the record this gateway stored (replaced)")
    else:
        report.notes.append(f"reaches record {anchor.seq} that this gateway's spool saw stored")


async def verify(
    conn: asyncpg.Connection,
    *,
    chain: str | None = None,
    anchors: list[Anchor] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[ChainReport]:
    """Every chain (or one), each checked from its first record; anchors checked where given."""
    names = [chain] if chain is not None else await database.chains(conn)
    by_chain = {a.chain: a for a in anchors or []}
    for anchor in by_chain.values():
        if anchor.chain not in names and chain is None:
            names.append(anchor.chain)
    reports = []
    for name in names:

        def tick(count: int, name: str = name) -> None:
            if progress is not None:
                progress(name, count)

        report = await verify_chain(conn, name, tick)
        if report.records == 0 and report.broken is None and name in by_chain:
            report.broken = Break(
                1, "no record of this chain is in the audit database (the chain was removed)"
            )
        if name in by_chain:
            check_anchor(report, by_chain[name])
        reports.append(report)
    return reports
