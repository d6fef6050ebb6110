"""A snapshot of the upstream catalog, as plain data: what analysis resolves names against.

The gateway loads it from PostgreSQL (gateway/catalog.py); tests build it by hand. Names are stored
as PostgreSQL stores them (already case-folded: an unquoted ``Customers`` is ``customers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

QualifiedName = tuple[str, str]  # (schema, name)

# Relation kinds, as pg_class.relkind.
TABLE, PARTITIONED, VIEW, MATVIEW, FOREIGN, SEQUENCE = "r", "p", "v", "m", "f", "S"


@dataclass(frozen=True, slots=True)
class Relation:
    schema: str
    name: str
    kind: str
    columns: tuple[str, ...]  # attnum order, dropped columns excluded
    # For views and materialized views: every relation the definition reads, transitively.
    reads: frozenset[QualifiedName] = frozenset()
    # What identifies a row, for coverage (policy.detect.coverage): the primary key's columns, or
    # a unique index's over NOT NULL columns when there is none (empty: nothing identifies rows),
    # with their type OIDs (a domain's base type, as RowDescription reports it).
    key: tuple[str, ...] = ()
    key_types: tuple[int, ...] = ()
    rows: int | None = None  # estimated rows (tables only); None when PostgreSQL does not know
    # Has inheritance children (pg_class.relhassubclass): a scan without ONLY returns their rows
    # too, where the parent's keys do not hold.
    children: bool = False

    @property
    def qualified(self) -> QualifiedName:
        return (self.schema, self.name)


@dataclass(frozen=True, slots=True)
class Function:
    """One pg_proc row: what a function name runs, not only what it is called.

    A name can be given to anything (``ALTER FUNCTION ... RENAME``, ``CREATE FUNCTION`` in any
    schema), so analysis also looks at the language, the C entry point and the OID.
    """

    schema: str
    name: str
    language: str  # 'internal', 'c', 'sql', 'plpgsql', ...
    oid: int = 0  # pg_proc.oid; 0 when unknown (catalogs built by hand)
    symbol: str | None = None  # pg_proc.prosrc for 'internal' and 'c': the C function it calls
    library: str | None = None  # pg_proc.probin for 'c': the shared library holding the symbol


@dataclass(frozen=True)
class Catalog:
    relations: Mapping[QualifiedName, Relation]
    functions: Mapping[QualifiedName, tuple[Function, ...]] = field(default_factory=dict)
    schemas: frozenset[str] = frozenset({"pg_catalog", "public", "information_schema"})

    @classmethod
    def of(cls, relations: Iterable[Relation], functions: Iterable[Function] = ()) -> Catalog:
        rels = {r.qualified: r for r in relations}
        funcs: dict[QualifiedName, list[Function]] = {}
        for f in functions:
            funcs.setdefault((f.schema, f.name), []).append(f)
        schemas = {"pg_catalog", "information_schema"} | {r.schema for r in rels.values()}
        return cls(rels, {k: tuple(v) for k, v in funcs.items()}, frozenset(schemas))

    def lookup(self, schema: str | None, name: str, search_path: tuple[str, ...]) -> list[Relation]:
        """Every relation an (optionally qualified) name could mean, in resolution order.

        Unqualified names search pg_catalog first unless the search_path lists it explicitly, as
        PostgreSQL does. All candidates are returned, not only the first: a policy check must
        consider a protected table that a same-named relation earlier in the path might shadow.
        """
        if schema is not None:
            rel = self.relations.get((schema, name))
            return [rel] if rel else []
        path = search_path if "pg_catalog" in search_path else ("pg_catalog", *search_path)
        return [rel for s in path if (rel := self.relations.get((s, name))) is not None]

    def function_schemas(self, name: str) -> tuple[str, ...]:
        return tuple(sorted({s for (s, n) in self.functions if n == name}))
