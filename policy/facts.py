"""What analysis establishes about a statement: plain frozen data, the input of every rule.

One ``StatementFacts`` per top-level statement of the client's string. Statements nested inside
another (the query of COPY, EXPLAIN, PREPARE, DECLARE, CREATE TABLE AS, CTEs, subqueries) are folded
into their parent's facts: their tables, columns and functions count as the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from policy.catalog import QualifiedName


class Access(StrEnum):
    READ = "read"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"
    DDL = "ddl"  # ALTER / DROP / CREATE INDEX / COMMENT / GRANT ... on the relation
    LOCK = "lock"
    MAINTAIN = "maintain"  # VACUUM, ANALYZE, REINDEX, CLUSTER, REFRESH: no rows reach the client


class Clause(StrEnum):
    """Where in a statement a column is used."""

    OUTPUT = "output"
    WHERE = "where"
    JOIN = "join"
    GROUP = "group"
    HAVING = "having"
    ORDER = "order"
    DISTINCT = "distinct"
    WINDOW = "window"
    # What decides how many rows return: LIMIT, OFFSET, FETCH FIRST, TABLESAMPLE, and the arguments
    # of set-returning functions whose row count follows a value (generate_series(1, length(x))).
    LIMIT = "limit"
    RETURNING = "returning"
    SET = "set"  # UPDATE ... SET col, INSERT column lists
    OTHER = "other"  # function arguments in FROM, window frame offsets, ON CONFLICT targets, ...


class Equality(StrEnum):
    """How a plain column reference is compared where it is used (the inference-channel rule,
    ``pii_inference``, allows exact-value lookups where it refuses patterns, ranges and functions).

    A plain reference is a column itself, through aliases, parentheses, CTEs and subqueries that
    pass it on unchanged: never under a cast, a function or an operator, which could truncate or
    reshape it (``phone::varchar(3) = '090'`` is a prefix test).
    """

    NONE = "none"  # anything else: an operand of LIKE, <, BETWEEN, a function, a cast; or no comparison
    # Tested for exact values that read no column: = <> IN NOT IN = ANY <> ALL, IS [NOT] DISTINCT
    # FROM, IS [NOT] NULL against constants, parameters and expressions over them.
    VALUE = "value"
    # Tested for exact equality with another column or a subquery's rows: a join condition
    # (ON a.x = b.y, USING, NATURAL, or WHERE a.x = b.y).
    COLUMN = "column"


class FunctionClass(StrEnum):
    SERVER_FILES = "server_files"  # pg_read_file, pg_ls_dir, pg_stat_file, lo_import, lo_export, ...
    SERVER_PROGRAM = "server_program"  # anything that runs a program on the server
    LARGE_OBJECTS = "large_objects"  # lo_get, lo_open, loread, ...
    DYNAMIC_SQL = "dynamic_sql"  # query_to_xml, cursor_to_xml, dblink, ... (a statement hidden in a string)
    REMOTE = "remote"  # dblink_connect, postgres_fdw helpers: data leaves through another server
    SESSION = "session"  # set_config, pg_advisory..., anything that changes session state
    USER_DEFINED = "user_defined"  # not in pg_catalog: its body is not analyzed
    ADMIN = "admin"  # pg_terminate_backend, pg_reload_conf, pg_promote, ...


class CopyTarget(StrEnum):
    STDOUT = "stdout"
    STDIN = "stdin"
    FILE = "file"
    PROGRAM = "program"


@dataclass(frozen=True, slots=True)
class TableUse:
    relation: QualifiedName  # resolved through the catalog and search_path
    access: Access
    via_view: QualifiedName | None = None  # read through this view (base tables of views are listed too)


@dataclass(frozen=True, slots=True)
class ColumnUse:
    relation: QualifiedName
    column: str
    clause: Clause
    equality: Equality = Equality.NONE


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One column of the result, and every source column its value derives from."""

    name: str
    sources: frozenset[tuple[str, str, str]]  # (schema, table, column)
    direct: bool  # a plain reference to one column (through aliases, CTEs, subqueries): no expression
    whole_row: bool = False  # derives from a whole-row reference (c, c.*::text, row_to_json(c))


@dataclass(frozen=True, slots=True)
class CopyFacts:
    direction: str  # "to" | "from"
    target: CopyTarget
    relation: QualifiedName | None  # COPY table; None for COPY (query)
    columns: tuple[str, ...] = ()
    # WITH options by lower-case name, as written (format, delimiter, null, header, quote, escape...)
    options: tuple[tuple[str, str | None], ...] = ()


