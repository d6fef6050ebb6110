"""Top-level statements: one ``Facts`` per statement, whatever its kind.

``StatementWalker.statement`` dispatches on the parse node. Statements that wrap another
(EXPLAIN, PREPARE, EXECUTE of a statement prepared earlier in the same string, COPY (query),
CREATE TABLE AS, rule actions, code bodies) analyze the inner one with ``nested`` into a
collector of its own and fold it in, so the wrapper's own fields (command, returns_rows,
executes) stay its own. A node type absent from the dispatch table is unanalyzable.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pglast.parser import ParseError, parse_sql_json

from policy.analysis import bodies, bounds, ddl, settings
from policy.analysis.builtins import words
from policy.analysis.collect import Facts
from policy.analysis.expressions import Session
from policy.analysis.functions import SYSTEM_SCHEMAS
from policy.analysis.lineage import NONE, Lin
from policy.analysis.queries import QueryWalker
from policy.analysis.scope import Columns, Level, RelationEntry
from policy.analysis.tree import (
    Node,
    Unanalyzable,
    constant,
    defelem_text,
    defelems,
    split,
    statement_text,
    strings,
)
from policy.catalog import FOREIGN, MATVIEW, PARTITIONED, TABLE
from policy.facts import Access, Clause, CopyFacts, CopyTarget, FetchDirection, FetchFacts, FunctionClass

_COMMANDS = {
    "SelectStmt": "select",
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "CopyStmt": "copy",
    "ExplainStmt": "explain",
    "PrepareStmt": "prepare",
    "ExecuteStmt": "execute",
    "DeallocateStmt": "deallocate",
    "DeclareCursorStmt": "declare",
    "FetchStmt": "fetch",
    "ClosePortalStmt": "close",
    "VariableSetStmt": "set",
    "VariableShowStmt": "show",
    "TransactionStmt": "begin",
    "VacuumStmt": "vacuum",
    "DoStmt": "do",
    "CallStmt": "call",
    "ListenStmt": "listen",
    "NotifyStmt": "notify",
    "UnlistenStmt": "unlisten",
    "LockStmt": "lock",
    "TruncateStmt": "truncate",
    "DiscardStmt": "discard",
    "CreateTableAsStmt": "create_table_as",
    "ViewStmt": "create_view",
    "CreateFunctionStmt": "create_function",
    "RuleStmt": "create_rule",
    "CreateTrigStmt": "create_trigger",
    "GrantStmt": "grant",
    "GrantRoleStmt": "grant",
    "CommentStmt": "comment",
    "SecLabelStmt": "ddl",
    "DropStmt": "ddl",
    "CheckPointStmt": "checkpoint",
    "ReindexStmt": "reindex",
    "ClusterStmt": "cluster",
    "RefreshMatViewStmt": "refresh",
    "LoadStmt": "load",
    "AlterSystemStmt": "alter_system",
    "ConstraintsSetStmt": "set_constraints",
}
_TRANSACTIONS = {
    "TRANS_STMT_BEGIN": "begin",
    "TRANS_STMT_START": "begin",
    "TRANS_STMT_COMMIT": "commit",
    "TRANS_STMT_ROLLBACK": "rollback",
    "TRANS_STMT_SAVEPOINT": "savepoint",
    "TRANS_STMT_RELEASE": "release",
    "TRANS_STMT_ROLLBACK_TO": "rollback",
    "TRANS_STMT_PREPARE": "prepare_transaction",
    "TRANS_STMT_COMMIT_PREPARED": "commit_prepared",
    "TRANS_STMT_ROLLBACK_PREPARED": "rollback_prepared",
}
# Catalog columns holding values copied out of user tables' rows. The planner's statistics keep a
# sample of every analyzed column (most common values, histogram bounds: PII too, and a fresh
# sample after each ANALYZE), so reading them reads every table; pg_largeobject holds large
# objects' contents, which lo_get would return.
SAMPLED_VALUES = {
    "pg_statistic": words("stavalues1 stavalues2 stavalues3 stavalues4 stavalues5"),
    "pg_stats": words("most_common_vals histogram_bounds most_common_elems"),
    "pg_stats_ext": words("most_common_vals"),
    "pg_stats_ext_exprs": words("most_common_vals histogram_bounds most_common_elems"),
    "pg_statistic_ext_data": words("stxdmcv stxdexpr"),
}
_ANALYZED_KINDS = frozenset({TABLE, PARTITIONED, MATVIEW, FOREIGN})
_TRUE = frozenset({"true", "on", "1", "yes"})
_FALSE = frozenset({"false", "off", "0", "no"})
QUERY_PLAN: Columns = [("QUERY PLAN", NONE)]
_STREAMING = (FetchDirection.FORWARD, FetchDirection.BACKWARD)
# Written counts are 32-bit integers in the grammar; a larger howMany is FETCH_ALL (LONG_MAX).
_INT32_MAX = 2**31 - 1


def command_of(kind: str) -> str:
    return _COMMANDS.get(kind, "ddl" if kind in ddl.GENERIC else kind.removesuffix("Stmt").lower())


class StatementWalker(QueryWalker):
    """Analyzes statements of one client string; PREPARE and DECLARE names carry between them."""

    def __init__(
        self,
        session: Session,
        facts: Facts,
        prepared: dict[str, tuple[Facts, Columns | None]],
        cursors: dict[str, Columns | None],
    ) -> None:
        super().__init__(session, facts)
        self.prepared = prepared  # PREPARE earlier in the string: its facts and result columns
        self.cursors = cursors  # DECLARE earlier in the string: the cursor's result columns
        self.lineage: Columns | None = None  # the result columns of the statement being analyzed
        self.nested_lineage: Columns | None = None  # those of the statement ``nested`` analyzed last

    def statement(self, node: Node) -> None:
        kind, fields = split(node)
        handler = _STATEMENTS.get(kind)
        self.lineage = None
        if handler is not None:
            handler(self, fields)
        elif kind in ddl.GENERIC:
            ddl.generic(self, kind, fields)
        else:
            raise Unanalyzable(f"the statement {kind} is not modeled")

    def nested(self, node: Node, text: str | None = None) -> Facts:
        """Analyze a statement inside this one into a collector of its own (fold it with absorb).

        ``text`` is the inner statement's own text when it has one (SQL written in a string)."""
        saved, saved_lineage = self.facts, self.lineage
        kind = split(node)[0]
        self.facts = Facts(saved.text if text is None else text, kind, command_of(kind))
        try:
            self.statement(node)
            return self.facts
        finally:
            self.facts = saved
            self.nested_lineage, self.lineage = self.lineage, saved_lineage

    def fold_sql(self, sql: str, why: str, *, quiet: bool = False, strict: bool = False) -> Columns | None:
        """Analyze SQL written in a string (a dynamic-SQL argument, a function or DO body)."""
        try:
            tree = json.loads(parse_sql_json(sql))
        except (ParseError, ValueError, UnicodeError) as exc:
            if strict:
                raise Unanalyzable(f"SQL in {why} does not parse: {exc}") from exc
            return None
        statements = tree.get("stmts", ())
        if not statements:
            return None
        saved = self.quiet
        self.quiet = saved or quiet
        outputs: Columns | None = None
        try:
            encoded = None if sql.isascii() else sql.encode("utf-8")
            for raw in statements:
                self.facts.absorb(self.nested(raw["stmt"], statement_text(sql, encoded, raw)))
                outputs = self.nested_lineage
        finally:
            self.quiet = saved
        if not quiet:
            self.facts.note(f"{why}: analyzed the SQL in its string argument")
        return outputs

    def created(self, rv: Node) -> None:
        """A relation this statement creates: DDL on it (an existing one, if any, is replaced)."""
        name = str(rv.get("relname", ""))
        schema = rv.get("schemaname")
        if schema is None and rv.get("relpersistence") == "t":
            schema = "pg_temp"  # CREATE TEMP ... is created in the session's own temporary schema
        rels = self.session.lookup(schema, name)
        for rel in rels:
            self.facts.table(rel.qualified, Access.DDL)
        if not rels:
            self.facts.table((schema or "", name), Access.DDL)
            self.facts.note(f'creates "{name}"')

    def result(self, columns: Columns | None, *, returns_rows: bool = True) -> None:
        self.lineage = columns
        self.facts.set_outputs(columns)
        self.facts.returns_rows = returns_rows
        if columns is None and returns_rows:
            self.facts.note("the result columns cannot be established")

    # ------------------------------------------------------------------ queries

    def _select(self, f: Node) -> None:
        into = _into_clause(f)
        columns = self.select(f, None, None, Clause.OUTPUT)
        if into is None:
            self.result(columns)
            self.facts.max_rows = bounds.max_rows(f, self.session)
            return
        self.facts.command = "select_into"
        self.facts.creates_object = True
        self.facts.writes_from_query = True
        self.created(into["rel"])

    def _dml(self, f: Node, walk: Callable[[Node, Level | None, int | None], Columns | None]) -> None:
        columns = walk(f, None, None)
        returning = (f.get("returningClause") or {}).get("exprs") or f.get("returningList")
        if returning:
            self.result(columns)

    def _insert(self, f: Node) -> None:
        self._dml(f, self.insert)

    def _update(self, f: Node) -> None:
        self._dml(f, self.update)

    def _delete(self, f: Node) -> None:
        self._dml(f, self.delete)

    def _merge(self, f: Node) -> None:
        self._dml(f, self.merge)

    def _copy(self, f: Node) -> None:
        facts = self.facts
        direction = "from" if f.get("is_from") else "to"
        filename = f.get("filename")
        if f.get("is_program"):
            target = CopyTarget.PROGRAM
        elif filename is not None:
            target = CopyTarget.FILE
        else:
            target = CopyTarget.STDIN if direction == "from" else CopyTarget.STDOUT
        if filename is not None:
            self.session.cacheable = False
            facts.note(
                f"COPY {direction} {'program' if target == CopyTarget.PROGRAM else 'file'} {filename!r}"
            )
        attlist = strings(f.get("attlist"))
        relation = None
        columns: Columns | None = None
        if f.get("relation"):
            rv = f["relation"]
            level = Level()
            entry = self.range_var(rv, level, Access.INSERT if direction == "from" else Access.READ)
            rels = entry.rels if isinstance(entry, RelationEntry) else []
            relation = rels[0].qualified if rels else (str(rv.get("schemaname") or ""), str(rv["relname"]))
            if attlist:
                columns = [(c, entry.lin(c) or _missing(entry, c)) for c in attlist]
            else:
                columns = entry.columns()
            if direction == "from":
                for column in attlist or [n for n, _ in columns or ()]:
                    self.write_column(entry, column)
                if f.get("whereClause"):
                    self.expr(f["whereClause"], level, Clause.WHERE)
            else:
                for _, lin in columns or ():
                    self.use(lin, Clause.OUTPUT)
        elif f.get("query"):
            columns = self.query(f["query"], Level(), None, Clause.OUTPUT).outputs
        options = tuple((k, defelem_text(v)) for k, v in defelems(f.get("options")).items())
        if options:
            self.session.cacheable = False  # a delimiter is a literal the normalized text may hide
        facts.copy = CopyFacts(direction, target, relation, tuple(attlist), options)
        if direction == "to":
            self.result(columns, returns_rows=target == CopyTarget.STDOUT)

    # ------------------------------------------------------------------ wrappers and names

    def _explain(self, f: Node) -> None:
        options = defelems(f.get("options"))
        runs = "analyze" in options and _boolean(options["analyze"]) is not False
        inner = self.nested(f["query"])
        self.facts.absorb(inner, planned_only=not runs)
        self.facts.executes = runs
        if not runs:
            self.facts.note("EXPLAIN without ANALYZE: the statement is planned, not run")
        self.result(QUERY_PLAN)

    def _prepare(self, f: Node) -> None:
        name = str(f.get("name", ""))
        inner = self.nested(f["query"])
        self.facts.absorb(inner)
        self.facts.executes = False
        self.facts.prepared_name = name
        self.facts.outputs = inner.outputs
        self.lineage = self.nested_lineage
        self.prepared[name] = (inner, self.lineage)

    def _execute(self, f: Node) -> None:
        name = str(f.get("name", ""))
        self.facts.prepared_name = name
        params: list[Node] = f.get("params") or []
        self.exprs(params, Level(), Clause.OTHER)
        self.facts.execute_params = _literal_texts(params)
        if params and self.facts.execute_params is not None:
            self.session.cacheable = False  # the literals are facts: no sharing by normalized text
        known = self.prepared.get(name)
        if known is None:
            self.facts.returns_rows = True
            self.facts.note(
                f"EXECUTE {name}: what it runs was prepared earlier; the gateway tracks it by name"
            )
            return
        inner, self.lineage = known
        self.facts.absorb(inner)
        self.facts.outputs = inner.outputs
        self.facts.returns_rows = inner.returns_rows
        self.facts.note(f"EXECUTE {name}: prepared earlier in this string")

    def _deallocate(self, f: Node) -> None:
        self.facts.prepared_name = None if f.get("isall") else f.get("name")

    def _declare(self, f: Node) -> None:
        name = str(f.get("portalname", ""))
        self.facts.prepared_name = name
        columns = self.query(f["query"], Level(), None, Clause.OUTPUT).outputs
        self.result(columns, returns_rows=False)
        self.cursors[name] = columns

    def _fetch(self, f: Node) -> None:
        name = str(f.get("portalname", ""))
        moves = bool(f.get("ismove"))
        self.facts.command = "move" if moves else "fetch"
        self.facts.prepared_name = name
        self.facts.fetch = _fetch_facts(f)
        self.facts.returns_rows = not moves
        if not moves:
            if name in self.cursors:
                self.result(self.cursors[name])
            else:
                self.facts.note(
                    f'FETCH from "{name}": its rows come from a cursor the gateway tracks by name'
                )

    def _close(self, f: Node) -> None:
        self.facts.prepared_name = f.get("portalname")

    # ------------------------------------------------------------------ session and utility

    def _set(self, f: Node) -> None:
        settings.set_statement(self, f)

    def _show(self, f: Node) -> None:
        name = str(f.get("name", "")).lower()
        self.result([(c, NONE) for c in settings.show_columns(name)])

    def _transaction(self, f: Node) -> None:
        self.facts.command = _TRANSACTIONS.get(str(f.get("kind")), "transaction")
        settings.transaction_options(self, f.get("options", []))

    def _discard(self, f: Node) -> None:
        if f.get("target") == "DISCARD_ALL":
            # DISCARD ALL is RESET ALL plus SET SESSION AUTHORIZATION DEFAULT, among others.
            self.facts.settings.append(("all", None))
            self.facts.role_switch = True
            self.facts.note("DISCARD ALL resets every setting and the session's role")

    def _utility(self, f: Node) -> None:
        """Statements whose command says everything: LISTEN, NOTIFY, CHECKPOINT, SET CONSTRAINTS."""

    def _load(self, f: Node) -> None:
        self.session.cacheable = False
        self.facts.classes.add(FunctionClass.SERVER_PROGRAM)
        self.facts.note(f"LOAD runs a shared library's code in the server: {f.get('filename', '')!r}")

    def _alter_system(self, f: Node) -> None:
        settings.set_statement(self, f["setstmt"])
        self.facts.command = "alter_system"
        self.facts.classes.add(FunctionClass.ADMIN)
        self.session.cacheable = False
        if any(name in settings.PROGRAM_SETTINGS for name, _ in self.facts.settings):
            self.facts.classes.add(FunctionClass.SERVER_PROGRAM)

    def _lock(self, f: Node) -> None:
        for item in f.get("relations", ()):
            self.relations(split(item)[1], Access.LOCK)

    def _truncate(self, f: Node) -> None:
        for item in f.get("relations", ()):
            self.relations(split(item)[1], Access.TRUNCATE)
        if f.get("behavior") == "DROP_CASCADE":
            self.facts.note("TRUNCATE ... CASCADE also empties tables that reference these")

    def _vacuum(self, f: Node) -> None:
        self.facts.command = "vacuum" if f.get("is_vacuumcmd") else "analyze"
        for item in f.get("rels", ()):
            relation = split(item)[1].get("relation")
            if relation:
                self.relations(relation, Access.MAINTAIN)

    def _maintain(self, f: Node) -> None:
        """REINDEX, CLUSTER, REFRESH MATERIALIZED VIEW: work on a relation, no rows returned."""
        if f.get("relation"):
            self.relations(f["relation"], Access.MAINTAIN)

    def _do(self, f: Node) -> None:
        bodies.do_block(self, f)

    def _call(self, f: Node) -> None:
        self.expr({"FuncCall": f["funccall"]}, Level(), Clause.OTHER)
        self.facts.returns_rows = True  # a procedure with OUT parameters returns a row
        self.facts.note("CALL: the procedure's body is not analyzed")

    # ------------------------------------------------------------------ definitions

    def _create_table_as(self, f: Node) -> None:
        into = f["into"]
        facts = self.facts
        if f.get("objtype") == "OBJECT_MATVIEW":
            facts.command = "create_view"
            facts.note("a materialized view stores the rows of its query")
        elif f.get("is_select_into"):
            facts.command = "select_into"
        facts.creates_object = True
        facts.writes_from_query = not into.get("skipData")
        self.created(into["rel"])
        query = f["query"]
        if split(query)[0] == "ExecuteStmt":
            facts.absorb(self.nested(query))
        else:
            self.query(query, Level(), None, Clause.OUTPUT)

    def _view(self, f: Node) -> None:
        self.facts.creates_object = True
        self.created(f["view"])
        self.query(f["query"], Level(), None, Clause.OUTPUT)

    def _create_function(self, f: Node) -> None:
        bodies.create_function(self, f)

    def _rule(self, f: Node) -> None:
        ddl.rule(self, f)

    def _trigger(self, f: Node) -> None:
        ddl.trigger(self, f)

    def _grant(self, f: Node) -> None:
        ddl.grant(self, f)

    def _grant_role(self, f: Node) -> None:
        self.facts.command = "grant" if f.get("is_grant") else "revoke"
        self.facts.classes.add(FunctionClass.ADMIN)  # role membership: see ddl._ADMIN
        self.facts.note("GRANT/REVOKE of a role changes what a server identity may do")

    def _comment(self, f: Node) -> None:
        ddl.comment(self, f, "comment")

    def _security_label(self, f: Node) -> None:
        ddl.comment(self, f, "ddl")

    def _drop(self, f: Node) -> None:
        ddl.drop(self, f)


