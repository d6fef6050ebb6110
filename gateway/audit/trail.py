"""The audit pipeline: accept a record (seal it into the chain, spool it, log it), deliver in order.

Guarantees, in the order a statement meets them:

- A record is *accepted* when ``record`` returns: it is sealed into this process's chain, written to
  the spool (a crash of Sekisho loses nothing accepted; ``gateway.audit.spool``) and to the JSON-lines
  audit log. The session records a statement's event before it releases the statement's end
  (CommandComplete/ReadyForQuery) to the client, and for statements that read protected tables it
  also records their start before the statement reaches the database, so rows of protected tables
  never stream to anyone without an accepted record naming who asked for them.
- One task delivers the records to the audit database in batches, in order, and acknowledges each
  batch it stored. While delivery keeps up, it takes the records from a short queue in memory (with
  the search columns still at hand: nothing is read back or parsed again); the spool is read only
  when the queue overflowed (the database was down or slow) or after a restart, until delivery has
  caught up with it. While the database is down the spool grows; when it returns, delivery resumes
  where it stopped.
- When the spool holds more undelivered bytes than ``spool_max_bytes``, ``refusal`` says so: per
  ``when_full``, statements that touch protected tables (``refuse_protected``) or all statements
  (``refuse_all``) are refused with SK004 until delivery catches up. If the disk refuses a write, the
  trail cannot accept anything: every statement is refused, and a statement that already ran ends its
  session instead of completing.

Without an audit database (``audit.database`` unset) records go to the audit log only; nothing is
spooled, since there is nowhere to deliver it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import orjson
import structlog

from gateway.audit import database
from gateway.audit.record import GENESIS, Sealed, seal
from gateway.audit.spool import Position, Spool
from gateway.config import AuditConfig, UpstreamConfig, parse_dsn

log = structlog.get_logger("sekisho.audit")

_MAX_BACKOFF = 10.0  # seconds between delivery attempts while the audit database is down
_GATHER = 0.05  # seconds the deliverer lets records gather once it has caught up


def _json_line(event: Any, **_: Any) -> str:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()


class AuditUnavailable(Exception):
    """The trail cannot accept a record (the spool's disk refused it)."""


@dataclass(frozen=True, slots=True)
class AuditStatistics:
    chain: str
    accepted: int
    delivered_seq: int
    undelivered_bytes: int
    database_up: bool
    failed: str | None  # why the trail cannot accept records, if it cannot


class AuditTrail:
    """One process's audit chain: see the module docstring."""

    def __init__(self, config: AuditConfig, spool_dir: Path, name: str) -> None:
        self._config = config
        self._spool = Spool(spool_dir, name) if config.database is not None else None
        self._dsn: UpstreamConfig | None = parse_dsn(config.database) if config.database else None
        self._conn: asyncpg.Connection | None = None
        self._log_file: TextIO | None = None
        self._logger: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._accepted = 0
        self._database_up = False
        self._failed: str | None = None
        self._seq = 1
        self._prev = GENESIS
        self.chain = name
        # Accepted records not yet delivered, in order, while delivery keeps up (see the module
        # docstring); ``_from_spool`` while the deliverer reads the spool instead.
        self._queue: deque[tuple[Sealed, Mapping[str, Any], Position]] = deque()
        self._queue_limit = max(4 * config.batch, 1000)
        self._from_spool = False

    # ------------------------------------------------------------------ life cycle

    def open(self) -> None:
        """Recover the spool and open the log; raises SpoolError if the spool cannot be used."""
        if self._spool is not None:
            self._spool.open()
            self.chain = self._spool.chain
            self._seq, self._prev = self._spool.next_seq, self._spool.last_hash
            self._from_spool = bool(self._spool.undelivered_bytes)
            if self._spool.undelivered_bytes:
                log.info(
                    "audit_spool_recovered",
                    chain=self.chain,
                    undelivered_bytes=self._spool.undelivered_bytes,
                    delivered_seq=self._spool.delivered_seq,
                )
        target = self._config.log
        if target == "none":
            return
        if target == "stdout":
            stream: TextIO = sys.stdout
        elif target == "stderr":
            stream = sys.stderr
        else:
            self._log_file = stream = Path(target).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[structlog.processors.JSONRenderer(serializer=_json_line)],
        )

    async def start(self) -> None:
        if self._spool is not None:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._deliver()), loop.create_task(self._sync())]

    async def stop(self, grace: float = 5.0) -> None:
        """Deliver what can be delivered within ``grace`` seconds, then close; the rest stays spooled."""
        if self._spool is not None and self._tasks:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self._database_up and self._spool.undelivered_bytes and loop.time() < deadline:
                self._wake.set()
                await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        if self._spool is not None:
            with contextlib.suppress(OSError):
                self._spool.close()
        if self._log_file is not None:
            self._log_file.close()

    # ------------------------------------------------------------------ accepting

    def refusal(self, protected: bool) -> str | None:
        """Why a statement (touching protected tables or not) must be refused now, or None."""
        if self._failed is not None:
            return f"the audit trail cannot record statements ({self._failed})"
        spool = self._spool
        if spool is None or spool.undelivered_bytes <= self._config.spool_max_bytes:
            return None
        if protected or self._config.when_full == "refuse_all":
            return (
                f"the audit spool is full ({spool.undelivered_bytes} bytes not yet delivered to the audit "
                "database), so this statement cannot be recorded"
            )
        return None

    @property
    def active(self) -> bool:
        """Whether records go anywhere (``log: none`` without a database: the trail is switched off,
        and callers may skip building records)."""
        return self._spool is not None or self._logger is not None

    def record(self, record: Mapping[str, Any]) -> int:
        """Accept one record; returns its sequence number. AuditUnavailable if it cannot be kept."""
        if self._failed is not None:
            raise AuditUnavailable(self._failed)
        sealed = seal(self._seq, self._prev, record)
        if self._spool is not None:
            try:
                position = self._spool.append(sealed)
            except OSError as exc:
                self._failed = f"the audit spool cannot be written: {exc.strerror or exc}"
                log.critical("audit_spool_write_failed", chain=self.chain, error=str(exc))
                raise AuditUnavailable(self._failed) from exc
            if not self._from_spool:
                if len(self._queue) < self._queue_limit:
                    self._queue.append((sealed, record, position))
                else:  # delivery fell behind: it reads the spool until it has caught up
                    self._from_spool = True
                    self._queue.clear()
            self._wake.set()
        self._seq, self._prev = sealed.seq + 1, sealed.hash
        self._accepted += 1
        if self._logger is not None:
            if "event" in record:  # structlog's own key (elevation records have one): renamed in the log
                record = {("audit_event" if k == "event" else k): v for k, v in record.items()}
            self._logger.msg(
                "audit", audit_chain=self.chain, audit_seq=sealed.seq, audit_prev=sealed.prev.hex(),
                audit_hash=sealed.hash.hex(), **record,
            )  # fmt: skip
        return sealed.seq

    def statistics(self) -> AuditStatistics:
        spool = self._spool
        return AuditStatistics(
            chain=self.chain,
            accepted=self._accepted,
            delivered_seq=spool.delivered_seq if spool is not None else 0,
            undelivered_bytes=spool.undelivered_bytes if spool is not None else 0,
            database_up=self._database_up,
            failed=self._failed,
        )

    # ------------------------------------------------------------------ delivering

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            dsn = self._dsn
            assert dsn is not None
            self._conn = await asyncpg.connect(
                host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password, database=dsn.database,
                ssl=None if dsn.sslmode in ("disable", "allow", "prefer") else dsn.sslmode,
                timeout=dsn.connect_timeout, server_settings={"application_name": "sekisho-audit"},
            )  # fmt: skip
            await database.ensure_schema(self._conn)
        return self._conn

    def _next_batch(self) -> tuple[list[database.Row], Sealed | None, Position | None]:
        """The next records to deliver as table rows, the last of them and where it ends in the
        spool: from the queue, or from the spool while the queue cannot be trusted to be whole."""
        spool = self._spool
        assert spool is not None
        size = self._config.batch
        if self._from_spool:
            batch, position = spool.read(size)
            if spool.at_end(position):
                self._from_spool = False  # records accepted from now on are queued
            if not batch:
                return [], None, None
            return [database.row(self.chain, s) for s in batch], batch[-1], position
        queue = self._queue
        taken = [queue.popleft() for _ in range(min(size, len(queue)))]
        if not taken:
            return [], None, None
        last, _, position = taken[-1]
        return [database.row(self.chain, s, r) for s, r, _ in taken], last, position

    async def _deliver(self) -> None:
        spool = self._spool
        assert spool is not None
        backoff = 0.2
        while True:
            rows, last, position = self._next_batch()
            if last is None or position is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            try:
                async with asyncio.timeout(30):
                    conn = await self._connection()
                    await database.insert(conn, rows)
            except Exception as exc:
                # The batch is still in the spool (not acknowledged): read it from there again.
                self._from_spool = True
                self._queue.clear()
                if self._database_up or backoff == 0.2:
                    log.error(
                        "audit_database_unreachable",
                        chain=self.chain,
                        error=str(exc) or type(exc).__name__,
                        undelivered_bytes=spool.undelivered_bytes,
                    )
                self._database_up = False
                if self._conn is not None:
                    self._conn.terminate()  # never reuse a connection an operation was abandoned on
                    self._conn = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if not self._database_up:
                log.info("audit_database_up", chain=self.chain, undelivered_bytes=spool.undelivered_bytes)
            self._database_up = True
            backoff = 0.2
            spool.ack(last, position)
            if len(rows) < self._config.batch:
                # Caught up: let records gather (they are safe in the spool) rather than send a
                # batch per statement, which would cost a round trip and a commit per statement.
                await asyncio.sleep(_GATHER)

    async def _sync(self) -> None:
        """fsync the spool every ``sync_interval`` seconds, off the event loop."""
        spool = self._spool
        assert spool is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._config.sync_interval)
            fd = spool.dup_for_sync()
            if fd is None:
                continue
            try:
                await loop.run_in_executor(None, os.fsync, fd)
            except OSError as exc:
                log.error("audit_spool_sync_failed", chain=self.chain, error=str(exc))
            finally:
                os.close(fd)
