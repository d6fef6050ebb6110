"""Which settings a restricted person may give in the startup packet, and the encoding pin.

Startup parameters (and ``-c name=value`` inside ``options``) are applied by PostgreSQL with the
service account's privileges, before any statement is analyzed, so they are allowlisted: settings
that shape output or timing are fine; anything that changes identity, how statement text is read,
or what code the server loads is refused.

Analysis reads statement text as UTF-8. A session whose client_encoding is anything but UTF8 (or
SQL_ASCII, which the server passes through unconverted) could send bytes the server reads as other
characters than the analyzer did; SJIS and the other client-only encodings even hide quote and
backslash bytes inside multibyte characters.
"""

from __future__ import annotations

SAFE_ENCODINGS = frozenset({"utf8", "unicode", "sql_ascii"})
_SAFE_ENCODING_KEYS = frozenset(e.replace("_", "") for e in SAFE_ENCODINGS)

SAFE_SETTINGS = frozenset({
    "application_name", "client_encoding", "datestyle", "intervalstyle", "timezone",
    "extra_float_digits", "search_path", "statement_timeout", "lock_timeout",
    "idle_in_transaction_session_timeout", "idle_session_timeout", "work_mem", "maintenance_work_mem",
    "temp_buffers", "default_transaction_isolation", "default_transaction_read_only",
    "default_transaction_deferrable", "client_min_messages", "bytea_output", "xmlbinary", "xmloption",
    "geqo", "jit", "enable_seqscan", "enable_indexscan", "enable_bitmapscan", "enable_hashjoin",
    "enable_mergejoin", "enable_nestloop", "random_page_cost", "seq_page_cost", "effective_cache_size",
    "cursor_tuple_fraction", "default_statistics_target", "lc_messages", "lc_monetary", "lc_numeric",
    "lc_time", "standard_conforming_strings", "timezone_abbreviations", "gin_fuzzy_search_limit",
    "plan_cache_mode", "constraint_exclusion", "from_collapse_limit", "join_collapse_limit",
    "max_parallel_workers_per_gather", "parallel_setup_cost", "parallel_tuple_cost", "row_security",
    "synchronous_commit", "vacuum_cost_delay", "vacuum_cost_limit",
})  # fmt: skip

# Settings whose value matters, not only their name.
_REQUIRED_VALUES = {"standard_conforming_strings": frozenset({"on", "true", "yes", "1"})}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def encoding_is_safe(value: str) -> bool:
    """PostgreSQL ignores case, '-' and '_' in encoding names, and accepts them quoted
    (asyncpg sends client_encoding='utf-8')."""
    name = value.strip().strip("'\"").lower().replace("-", "").replace("_", "")
    return name in _SAFE_ENCODING_KEYS


def parse_options(options: str) -> list[tuple[str, str]]:
    """The settings in a startup ``options`` string, split as PostgreSQL splits it: on whitespace,
    with backslash escaping the next character; ``-c name=value``, ``-cname=value``, ``--name=value``.
    Anything else (other postgres command-line switches) is returned with the name '?'."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    settings: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            assignment = words[i + 1]
            i += 2
        elif word.startswith("-c") or word.startswith("--"):
            assignment = word[2:]
            i += 1
        else:
            settings.append(("?", word))
            i += 1
            continue
        name, sep, value = assignment.partition("=")
        settings.append((_canonical(name), value) if sep else ("?", assignment))
    return settings


def refusal(params: list[tuple[str, str]]) -> str | None:
    """Why these startup parameters are not allowed for a restricted person, or None."""
    settings: list[tuple[str, str]] = []
    for key, value in params:
        if key == "options":
            settings += parse_options(value)
        else:
            settings.append((_canonical(key), value))
    for name, value in settings:
        if name == "?":
            return f"the startup option {value!r} is not allowed through Sekisho"
        if name not in SAFE_SETTINGS:
            return f'setting "{name}" at connection time is not allowed through Sekisho'
        if name == "client_encoding" and not encoding_is_safe(value):
            return f'client_encoding "{value}" is not allowed through Sekisho: use UTF8'
        allowed = _REQUIRED_VALUES.get(name)
        if allowed is not None and value.strip().strip("'\"").lower() not in allowed:
            return f'{name} = "{value}" is not allowed through Sekisho'
    return None