def catalog_data(session: Session, facts: Facts) -> None:
    """Reads of catalog columns that hold table data (see ``SAMPLED_VALUES``), once the whole
    statement, nested ones included, is walked: statistics samples count as reads of every
    analyzed relation, through the catalog relation; pg_largeobject's pages as large objects."""
    sampled = sorted(
        {
            use.relation
            for use in facts.columns
            if use.relation[0] == "pg_catalog" and use.column in SAMPLED_VALUES.get(use.relation[1], ())
        }
    )
    for source in sampled:
        facts.note(f"pg_catalog.{source[1]} holds values sampled from every analyzed table")
        for qualified, rel in sorted(session.catalog.relations.items()):
            if rel.kind in _ANALYZED_KINDS and rel.schema not in SYSTEM_SCHEMAS:
                facts.table(qualified, Access.READ, source)
    pages = ("pg_catalog", "pg_largeobject")
    if any(use.relation == pages and use.column == "data" for use in facts.columns):
        facts.classes.add(FunctionClass.LARGE_OBJECTS)
        facts.note("pg_catalog.pg_largeobject holds the contents of large objects")


def _literal_texts(params: list[Node]) -> tuple[str | None, ...] | None:
    """The text of each EXECUTE argument if every one is a plain literal (no cast, no operator,
    no bit string): then binding that text gives the parameter the value EXECUTE would."""
    out: list[str | None] = []
    for param in params:
        kind, fields = split(param)
        if kind != "A_Const" or "bsval" in fields:
            return None
        out.append(constant(param)[1])
    return tuple(out)