class FetchDirection(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"
    ABSOLUTE = "absolute"  # one row at most, wherever the position
    RELATIVE = "relative"  # one row at most, wherever the position


@dataclass(frozen=True, slots=True)
class FetchFacts:
    """How far a FETCH or MOVE goes, as PostgreSQL will run it.

    PostgreSQL reverses a FORWARD or BACKWARD fetch with a negative count (``FETCH -3`` is
    ``FETCH BACKWARD 3``); that is folded into ``direction`` here, so that ``count`` is the number of
    rows asked for (None: ALL). ABSOLUTE and RELATIVE keep their signed position in ``count``."""

    direction: FetchDirection
    count: int | None


@dataclass(frozen=True)
class StatementFacts:
    text: str  # this statement's own text, as the client sent it
    node: str  # PostgreSQL's parse node name: SelectStmt, CopyStmt, VariableSetStmt, ...
    command: str  # what it does, for people and rules: select, insert, copy, explain, set, ddl, ...
    tables: tuple[TableUse, ...] = ()
    columns: tuple[ColumnUse, ...] = ()
    outputs: tuple[OutputColumn, ...] | None = None  # None: returns no rows, or lineage unknown
    functions: tuple[str, ...] = ()  # resolved 'schema.name'
    function_classes: frozenset[FunctionClass] = frozenset()
    copy: CopyFacts | None = None
    fetch: FetchFacts | None = None  # FETCH and MOVE: direction and count
    # SQL EXECUTE whose arguments are all plain literals: their text (None for NULL), so the
    # gateway can run it as a protocol Bind of the same statement with a row limit.
    execute_params: tuple[str | None, ...] | None = None
    executes: bool = True  # False for plain EXPLAIN and PREPARE: the inner statement does not run
    # Rows can reach the client: SELECT, FETCH, EXECUTE, RETURNING, COPY TO STDOUT, SHOW, ...
    returns_rows: bool = False
    # Creates a relation, view, function, rule, ... (CTAS, SELECT INTO, CREATE VIEW).
    creates_object: bool = False
    writes_from_query: bool = False  # INSERT ... SELECT / CREATE TABLE AS: rows are copied, not returned
    # Columns whose values outlive the statement outside its result, where no mask applies: kept in
    # session state (set_config, setval, setseed, advisory locks) or written into a table by an
    # UPDATE ... SET, MERGE or ON CONFLICT expression (INSERT ... SELECT and CREATE TABLE AS copy
    # their query's output columns, recorded in ``columns`` with Clause.OUTPUT).
    kept: frozenset[tuple[str, str, str]] = frozenset()
    written: frozenset[tuple[str, str, str]] = frozenset()
    role_switch: bool = False  # SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE, set_config('role', ...)
    do_block: bool = False
    settings: tuple[tuple[str, str | None], ...] = ()  # SET name = value (None: RESET / DEFAULT)
    prepared_name: str | None = None  # PREPARE name / EXECUTE name / DECLARE name / FETCH name
    # A proven upper bound on the rows a SELECT returns, whatever its literals (analyses are shared
    # by normalized text); None when unknown. See policy/analysis/bounds.py.
    max_rows: int | None = None
    unanalyzable: str | None = None  # why the analysis could not establish the effect (fail closed)
    notes: tuple[str, ...] = field(default=())  # human-readable remarks for `sekisho explain`


@dataclass(frozen=True)
class Analysis:
    """Everything established about one client string (one Query or one Parse)."""

    statements: tuple[StatementFacts, ...]
    error: str | None = None  # the string could not be parsed at all
    cacheable: bool = True  # the facts depend only on the normalized text (not on literal values)

    # Summaries the relay asks about every statement; computed once per (cached) analysis.
    @cached_property
    def returns_rows(self) -> bool:
        return any(s.returns_rows for s in self.statements)

    @cached_property
    def max_rows(self) -> int | None:
        """A proven upper bound on the rows the whole string returns (the sum of its statements'
        bounds); None when a statement that returns rows has none."""
        bounds = [s.max_rows for s in self.statements if s.returns_rows]
        if not bounds or any(b is None for b in bounds):
            return None
        return sum(b for b in bounds if b is not None)

    @cached_property
    def copies_in(self) -> bool:
        return any(s.copy is not None and s.copy.direction == "from" for s in self.statements)

    @cached_property
    def tables(self) -> tuple[str, ...]:
        """Every table the string reads or writes (views' base tables included), schema.table,
        sorted: what audit records name."""
        return tuple(sorted({".".join(use.relation) for facts in self.statements for use in facts.tables}))

    @cached_property
    def names_used(self) -> bool:
        """Whether any statement creates, uses or drops a prepared statement or cursor name."""
        return any(s.prepared_name is not None for s in self.statements)
