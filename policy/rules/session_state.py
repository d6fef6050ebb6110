"""Statements that change who the session is or how its statements are read."""

from __future__ import annotations

from policy.facts import StatementFacts
from policy.rules.base import RuleContext, Violation

# Settings that change how the server reads statement text: analysis assumes UTF8 and standard
# strings, so a session that changes them could smuggle text the analyzer read differently.
LEXER_SETTINGS = frozenset({"client_encoding", "standard_conforming_strings", "backslash_quote"})
IDENTITY_SETTINGS = frozenset({"role", "session_authorization"})


def role_switch(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.role_switch or any(name in IDENTITY_SETTINGS for name, _ in stmt.settings):
        return Violation("role_switch", "switching the database role")
    return None


def session_settings(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for name, _ in stmt.settings:
        if name in LEXER_SETTINGS or name in ("all", "?"):
            target = "every setting" if name == "all" else name if name != "?" else "a computed setting"
            return Violation("session_settings", f"changing {target}")
    return None


def do_blocks(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    if stmt.do_block:
        return Violation("do_blocks", "an anonymous code block (DO)")
    return None
