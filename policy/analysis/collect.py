"""The mutable collector behind one ``StatementFacts``.

Walks add to it as they go; duplicates collapse (a recursive CTE is walked more than once, a
column may be used twice) while first-seen order is kept, so facts read in statement order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.analysis.lineage import Lin, Source
from policy.catalog import QualifiedName
from policy.facts import (
    Access,
    Clause,
    ColumnUse,
    CopyFacts,
    Equality,
    FetchFacts,
    FunctionClass,
    OutputColumn,
    StatementFacts,
    TableUse,
)

WRITES = frozenset({Access.INSERT, Access.UPDATE, Access.DELETE, Access.TRUNCATE})


@dataclass(slots=True)
class Facts:
    text: str
    node: str
    command: str
    tables: dict[TableUse, None] = field(default_factory=dict)
    columns: dict[ColumnUse, None] = field(default_factory=dict)
    functions: dict[str, None] = field(default_factory=dict)
    classes: set[FunctionClass] = field(default_factory=set)
    notes: dict[str, None] = field(default_factory=dict)
    settings: list[tuple[str, str | None]] = field(default_factory=list)
    outputs: list[OutputColumn] | None = None
    copy: CopyFacts | None = None
    fetch: FetchFacts | None = None
    execute_params: tuple[str | None, ...] | None = None
    executes: bool = True
    returns_rows: bool = False
    creates_object: bool = False
    writes_from_query: bool = False
    kept: set[Source] = field(default_factory=set)
    written: set[Source] = field(default_factory=set)
    role_switch: bool = False
    do_block: bool = False
    prepared_name: str | None = None
    max_rows: int | None = None
    unanalyzable: str | None = None

    def table(self, relation: QualifiedName, access: Access, via_view: QualifiedName | None = None) -> None:
        self.tables[TableUse(relation, access, via_view)] = None

    def use(self, lin: Lin, clause: Clause, equality: Equality = Equality.NONE) -> None:
        """Record the columns a value reads; ``equality`` holds only for a plain column (an
        expression around it could reshape the value, so its uses are never exact)."""
        if not lin.direct:
            equality = Equality.NONE
        sources = lin.sources if len(lin.sources) < 2 else sorted(lin.sources)  # stable order for audit
        for schema, name, column in sources:
            self.columns[ColumnUse((schema, name), column, clause, equality)] = None

    def keep(self, lin: Lin) -> None:
        """A value that a function keeps in session state past the statement (set_config, ...)."""
        self.kept |= lin.sources

    def write(self, lin: Lin) -> None:
        """A value written into a table by an expression (UPDATE ... SET, MERGE, ON CONFLICT)."""
        self.written |= lin.sources

    def note(self, text: str) -> None:
        self.notes[text] = None

    def refuse(self, reason: str) -> None:
        """Mark the statement unanalyzable (the first reason is kept) but go on collecting."""
        if self.unanalyzable is None:
            self.unanalyzable = reason

    def set_outputs(self, cols: list[tuple[str, Lin]] | None) -> None:
        self.outputs = (
            None
            if cols is None
            else [OutputColumn(name, lin.sources, lin.direct, lin.whole_row) for name, lin in cols]
        )

    def absorb(self, inner: Facts, *, planned_only: bool = False) -> None:
        """Fold a nested statement's facts into this one.

        ``planned_only`` (plain EXPLAIN): the inner statement is planned, not run, so its writes are
        listed as reads and it creates nothing; functions stay listed, since planning may evaluate them.
        """
        for use in inner.tables:
            planned = planned_only and use.access in WRITES
            self.tables[TableUse(use.relation, Access.READ, use.via_view) if planned else use] = None
        self.columns.update(inner.columns)
        self.functions.update(inner.functions)
        self.classes |= inner.classes
        self.notes.update(inner.notes)
        self.settings.extend(inner.settings)
        self.role_switch |= inner.role_switch
        self.do_block |= inner.do_block
        if not planned_only:
            self.creates_object |= inner.creates_object
            self.writes_from_query |= inner.writes_from_query
            self.kept |= inner.kept
            self.written |= inner.written
        if self.copy is None:
            self.copy = inner.copy
        if self.prepared_name is None:
            self.prepared_name = inner.prepared_name
        if inner.unanalyzable is not None:
            self.refuse(inner.unanalyzable)

    def build(self) -> StatementFacts:
        return StatementFacts(
            text=self.text,
            node=self.node,
            command=self.command,
            tables=tuple(self.tables),
            columns=tuple(self.columns),
            outputs=None if self.outputs is None else tuple(self.outputs),
            functions=tuple(self.functions),
            function_classes=frozenset(self.classes),
            copy=self.copy,
            fetch=self.fetch,
            execute_params=self.execute_params,
            executes=self.executes,
            returns_rows=self.returns_rows,
            creates_object=self.creates_object,
            writes_from_query=self.writes_from_query,
            kept=frozenset(self.kept),
            written=frozenset(self.written),
            role_switch=self.role_switch,
            do_block=self.do_block,
            settings=tuple(self.settings),
            prepared_name=self.prepared_name,
            max_rows=self.max_rows,
            unanalyzable=self.unanalyzable,
            notes=tuple(self.notes),
        )
