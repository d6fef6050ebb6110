"""Expressions: every column reference resolved and recorded, and the lineage of each value.

``ExpressionWalker.expr`` returns the lineage of an expression and records, as it goes, each
column it reads (with the clause it appears in), each function it calls and each subquery's
facts. Column references resolve the way PostgreSQL's parser does: an unqualified name is a
column of the nearest level that has one (ambiguity lists every candidate), and only if no level
has such a column is it a whole-row reference to a FROM entry of that name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from policy.analysis import functions
from policy.analysis.builtins import BUILTIN_FUNCTIONS, RECORD_RESULTS, words
from policy.analysis.collect import Facts
from policy.analysis.colnames import figure_colname
from policy.analysis.lineage import NONE, Lin, Source, alternatives, derived, whole_row
from policy.analysis.names import parse_qualified, search_path_schemas
from policy.analysis.scope import Columns, Entry, Level, RelationEntry
from policy.analysis.settings import IDENTITY_SETTINGS
from policy.analysis.tree import (
    FIELDS,
    Node,
    Unanalyzable,
    constant,
    list_items,
    mentions,
    split,
    string_constant,
    strings,
)
from policy.catalog import MATVIEW, VIEW, Catalog, Relation
from policy.errors import BudgetExhausted
from policy.facts import Access, Clause, Equality, FunctionClass

if TYPE_CHECKING:
    from policy.analysis.queries import QueryResult

# Expression nodes made only of other expressions: their lineage is that of their parts.
_TRANSPARENT = words(
    """
    BoolExpr BooleanTest CoalesceExpr MinMaxExpr A_ArrayExpr RowExpr CollateClause GroupingFunc
    NamedArgExpr XmlSerialize List JsonValueExpr JsonKeyValue JsonObjectConstructor JsonArrayConstructor
    JsonObjectAgg JsonArrayAgg JsonAggConstructor JsonIsPredicate JsonScalarExpr JsonSerializeExpr
    JsonParseExpr JsonFuncExpr JsonArgument JsonBehavior SortBy A_Indices
    """
)
# Leaves that carry no column data.
_LEAVES = words(
    """
    A_Const ParamRef SQLValueFunction SetToDefault MergeSupportFunc String Integer Float Boolean
    BitString
    """
)
# Set-returning functions whose number of rows follows their arguments' values: over masked PII
# the row count answers questions (generate_series(1, ascii(substr(phone, 4, 1))) is the fourth
# digit), so their arguments are also LIMIT uses.
_ROW_COUNTING = words(
    """
    generate_series generate_subscripts unnest regexp_matches regexp_split_to_table string_to_table
    json_array_elements json_array_elements_text jsonb_array_elements jsonb_array_elements_text
    json_each json_each_text jsonb_each jsonb_each_text json_object_keys jsonb_object_keys
    jsonb_path_query
    """
)
# Except when they unpack an array built in place or an aggregate of one element per row
# (unnest(ARRAY[a, b]), unnest(array_agg(x))): as many rows come back as went in, whatever the values.
_UNPACKING = words(
    "unnest json_array_elements json_array_elements_text jsonb_array_elements jsonb_array_elements_text"
)
_PACKING = words("array_agg json_agg jsonb_agg")
_XML_READS_TABLE = frozenset({"table_to_xml", "table_to_xml_and_xmlschema"})
_XML_READS_SCHEMA = frozenset({"schema_to_xml", "schema_to_xml_and_xmlschema"})
_XML_READS_DATABASE = frozenset({"database_to_xml", "database_to_xml_and_xmlschema"})
# Comparisons that test for exact values. Inequality carries the same information as equality (the
# rows left out are the ones that match) and, like it, reveals nothing about a value it does not
# name. Only the built-in operators count: a user-defined operator is a function call.
_EXACT_OPERATORS = frozenset({"=", "<>"})
_EXACT_KINDS = frozenset(
    {"AEXPR_OP", "AEXPR_OP_ANY", "AEXPR_OP_ALL", "AEXPR_IN", "AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"}
)
_EXACT_SUBLINKS = frozenset({"ANY_SUBLINK", "ALL_SUBLINK"})  # x IN (SELECT ...), x = ANY (SELECT ...)
_VIEW_KINDS = (VIEW, MATVIEW)
# Accesses that reach a view's base relations (an auto-updatable view writes to them).
_THROUGH_VIEWS = frozenset({Access.READ, Access.INSERT, Access.UPDATE, Access.DELETE, Access.LOCK})


class Session:
    """State shared by every statement of one client string."""

    __slots__ = (
        "cacheable", "catalog", "deadline", "function_cache", "relation_cache", "search_path", "steps"
    )  # fmt: skip

    def __init__(self, catalog: Catalog, search_path: tuple[str, ...], deadline: float | None = None) -> None:
        self.catalog = catalog
        self.search_path = search_path
        self.cacheable = True
        self.relation_cache: dict[tuple[str | None, str], list[Relation]] = {}
        self.function_cache: dict[tuple[str | None, str], list[str]] = {}
        self.deadline = deadline  # time.monotonic() past which analysis gives up
        self.steps = 0

    def step(self) -> None:
        """Count one expression; every 1024th, check the clock (a clock read per node would cost)."""
        self.steps += 1
        if self.steps & 1023 == 0 and self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExhausted("analysis ran out of time")

    def lookup(self, schema: str | None, name: str) -> list[Relation]:
        key = (schema, name)
        found = self.relation_cache.get(key)
        if found is None:
            found = self.catalog.lookup(schema, name, self.search_path)
            self.relation_cache[key] = found
        return found

    def resolve_function(self, schema: str | None, name: str) -> list[str]:
        key = (schema, name)
        found = self.function_cache.get(key)
        if found is None:
            found = functions.resolve(self.catalog, self.search_path, schema, name)
            self.function_cache[key] = found
        return found

    def widen_search_path(self, value: str | None) -> None:
        """A SET search_path inside the string: later statements consider both paths' schemas."""
        if value is None:
            return
        added = tuple(s for s in search_path_schemas(value) if s not in self.search_path)
        if added:
            self.search_path = (*self.search_path, *added)
            self.relation_cache.clear()
            self.function_cache.clear()


