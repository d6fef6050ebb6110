"""Queries: SELECT (with CTEs, set operations, VALUES) and INSERT, UPDATE, DELETE, MERGE.

Each walk returns a ``QueryResult``: the result columns with their lineage (None when they cannot
be established, such as ``*`` over a function returning ``record``) and every source column read
anywhere inside, which a sublink passes on to the value it computes (``EXISTS (SELECT ... WHERE
card_number LIKE '4%')`` derives from card_number).
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.analysis.colnames import figure_colname
from policy.analysis.expressions import ExpressionWalker
from policy.analysis.lineage import NONE, Lin, Source, alternatives, derived
from policy.analysis.scope import (
    Columns,
    Cte,
    DerivedEntry,
    Entry,
    FromNode,
    JoinNode,
    Level,
    OpaqueEntry,
    RelationEntry,
    leaves,
    rename,
    star,
)
from policy.analysis.tree import Node, Unanalyzable, integer_constant, list_items, split, strings
from policy.facts import Access, Clause, Equality

_MERGE_ACCESS = {"CMD_UPDATE": Access.UPDATE, "CMD_INSERT": Access.INSERT, "CMD_DELETE": Access.DELETE}
_RECURSION_ROUNDS = 5  # a recursive CTE's lineage grows monotonically; this bounds the fixpoint


@dataclass(frozen=True, slots=True)
class QueryResult:
    outputs: Columns | None
    refs: frozenset[Source]


class QueryWalker(ExpressionWalker):
    def query(
        self,
        node: Node,
        parent: Level,
        visible: int | None,
        clause: Clause,
        equality: Equality = Equality.NONE,
    ) -> QueryResult:
        """Walk a query node (wrapped) under ``parent``; ``clause`` is where its result is used,
        ``equality`` how its result columns are compared there."""
        self.session.step()
        kind, fields = split(node)
        self.refs.append(set())
        if kind == "SelectStmt":
            outputs = self.select(fields, parent, visible, clause, equality)
        elif kind == "InsertStmt":
            outputs = self.insert(fields, parent, visible)
        elif kind == "UpdateStmt":
            outputs = self.update(fields, parent, visible)
        elif kind == "DeleteStmt":
            outputs = self.delete(fields, parent, visible)
        elif kind == "MergeStmt":
            outputs = self.merge(fields, parent, visible)
        else:
            raise Unanalyzable(f"a {kind} where a query was expected")
        refs = self.refs.pop()
        if self.refs:
            self.refs[-1] |= refs
        return QueryResult(outputs, frozenset(refs))

    # ------------------------------------------------------------------ SELECT

    def select(
        self,
        s: Node,
        parent: Level | None,
        visible: int | None,
        clause: Clause,
        equality: Equality = Equality.NONE,
    ) -> Columns | None:
        level = Level(parent, visible)
        if s.get("withClause"):
            self.with_clause(s["withClause"], level)
        op = s.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self.select(s["larg"], level, None, clause, equality)
            right = self.select(s["rarg"], level, None, clause, equality)
            outputs = set_operation(left, right)
            if outputs is None:
                self.facts.note("the result columns of a set operation are unknown")
            if not s.get("all"):
                self.deduplicated(outputs)  # UNION, INTERSECT, EXCEPT compare whole result rows
            self.sort(s.get("sortClause"), level, outputs, Clause.ORDER, outputs_only=True)
            self.limits(s, level)
            return outputs
        if s.get("valuesLists"):
            rows = [self.exprs(list_items(row), level, clause) for row in s["valuesLists"]]
            width = max(len(r) for r in rows)
            outputs = [
                (f"column{i + 1}", alternatives([r[i] for r in rows if i < len(r)])) for i in range(width)
            ]
            self.sort(s.get("sortClause"), level, outputs, Clause.ORDER, outputs_only=True)
            self.limits(s, level)
            return outputs
        for item in s.get("fromClause", ()):
            level.add(self.from_item(item, level))
        if s.get("whereClause"):
            self.expr(s["whereClause"], level, Clause.WHERE)
        for window in s.get("windowClause", ()):
            _, w = split(window)
            level.windows[str(w.get("name", ""))] = self.window(w, level)
        outputs = self.targets(s.get("targetList", []), level, clause, equality)
        for group in s.get("groupClause", ()):
            self.group(group, level, outputs)
        if s.get("havingClause"):
            self.expr(s["havingClause"], level, Clause.HAVING)
        for item in s.get("distinctClause", ()):
            if item:
                if integer_constant(item) is not None:
                    self.session.cacheable = False  # DISTINCT ON (2): normalization replaces the 2
                self.sort_key(item, level, outputs, Clause.DISTINCT, outputs_first=True)
            else:
                self.deduplicated(outputs)  # plain DISTINCT (an empty item): every result column
        self.sort(s.get("sortClause"), level, outputs, Clause.ORDER, outputs_only=False)
        self.limits(s, level)
        return outputs

    def deduplicated(self, outputs: Columns | None) -> None:
        """Duplicate rows removed: every result column is compared (unknown columns: none known)."""
        for _, lin in outputs or ():
            self.use(lin, Clause.DISTINCT)

    def limits(self, s: Node, level: Level) -> None:
        for key in ("limitCount", "limitOffset"):
            if s.get(key):
                self.expr(s[key], level, Clause.LIMIT)

    def targets(
        self, items: list[Node], level: Level, clause: Clause, equality: Equality = Equality.NONE
    ) -> Columns | None:
        """The select list (or RETURNING list): ``*`` expanded against the catalog. ``equality``:
        how the result is compared where it is used (a subquery in ``x IN (SELECT ...)``)."""
        outputs: Columns = []
        known = True
        for item in items:
            _, target = split(item)
            value = target.get("val")
            if value is None:
                continue
            expanded = self.expand(value, level, clause)
            if expanded is not None:
                if expanded[0] is None:
                    known = False
                else:
                    outputs.extend(expanded[0])
                continue
            if equality is Equality.NONE:
                lin = self.expr(value, level, clause)
            else:
                lin = self.operand(value, level, clause, equality)
            outputs.append((str(target["name"]) if target.get("name") else figure_colname(value), lin))
        return outputs if known else None

    def expand(self, value: Node, level: Level, clause: Clause) -> tuple[Columns | None] | None:
        """``*``, ``t.*`` and ``(t).*`` in a select list: (columns or None if unknown), or None
        when the value is not a star at all."""
        kind, fields = split(value)
        if kind == "ColumnRef":
            names = strings(fields.get("fields"))
            if names[-1] != "*":
                return None
            if len(names) == 1:
                items = level.items
                cols: Columns | None = []
                for node in items:
                    part = star(node)
                    if part is None or cols is None:
                        cols = None
                        break
                    cols += part
                if cols is None:  # still record every known column as read
                    for node in items:
                        for leaf in leaves(node):
                            self.use(leaf.whole(), clause)
            else:
                entry = self.find_entry(names[:-1], level)
                if entry is None:
                    self.unresolved(".".join(names), level)
                    return ([],)
                cols = entry.columns()
                if cols is None:
                    self.use(entry.whole(), clause)
        elif kind == "A_Indirection":
            indirection = fields.get("indirection", [])
            if not indirection or split(indirection[-1])[0] != "A_Star" or len(indirection) != 1:
                return None
            entry = self.row_entry(fields["arg"], level)
            if entry is None:
                self.use(self.expr(fields["arg"], level, clause), clause)
                cols = None
            else:
                cols = entry.columns()
                if cols is None:
                    self.use(entry.whole(), clause)
        else:
            return None
        if cols is None:
            self.facts.note("the columns of a * expansion are unknown")
            return (None,)
        for _, lin in cols:
            self.use(lin, clause)
        return (cols,)

    def group(self, node: Node, level: Level, outputs: Columns | None) -> None:
        kind, fields = split(node)
        if kind == "GroupingSet":
            for item in fields.get("content", ()):
                self.group(item, level, outputs)
            return
        self.sort_key(node, level, outputs, Clause.GROUP, outputs_first=False)

    def sort(
        self,
        items: list[Node] | None,
        level: Level,
        outputs: Columns | None,
        clause: Clause,
        *,
        outputs_only: bool,
    ) -> None:
        for item in items or ():
            _, sort_by = split(item)
            node = sort_by["node"]
            if outputs_only and self.output_ref(node, outputs) is None:
                self.expr(node, level, clause)  # PostgreSQL rejects this; walk it anyway
            else:
                self.sort_key(node, level, outputs, clause, outputs_first=True)

    def output_ref(self, node: Node, outputs: Columns | None) -> Lin | None:
        """The result column an ORDER BY / GROUP BY item names by position or by name."""
        position = integer_constant(node)
        if position is not None:
            if outputs is not None and 1 <= position <= len(outputs):
                return outputs[position - 1][1]
            return NONE
        kind, fields = split(node)
        if kind == "ColumnRef" and outputs:
            names = strings(fields.get("fields"))
            if len(names) == 1:
                matches = [lin for name, lin in outputs if name == names[0]]
                if matches:
                    return alternatives(matches)
        return None

    def sort_key(
        self, node: Node, level: Level, outputs: Columns | None, clause: Clause, *, outputs_first: bool
    ) -> None:
        """ORDER BY and DISTINCT ON prefer result names; GROUP BY prefers input columns (SQL92)."""
        if integer_constant(node) is not None:
            self.use(self.output_ref(node, outputs) or NONE, clause)
            return
        kind, fields = split(node)
        if kind == "ColumnRef":
            names = strings(fields.get("fields"))
            if len(names) == 1 and names[0] != "*":
                by_output = self.output_ref(node, outputs)
                if by_output is not None and (outputs_first or self.lookup_column(names[0], level) is None):
                    self.use(by_output, clause)
                    return
        self.expr(node, level, clause)

    # ------------------------------------------------------------------ WITH

    def with_clause(self, with_clause: Node, level: Level) -> None:
        ctes = with_clause.get("ctes", ())
        recursive = bool(with_clause.get("recursive"))
        if recursive:
            for item in ctes:
                _, cte = split(item)
                level.ctes[str(cte["ctename"])] = Cte(str(cte["ctename"]), None)
        for item in ctes:
            _, cte = split(item)
            name = str(cte["ctename"])
            names = strings(cte.get("aliascolnames"))
            query = cte["ctequery"]
            if recursive:
                columns = self.recursive_cte(name, query, names, level)
            else:
                columns = rename(self.query(query, level, 0, Clause.OUTPUT).outputs, names)
            columns = self.cte_extras(cte, columns)
            level.ctes[name] = Cte(name, columns)

    def recursive_cte(self, name: str, query: Node, names: list[str], level: Level) -> Columns | None:
        """Iterate to a fixpoint: the recursive term's lineage feeds back into the CTE's columns."""
        kind, fields = split(query)
        if kind == "SelectStmt" and fields.get("op") == "SETOP_UNION" and not fields.get("withClause"):
            self.refs.append(set())
            seed = rename(self.select(fields["larg"], level, 0, Clause.OUTPUT), names)
            self.refs.pop()
            level.ctes[name] = Cte(name, seed)
        columns: Columns | None = None
        for _ in range(_RECURSION_ROUNDS):
            columns = rename(self.query(query, level, 0, Clause.OUTPUT).outputs, names)
            if level.ctes[name].columns == columns:
                break
            level.ctes[name] = Cte(name, columns)
        return columns

    def cte_extras(self, cte: Node, columns: Columns | None) -> Columns | None:
        """SEARCH and CYCLE add columns computed from the listed ones."""
        if columns is None:
            return None
        index = dict(columns)
        search = cte.get("search_clause")
        if search:
            lins = [index.get(c, NONE) for c in strings(search.get("search_col_list"))]
            columns = [*columns, (str(search.get("search_seq_column", "")), derived(*lins))]
        cycle = cte.get("cycle_clause")
        if cycle:
            lins = [index.get(c, NONE) for c in strings(cycle.get("cycle_col_list"))]
            columns = [
                *columns,
                (str(cycle.get("cycle_mark_column", "")), NONE),
                (str(cycle.get("cycle_path_column", "")), derived(*lins)),
            ]
        return columns

    # ------------------------------------------------------------------ FROM

    def from_item(self, node: Node, level: Level) -> FromNode:
        kind, fields = split(node)
        if kind == "RangeVar":
            return self.range_var(fields, level, Access.READ)
        if kind == "JoinExpr":
            return self.join(fields, level)
        if kind == "RangeSubselect":
            visible = None if fields.get("lateral") else 0
            result = self.query(fields["subquery"], level, visible, Clause.OUTPUT)
            alias = fields.get("alias") or {}
            return self.derived_entry(alias, result.outputs, Lin(result.refs), level)
        if kind == "RangeFunction":
            return self.range_function(fields, level)
        if kind == "RangeTableSample":
            inner = self.from_item(fields["relation"], level)
            self.exprs(fields.get("args"), level, Clause.LIMIT)
            if fields.get("repeatable"):
                self.expr(fields["repeatable"], level, Clause.LIMIT)
            return inner
        if kind == "RangeTableFunc":
            return self.xml_table(fields, level)
        if kind == "JsonTable":
            return self.json_table(fields, level)
        raise Unanalyzable(f"the FROM item {kind} is not modeled")

    def derived_entry(self, alias: Node, columns: Columns | None, fallback: Lin, level: Level) -> Entry:
        refname = alias.get("aliasname")
        columns = rename(columns, strings(alias.get("colnames")))
        entry: Entry = (
            DerivedEntry(refname, columns)
            if columns is not None
            else OpaqueEntry(refname, None, derived(fallback))
        )
        level.entries.append(entry)
        return entry

    def range_var(self, rv: Node, level: Level, access: Access) -> Entry:
        """A relation in FROM (or a DML target): a CTE in scope, a catalog relation, or unknown."""
        name = str(rv.get("relname", ""))
        schema = rv.get("schemaname")
        alias = rv.get("alias") or {}
        refname = str(alias.get("aliasname") or name)
        colnames = strings(alias.get("colnames"))
        entry: Entry
        cte = level.cte(name) if schema is None and access == Access.READ else None
        if cte is not None:
            columns = rename(cte.columns, colnames)
            entry = DerivedEntry(refname, columns) if columns is not None else OpaqueEntry(refname)
        else:
            rels = self.relations(rv, access)
            if not rels:
                entry = OpaqueEntry(refname, (schema or "", name))
            elif colnames:
                entry = DerivedEntry(
                    refname, rename(RelationEntry(refname, rels, frozenset()).columns(), colnames) or []
                )
            else:
                schemas = frozenset() if alias.get("aliasname") else frozenset(r.schema for r in rels)
                entry = RelationEntry(refname, rels, schemas)
        level.entries.append(entry)
        return entry

    def join(self, j: Node, level: Level) -> FromNode:
        left = self.from_item(j["larg"], level)
        right = self.from_item(j["rarg"], level)
        using = strings(j.get("usingClause"))
        natural = bool(j.get("isNatural"))
        node = JoinNode(left, right, using, natural, j.get("jointype") == "JOIN_FULL")
        shared = using
        if natural:
            left_cols, right_cols = star(left), star(right)
            if left_cols is None or right_cols is None:
                self.facts.note("a NATURAL JOIN over columns that are unknown")
                shared = []
            else:
                right_names = {n for n, _ in right_cols}
                shared = [n for n, _ in left_cols if n in right_names]
        for column in shared:
            for entry in leaves(left) + leaves(right):
                lin = entry.lin(column)
                if lin is not None:
                    self.use(lin, Clause.JOIN, Equality.COLUMN)
        if j.get("quals"):
            self.expr(j["quals"], level, Clause.JOIN)
        alias = j.get("alias")
        if alias:
            self.derived_entry(alias, star(node), NONE, level)
        using_alias = j.get("join_using_alias")
        if using_alias and using:
            cols = star(node)
            if cols is not None:
                level.entries.append(DerivedEntry(str(using_alias["aliasname"]), cols[: len(using)]))
        return node

    def range_function(self, f: Node, level: Level) -> Entry:
        alias = f.get("alias") or {}
        aliasname = alias.get("aliasname")
        calls = f.get("functions", ())
        columns: Columns | None = []
        lins: list[Lin] = []
        for call_item in calls:
            parts = list_items(call_item)
            call = parts[0]
            coldefs = parts[1] if len(parts) > 1 and parts[1] else None
            lin = derived(self.expr(call, level, Clause.OTHER))
            lins.append(lin)
            if coldefs is not None:
                names: list[str] | None = [_coldef_name(c) for c in list_items(coldefs)]
            elif f.get("coldeflist"):
                names = [_coldef_name(c) for c in f["coldeflist"]]
            else:
                simple_alias = aliasname if len(calls) == 1 and not alias.get("colnames") else None
                names = self.result_columns(call, simple_alias)
            if names is None or columns is None:
                columns = None
            else:
                columns += [(n, lin) for n in names]
        if columns is not None and f.get("ordinality"):
            columns.append(("ordinality", NONE))
        if aliasname is None and len(calls) == 1:
            call_kind, call_fields = split(list_items(calls[0])[0])
            if call_kind == "FuncCall":
                aliasname = strings(call_fields.get("funcname"))[-1]
        if columns is None:
            self.facts.note("a function in FROM whose result columns are unknown")
        return self.derived_entry({**alias, "aliasname": aliasname}, columns, derived(*lins), level)

    def xml_table(self, f: Node, level: Level) -> Entry:
        lins = [self.expr(f["docexpr"], level, Clause.OTHER), self.expr(f["rowexpr"], level, Clause.OTHER)]
        self.use(lins[0], Clause.LIMIT)  # one row per node the path finds in the document
        for ns in f.get("namespaces", ()):
            _, target = split(ns)
            lins.append(self.expr(target["val"], level, Clause.OTHER))
        document = derived(*lins)
        columns: Columns = []
        for col in f.get("columns", ()):
            _, c = split(col)
            if c.get("for_ordinality"):
                columns.append((str(c["colname"]), NONE))
                continue
            parts = [document]
            for key in ("colexpr", "coldefexpr"):
                if c.get(key):
                    parts.append(self.expr(c[key], level, Clause.OTHER))
            columns.append((str(c["colname"]), derived(*parts)))
        return self.derived_entry(f.get("alias") or {}, columns, document, level)

    def json_table(self, f: Node, level: Level) -> Entry:
        lins = [self.transparent("JsonValueExpr", f["context_item"], level, Clause.OTHER)]
        self.use(lins[0], Clause.LIMIT)  # one row per item the path finds in the document
        for arg in f.get("passing", ()):
            lins.append(self.expr(arg, level, Clause.OTHER))
        document = derived(*lins)
        columns: Columns = []

        def flatten(items: list[Node]) -> None:
            for item in items:
                _, col = split(item)
                coltype = col.get("coltype")
                if coltype == "JTC_NESTED":
                    flatten(col.get("columns", []))
                else:
                    columns.append(
                        (str(col.get("name", "")), NONE if coltype == "JTC_FOR_ORDINALITY" else document)
                    )

        flatten(f.get("columns", []))
        return self.derived_entry(f.get("alias") or {}, columns, document, level)

    # ------------------------------------------------------------------ data-modifying statements

    def target(self, rv: Node, access: Access, level: Level) -> tuple[Entry, list[str]]:
        """The relation a DML statement writes (never a CTE), as an entry, and its column order."""
        entry = self.range_var(rv, Level(), access)
        level.entries.append(entry)
        cols = entry.columns()
        return entry, [n for n, _ in cols or ()]

    def returning(self, stmt: Node, level: Level, target: Entry) -> Columns | None:
        clause_node = stmt.get("returningClause") or {}
        exprs = clause_node.get("exprs") or stmt.get("returningList")
        if not exprs:
            return None
        if isinstance(target, RelationEntry):
            for rel in target.rels:
                self.record_relation(rel, Access.READ)
        names = {"old": "old", "new": "new"}
        for option in clause_node.get("options", ()):
            _, o = split(option)
            names["old" if o.get("option") == "RETURNING_OPTION_OLD" else "new"] = str(o.get("value"))
        inner = Level(level)
        inner.items = level.items  # RETURNING * is every FROM item, the target first
        columns = target.columns()
        for refname in names.values():
            inner.entries.append(
                DerivedEntry(refname, columns)
                if columns is not None
                else OpaqueEntry(refname, None, target.whole())
            )
        return self.targets(exprs, inner, Clause.RETURNING)

    def set_targets(self, items: list[Node], level: Level, target: Entry) -> None:
        """UPDATE ... SET col = expr (and ON CONFLICT DO UPDATE, MERGE UPDATE)."""
        for item in items:
            _, t = split(item)
            self.write_column(target, str(t.get("name", "")))
            value = t.get("val")
            if value is None:
                continue
            kind, fields = split(value)
            if kind == "MultiAssignRef":
                self.copied(target, self.expr(fields["source"], level, Clause.SET))
            else:
                self.copied(target, self.expr(value, level, Clause.SET))

    def copied(self, target: Entry, lin: Lin) -> None:
        """A value written into ``target`` that derives from another relation's columns copies
        that data into the table, as INSERT ... SELECT does (``UPDATE notes SET body = c.email
        FROM customers c``): the copy outlives the statement, its row cap and its masks. Every
        source is recorded as written, the target's own columns too (``SET email = phone`` moves a
        value under a weaker mask)."""
        self.facts.write(lin)
        if isinstance(target, RelationEntry):
            own = {r.qualified for r in target.rels}
        elif isinstance(target, OpaqueEntry) and target.missing_relation is not None:
            own = {target.missing_relation}
        else:
            own = set()
        if any((schema, name) not in own for schema, name, _ in lin.sources):
            self.facts.writes_from_query = True

    def write_column(self, target: Entry, column: str) -> None:
        lin = target.lin(column)
        if lin is None and isinstance(target, RelationEntry):
            lin = target.missing(column)
        if lin is not None:
            self.facts.use(lin, Clause.SET)

    def insert(self, s: Node, parent: Level | None, visible: int | None) -> Columns | None:
        level = Level(parent, visible)
        if s.get("withClause"):
            self.with_clause(s["withClause"], level)
        shadow = Level(level)  # the source query does not see the target
        target, order = self.target(s["relation"], Access.INSERT, shadow)
        shadow.items.append(target)
        columns = [str(split(c)[1].get("name", "")) for c in s.get("cols", ())]
        source: Columns | None = None
        if s.get("selectStmt"):
            before = len(self.facts.tables)
            result = self.query(s["selectStmt"], level, None, Clause.OUTPUT)
            source = result.outputs
            kind, fields = split(s["selectStmt"])
            values_only = kind == "SelectStmt" and "valuesLists" in fields
            read = any(t.access == Access.READ for t in list(self.facts.tables)[before:])
            if not values_only or read or result.refs:
                self.facts.writes_from_query = True
        if not columns:
            columns = order[: len(source)] if source is not None else order
        for column in columns:
            self.write_column(target, column)
        conflict = s.get("onConflictClause")
        if conflict:
            self.on_conflict(conflict, shadow, target, columns, source)
        return self.returning(s, shadow, target)

    def on_conflict(
        self, conflict: Node, level: Level, target: Entry, columns: list[str], source: Columns | None
    ) -> None:
        infer = conflict.get("infer") or {}
        for elem in infer.get("indexElems", ()):
            _, e = split(elem)
            if e.get("name"):
                self.use(target.lin(str(e["name"])) or NONE, Clause.OTHER)
            elif e.get("expr"):
                self.expr(e["expr"], level, Clause.OTHER)
        if infer.get("whereClause"):
            self.expr(infer["whereClause"], level, Clause.WHERE)
        if conflict.get("action") != "ONCONFLICT_UPDATE":
            return
        if isinstance(target, RelationEntry):
            for rel in target.rels:
                self.record_relation(rel, Access.UPDATE)
        proposed = dict(zip(columns, [lin for _, lin in source or ()], strict=False))
        excluded_cols = [(n, alternatives([lin, proposed.get(n, NONE)])) for n, lin in target.columns() or ()]
        inner = Level(level)
        inner.entries.append(DerivedEntry("excluded", excluded_cols))
        self.set_targets(conflict.get("targetList", []), inner, target)
        if conflict.get("whereClause"):
            self.expr(conflict["whereClause"], inner, Clause.WHERE)

    def update(self, s: Node, parent: Level | None, visible: int | None) -> Columns | None:
        level = Level(parent, visible)
        if s.get("withClause"):
            self.with_clause(s["withClause"], level)
        target, _ = self.target(s["relation"], Access.UPDATE, level)
        level.items.append(target)
        for item in s.get("fromClause", ()):
            level.add(self.from_item(item, level))
        self.set_targets(s.get("targetList", []), level, target)
        if s.get("whereClause"):
            self.expr(s["whereClause"], level, Clause.WHERE)
        return self.returning(s, level, target)

    def delete(self, s: Node, parent: Level | None, visible: int | None) -> Columns | None:
        level = Level(parent, visible)
        if s.get("withClause"):
            self.with_clause(s["withClause"], level)
        target, _ = self.target(s["relation"], Access.DELETE, level)
        level.items.append(target)
        for item in s.get("usingClause", ()):
            level.add(self.from_item(item, level))
        if s.get("whereClause"):
            self.expr(s["whereClause"], level, Clause.WHERE)
        return self.returning(s, level, target)

    def merge(self, s: Node, parent: Level | None, visible: int | None) -> Columns | None:
        level = Level(parent, visible)
        if s.get("withClause"):
            self.with_clause(s["withClause"], level)
        whens = [split(w)[1] for w in s.get("mergeWhenClauses", ())]
        accesses = [_MERGE_ACCESS[w["commandType"]] for w in whens if w.get("commandType") in _MERGE_ACCESS]
        target, _ = self.target(s["relation"], accesses[0] if accesses else Access.READ, level)
        if isinstance(target, RelationEntry):
            for access in accesses[1:]:
                for rel in target.rels:
                    self.record_relation(rel, access)
        level.items.append(target)
        level.add(self.from_item(s["sourceRelation"], level))
        self.expr(s["joinCondition"], level, Clause.JOIN)
        for when in whens:
            if when.get("condition"):
                self.expr(when["condition"], level, Clause.WHERE)
            if when.get("commandType") == "CMD_INSERT":
                for item in when.get("targetList", ()):
                    self.write_column(target, str(split(item)[1].get("name", "")))
                for lin in self.exprs(when.get("values"), level, Clause.SET):
                    self.copied(target, lin)
            else:
                self.set_targets(when.get("targetList", []), level, target)
        return self.returning(s, level, target)


def set_operation(left: Columns | None, right: Columns | None) -> Columns | None:
    """UNION / INTERSECT / EXCEPT: names from the left, lineage position by position from both."""
    if left is None or right is None:
        return None
    return [
        (name, alternatives([lin, right[i][1]]) if i < len(right) else lin)
        for i, (name, lin) in enumerate(left)
    ]


def _coldef_name(node: Node) -> str:
    _, fields = split(node)
    return str(fields.get("colname", ""))
