"""The policy as the gateway holds it: current policy and catalog, analysis caches, a person's gate.

``PolicyService`` is shared by every session of a process: it owns the policy, the catalog snapshot
and the analysis cache. ``SessionGate`` is one person's view: their merged permissions and a cache
of decisions. Analysis is cached by PostgreSQL's normalized text (literals replaced by $n), so
statements that differ only in literals (pgbench -S) are analyzed once; statements whose facts
depend on a literal (``Analysis.cacheable`` False) are analyzed every time. Every analysis runs
under the configured ``Budget`` (size and time), so no statement can stall a process.

Elevations (``policy.elevation``): the service holds each person's grants in force, refreshed from
the elevation store by the server; a gate widens the person's permissions with them
(``elevate``) before any tightening after alarms is applied, so a tightened cap and a suspension
still win. A statement that the person's own permissions would have decided otherwise is
attributed to a grant (``Verdict.elevation``) for the audit trail.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from gateway.shapes import shape_of
from policy.analyze import Budget, analyze
from policy.catalog import Catalog
from policy.decision import POLICY_REFUSED, Allow, Decision, Deny
from policy.detect.tightening import Tightening, tighten
from policy.elevation import Grant, elevate, elevate_all
from policy.engine import Named, evaluate
from policy.facts import Analysis
from policy.model import Policy
from policy.permissions import Permissions, permissions_for

_EXACT_CACHE_LIMIT = 20_000
_SHAPE_CACHE_LIMIT = 20_000
_CACHE_CHARS_LIMIT = 32 * 1024 * 1024  # statement text held as cache keys, per cache


@functools.lru_cache(maxsize=4096)
def fingerprint(sql: str) -> str:
    """The statement's shape for events (literals as $n); the text itself when it has none."""
    return shape_of(sql) or sql


V = TypeVar("V")


class _Cache(Generic[V]):
    """A dict bounded by entry count and by the characters its keys hold."""

    __slots__ = ("_chars", "_entries", "_limit")

    def __init__(self, limit: int) -> None:
        self._entries: dict[str, V] = {}
        self._limit = limit
        self._chars = 0

    def get(self, key: str) -> V | None:
        return self._entries.get(key)

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= self._limit or self._chars + len(key) > _CACHE_CHARS_LIMIT:
            self.clear()  # crude but bounded; a steady workload refills it at once
        self._entries[key] = value
        self._chars += len(key)

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    analysis: Analysis
    decision: Decision
    elevation: str | None = None  # the grant without which the decision would have been stricter