class ExpressionWalker:
    """Walks expressions for one statement, recording into ``self.facts``."""

    def __init__(self, session: Session, facts: Facts) -> None:
        self.session = session
        self.facts = facts
        self.refs: list[set[Source]] = []  # columns read inside each query being walked
        self.quiet = False  # inside a function or DO body: unresolved names are its variables

    # ------------------------------------------------------------------ hooks for queries

    def query(
        self,
        node: Node,
        parent: Level,
        visible: int | None,
        clause: Clause,
        equality: Equality = Equality.NONE,
    ) -> QueryResult:
        """Walk a nested query (a sublink); ``queries.QueryWalker`` implements it. ``equality``:
        how its result columns are compared where it is used (``x IN (SELECT email ...)``)."""
        raise NotImplementedError

    def fold_sql(self, sql: str, why: str, *, quiet: bool = False, strict: bool = False) -> Columns | None:
        """Analyze SQL written in a string and fold its facts in; returns its result columns, or
        None if it does not parse (``strict``: raise ``Unanalyzable`` instead).
        ``statements.StatementWalker`` implements it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ relations

    def relations(self, rangevar: Node, access: Access) -> list[Relation]:
        """Resolve a RangeVar through the catalog and record the use of every candidate."""
        name = str(rangevar.get("relname", ""))
        schema = rangevar.get("schemaname")
        if rangevar.get("catalogname"):
            self.facts.note(f"{rangevar['catalogname']}.{schema}.{name}: the database part is ignored")
        return self.use_relations(schema, name, access)

    def use_relations(self, schema: str | None, name: str, access: Access) -> list[Relation]:
        rels = self.session.lookup(schema, name)
        if not rels:
            self.facts.table((schema or "", name), access)
            self.facts.note(f'relation "{_show(schema, name)}" is not in the catalog')
            return rels
        for rel in rels:
            self.record_relation(rel, access)
        return rels

    def record_relation(self, rel: Relation, access: Access) -> None:
        self.facts.table(rel.qualified, access)
        if rel.kind in _VIEW_KINDS and access in _THROUGH_VIEWS:
            for base in sorted(rel.reads):
                self.facts.table(base, access, rel.qualified)

    # ------------------------------------------------------------------ expressions

    def expr(self, node: Node, level: Level, clause: Clause) -> Lin:
        self.session.step()
        kind, fields = split(node)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return handler(self, fields, level, clause)
        if kind in _TRANSPARENT:
            return self.transparent(kind, fields, level, clause)
        if kind in _LEAVES:
            return NONE
        raise Unanalyzable(f"the expression node {kind} is not modeled")

    def exprs(self, nodes: list[Node] | None, level: Level, clause: Clause) -> list[Lin]:
        return [self.expr(n, level, clause) for n in nodes or ()]

    def transparent(self, kind: str, fields: Node, level: Level, clause: Clause) -> Lin:
        """Lineage of a node made of sub-expressions, from pglast's field metadata."""
        lins: list[Lin] = []
        for name, struct in FIELDS.get(kind, ()):
            value = fields.get(name)
            if not value:
                continue
            if struct is None:
                if isinstance(value, list):
                    lins.extend(self.expr(item, level, clause) for item in value if item)
                else:
                    lins.append(self.expr(value, level, clause))
            elif struct == "WindowDef":
                lins.append(self.window(value, level))
            elif struct in _TRANSPARENT:
                lins.append(self.transparent(struct, value, level, clause))
        return derived(*lins)

    def use(self, lin: Lin, clause: Clause, equality: Equality = Equality.NONE) -> Lin:
        """Record that these columns are read in this clause (``equality``: as one side of an
        exact comparison, which counts only if the value is a plain column)."""
        if lin.sources:
            self.facts.use(lin, clause, equality)
            if self.refs:
                self.refs[-1].update(lin.sources)
        return lin

    def _column_ref(self, fields: Node, level: Level, clause: Clause) -> Lin:
        return self.use(self.resolve_ref(strings(fields.get("fields")), level), clause)

    def resolve_ref(self, names: list[str], level: Level) -> Lin:
        if names[-1] == "*":
            if len(names) == 1:
                entries = next(level.visible())
                return whole_row([e.whole() for e in entries]) if entries else NONE
            entry = self.find_entry(names[:-1], level)
            if entry is None:
                return self.unresolved(".".join(names), level)
            return entry.whole()
        if len(names) == 1:
            return self.resolve_column(names[0], level)
        column = names[-1]
        entry = self.find_entry(names[:-1], level)
        if entry is not None:
            lin = entry.lin(column)
            if lin is not None:
                return lin
            if isinstance(entry, RelationEntry):
                self.facts.note(f'column "{column}" of "{entry.refname}" is not in the catalog')
                return entry.missing(column)
            return self.unresolved(".".join(names), level)
        if len(names) == 2:  # a field of a composite column: (col).field written col.field
            base = self.lookup_column(names[0], level)
            if base is not None:
                return derived(base)
        return self.unresolved(".".join(names), level)

    def find_entry(self, qualifier: list[str], level: Level) -> Entry | None:
        """The FROM entry ``alias`` or ``schema.table`` names (innermost level first)."""
        name = qualifier[-1]
        schema = qualifier[-2] if len(qualifier) > 1 else None
        for entries in level.visible():
            for entry in entries:
                if entry.refname == name and (schema is None or schema in entry.schemas):
                    return entry
        return None

    def lookup_column(self, name: str, level: Level) -> Lin | None:
        """An unqualified column, or None if no entry in scope has it."""
        return self.find_column(name, level)[0]

    def find_column(self, name: str, level: Level) -> tuple[Lin | None, bool]:
        """(lineage, certain): the nearest level where a known column list has the name wins;
        entries whose columns are unknown may have it too, so they count on every level passed."""
        found: list[Lin] = []
        for entries in level.visible():
            certain = False
            for entry in entries:
                lin = entry.lin(name)
                if lin is not None:
                    found.append(lin)
                    certain = certain or entry.certain
            if certain:
                return alternatives(found), True
        return (alternatives(found) if found else None), False

    def resolve_column(self, name: str, level: Level) -> Lin:
        lin, certain = self.find_column(name, level)
        if certain and lin is not None:
            return lin
        entry = self.find_entry([name], level)
        if lin is not None:  # only entries of unknown columns may have it: it may be a whole row
            return derived(lin, entry.whole()) if entry is not None else lin
        if entry is not None:
            return entry.whole()
        return self.unresolved(name, level)

    def unresolved(self, name: str, level: Level) -> Lin:
        """A name no entry has: PostgreSQL would reject it unless the catalog snapshot is stale,
        so it counts as a column of every relation in the nearest level with relations."""
        if self.quiet:
            return NONE
        column = name.rsplit(".", 1)[-1]
        for entries in level.visible():
            rels = [e for e in entries if isinstance(e, RelationEntry)]
            if rels:
                self.facts.note(
                    f'column "{name}" is not in the catalog; counted as a column of every relation in scope'
                )
                return alternatives([e.missing(column) for e in rels])
        self.facts.note(f'"{name}" names no column or relation in scope')
        return NONE

    def operand(self, node: Node, level: Level, clause: Clause, equality: Equality) -> Lin:
        """One side of an exact comparison: a plain column there (or in a row of them,
        ``(phone, email) = ($1, $2)``) is recorded with ``equality``; anything else is walked as
        usual, so a column under a cast or function in it is no exact use."""
        kind, fields = split(node)
        if kind == "ColumnRef":
            self.session.step()
            return self.use(self.resolve_ref(strings(fields.get("fields")), level), clause, equality)
        if kind == "RowExpr":
            self.session.step()
            return derived(*(self.operand(arg, level, clause, equality) for arg in fields.get("args", ())))
        if kind == "SubLink" and fields.get("subLinkType") == "EXPR_SUBLINK":
            self.session.step()
            return self._sublink(fields, level, clause, equality)  # (SELECT email ...) = $1
        return self.expr(node, level, clause)

    def _a_expr(self, fields: Node, level: Level, clause: Clause) -> Lin:
        op = strings(fields.get("name"))
        if len(op) > 1 and op[0] not in functions.SYSTEM_SCHEMAS:
            self.call_resolved([f"{op[0]}.{op[-1]}"], 2)
        if fields.get("kind", "AEXPR_OP") in _EXACT_KINDS and _exact_operator(op):
            return self._exact_comparison(fields, level, clause)
        lins = []
        for side in ("lexpr", "rexpr"):
            value = fields.get(side)
            if value:
                lins.append(self.expr(value, level, clause))
        return derived(*lins)

    def _exact_comparison(self, fields: Node, level: Level, clause: Clause) -> Lin:
        """``a = b``, ``a <> b``, ``a IN (...)``, ``a = ANY (array)``, ``a IS [NOT] DISTINCT FROM b``:
        each side's plain columns are compared with values, or with columns when the other side
        reads any (then the comparison is a join condition)."""
        kind = fields.get("kind", "AEXPR_OP")
        left, right = fields.get("lexpr"), fields.get("rexpr")
        lins: list[Lin] = []
        if left:
            lins.append(self.operand(left, level, clause, _compared_with(right)))
        if right:
            if kind == "AEXPR_IN":
                against = _compared_with(left)
                lins.extend(self.operand(item, level, clause, against) for item in list_items(right))
            elif kind in ("AEXPR_OP_ANY", "AEXPR_OP_ALL"):
                lins.append(self.expr(right, level, clause))  # an array: its elements are not compared as is
            else:
                lins.append(self.operand(right, level, clause, _compared_with(left)))
        return derived(*lins)

    def _null_test(self, fields: Node, level: Level, clause: Clause) -> Lin:
        """``x IS [NOT] NULL`` tests for one exact value."""
        return derived(self.operand(fields["arg"], level, clause, Equality.VALUE))

    def _type_cast(self, fields: Node, level: Level, clause: Clause) -> Lin:
        return derived(self.expr(fields["arg"], level, clause))

    def _case(self, fields: Node, level: Level, clause: Clause) -> Lin:
        lins = []
        if fields.get("arg"):
            lins.append(self.expr(fields["arg"], level, clause))
        for when in fields.get("args", ()):
            _, w = split(when)
            lins.append(self.expr(w["expr"], level, clause))
            lins.append(self.expr(w["result"], level, clause))
        if fields.get("defresult"):
            lins.append(self.expr(fields["defresult"], level, clause))
        return derived(*lins)

    def _indirection(self, fields: Node, level: Level, clause: Clause) -> Lin:
        arg, indirection = fields["arg"], fields.get("indirection", [])
        entry = self.row_entry(arg, level)
        first_kind, first = split(indirection[0]) if indirection else ("", {})
        lins: list[Lin] = []
        rest = indirection
        if entry is not None and first_kind == "String":
            column = str(first.get("sval", ""))
            lin = entry.lin(column)
            if lin is None:
                lin = self.unresolved(f"{entry.refname}.{column}", level)
            base = self.use(lin, clause)
            rest = indirection[1:]
            if not rest:
                return base
        elif entry is not None and first_kind == "A_Star":
            base = self.use(entry.whole(), clause)
            rest = indirection[1:]
        else:
            base = self.expr(arg, level, clause)
        lins.append(base)
        for item in rest:
            kind, part = split(item)
            if kind == "A_Indices":
                lins.append(self.transparent(kind, part, level, clause))
        return derived(*lins)

    def row_entry(self, node: Node, level: Level) -> Entry | None:
        """The entry a whole-row reference names (``c``, ``c.*``), or None if it is not one."""
        kind, fields = split(node)
        if kind != "ColumnRef":
            return None
        names = strings(fields.get("fields"))
        if names[-1] == "*":
            names = names[:-1]
            if not names:
                return None
        elif len(names) == 1 and self.lookup_column(names[0], level) is not None:
            return None
        return self.find_entry(names, level)

    def _sublink(self, fields: Node, level: Level, clause: Clause, equality: Equality = Equality.NONE) -> Lin:
        """A subquery in an expression. ``x IN (SELECT ...)`` and ``x = ANY (SELECT ...)`` compare
        ``x`` and the subquery's result exactly; ``equality`` says how an expression subquery's
        result is compared where it stands."""
        test = fields.get("testexpr")
        operator = strings(fields.get("operName")) or ["="]  # x IN (SELECT ...) has no name
        exact = bool(test) and fields.get("subLinkType") in _EXACT_SUBLINKS and _exact_operator(operator)
        if exact:
            equality = _compared_with(test)
        result = self.query(fields["subselect"], level, None, clause, equality)
        lins = [Lin(result.refs)]
        lins.extend(lin for _, lin in result.outputs or ())
        if test:
            if exact:
                lins.append(self.operand(test, level, clause, _compared_with(fields["subselect"])))
            else:
                lins.append(self.expr(test, level, clause))
        return derived(*lins)

    def _select_in_expression(self, fields: Node, level: Level, clause: Clause) -> Lin:
        result = self.query({"SelectStmt": fields}, level, None, clause)
        return derived(Lin(result.refs), *(lin for _, lin in result.outputs or ()))

    def _json_array_query(self, fields: Node, level: Level, clause: Clause) -> Lin:
        return self.expr(fields["query"], level, clause)

    def _xml(self, fields: Node, level: Level, clause: Clause) -> Lin:
        lins = self.exprs(fields.get("args"), level, clause)
        for target in fields.get("named_args", ()):
            _, t = split(target)
            if t.get("val"):
                lins.append(self.expr(t["val"], level, clause))
        return derived(*lins)

    def _current_of(self, fields: Node, level: Level, clause: Clause) -> Lin:
        self.facts.note(f'WHERE CURRENT OF cursor "{fields.get("cursor_name", "")}"')
        return NONE

    # ------------------------------------------------------------------ windows

    def window(self, window: Node, level: Level) -> Lin:
        lins = self.exprs(window.get("partitionClause"), level, Clause.WINDOW)
        lins += self.exprs(window.get("orderClause"), level, Clause.WINDOW)
        for bound in ("startOffset", "endOffset"):
            if window.get(bound):
                lins.append(self.expr(window[bound], level, Clause.OTHER))
        if window.get("refname"):  # OVER (w ORDER BY ...) refines a window of the WINDOW clause
            lins.append(level.window(str(window["refname"])))
        return derived(*lins)

    # ------------------------------------------------------------------ function calls

    def call_resolved(self, qualified: list[str], nargs: int) -> frozenset[FunctionClass]:
        """Record a call to every function a name may resolve to; returns their classes."""
        found: frozenset[FunctionClass] = frozenset()
        for name in qualified:
            self.facts.functions[name] = None
            found |= functions.classes_of(self.session.catalog, name, nargs)
        self.facts.classes |= found
        return found

    def _func_call(self, fields: Node, level: Level, clause: Clause) -> Lin:
        names = strings(fields.get("funcname"))
        schema = names[-2] if len(names) > 1 else None
        name = names[-1]
        args: list[Node] = fields.get("args", [])
        resolved = self.session.resolve_function(schema, name)
        classes = self.call_resolved(resolved, len(args))
        lins = self.exprs(args, level, clause)
        if name in _ROW_COUNTING and schema in (None, "pg_catalog"):
            for arg, lin in zip(args, lins, strict=True):
                if not (name in _UNPACKING and _one_per_element(arg)):
                    self.use(lin, Clause.LIMIT)
        kept = derived(*lins)
        if FunctionClass.USER_DEFINED in classes and kept.sources:
            # Its body is not analyzed: it may keep what it is given (a table, a setting, a notice).
            self.facts.keep(kept)
        if name == "pg_notify" and any(_from_tables(lin) for lin in lins):
            # Every session listening on the channel receives the payload: table data sent there
            # leaves the statement, its row cap (one aggregate row may notify a million times) and masks.
            self.facts.classes.add(FunctionClass.REMOTE)
            self.facts.note("pg_notify sends table data to every session listening on the channel")
        lins += self.exprs(fields.get("agg_order"), level, Clause.ORDER)
        if fields.get("agg_filter"):
            lins.append(self.expr(fields["agg_filter"], level, Clause.WHERE))
        over = fields.get("over")
        if over:
            if over.get("name"):  # OVER w: a window of the WINDOW clause
                lins.append(level.window(str(over["name"])))
            lins.append(self.window(over, level))
        for runs, built_in in self._runs_as(schema, name, resolved):
            if runs in functions.KEEPS_VALUES and kept.sources:
                self.facts.keep(kept)
                self.facts.note(f"{runs} keeps a value computed from table data past the statement")
            special = _SPECIAL.get(runs)
            if special is not None and built_in:
                extra = special(self, runs, args, level)
                if extra is not None:
                    lins.append(extra)
            elif runs.startswith("dblink") or runs in functions.DYNAMIC_SQL:
                self.fold_literals(runs, args)
        if name == "count" and schema in (None, "pg_catalog"):
            return derived()  # a count reveals how many values are there, never what they are
        return derived(*lins)

    def _runs_as(self, schema: str | None, name: str, resolved: list[str]) -> list[tuple[str, bool]]:
        """What a call may run, by the names PostgreSQL gives it, each with whether it is surely the
        built-in: the name as written (a built-in when unqualified or in pg_catalog) and the name of
        every known C entry point a resolved function calls, so that a renamed set_config or
        query_to_xml is analyzed as what it is."""
        found = {name: schema in (None, "pg_catalog")}
        for qualified in resolved:
            for runs in functions.runs_as(self.session.catalog, qualified):
                found[runs] = True
        return sorted(found.items())

    def result_columns(self, call: Node, alias: str | None) -> list[str] | None:
        """The column names a function in FROM returns, when they are known without its body."""
        kind, fields = split(call)
        if kind != "FuncCall":
            return [alias or figure_colname(call)]
        names = strings(fields.get("funcname"))
        name = names[-1]
        resolved = self.session.resolve_function(names[-2] if len(names) > 1 else None, name)
        if resolved[0] != f"pg_catalog.{name}" or name not in BUILTIN_FUNCTIONS:
            return None
        if name == "unnest":
            nargs = len(fields.get("args", ()))
            return [alias or name] if nargs <= 1 else [name] * nargs
        if name in RECORD_RESULTS:
            cols = RECORD_RESULTS[name]
            return None if cols is None else list(cols)
        return [alias or name]

    # ------------------------------------------------------------------ special functions

    def _set_config(self, name: str, args: list[Node], level: Level) -> Lin | None:
        self.session.cacheable = False
        raw_name = string_constant(args[0]) if args else None
        setting = raw_name.lower() if raw_name else None
        is_const, value = constant(args[1]) if len(args) > 1 else (False, None)
        if setting is None:
            self.facts.note("set_config with a computed setting name: any setting may change")
        elif not is_const:
            self.facts.note(f"set_config of {setting} to a computed value")
        self.facts.settings.append((setting, value) if setting and is_const else (setting or "?", None))
        if setting is None or setting in IDENTITY_SETTINGS:
            self.facts.role_switch = True
        if setting == "search_path" and is_const:
            self.session.widen_search_path(value)
        return None

    def _xml_of_table(self, name: str, args: list[Node], level: Level) -> Lin | None:
        self.session.cacheable = False
        text = string_constant(args[0]) if args else None
        parsed = parse_qualified(text) if text is not None else None
        if parsed is None:
            self.facts.note(f"{name} of a table that is not a constant name: the table read is unknown")
            return None
        schema, relname = parsed
        rels = self.use_relations(schema, relname, Access.READ)
        if name not in _XML_READS_TABLE:
            return None
        if not rels:
            return Lin(frozenset(), False, True)
        return RelationEntry(relname, rels, frozenset()).whole()

    def _xml_of_schema(self, name: str, args: list[Node], level: Level) -> Lin | None:
        """schema_to_xml / database_to_xml read every table of a schema or of the database
        (the ``..._xmlschema`` variants describe them without reading rows)."""
        self.session.cacheable = False
        if name not in _XML_READS_SCHEMA and name not in _XML_READS_DATABASE:
            return None
        if name in _XML_READS_DATABASE:
            schemas = {s for s, _ in self.session.catalog.relations} - functions.SYSTEM_SCHEMAS
        else:
            text = string_constant(args[0]) if args else None
            if text is None:
                self.facts.note(
                    f"{name} of a schema that is not a constant name: the tables read are unknown"
                )
                return None
            schemas = {text}
        lins = []
        for (schema, _), rel in sorted(self.session.catalog.relations.items()):
            if schema in schemas:
                self.record_relation(rel, Access.READ)
                lins.append(RelationEntry(rel.name, [rel], frozenset()).whole())
        return whole_row(lins) if lins else None

    def _query_string(self, name: str, args: list[Node], level: Level) -> Lin | None:
        if name.startswith("cursor_to_xml"):
            self.facts.note(f"{name} reads a cursor: its rows come from the cursor's query")
            return None
        return self.fold_literals(name, args)

    def fold_literals(self, name: str, args: list[Node]) -> Lin | None:
        """A function that runs SQL given as text: fold in every literal argument that parses."""
        self.session.cacheable = False
        lins: list[Lin] = []
        found = False
        for arg in args:
            text = string_constant(arg)
            if text is None:
                continue
            cols = self.fold_sql(text, name)
            if cols is not None:
                found = True
                lins.extend(lin for _, lin in cols)
        if not found:
            self.facts.note(f"{name} runs SQL that is not a constant: what it reads is unknown")
        return derived(*lins) if lins else None


