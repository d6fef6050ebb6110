"""analyze(): the facts of a client string, established with PostgreSQL's own grammar.

``analyze(sql, catalog, search_path)`` parses the string with pglast (libpg_query, the server's
parser), so statement boundaries, identifiers (quoting, case, ``U&""`` escapes, comments, dollar
quotes) and statement kinds are exactly what the server will see. Each top-level statement gets
one ``StatementFacts`` whose ``text`` is the client's own slice of the string. See
``policy.analysis`` for how the walk works.

It never raises for any input: a string that does not parse gives ``Analysis(error=...)``, and a
statement the walker cannot model, or fails on, gives facts with ``unanalyzable`` set.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pglast.parser import ParseError, parse_sql_json

from policy.analysis.collect import Facts
from policy.analysis.expressions import Session
from policy.analysis.names import search_path_schemas
from policy.analysis.scope import Columns
from policy.analysis.statements import StatementWalker, catalog_data, command_of
from policy.analysis.tree import Node, Unanalyzable, statement_text
from policy.catalog import Catalog
from policy.errors import BudgetExhausted
from policy.facts import Analysis, StatementFacts

__all__ = ["Budget", "analyze", "search_path_schemas"]


def analyze(
    sql: str,
    catalog: Catalog,
    search_path: tuple[str, ...] = ("public",),
    budget: Budget | None = None,
) -> Analysis:
    """The facts of every statement in ``sql``, names resolved through ``catalog`` and ``search_path``.

    Returns ``Analysis(statements=(), error=message)`` when PostgreSQL's grammar rejects the string
    (the message is the parser's). ``Analysis.cacheable`` is False when a fact depends on a literal
    (a SET value, a COPY file name, a function body...), so the facts must not be reused for
    another string with the same normalized text. With a ``budget``, a string above its size is
    not parsed and one that takes longer than its time stops being walked: either way the
    statements not established are unanalyzable (fail closed). Raises nothing.
    """
    if "\x00" in sql:
        return Analysis((), error="the statement contains a NUL character")
    if budget is not None and len(sql) > budget.max_chars and len(sql.encode("utf-8")) > budget.max_bytes:
        reason = (
            f"the statement is {len(sql.encode('utf-8')):,} bytes, more than the {budget.max_bytes:,} "
            "bytes Sekisho analyzes (limits.max_statement_bytes)"
        )
        return Analysis((_failed(sql, "?", reason),), cacheable=False)
    deadline = None if budget is None else time.monotonic() + budget.seconds
    try:
        tree = json.loads(parse_sql_json(sql))
    except ParseError as exc:
        return Analysis((), error=str(exc) or "syntax error")
    except RecursionError:
        return Analysis(
            (_failed(sql, "?", "the statement is nested too deeply to analyze"),), cacheable=False
        )
    except (ValueError, UnicodeError) as exc:
        return Analysis((), error=f"the statement cannot be read: {exc}")
    session = Session(catalog, search_path, deadline)
    prepared: dict[str, tuple[Facts, Columns | None]] = {}
    cursors: dict[str, Columns | None] = {}
    encoded = None if sql.isascii() else sql.encode("utf-8")
    statements = []
    for raw in tree.get("stmts", ()):
        text = statement_text(sql, encoded, raw)
        if deadline is not None and time.monotonic() > deadline:
            statements.append(_failed(text, next(iter(raw["stmt"]), "?"), _out_of_time(budget)))
            session.cacheable = False
            continue
        try:
            facts = _statement(session, raw["stmt"], text, prepared, cursors)
        except BudgetExhausted:
            facts = _failed(text, next(iter(raw["stmt"]), "?"), _out_of_time(budget))
        if facts.unanalyzable is not None:
            session.cacheable = False
        statements.append(facts)
    return Analysis(tuple(statements), None, session.cacheable)


def _statement(
    session: Session,
    node: Node,
    text: str,
    prepared: dict[str, tuple[Facts, Columns | None]],
    cursors: dict[str, Columns | None],
) -> StatementFacts:
    """One statement's facts; any failure of the walker makes it unanalyzable (fail closed)."""
    kind = next(iter(node), "?")
    facts = Facts(text, kind, command_of(kind))
    walker = StatementWalker(session, facts, prepared, cursors)
    try:
        walker.statement(node)
        catalog_data(session, facts)
    except Unanalyzable as exc:
        facts.refuse(str(exc))
    except BudgetExhausted:
        raise  # the caller refuses this statement and every later one
    except RecursionError:
        facts.refuse("the statement is nested too deeply to analyze")
    except Exception as exc:  # fail closed: a walker fault must not let a statement through unexamined
        facts.refuse(f"analysis failed ({type(exc).__name__}: {exc})")
    return facts.build()


@dataclass(frozen=True, slots=True)
class Budget:
    """How much analysis one client string may cost: its size, and time on one core."""

    max_bytes: int = 1024 * 1024
    seconds: float = 2.0

    @property
    def max_chars(self) -> int:
        """Below this many characters a string cannot exceed ``max_bytes`` (UTF-8 is at most 4)."""
        return self.max_bytes // 4


def _out_of_time(budget: Budget | None) -> str:
    seconds = budget.seconds if budget is not None else 0.0
    return (
        f"the statement took more than the {seconds:g} s Sekisho allows for analysis "
        "(limits.analysis_seconds); simplify it or split it"
    )


def _failed(text: str, node: str, reason: str) -> StatementFacts:
    return StatementFacts(text=text, node=node, command="unknown", unanalyzable=reason)
