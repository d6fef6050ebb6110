"""Statements that change who the session is or how its statements are read."""

from __future__ import annotations

from policy.facts import StatementFacts
from policy.rules.base import RuleContext, Violation

# Settings that change how the server reads statement text: analysis assumes UTF8 and standard
# strings, so a session that changes them could smuggle text the analyzer read differently.
LEXER_SETTINGS = frozenset({
    "client_encoding", "standard_conforming_strings", "backslash_quote",
    # Not a lexer setting, but the switch that lets a superuser session rewrite system catalogs.
    "allow_system_table_mods",
})  # fmt: skip
IDENTITY_SETTINGS = frozenset({"role", "session_authorization"})
# RESET ALL and DISCARD ALL put every setting back to the session's startup value, and DISCARD ALL
# also the role (SET SESSION AUTHORIZATION DEFAULT: back to the login Sekisho made). Sekisho pins
# the startup values (client_encoding among them), so nothing they restore was chosen by the
# client: pools and drivers send them between uses, and they stay allowed. ``("all", None)`` from
# any other command (``SET "all" TO DEFAULT``, ``ALTER SYSTEM RESET ALL``) is not a return to startup.
RESETS_TO_STARTUP = frozenset({"reset", "discard"})


def _resets_everything(stmt: StatementFacts) -> bool:
    return stmt.command in RESETS_TO_STARTUP and stmt.settings == (("all", None),)


def role_switch(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.command == "discard" and _resets_everything(stmt):
        return None  # DISCARD ALL: the role goes back to the session's own login, not to a chosen one
    if stmt.role_switch or any(name in IDENTITY_SETTINGS for name, _ in stmt.settings):
        return Violation("role_switch", "switching the database role")
    return None


def session_settings(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if _resets_everything(stmt):
        return None
    for name, _ in stmt.settings:
        if name in LEXER_SETTINGS or name in ("all", "?"):
            target = "every setting" if name == "all" else name if name != "?" else "a computed setting"
            return Violation("session_settings", f"changing {target}")
    return None


def do_blocks(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.do_block:
        return Violation("do_blocks", "an anonymous code block (DO)")
    return None
