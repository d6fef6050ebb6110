"""The policy as the gateway holds it: current policy and catalog, analysis caches, a person's gate.

``PolicyService`` is shared by every session of a process: it owns the policy, the catalog snapshot
and the analysis cache. ``SessionGate`` is one person's view: their merged permissions and a cache
of decisions. Analysis is cached by PostgreSQL's normalized text (literals replaced by $n), so
statements that differ only in literals (pgbench -S) are analyzed once; statements whose facts
depend on a literal (``Analysis.cacheable`` False) are analyzed every time.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast.parser import ParseError, normalize

from policy.analyze import analyze
from policy.catalog import Catalog
from policy.decision import Decision
from policy.engine import Named, evaluate
from policy.facts import Analysis
from policy.model import Policy
from policy.permissions import Permissions, permissions_for

_EXACT_CACHE_LIMIT = 20_000
_SHAPE_CACHE_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Verdict:
    analysis: Analysis
    decision: Decision


class PolicyService:
    """The current policy and catalog, and the analyses made against them."""

    def __init__(self, policy: Policy, catalog: Catalog) -> None:
        self.policy = policy
        self.catalog = catalog
        self.version = 0
        self._search_path = self._analysis_path(catalog)
        self._by_text: dict[str, Analysis] = {}
        self._by_shape: dict[str, Analysis] = {}

    @staticmethod
    def _analysis_path(catalog: Catalog) -> tuple[str, ...]:
        """Every schema, public first: an unqualified name is checked against every table it could
        mean under any search_path, so a session that changes search_path cannot hide a protected
        table behind a name (over-protection where names repeat across schemas is accepted)."""
        others = sorted(s for s in catalog.schemas if s not in ("public", "pg_catalog"))
        return ("public", *others)

    def replace(self, policy: Policy | None = None, catalog: Catalog | None = None) -> None:
        """Swap in a new policy or catalog (already validated); cached analyses are dropped."""
        if policy is not None:
            self.policy = policy
        if catalog is not None:
            self.catalog = catalog
            self._search_path = self._analysis_path(catalog)
        self._by_text.clear()
        self._by_shape.clear()
        self.version += 1

    def analyze(self, sql: str) -> tuple[Analysis, str | None]:
        """The analysis of ``sql`` and its cache key (None when the analysis is not reusable)."""
        cached = self._by_text.get(sql)
        if cached is not None:
            return cached, sql
        try:
            shape = normalize(sql)
        except (ParseError, ValueError):
            shape = None
        if shape is not None:
            cached = self._by_shape.get(shape)
            if cached is not None:
                self._remember(self._by_text, sql, cached, _EXACT_CACHE_LIMIT)
                return cached, shape
        analysis = analyze(sql, self.catalog, self._search_path)
        if not analysis.cacheable or shape is None:
            return analysis, None
        self._remember(self._by_shape, shape, analysis, _SHAPE_CACHE_LIMIT)
        self._remember(self._by_text, sql, analysis, _EXACT_CACHE_LIMIT)
        return analysis, shape

    @staticmethod
    def _remember(cache: dict[str, Analysis], key: str, value: Analysis, limit: int) -> None:
        if len(cache) >= limit:
            cache.clear()  # crude but bounded; a steady workload refills it at once
        cache[key] = value


class SessionGate:
    """One person's decisions, with their permissions merged once."""

    def __init__(self, service: PolicyService, user: str) -> None:
        self.service = service
        self.user = user
        self._version = service.version
        self._decisions: dict[str, Decision] = {}
        self.permissions: Permissions = permissions_for(service.policy, user)

    def _refresh(self) -> None:
        if self._version != self.service.version:
            self.permissions = permissions_for(self.service.policy, self.user)
            self._decisions.clear()
            self._version = self.service.version

    def decide(self, sql: str, named: Named) -> Verdict:
        """Analyze (cached) and decide (cached unless the string uses prepared names or cursors)."""
        self._refresh()
        analysis, key = self.service.analyze(sql)
        uses_names = any(s.prepared_name is not None for s in analysis.statements)
        if key is not None and not uses_names:
            decision = self._decisions.get(key)
            if decision is None:
                decision = evaluate(analysis, self.service.policy, self.permissions, named)
                if len(self._decisions) >= _SHAPE_CACHE_LIMIT:
                    self._decisions.clear()
                self._decisions[key] = decision
            return Verdict(analysis, decision)
        return Verdict(analysis, evaluate(analysis, self.service.policy, self.permissions, named))
