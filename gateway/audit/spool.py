"""The write-ahead spool: every audit record is on local disk before anything else happens to it.

Records are appended, one line each (``gateway.audit.record``), to segment files named by their
first sequence number; the deliverer reads them back in order and acknowledges what the audit
database has stored (``ack``), after which fully delivered segments are deleted. So the spool holds
exactly what has not reached the database: while the database is up that is a batch or two, while
it is down everything since.

An append is one ``write`` to a file opened with O_APPEND: once it returns the bytes are in the
kernel, and a crash of Sekisho (the process) loses nothing. ``sync`` (fsync, run periodically off
the event loop) makes them survive a crash of the machine too; what an OS crash can take is the
records of the last sync interval, and a torn last line is cut off at recovery (and logged).

The spool also names its chain: a new spool starts a new chain (``<name>-<creation time>``), so two
spools can never write the same chain's sequence numbers, whatever happened to either.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.audit.record import GENESIS, Sealed, SpoolLineError, parse_line
from gateway.audit.verify import Anchor

log = structlog.get_logger("sekisho.audit")

_SEGMENT = re.compile(r"^segment-(\d{16})\.log$")
_CHAIN_FILE = "chain"
_ACK_FILE = "delivered"


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, damage): the trail cannot accept records."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the deliverer has got to: a segment (by its first seq) and a byte offset in it."""

    segment: int
    offset: int


