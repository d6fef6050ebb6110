"""The SQLite file the embedded stores share, opened by several processes at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.sqlite_file import SQLiteFile

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k text PRIMARY KEY, v int)",)


def test_processes_opening_a_new_file_at_once_all_get_it(tmp_path: Path) -> None:
    """Switching a new file to WAL fails at once with "database is locked" when another
    connection does the same at that moment; each opener must wait its turn, not fail (Sekisho
    workers starting together on a fresh store)."""

    async def run() -> int:
        failures = 0
        for round_ in range(150):
            files = [SQLiteFile(tmp_path / f"{round_}.sqlite", SCHEMA, "test store") for _ in range(6)]
            answers = await asyncio.gather(
                *(f.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()) for f in files),
                return_exceptions=True,
            )
            failures += sum(isinstance(a, BaseException) for a in answers)
            for f in files:
                f.close()
        return failures

    assert asyncio.run(run()) == 0
