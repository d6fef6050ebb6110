"""SET, RESET and their relatives: which settings change, to what, as PostgreSQL stores the value.

The rules care about identity (role, session_authorization) and about settings that change how
statement text is read (client_encoding, standard_conforming_strings); ``("all", None)`` stands
for every setting at once (RESET ALL, DISCARD ALL), ``("?", None)`` for one that is not known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy.analysis.names import quote_identifier
from policy.analysis.tree import Node, constant, defelem_text, split

if TYPE_CHECKING:
    from policy.analysis.statements import StatementWalker

IDENTITY_SETTINGS = frozenset({"role", "session_authorization"})
# List settings whose elements PostgreSQL stores as quoted identifiers (GUC_LIST_QUOTE).
_LIST_QUOTE = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "shared_preload_libraries",
        "local_preload_libraries",
    }
)
_BOOLEAN_OPTIONS = frozenset({"transaction_read_only", "transaction_deferrable"})
# Settings that make the server run a program or load code (ALTER SYSTEM can set them).
PROGRAM_SETTINGS = frozenset(
    {
        "archive_command",
        "restore_command",
        "archive_cleanup_command",
        "recovery_end_command",
        "ssl_passphrase_command",
        "shared_preload_libraries",
        "session_preload_libraries",
        "local_preload_libraries",
        "dynamic_library_path",
        "archive_library",
    }
)


def render(name: str, args: list[Node]) -> str | None:
    """A SET value as PostgreSQL stores it (``a, "B"`` for a search_path); None if not constant."""
    parts: list[str] = []
    for arg in args:
        kind, fields = split(arg)
        is_const, text = constant(arg)
        if not is_const:
            return None
        if kind == "A_Const" and "sval" in fields and name in _LIST_QUOTE:
            text = quote_identifier(text or "")
        parts.append(text or "")
    return ", ".join(parts)


def set_statement(walker: StatementWalker, f: Node) -> None:
    """VariableSetStmt: SET, SET LOCAL, SET ... TO DEFAULT, RESET, RESET ALL, SET TRANSACTION."""
    facts = walker.facts
    kind = f.get("kind")
    name = str(f.get("name", "")).lower()
    if f.get("is_local"):
        facts.note("SET LOCAL: lasts until the end of the transaction")
    if kind == "VAR_RESET_ALL":
        facts.command = "reset"
        facts.settings.append(("all", None))
        return
    if kind == "VAR_SET_MULTI":
        multi(walker, name, f.get("args", []))
        return
    value: str | None = None
    if kind == "VAR_RESET":
        facts.command = "reset"
    elif kind == "VAR_SET_CURRENT":
        facts.note(f"SET {name} FROM CURRENT: the value is the session's current one")
    elif kind == "VAR_SET_VALUE":
        walker.session.cacheable = False
        value = render(name, f.get("args", []))
        if value is None:
            facts.note(f"SET {name} to a value that is not a constant")
    facts.settings.append((name, value))
    if name in IDENTITY_SETTINGS:
        facts.role_switch = True
    if name == "search_path":
        walker.session.widen_search_path(value)


def multi(walker: StatementWalker, name: str, args: list[Node]) -> None:
    """SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ..., SET TRANSACTION SNAPSHOT."""
    walker.session.cacheable = False
    prefix = "default_" if name.startswith("session characteristics") else ""
    if name.startswith("transaction snapshot"):
        walker.facts.settings.append(("transaction_snapshot", render(name, args)))
        return
    transaction_options(walker, args, prefix)


def transaction_options(walker: StatementWalker, options: list[Node], prefix: str = "") -> None:
    """BEGIN ISOLATION LEVEL ... / START TRANSACTION READ ONLY: the transaction's settings."""
    for arg in options:
        kind, fields = split(arg)
        if kind != "DefElem":
            continue
        walker.session.cacheable = False
        name = str(fields.get("defname", ""))
        value = defelem_text(fields.get("arg"))
        if name in _BOOLEAN_OPTIONS and value in ("0", "1"):
            value = "on" if value == "1" else "off"  # READ ONLY arrives as 1, stored as on
        walker.facts.settings.append((prefix + name, value))


def show_columns(name: str) -> list[str]:
    return ["name", "setting", "description"] if name == "all" else [name]
