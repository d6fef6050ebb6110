"""Procedural code: DO blocks and function bodies.

A PL/pgSQL body is parsed with PostgreSQL's PL/pgSQL parser; every SQL statement and expression
inside it is analyzed like a statement of its own and folded in, so a DO block that reads
customers lists customers. ``EXECUTE`` of a string is dynamic SQL (its text is data, not code).
SQL-language bodies are parsed with the SQL grammar. Other languages are not analyzed: C and
untrusted languages can reach the server's files and programs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from pglast.parser import ParseError, parse_plpgsql_json, scan

from policy.analysis.functions import SYSTEM_SCHEMAS
from policy.analysis.scope import Level
from policy.analysis.tree import Node, Unanalyzable, defelem_text, defelems, list_items, split
from policy.facts import Clause, FunctionClass

if TYPE_CHECKING:
    from policy.analysis.statements import StatementWalker

_DYNAMIC_NODES = frozenset({"PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors"})
_EXPRESSION_MODE = 2  # RAW_PARSE_PLPGSQL_EXPR: an expression without SELECT
_ASSIGN_MODES = frozenset({3, 4, 5})  # RAW_PARSE_PLPGSQL_ASSIGNn: "target := expression"


def untrusted(language: str) -> bool:
    """C, internal and untrusted procedural languages run with the server's own reach."""
    return language in ("c", "internal") or (language.startswith("pl") and language.endswith("u"))


def do_block(walker: StatementWalker, f: Node) -> None:
    facts = walker.facts
    facts.do_block = True
    walker.session.cacheable = False
    options = defelems(f.get("args"))
    body = defelem_text(options.get("as")) or ""
    language = (defelem_text(options.get("language")) or "plpgsql").lower()
    if language != "plpgsql":
        if untrusted(language):
            facts.classes.add(FunctionClass.SERVER_PROGRAM)
        facts.refuse(f"a DO block in language {language} is not analyzed")
        return
    tag = "sekisho"
    while f"${tag}$" in body:
        tag += "_"
    plpgsql(
        walker, f"CREATE FUNCTION pg_temp.sekisho_do() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$"
    )


def create_function(walker: StatementWalker, f: Node) -> None:
    facts = walker.facts
    facts.creates_object = True
    walker.session.cacheable = False  # the body is a literal: normalization replaces it
    options = defelems(f.get("options"))
    language = (defelem_text(options.get("language")) or "sql").lower()
    names = [str(split(n)[1].get("sval", "")) for n in f.get("funcname", ())]
    if len(names) > 1 and names[-2] in SYSTEM_SCHEMAS and language not in ("sql", "plpgsql"):
        # Calls to it would pass for calls to a built-in, and its body is analyzed neither now
        # nor then (SQL and PL/pgSQL bodies are analyzed here, as for any schema).
        facts.classes.add(FunctionClass.USER_DEFINED)
        facts.note(f"a function in language {language} created in the system schema {names[-2]}")
    body = f.get("sql_body")
    if body:
        with_quiet(walker, lambda: sql_body(walker, body))
        return
    as_items = list_items(options.get("as"))
    source = defelem_text(as_items[0]) if as_items else None
    if language == "sql" and source is not None:
        if walker.fold_sql(source, "the function body", quiet=True) is None and source.strip():
            facts.note("the SQL function body does not parse as written")
    elif language == "plpgsql":
        plpgsql(walker, facts.text)
    elif untrusted(language):
        facts.classes.add(FunctionClass.SERVER_PROGRAM)
        facts.note(
            f"a function in language {language} runs with the server's reach; its body is not analyzed"
        )
    else:
        facts.note(f"a function body in language {language} is not analyzed")


def sql_body(walker: StatementWalker, body: Node) -> None:
    """``BEGIN ATOMIC ... END`` or ``RETURN expr``: already parsed with the statement."""
    kind, fields = split(body)
    if kind == "ReturnStmt":
        walker.expr(fields["returnval"], Level(), Clause.OTHER)
        return
    for block in list_items(body):
        for stmt in list_items(block):
            walker.facts.absorb(walker.nested(stmt))


def with_quiet(walker: StatementWalker, action: Callable[[], None]) -> None:
    saved = walker.quiet
    walker.quiet = True
    try:
        action()
    finally:
        walker.quiet = saved


def plpgsql(walker: StatementWalker, source: str) -> None:
    """Analyze a PL/pgSQL function (the whole CREATE FUNCTION text): every embedded statement."""
    try:
        tree = json.loads(parse_plpgsql_json(source))
    except ParseError as exc:
        raise Unanalyzable(f"the PL/pgSQL body does not parse: {exc}") from exc
    with_quiet(walker, lambda: _walk(walker, tree))


def _walk(walker: StatementWalker, value: object) -> None:
    if isinstance(value, list):
        for item in value:
            _walk(walker, item)
        return
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if key in _DYNAMIC_NODES or key == "dynquery":
            walker.facts.classes.add(FunctionClass.DYNAMIC_SQL)
            walker.facts.note("the code block runs SQL built at run time (EXECUTE)")
        if key == "PLpgSQL_expr" and isinstance(inner, dict):
            _embedded(walker, str(inner.get("query", "")), int(inner.get("parseMode", 0)))
            continue
        _walk(walker, inner)


def _embedded(walker: StatementWalker, query: str, mode: int) -> None:
    if mode == 0:
        text = query
    elif mode == _EXPRESSION_MODE:
        text = f"SELECT {query}"
    elif mode in _ASSIGN_MODES:
        text = f"SELECT {_assigned(query)}"
    else:
        raise Unanalyzable(f"a PL/pgSQL expression in parse mode {mode} is not modeled")
    walker.fold_sql(text, "the code block", quiet=True, strict=True)


def _assigned(query: str) -> str:
    """The expression of ``target := expression`` (the target may have fields and subscripts)."""
    for token in scan(query):
        if token.name in ("COLON_EQUALS", "ASCII_61"):
            return query[token.end + 1 :]
    raise Unanalyzable("a PL/pgSQL assignment without :=")
