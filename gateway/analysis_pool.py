"""Analysis of long statements in worker processes, so that no statement can stall the event loop.

Turning a parse tree into Python objects (``json.loads`` of pglast's JSON) holds the GIL for the
whole call: a megabyte of SQL is tens of megabytes of JSON and seconds of CPU, which a thread
cannot hide from the loop. A worker process can. The catalog travels pickled, once per version
per worker (the worker keeps the last one), and the analysis comes back pickled.

If a worker dies (out of memory, killed), the pool is rebuilt and the statement is reported
unanalyzable: refused for restricted people, never waved through.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from gateway.shapes import shape_of
from policy.analyze import Budget, analyze
from policy.catalog import Catalog
from policy.facts import Analysis, StatementFacts

log = structlog.get_logger("sekisho.analysis")

_worker_state: tuple[int, Catalog, tuple[str, ...], Budget] | None = None


def analyze_in_worker(version: int, snapshot: bytes, sql: str) -> tuple[Analysis, str | None]:
    """Runs in a worker process: the analysis of ``sql`` and its normalized shape (if cacheable)."""
    global _worker_state  # noqa: PLW0603  one snapshot per worker process, replaced per version
    if _worker_state is None or _worker_state[0] != version:
        catalog, search_path, budget = pickle.loads(snapshot)  # noqa: S301  our own parent's bytes
        _worker_state = (version, catalog, search_path, budget)
    _, catalog, search_path, budget = _worker_state
    analysis = analyze(sql, catalog, search_path, budget)
    return analysis, shape_of(sql) if analysis.cacheable else None


def failed_analysis(sql: str, reason: str) -> Analysis:
    """An analysis that establishes nothing: the decision engine refuses it for restricted roles."""
    facts = StatementFacts(text=sql, node="?", command="unknown", unanalyzable=reason)
    return Analysis((facts,), cacheable=False)


class AnalysisPool:
    """A small pool of analysis processes, started lazily and rebuilt if a worker dies."""

    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork under a running loop is unsafe
            self._pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
        return self._pool

    async def analyze(
        self, version: int, snapshot: bytes, sql: str, seconds: float
    ) -> tuple[Analysis, str | None]:
        """The analysis of ``sql`` made in a worker; unanalyzable if the worker fails or is late."""
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor(), analyze_in_worker, version, snapshot, sql)
            return await asyncio.wait_for(future, seconds)
        except BrokenProcessPool:
            log.error("analysis_worker_died")
            await self.close()
            return failed_analysis(sql, "the analysis worker failed on this statement"), None
        except TimeoutError:
            log.error("analysis_worker_late", seconds=seconds)
            return failed_analysis(sql, f"analysis took more than {seconds:g} s"), None
        except Exception as exc:  # fail closed whatever went wrong in between
            log.exception("analysis_worker_failed", error=str(exc))
            return failed_analysis(sql, f"the analysis worker failed ({type(exc).__name__})"), None

    async def close(self) -> None:
        """Stop the workers (those busy finish their statement first, within its budget)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