class Spool:
    """Segment files of sealed records in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, name: str, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self._name = name
        self._segment_bytes = segment_bytes
        self._fd = -1
        self._current = 0  # first seq of the segment being appended to
        self._current_size = 0
        self._sizes: dict[int, int] = {}  # segment -> bytes, every segment on disk
        self._read = Position(0, 0)  # acknowledged up to here
        self.chain = ""
        self.next_seq = 1
        self.last_hash = GENESIS
        self.delivered_seq = 0
        self.delivered_hash = GENESIS
        self._unsynced = False

    # ------------------------------------------------------------------ opening and recovery

    def open(self) -> None:
        """Create or recover the spool: the chain's name, its tail, what is still to deliver."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            chain_file = self.directory / _CHAIN_FILE
            if chain_file.exists():
                self.chain = chain_file.read_text().strip()
            if not self.chain:
                self.chain = f"{self._name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
                _write_atomically(chain_file, self.chain + "\n")
            self._recover()
        except OSError as exc:
            raise SpoolError(f"audit spool {self.directory}: {exc.strerror or exc}") from exc

    def _recover(self) -> None:
        segments = sorted(
            int(match.group(1)) for p in self.directory.iterdir() if (match := _SEGMENT.match(p.name))
        )
        ack = self.directory / _ACK_FILE
        if ack.exists():
            seq_text, digest, segment_text, offset_text = ack.read_text().split()
            self.delivered_seq, self.delivered_hash = int(seq_text), bytes.fromhex(digest)
            self._read = Position(int(segment_text), int(offset_text))
            self.next_seq, self.last_hash = self.delivered_seq + 1, self.delivered_hash
        for segment in segments:
            self._sizes[segment] = (self.directory / _name(segment)).stat().st_size
        if segments:
            last = segments[-1]
            tail = self._scan_tail(last)
            if tail is not None:
                self.next_seq, self.last_hash = tail.seq + 1, tail.hash
            self._current = last
        else:
            self._current = self.next_seq
        self._open_current()
        if self._read.segment not in self._sizes:
            # No acknowledgement yet, or its segment is gone: read from the oldest segment; ``read``
            # skips what the acknowledged sequence number says was delivered.
            self._read = Position(min(self._sizes), 0)

    def _scan_tail(self, segment: int) -> Sealed | None:
        """The segment's last whole record; a torn line after it is cut off."""
        path = self.directory / _name(segment)
        data = path.read_bytes()
        good = 0
        last: Sealed | None = None
        for line in data.splitlines(keepends=True):
            try:
                sealed = parse_line(line)
            except SpoolLineError as exc:
                log.error("audit_spool_torn_line", segment=str(path), offset=good, error=str(exc))
                break
            last = sealed
            good += len(line)
        if good < len(data):
            with path.open("r+b") as handle:
                handle.truncate(good)
            self._sizes[segment] = good
        return last

    def _open_current(self) -> None:
        path = self.directory / _name(self._current)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._current_size = os.fstat(self._fd).st_size
        self._sizes[self._current] = self._current_size

    # ------------------------------------------------------------------ writing

    def append(self, sealed: Sealed) -> Position:
        """Put one sealed record on disk (in the kernel: a process crash keeps it); where it ends,
        for acknowledging it later. OSError if it cannot."""
        if self._current_size >= self._segment_bytes:
            self._rotate(sealed.seq)
        line = sealed.line()
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk mid-line: cut it back so the spool stays whole
            os.ftruncate(self._fd, self._current_size)
            raise OSError(28, "short write to the audit spool (disk full?)")
        self._current_size += written
        self._sizes[self._current] = self._current_size
        self.next_seq, self.last_hash = sealed.seq + 1, sealed.hash
        self._unsynced = True
        return Position(self._current, self._current_size)

    def at_end(self, position: Position) -> bool:
        """Whether ``position`` is the end of everything written (a read there found it all)."""
        return position.segment == self._current and position.offset >= self._current_size

    def _rotate(self, first_seq: int) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._current = first_seq
        self._open_current()

    def dup_for_sync(self) -> int | None:
        """A duplicate descriptor of the segment being written, to fsync off the event loop (a
        duplicate stays valid if the segment rotates meanwhile), or None if nothing is unsynced."""
        if not self._unsynced or self._fd < 0:
            return None
        self._unsynced = False
        return os.dup(self._fd)

    @property
    def undelivered_bytes(self) -> int:
        """Bytes of records not yet acknowledged by the audit database."""
        return sum(self._sizes.values()) - self._read.offset

    # ------------------------------------------------------------------ delivering

    def read(self, max_records: int, max_bytes: int = 4 * 1024 * 1024) -> tuple[list[Sealed], Position]:
        """The next records to deliver after the acknowledged position, and where they end."""
        out: list[Sealed] = []
        position = self._read
        size = 0
        while len(out) < max_records and size < max_bytes:
            segment_size = self._sizes.get(position.segment)
            if segment_size is None:
                break
            if position.offset >= segment_size:
                later = [s for s in self._sizes if s > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            with (self.directory / _name(position.segment)).open("rb") as handle:
                handle.seek(position.offset)
                chunk = handle.read(min(max_bytes, segment_size - position.offset))
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                break
            offset = position.offset
            for line in chunk[:end].splitlines(keepends=True):
                offset += len(line)
                sealed = parse_line(line)
                if sealed.seq > self.delivered_seq:
                    out.append(sealed)
                    size += len(line)
                if len(out) >= max_records or size >= max_bytes:
                    break
            position = Position(position.segment, offset)
        return out, position

    def ack(self, last: Sealed, position: Position) -> None:
        """The database holds everything up to ``last``: remember it, drop delivered segments."""
        self.delivered_seq, self.delivered_hash = last.seq, last.hash
        self._read = position
        # Not fsynced: an acknowledgement lost in a machine crash only means a batch is sent again.
        _write_atomically(
            self.directory / _ACK_FILE,
            f"{last.seq} {last.hash.hex()} {position.segment} {position.offset}\n",
            sync=False,
        )
        for segment in sorted(self._sizes):
            if segment >= position.segment or segment == self._current:
                break
            (self.directory / _name(segment)).unlink(missing_ok=True)
            del self._sizes[segment]

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def _name(segment: int) -> str:
    return f"segment-{segment:016d}.log"


def _write_atomically(path: Path, text: str, *, sync: bool = True) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    temporary.replace(path)


def read_anchors(directory: Path) -> list[Anchor]:
    """What the spools under ``directory`` (one per worker, or one) last saw stored."""
    anchors = []
    for place in [directory, *sorted(directory.glob("worker-*"))]:
        chain_file, ack = place / _CHAIN_FILE, place / _ACK_FILE
        try:
            chain = chain_file.read_text().strip()
            seq_text, digest = ack.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        anchors.append(Anchor(chain, int(seq_text), bytes.fromhex(digest)))
    return anchors
