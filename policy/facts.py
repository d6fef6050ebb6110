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
    RETURNING = "returning"
    SET = "set"  # UPDATE ... SET col, INSERT column lists
    OTHER = "other"  # function arguments in FROM, LIMIT expressions, ...


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
    executes: bool = True  # False for plain EXPLAIN and PREPARE: the inner statement does not run
    # Rows can reach the client: SELECT, FETCH, EXECUTE, RETURNING, COPY TO STDOUT, SHOW, ...
    returns_rows: bool = False
    # Creates a relation, view, function, rule, ... (CTAS, SELECT INTO, CREATE VIEW).
    creates_object: bool = False
    writes_from_query: bool = False  # INSERT ... SELECT / CREATE TABLE AS: rows are copied, not returned
    role_switch: bool = False  # SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE, set_config('role', ...)
    do_block: bool = False
    settings: tuple[tuple[str, str | None], ...] = ()  # SET name = value (None: RESET / DEFAULT)
    prepared_name: str | None = None  # PREPARE name / EXECUTE name / DECLARE name / FETCH name
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
    def copies_in(self) -> bool:
        return any(s.copy is not None and s.copy.direction == "from" for s in self.statements)

    @cached_property
    def names_used(self) -> bool:
        """Whether any statement creates, uses or drops a prepared statement or cursor name."""
        return any(s.prepared_name is not None for s in self.statements)
