"""Name scopes: the FROM entries, CTEs and windows a column reference can see.

A ``Level`` is one query level (one SELECT, one UPDATE, ...). Its ``entries`` are the range-table
entries that references can name; its ``items`` are the top-level FROM items in order (joins
kept as trees), which is what ``SELECT *`` expands. Levels link to the enclosing level; a FROM
subquery that is not LATERAL sees none of its siblings, which ``parent_visible`` expresses as the
number of the parent's entries it may see (None: all that exist when it resolves a name).

Entries come in three kinds:

* ``RelationEntry``: a catalog relation, possibly several candidates for one unqualified name
  (every candidate counts as a source, the first gives the column order, as PostgreSQL would);
* ``DerivedEntry``: a subquery, CTE, VALUES list, function with known result columns, join alias;
* ``OpaqueEntry``: columns unknown (a relation missing from the catalog, a function returning
  ``record``); any column name may belong to it, with the lineage it was given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from policy.analysis.lineage import NONE, Lin, alternatives, whole_row
from policy.catalog import Relation

Columns = list[tuple[str, Lin]]
# Every table has these, though the catalog snapshot lists only user columns (attnum > 0).
SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "cmin", "xmax", "cmax", "tableoid"})


class Entry:
    """A range-table entry: something a column reference can name (``alias.column``)."""

    __slots__ = ("refname", "schemas")

    certain = True  # its column list is known

    def __init__(self, refname: str | None, schemas: frozenset[str] = frozenset()) -> None:
        self.refname = refname
        self.schemas = schemas  # schemas a qualified reference may name it by (unaliased relations)

    def lin(self, column: str) -> Lin | None:
        """The lineage of one of its columns, or None if it has no such column."""
        raise NotImplementedError

    def columns(self) -> Columns | None:
        """Every column in order (what ``alias.*`` expands to), or None if unknown."""
        raise NotImplementedError

    def whole(self) -> Lin:
        """A whole-row reference to it (``SELECT c FROM customers c``, ``row_to_json(c)``)."""
        cols = self.columns()
        return whole_row([lin for _, lin in cols or ()])


class RelationEntry(Entry):
    __slots__ = ("rels",)

    def __init__(self, refname: str, rels: list[Relation], schemas: frozenset[str]) -> None:
        super().__init__(refname, schemas)
        self.rels = rels

    def lin(self, column: str) -> Lin | None:
        sources = frozenset((r.schema, r.name, column) for r in self.rels if column in r.columns)
        if not sources and column in SYSTEM_COLUMNS:
            return self.missing(column)
        return Lin(sources, True) if sources else None

    def missing(self, column: str) -> Lin:
        """A column the catalog does not list (a stale snapshot): attributed to every candidate."""
        return Lin(frozenset((r.schema, r.name, column) for r in self.rels), True)

    def columns(self) -> Columns | None:
        out: Columns = []
        for name in self.rels[0].columns:
            lin = self.lin(name)
            if lin is not None:
                out.append((name, lin))
        return out

    def whole(self) -> Lin:
        return Lin(frozenset((r.schema, r.name, c) for r in self.rels for c in r.columns), False, True)


class DerivedEntry(Entry):
    __slots__ = ("cols", "index")

    def __init__(self, refname: str | None, cols: Columns) -> None:
        super().__init__(refname)
        self.cols = cols
        index: dict[str, list[Lin]] = {}
        for name, lin in cols:
            index.setdefault(name, []).append(lin)
        self.index = {name: alternatives(lins) for name, lins in index.items()}

    def lin(self, column: str) -> Lin | None:
        return self.index.get(column)

    def columns(self) -> Columns | None:
        return self.cols


class OpaqueEntry(Entry):
    """Columns unknown: a missing relation (sources name it) or a function returning record."""

    __slots__ = ("fallback", "missing_relation")
    certain = False

    def __init__(
        self, refname: str | None, missing_relation: tuple[str, str] | None = None, fallback: Lin = NONE
    ) -> None:
        super().__init__(refname)
        self.missing_relation = missing_relation
        self.fallback = fallback

    def lin(self, column: str) -> Lin | None:
        if self.missing_relation is not None:
            schema, name = self.missing_relation
            return Lin(frozenset({(schema, name, column)}), True)
        return self.fallback

    def columns(self) -> Columns | None:
        return None

    def whole(self) -> Lin:
        return Lin(self.fallback.sources, False, True)


@dataclass(slots=True)
class JoinNode:
    """A join in a FROM list, kept as a tree because ``*`` expands USING columns once, first."""

    left: FromNode
    right: FromNode
    using: list[str]
    natural: bool
    full: bool


FromNode = Entry | JoinNode


def leaves(node: FromNode) -> list[Entry]:
    if isinstance(node, JoinNode):
        return leaves(node.left) + leaves(node.right)
    return [node]


def star(node: FromNode) -> Columns | None:
    """What ``*`` expands to for one FROM item, as PostgreSQL orders it; None if unknown."""
    if not isinstance(node, JoinNode):
        return node.columns()
    left, right = star(node.left), star(node.right)
    if left is None or right is None:
        return None
    common = list(node.using)
    if node.natural:
        right_names = {n for n, _ in right}
        common = [n for n, _ in left if n in right_names]
    if not common:
        return left + right
    merged: Columns = []
    for name in common:
        lins = [lin for n, lin in left if n == name] + [lin for n, lin in right if n == name]
        lin = alternatives(lins)
        merged.append((name, lin._replace(direct=False) if node.full else lin))
    shared = set(common)
    return merged + [c for c in left if c[0] not in shared] + [c for c in right if c[0] not in shared]


@dataclass(slots=True)
class Cte:
    name: str
    columns: Columns | None  # None: unknown (a data-modifying CTE without RETURNING, a placeholder)


@dataclass(slots=True)
class Level:
    parent: Level | None = None
    parent_visible: int | None = None
    entries: list[Entry] = field(default_factory=list)
    items: list[FromNode] = field(default_factory=list)
    ctes: dict[str, Cte] = field(default_factory=dict)
    windows: dict[str, Lin] = field(default_factory=dict)

    def add(self, node: FromNode) -> FromNode:
        """Add a top-level FROM item (its entries are added as they are built)."""
        self.items.append(node)
        return node

    def visible(self) -> Iterator[list[Entry]]:
        """The entries each level outward can see, innermost first."""
        level: Level | None = self
        limit: int | None = None
        while level is not None:
            yield level.entries if limit is None else level.entries[:limit]
            limit = level.parent_visible
            level = level.parent

    def cte(self, name: str) -> Cte | None:
        level: Level | None = self
        while level is not None:
            found = level.ctes.get(name)
            if found is not None:
                return found
            level = level.parent
        return None

    def window(self, name: str) -> Lin:
        level: Level | None = self
        while level is not None:
            found = level.windows.get(name)
            if found is not None:
                return found
            level = level.parent
        return NONE


def rename(cols: Columns | None, names: list[str]) -> Columns | None:
    """Apply an alias column list (``AS x(a, b)``): the first columns take the new names."""
    if cols is None or not names:
        return cols
    return [(names[i] if i < len(names) else n, lin) for i, (n, lin) in enumerate(cols)]
