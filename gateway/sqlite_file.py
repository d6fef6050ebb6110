"""One SQLite file that the Sekisho processes of a host share (the embedded default of the quota,
detection and elevation stores): opened on first use in WAL mode with its schema created, and used
from a worker thread under a lock so that no query blocks the event loop. A SQLite error (a locked
file past the busy timeout, a full disk) becomes the stores' ``StoreUnavailable``, naming the store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction


class StoreUnavailable(Exception):
    """The store cannot be reached or failed; the message says which and why."""

    code = "quota_store_unavailable"


class SQLiteFile:
    def __init__(self, path: Path, schema: Sequence[str], what: str) -> None:
        self.path = path
        self._schema = tuple(schema)
        self._what = what  # "quota store", ...: for error messages
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            try:
                self._set_up(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _set_up(self, db: sqlite3.Connection) -> None:
        """WAL mode and the schema. Switching a new file to WAL can fail at once with "database is
        locked" when another process does the same at that moment (SQLite's busy timeout does not
        cover it): tried again until the busy timeout has passed."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                for statement in self._schema:
                    db.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the connection, in a worker thread, one at a time."""

        def call() -> T:
            with self._lock:
                try:
                    return work(self._connect())
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"{self._what} {self.path}: {exc}") from exc

        return await asyncio.to_thread(call)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