def _into_clause(f: Node) -> Node | None:
    """SELECT ... INTO: in a set operation the INTO clause sits in the leftmost branch."""
    while f.get("op", "SETOP_NONE") != "SETOP_NONE":
        f = f["larg"]
    into: Node | None = f.get("intoClause")
    return into


def _fetch_facts(f: Node) -> FetchFacts:
    """Direction and count of a FetchStmt. The count is part of the grammar (an integer, not a
    constant), so normalization keeps it and an analysis cached by shape carries this count."""
    direction = FetchDirection(str(f.get("direction", "FETCH_FORWARD")).removeprefix("FETCH_").lower())
    how_many = int(f.get("howMany", 0))
    if direction not in _STREAMING:
        return FetchFacts(direction, how_many)
    if how_many < 0:  # PostgreSQL turns FETCH FORWARD -n into BACKWARD n, and the reverse
        direction = _STREAMING[1 - _STREAMING.index(direction)]
        how_many = -how_many
    return FetchFacts(direction, None if how_many > _INT32_MAX else how_many)


def _missing(entry: object, column: str) -> Lin:
    return entry.missing(column) if isinstance(entry, RelationEntry) else NONE


def _boolean(arg: Node | None) -> bool | None:
    """A DefElem boolean as PostgreSQL reads it; None when the value is not one it accepts."""
    if arg is None:
        return True
    text = (defelem_text(arg) or "").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


