"""Identifiers as PostgreSQL spells them: quoting, and names written inside string literals.

``quote_identifier`` is PostgreSQL's ``quote_identifier`` (how SET stores a search_path);
``parse_qualified`` reads a relation name the way a ``regclass`` literal is read
(``'Public."Customers"'`` → ``("public", "Customers")``); ``search_path_schemas`` reads a stored
search_path value back into schema names.
"""

from __future__ import annotations

from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS, UNRESERVED_KEYWORDS

_KEYWORDS = frozenset(RESERVED_KEYWORDS | COL_NAME_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS) - frozenset(
    UNRESERVED_KEYWORDS
)
_SAFE_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz_")
_SAFE = _SAFE_FIRST | frozenset("0123456789")


def quote_identifier(name: str) -> str:
    """Quote a name only when PostgreSQL would (not lower case, not plain, or a keyword)."""
    if name and name[0] in _SAFE_FIRST and all(c in _SAFE for c in name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def split_identifiers(text: str, separator: str) -> list[str] | None:
    """Split ``a."B c".d`` into names, folding unquoted ones to lower case; None if malformed."""
    names: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            j = i + 1
            buf: list[str] = []
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            name = "".join(buf)
        else:
            j = i
            while j < n and text[j] != separator and not text[j].isspace():
                j += 1
            name = text[i:j].lower()
            i = j
        while i < n and text[i].isspace():
            i += 1
        if not name:
            return None
        names.append(name)
        if i >= n:
            return names
        if text[i] != separator:
            return None
        i += 1


def parse_qualified(text: str) -> tuple[str | None, str] | None:
    """A relation name as a ``regclass`` literal names it: (schema or None, name), None if invalid.

    Three-part names (``db.schema.table``) give the schema; more parts are invalid.
    """
    parts = split_identifiers(text, ".")
    if not parts or len(parts) > 3:
        return None
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def search_path_schemas(value: str) -> tuple[str, ...]:
    """The schemas of a stored search_path value (``public, "My Schema"``); ``$user`` is skipped."""
    return tuple(n for n in split_identifiers(value, ",") or () if n != "$user")