def _one_per_element(arg: Node) -> bool:
    """An array whose length no value decides: ARRAY[a, b], or array_agg/json_agg of one per row."""
    kind, fields = split(arg)
    if kind == "A_ArrayExpr":
        return True
    return kind == "FuncCall" and strings(fields.get("funcname"))[-1] in _PACKING


def _exact_operator(op: list[str]) -> bool:
    return bool(op) and op[-1] in _EXACT_OPERATORS and (len(op) == 1 or op[0] == "pg_catalog")


def _compared_with(other: Node | None) -> Equality:
    """What a plain column is compared with: values, or (when the other side reads any column,
    even inside a subquery) columns. A syntactic test: a reference is a column wherever it resolves."""
    return Equality.COLUMN if other is not None and mentions(other, "ColumnRef") else Equality.VALUE


def _from_tables(lin: Lin) -> bool:
    """Whether a value derives from a column of a relation outside the system catalogs."""
    return any(schema not in functions.SYSTEM_SCHEMAS for schema, _, _ in lin.sources)


def _show(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


Handler = Callable[[ExpressionWalker, Node, Level, Clause], Lin]
_HANDLERS: dict[str, Handler] = {
    "ColumnRef": ExpressionWalker._column_ref,
    "A_Expr": ExpressionWalker._a_expr,
    "NullTest": ExpressionWalker._null_test,
    "TypeCast": ExpressionWalker._type_cast,
    "CaseExpr": ExpressionWalker._case,
    "A_Indirection": ExpressionWalker._indirection,
    "SubLink": ExpressionWalker._sublink,
    "SelectStmt": ExpressionWalker._select_in_expression,
    "JsonArrayQueryConstructor": ExpressionWalker._json_array_query,
    "FuncCall": ExpressionWalker._func_call,
    "XmlExpr": ExpressionWalker._xml,
    "CurrentOfExpr": ExpressionWalker._current_of,
}

Special = Callable[[ExpressionWalker, str, list[Node], Level], Lin | None]
_SPECIAL: dict[str, Special] = {"set_config": ExpressionWalker._set_config}
for _name in ("table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema"):
    _SPECIAL[_name] = ExpressionWalker._xml_of_table
for _name in (
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
):
    _SPECIAL[_name] = ExpressionWalker._xml_of_schema
for _name in (
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
):
    _SPECIAL[_name] = ExpressionWalker._query_string

__all__ = ["ExpressionWalker", "Session"]
