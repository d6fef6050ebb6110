"""``sekisho audit verify`` and ``sekisho audit search``: reading the trail, for investigators.

Both connect to the audit database named by ``--dsn`` or by the gateway configuration's
``audit.database`` (``--config``). ``verify`` exits 0 when every chain holds and 1 naming the first
broken record of each chain that does not; ``search`` prints matching records oldest first, as a
table or as JSON lines (``--json``), with a progress bar on the terminal for long scans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

from gateway.audit import search as audit_search
from gateway.audit.spool import read_anchors
from gateway.audit.verify import verify
from gateway.config import ConfigError, UpstreamConfig, load_config, parse_dsn

_COLUMNS = ("at", "kind", "person", "decision", "rule", "rows", "tables", "sql")
_DEFAULT_SPOOL = ".sekisho-audit"


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify or search the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check every hash chain; name the first broken record")
    _source(check)
    check.add_argument("--chain", help="only this chain")
    find = audit_sub.add_parser("search", help="records by person, table, time range and decision")
    _source(find)
    find.add_argument("--person")
    find.add_argument("--table", help="schema.table (a bare name means public.name)")
    find.add_argument("--since", help="ISO 8601 time with a zone, or a date (UTC midnight)")
    find.add_argument("--until", help="ISO 8601 time with a zone, or a date (UTC midnight), exclusive")
    find.add_argument("--decision", choices=audit_search.DECISIONS)
    find.add_argument("--kind", help="statement, statement_begin, connection, session_end, alarm, ...")
    find.add_argument("--limit", type=int)
    find.add_argument("--json", action="store_true", help="one JSON record per line")
    find.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )  # fmt: skip


def _source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", type=Path, help="the gateway configuration (its audit.database)")
    group.add_argument("--dsn", help="postgresql:// URL of the audit database")


def _target(args: argparse.Namespace) -> tuple[UpstreamConfig, Path | None]:
    """The audit database, and the spool directory to take anchors from (with --config)."""
    if args.dsn is not None:
        return parse_dsn(args.dsn), None
    config = load_config(args.config)
    if config.audit.database is None:
        raise ConfigError(f"{args.config}: audit.database is not set, so there is no audit database to read")
    spool = config.audit.spool or config.users_file.with_name(_DEFAULT_SPOOL)
    return parse_dsn(config.audit.database), spool


async def _connect(target: UpstreamConfig) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            host=target.host, port=target.port, user=target.user, password=target.password,
            database=target.database, timeout=target.connect_timeout,
            ssl=None if target.sslmode in ("disable", "allow", "prefer") else target.sslmode,
        )  # fmt: skip
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ConfigError(f"cannot reach the audit database {target.describe()}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    target, spool = _target(args)
    if args.audit_command == "verify":
        return asyncio.run(_verify(target, spool, args.chain))
    filters = audit_search.Filters(
        person=args.person,
        table=args.table,
        since=audit_search.parse_time(args.since, "--since") if args.since else None,
        until=audit_search.parse_time(args.until, "--until") if args.until else None,
        decision=args.decision,
        kind=args.kind,
        limit=args.limit,
    )
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    return asyncio.run(_search(target, filters, as_json=args.json, progress=progress))


async def _verify(target: UpstreamConfig, spool: Path | None, chain: str | None) -> int:
    conn = await _connect(target)
    anchors = read_anchors(spool) if spool is not None else []
    try:
        with tqdm(unit=" records", disable=not sys.stderr.isatty(), leave=False) as bar:

            def tick(_chain: str, _count: int) -> None:
                bar.update()

            reports = await verify(conn, chain=chain, anchors=anchors, progress=tick)
    except asyncpg.UndefinedTableError:
        print(f"sekisho: the audit database {target.describe()} has no audit table", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    if not reports:
        print(f"no audit records in {target.describe()}")
        return 0
    broken = 0
    for report in reports:
        if report.broken is None:
            extra = f"; {'; '.join(report.notes)}" if report.notes else ""
            print(f"chain {report.chain}: {report.records} records, intact (1-{report.last_seq}){extra}")
        else:
            broken += 1
            where, why = report.broken.seq, report.broken.reason
            held = f"{report.records} records read, the chain holds up to record {report.last_seq}"
            print(f"chain {report.chain}: BROKEN at record {where}: {why} ({held})")
    print(
        f"{len(reports)} chains checked, {broken} broken"
        if broken
        else f"{len(reports)} chains checked, all intact"
    )
    return 1 if broken else 0


async def _search(
    target: UpstreamConfig, filters: audit_search.Filters, *, as_json: bool, progress: bool
) -> int:
    conn = await _connect(target)
    try:
        lo, hi = (None, None)
        if progress:
            lo, hi = await audit_search.bounds(conn, filters)
        span = (hi - lo).total_seconds() if lo is not None and hi is not None else 0.0
        found = 0
        with tqdm(
            total=100, unit="%", disable=not progress or span <= 0, file=sys.stderr, leave=False
        ) as bar:
            if not as_json:
                print("\t".join(_COLUMNS))
            async for record in audit_search.search(conn, filters):
                found += 1
                if as_json:
                    print(json.dumps(record, ensure_ascii=False, sort_keys=True))
                else:
                    print("\t".join(_cell(record.get(c)) for c in _COLUMNS))
                if span > 0 and lo is not None:
                    done = int(100 * (datetime.fromisoformat(record["at"]) - lo).total_seconds() / span)
                    bar.update(max(0, done - bar.n))
    except asyncpg.UndefinedTableError:
        print(f"sekisho: the audit database {target.describe()} has no audit table", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    print(f"{found} records", file=sys.stderr)
    return 0


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    text = str(value).replace("\t", " ").replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."