_STATEMENTS: dict[str, Callable[[StatementWalker, Node], None]] = {
    "SelectStmt": StatementWalker._select,
    "InsertStmt": StatementWalker._insert,
    "UpdateStmt": StatementWalker._update,
    "DeleteStmt": StatementWalker._delete,
    "MergeStmt": StatementWalker._merge,
    "CopyStmt": StatementWalker._copy,
    "ExplainStmt": StatementWalker._explain,
    "PrepareStmt": StatementWalker._prepare,
    "ExecuteStmt": StatementWalker._execute,
    "DeallocateStmt": StatementWalker._deallocate,
    "DeclareCursorStmt": StatementWalker._declare,
    "FetchStmt": StatementWalker._fetch,
    "ClosePortalStmt": StatementWalker._close,
    "VariableSetStmt": StatementWalker._set,
    "VariableShowStmt": StatementWalker._show,
    "TransactionStmt": StatementWalker._transaction,
    "DiscardStmt": StatementWalker._discard,
    "ListenStmt": StatementWalker._utility,
    "UnlistenStmt": StatementWalker._utility,
    "NotifyStmt": StatementWalker._utility,
    "CheckPointStmt": StatementWalker._utility,
    "ConstraintsSetStmt": StatementWalker._utility,
    "LoadStmt": StatementWalker._load,
    "AlterSystemStmt": StatementWalker._alter_system,
    "LockStmt": StatementWalker._lock,
    "TruncateStmt": StatementWalker._truncate,
    "VacuumStmt": StatementWalker._vacuum,
    "ReindexStmt": StatementWalker._maintain,
    "ClusterStmt": StatementWalker._maintain,
    "RefreshMatViewStmt": StatementWalker._maintain,
    "DoStmt": StatementWalker._do,
    "CallStmt": StatementWalker._call,
    "CreateTableAsStmt": StatementWalker._create_table_as,
    "ViewStmt": StatementWalker._view,
    "CreateFunctionStmt": StatementWalker._create_function,
    "RuleStmt": StatementWalker._rule,
    "CreateTrigStmt": StatementWalker._trigger,
    "GrantStmt": StatementWalker._grant,
    "GrantRoleStmt": StatementWalker._grant_role,
    "CommentStmt": StatementWalker._comment,
    "SecLabelStmt": StatementWalker._security_label,
    "DropStmt": StatementWalker._drop,
}

__all__ = ["QUERY_PLAN", "SAMPLED_VALUES", "StatementWalker", "catalog_data", "command_of"]
