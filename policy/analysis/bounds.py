"""A proven upper bound on the rows a top-level SELECT returns, for the simple cases only.

The relay forwards a capped simple Query as it came, instead of driving it as extended messages
with Execute row limits, when the rows it can return are known not to exceed what the cap still
allows (gateway/relay.py). So the bound must hold whatever the literals: analyses are shared by
normalized text, where every literal, a LIMIT count too, is ``$n`` (``LIMIT 5`` and ``LIMIT 500``
share one analysis), so no literal's value is used here. Two rules, anything else is None:

* key lookup: a plain SELECT from exactly one catalog table (no join, view, function, subquery,
  CTE, set operation), whose WHERE is a conjunction that equates every column of the table's row
  key (``policy.catalog.Relation.key``) with a literal or a typed parameter: one row at most.
* aggregate: aggregates without GROUP BY (and nothing else in the select list but literals):
  exactly one row, or none after HAVING.

In both, a set-returning function anywhere in the select list, ORDER BY, GROUP BY or DISTINCT ON
multiplies rows (PostgreSQL evaluates them there, after the scan), and so do operators (one can
be a set-returning function), attribute notation naming no column (``t.f`` is ``f(t)``) and
grouping sets (ROLLUP adds a total row): so those places admit only column references that name
a real column, literals, parameters and casts (a cast function cannot return a set). Filters
(WHERE, HAVING, LIMIT) only remove rows and are not looked into.

The bound can still be wrong when the catalog snapshot is stale (a key dropped since, a temporary
table shadowing the name): the relay counts and cuts rows at the cap regardless, so a wrong bound
costs only rows PostgreSQL produces in vain, never a row past the cap.
"""

from __future__ import annotations

from policy.analysis.expressions import Session
from policy.analysis.scope import SYSTEM_COLUMNS
from policy.analysis.tree import Node, Unanalyzable, split, strings
from policy.catalog import PARTITIONED, TABLE, Relation

# Casts of a literal or parameter compared with a key column: types no key type is implicitly
# converted to with a loss. (A bigint key compared with a float8 value is compared as float8, and
# many bigints share one float8; a timestamp key with a timestamptz value, across a DST change.)
_EXACT_CASTS = frozenset({"int2", "int4", "int8", "numeric", "text", "varchar", "uuid"})
# Built-in aggregates: one row for the whole input when there is no GROUP BY.
_AGGREGATES = frozenset({"count", "sum", "min", "max", "avg"})


def max_rows(select: Node, session: Session) -> int | None:
    """An upper bound on the rows the SELECT (its fields) returns, or None when not proven
    (also for a tree shaped in a way these rules do not expect: no bound, not a refusal)."""
    try:
        return _bound(select, session)
    except Unanalyzable:
        return None


def _bound(select: Node, session: Session) -> int | None:
    if (
        select.get("op", "SETOP_NONE") != "SETOP_NONE"
        or select.get("withClause")
        or select.get("valuesLists")
        or select.get("intoClause")
        or select.get("windowClause")
    ):
        return None
    if _aggregated(select, session):
        return 1
    return _key_lookup(select, session)


def _aggregated(select: Node, session: Session) -> bool:
    """Aggregates without GROUP BY: every select-list and ORDER BY item is a built-in aggregate
    or a literal (a column outside an aggregate is an error there anyway)."""
    if select.get("groupClause") or select.get("distinctClause"):
        return False
    targets = [split(t)[1].get("val") for t in select.get("targetList", ())]
    orders = [split(s)[1].get("node") for s in select.get("sortClause", ())]
    found = False
    for item in [*targets, *orders]:
        if item is None:
            return False
        if _aggregate(item, session):
            found = True
        elif not _plain(item, None, ""):
            return False
    return found


def _aggregate(node: Node, session: Session) -> bool:
    """A call of a built-in aggregate, not over a window. Its arguments are not looked into:
    PostgreSQL refuses a set-returning function inside an aggregate's arguments."""
    kind, f = split(node)
    if kind != "FuncCall" or f.get("over") or f.get("agg_within_group"):
        return False
    names = strings(f.get("funcname"))
    if len(names) == 2 and names[0] == "pg_catalog":
        names = names[1:]
    elif len(names) != 1 or any(s != "pg_catalog" for s in session.catalog.function_schemas(names[0])):
        return False  # a function of that name outside pg_catalog could be the one called
    return names[0] in _AGGREGATES


