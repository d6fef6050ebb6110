"""The analysis worker pool: same facts as analysis in process, and fail closed when a worker
dies or is late."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal

from gateway.analysis_pool import AnalysisPool
from policy.analyze import Budget, analyze
from tests.unit.test_analyze import CATALOG

SNAPSHOT = pickle.dumps((CATALOG, ("public",), Budget()))
HEAVY = ";".join(
    "SELECT count(*) FROM customers WHERE id IN (" + ",".join(map(str, range(3000))) + ")" for _ in range(60)
)


def test_a_worker_gives_the_same_facts_and_the_normalized_shape() -> None:
    async def run() -> None:
        pool = AnalysisPool(workers=1)
        try:
            sql = "SELECT name, phone FROM customers WHERE id = 42"
            analysis, shape = await pool.analyze(1, SNAPSHOT, sql, 60)
            assert analysis == analyze(sql, CATALOG)
            assert shape == "SELECT name, phone FROM customers WHERE id = $1"
            # Not cacheable (the facts depend on a literal): no shape.
            _, shape = await pool.analyze(1, SNAPSHOT, "SET search_path = evil, public", 60)
            assert shape is None
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_worker_that_dies_makes_the_statement_unanalyzable_and_the_pool_recovers() -> None:
    async def run() -> None:
        pool = AnalysisPool(workers=1)
        try:
            await pool.analyze(1, SNAPSHOT, "SELECT 1", 60)  # the worker is up
            executor = pool._executor()
            pids = list(executor._processes)  # type: ignore[attr-defined]
            task = asyncio.ensure_future(pool.analyze(1, SNAPSHOT, HEAVY, 60))
            await asyncio.sleep(0.2)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            analysis, shape = await task
            assert shape is None
            assert not analysis.cacheable
            assert analysis.statements[0].unanalyzable == "the analysis worker failed on this statement"
            again, _ = await pool.analyze(1, SNAPSHOT, "SELECT 1", 60)
            assert again.statements[0].unanalyzable is None
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_late_worker_makes_the_statement_unanalyzable() -> None:
    async def run() -> None:
        pool = AnalysisPool(workers=1)
        try:
            analysis, _ = await pool.analyze(1, SNAPSHOT, HEAVY, 0.01)
            assert analysis.statements[0].unanalyzable == "analysis took more than 0.01 s"
        finally:
            await pool.close()

    asyncio.run(run())