class PolicyService:
    """The current policy and catalog, and the analyses made against them."""

    def __init__(self, policy: Policy, catalog: Catalog, budget: Budget | None = None) -> None:
        self.policy = policy
        self.catalog = catalog
        self.budget = budget or Budget()
        self.version = 0
        self._search_path = self._analysis_path(catalog)
        # Exact text -> its analysis and cache key (the shape, so that decisions cached by shape
        # serve every text of that shape); shape -> analysis.
        self._by_text: _Cache[tuple[Analysis, str]] = _Cache(_EXACT_CACHE_LIMIT)
        self._by_shape: _Cache[Analysis] = _Cache(_SHAPE_CACHE_LIMIT)
        self._snapshot: tuple[int, bytes] | None = None
        # Tightenings in force after alarms (policy.detect), by person; sessions re-merge on change.
        # ``restrictions`` combines those this process decided with those every process shares.
        self.restrictions: dict[str, Tightening] = {}
        self.restrictions_version = 0
        self._local: dict[str, Tightening] = {}
        self._shared: dict[str, Tightening] = {}
        self.lifts = 0  # clearances applied here: a read of the shared ones begun before is stale
        # Told of each tightening decided here, to share it with other processes (None: this
        # process has none for the person now, so one not yet shared is withdrawn).
        self.on_restrict: Callable[[str, Tightening | None], None] | None = None
        # Elevation grants in force, by person (from the elevation store); sessions re-merge on change.
        self.grants: dict[str, tuple[Grant, ...]] = {}
        self.grants_version = 0

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

    def restrict(self, user: str, tightening: Tightening | None) -> None:
        """Put a person under a tightening decided in this process (None: none of this process's
        alarms calls for one); their sessions apply it at once, and ``on_restrict`` shares it. A
        tightening another process shared stays in force: only a clearance lifts one (``lift``)."""
        if tightening is None:
            self._local.pop(user, None)
        else:
            self._local[user] = tightening
        if self.on_restrict is not None:
            self.on_restrict(user, tightening)
        self._combine(user)

    def lift(self, user: str) -> None:
        """Drop a person's tightenings here once a clearance is recorded in the detection store
        (which dropped the shared one with it; other processes follow when they read it)."""
        self._local.pop(user, None)
        self._shared.pop(user, None)
        self.lifts += 1
        if self.on_restrict is not None:
            self.on_restrict(user, None)
        self._combine(user)

    def adopt(self, shared: Mapping[str, Tightening]) -> None:
        """The tightenings every process has shared (from the detection store), replacing the last
        view of them; this process's own stay in force beside them."""
        changed = set(self._shared) | set(shared)
        self._shared = dict(shared)
        for user in changed:
            self._combine(user)

    def lapse(self, user: str, now: datetime) -> None:
        """Forget a person's tightenings that ended before ``now``."""
        for held in (self._local, self._shared):
            tightening = held.get(user)
            if tightening is not None and tightening.lapsed(now):
                del held[user]
        self._combine(user)

    def _combine(self, user: str) -> None:
        tightening = combined(self._local.get(user), self._shared.get(user))
        if self.restrictions.get(user) == tightening:
            return
        if tightening is None:
            self.restrictions.pop(user, None)
        else:
            self.restrictions[user] = tightening
        self.restrictions_version += 1

    def grant(self, grants: Mapping[str, tuple[Grant, ...]]) -> None:
        """The grants in force now (every person's, replacing the last view); sessions of people
        whose grants changed re-merge their permissions at their next statement."""
        if dict(grants) != self.grants:
            self.grants = dict(grants)
            self.grants_version += 1

    def snapshot(self) -> tuple[int, bytes]:
        """What an analysis worker needs (catalog, search path, budget), pickled once per version."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            blob = pickle.dumps((self.catalog, self._search_path, self.budget))
            self._snapshot = (self.version, blob)
        return self._snapshot

    def lookup(self, sql: str) -> tuple[Analysis, str] | None:
        """A cached analysis of ``sql`` (word for word, or by normalized shape) and its key."""
        known = self._by_text.get(sql)
        if known is not None:
            return known
        shape = shape_of(sql)
        if shape is None:
            return None
        cached = self._by_shape.get(shape)
        if cached is None:
            return None
        self._by_text.put(sql, (cached, shape))
        return cached, shape

    def remember(self, sql: str, shape: str | None, analysis: Analysis, version: int) -> str | None:
        """Cache an analysis made against ``version``; its cache key, or None if not reusable."""
        if not analysis.cacheable or shape is None:
            return None
        if version == self.version:  # made against a policy or catalog since replaced: not cached
            self._by_shape.put(shape, analysis)
            self._by_text.put(sql, (analysis, shape))
        return shape

    def analyze(self, sql: str) -> tuple[Analysis, str | None]:
        """The analysis of ``sql`` and its cache key (None when the analysis is not reusable)."""
        found = self.lookup(sql)
        if found is not None:
            return found
        analysis = analyze(sql, self.catalog, self._search_path, self.budget)
        shape = shape_of(sql) if analysis.cacheable else None
        return analysis, self.remember(sql, shape, analysis, self.version)


class SessionGate:
    """One person's decisions, with their permissions merged once."""

    def __init__(self, service: PolicyService, user: str) -> None:
        self.service = service
        self.user = user
        self._version = service.version
        self._restrictions = service.restrictions_version
        self._grants_version = service.grants_version
        self._decisions: dict[str, Decision] = {}
        self._plain_decisions: dict[str, Decision] = {}  # without the grants, to attribute decisions
        self._ready: dict[str, tuple[int, Analysis, str | None]] = {}
        self.tightening: Tightening | None = None
        self.grants: tuple[Grant, ...] = ()
        self._plain: Permissions  # the person's permissions without their grants (set by _merge)
        self.permissions: Permissions = self._merge(datetime.now(UTC))

    def _merge(self, now: datetime) -> Permissions:
        """The person's permissions: their roles, widened by their grants in force, tightened."""
        service = self.service
        self.tightening = service.restrictions.get(self.user)
        self.grants = tuple(g for g in service.grants.get(self.user, ()) if g.until > now)
        own = permissions_for(service.policy, self.user)
        self._plain = tighten(own, self.tightening)
        self.permissions = tighten(elevate_all(own, self.grants), self.tightening)
        return self.permissions

    def in_force(self, grant: str) -> bool:
        """Whether the grant with this id still widens this person's permissions."""
        self._refresh()
        return any(g.id == grant for g in self.grants)

    def prepared(self, sql: str, analysis: Analysis, key: str | None, version: int) -> None:
        """An analysis made elsewhere (a worker process) for the ``decide`` that will follow."""
        self._ready = {sql: (version, analysis, key)}  # one at a time: the session waits for it

    def _refresh(self) -> None:
        service = self.service
        # The clock matters only to a tightening or grants that may have ended (and to a merge).
        now = datetime.now(UTC) if self.tightening is not None or self.grants else None
        if self.tightening is not None and now is not None and self.tightening.lapsed(now):
            service.lapse(self.user, now)
        if (
            self._version != service.version
            or self._restrictions != service.restrictions_version
            or self._grants_version != service.grants_version
            or (now is not None and self.grants and any(g.until <= now for g in self.grants))
        ):
            self._merge(now or datetime.now(UTC))
            self._decisions.clear()
            self._plain_decisions.clear()
            self._version = service.version
            self._restrictions = service.restrictions_version
            self._grants_version = service.grants_version

    def decide(self, sql: str, named: Named) -> Verdict:
        """Analyze (cached) and decide (cached unless the string uses prepared names or cursors)."""
        self._refresh()
        ready = self._ready.pop(sql, None)
        if ready is not None and ready[0] == self.service.version:
            analysis, key = ready[1], ready[2]
        else:
            analysis, key = self.service.analyze(sql)
        if self.tightening is not None and self.tightening.suspend and analysis.statements:
            return Verdict(analysis, _suspended(self.user, self.tightening))
        uses_names = any(s.prepared_name is not None for s in analysis.statements)
        cached = key if key is not None and not uses_names else None
        decision = self._evaluate(analysis, named, cached, self.permissions, self._decisions)
        if not self.grants or not isinstance(decision, Allow):
            return Verdict(analysis, decision)
        plain = self._evaluate(analysis, named, cached, self._plain, self._plain_decisions)
        if plain == decision:
            return Verdict(analysis, decision)
        return Verdict(analysis, decision, self._attribute(analysis, named, decision))

    def _evaluate(
        self,
        analysis: Analysis,
        named: Named,
        key: str | None,
        permissions: Permissions,
        cache: dict[str, Decision],
    ) -> Decision:
        if key is None:
            return evaluate(analysis, self.service.policy, permissions, named)
        decision = cache.get(key)
        if decision is None:
            decision = evaluate(analysis, self.service.policy, permissions, named)
            if len(cache) >= _SHAPE_CACHE_LIMIT:
                cache.clear()
            cache[key] = decision
        return decision

    def _attribute(self, analysis: Analysis, named: Named, decision: Decision) -> str:
        """The grant a decision needs: the first that alone gives it (with several in force)."""
        if len(self.grants) > 1:
            own = permissions_for(self.service.policy, self.user)
            for grant in self.grants:
                alone = tighten(elevate(own, grant), self.tightening)
                if evaluate(analysis, self.service.policy, alone, named) == decision:
                    return grant.id
        return self.grants[0].id


def combined(a: Tightening | None, b: Tightening | None) -> Tightening | None:
    """Two tightenings of one person as one, as ``policy.detect.tightening_for`` combines the
    effects of several alarms: the smallest cap, suspension if either suspends, until the later
    end (until cleared, if either is), the alarms of both."""
    if a is None or b is None:
        return a or b
    caps = [cap for cap in (a.max_rows, b.max_rows) if cap is not None]
    return Tightening(
        max_rows=min(caps) if caps else None,
        suspend=a.suspend or b.suspend,
        until=None if a.until is None or b.until is None else max(a.until, b.until),  # None: until cleared
        alarms=tuple(dict.fromkeys(a.alarms + b.alarms)),
    )


def _suspended(user: str, tightening: Tightening) -> Deny:
    return Deny(
        "suspended",
        POLICY_REFUSED,
        f"Sekisho suspended {user} until {tightening.describe_until()} after alarms "
        f"({', '.join(tightening.alarms)}); every statement is refused until then",
        hint="Ask your compliance lead, who can review the alarms.",
    )