def _key_lookup(select: Node, session: Session) -> int | None:
    """One row at most: a single table, every column of its row key equated with a value."""
    found = _table(select, session)
    if found is None:
        return None
    rel, refname = found
    path = session.search_path
    if "pg_catalog" in path and path[0] != "pg_catalog":
        # Names of operators and types would be looked up in another schema before pg_catalog:
        # ``=`` itself could be anyone's.
        return None
    items = [split(t)[1].get("val") for t in select.get("targetList", ())]
    items += [split(s)[1].get("node") for s in select.get("sortClause", ())]
    for group in select.get("groupClause", ()):
        items.append(group)  # a GroupingSet is not plain: ROLLUP, CUBE, GROUPING SETS add rows
    items += [d for d in select.get("distinctClause", ()) if d]  # plain DISTINCT is an empty item
    if any(item is None or not _plain(item, rel, refname) for item in items):
        return None
    equated = {
        column
        for term in _conjuncts(select.get("whereClause"))
        if (column := _equated(term, rel, refname)) is not None
    }
    return 1 if set(rel.key) <= equated else None


def _table(select: Node, session: Session) -> tuple[Relation, str] | None:
    """The one catalog table the SELECT reads (and the name its columns are qualified by), if it
    reads exactly one, whose row key holds for every row the scan returns."""
    items = select.get("fromClause", ())
    if len(items) != 1:
        return None
    kind, rv = split(items[0])
    if kind != "RangeVar" or (rv.get("alias") or {}).get("colnames"):
        return None
    rels = session.lookup(rv.get("schemaname"), str(rv.get("relname", "")))
    if len(rels) != 1:
        return None  # missing, or a name another schema's relation could shadow
    rel = rels[0]
    if not rel.key or rel.kind not in (TABLE, PARTITIONED):
        return None  # a partitioned table's keys hold across its partitions; inheritance's do not
    if rel.kind == TABLE and rel.children and rv.get("inh"):
        return None
    alias = (rv.get("alias") or {}).get("aliasname")
    return rel, str(alias or rel.name)


def _conjuncts(node: Node | None) -> list[Node]:
    """The terms of a top-level AND (nested ANDs flattened); the whole condition otherwise."""
    if not node:
        return []
    out: list[Node] = []
    stack = [node]
    while stack:
        kind, f = split(stack.pop())
        if kind == "BoolExpr" and f.get("boolop") == "AND_EXPR":
            stack.extend(f.get("args", ()))
        else:
            out.append({kind: f})
    return out


def _equated(term: Node, rel: Relation, refname: str) -> str | None:
    """The key column a WHERE term equates with a value (``id = 5``, ``'5' = t.id``), if any."""
    kind, f = split(term)
    if kind != "A_Expr" or f.get("kind") != "AEXPR_OP" or strings(f.get("name")) != ["="]:
        return None
    left, right = f.get("lexpr"), f.get("rexpr")
    if left is None or right is None:
        return None
    for column_side, value_side in ((left, right), (right, left)):
        column = _column(column_side, rel, refname)
        if column is not None and column in rel.key and _value(value_side, cast=False):
            return column
    return None


def _column(node: Node, rel: Relation, refname: str) -> str | None:
    """The table column a plain reference names (no cast: one could reshape the value)."""
    kind, f = split(node)
    if kind != "ColumnRef":
        return None
    return _own_column(strings(f.get("fields")), rel, refname)


def _own_column(names: list[str], rel: Relation, refname: str) -> str | None:
    """``column``, ``refname.column`` or (unaliased) ``schema.table.column``, if ``rel`` has it."""
    column, qualifier = names[-1], names[:-1]
    qualified = refname == rel.name and qualifier == [rel.schema, rel.name]
    if qualifier and qualifier != [refname] and not qualified:
        return None
    return column if column in rel.columns or column in SYSTEM_COLUMNS else None


def _value(node: Node, *, cast: bool) -> bool:
    """A literal, optionally cast to a type compared exactly with any key (``_EXACT_CASTS``), or
    a parameter cast so (a bare one has whatever type the client declares at Parse)."""
    kind, f = split(node)
    if kind == "TypeCast":
        return _exact_type(f.get("typeName") or {}) and _value(f["arg"], cast=True)
    return (kind == "A_Const" and "bsval" not in f) or (kind == "ParamRef" and cast)


def _exact_type(type_name: Node) -> bool:
    if type_name.get("arrayBounds") or type_name.get("setof"):
        return False
    names = strings(type_name.get("names"))
    if len(names) == 2 and names[0] == "pg_catalog":
        names = names[1:]
    return len(names) == 1 and names[0] in _EXACT_CASTS


def _plain(node: Node, rel: Relation | None, refname: str) -> bool:
    """A value that cannot multiply rows: a reference to a real column of ``rel`` (or a star, or
    the whole row), a literal, a parameter, or a cast of one."""
    kind, f = split(node)
    while kind == "TypeCast":
        kind, f = split(f["arg"])
    if kind in ("A_Const", "ParamRef"):
        return True
    if kind != "ColumnRef" or rel is None:
        return False
    names = strings(f.get("fields"))
    if names in (["*"], [refname], [refname, "*"]):
        return True
    return _own_column(names, rel, refname) is not None
