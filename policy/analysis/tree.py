"""Reading pglast's JSON parse trees.

A generic node (a ``Node *`` or an element of a ``List *`` in PostgreSQL's structs) is a one-key
dict ``{"SelectStmt": {...fields...}}``; a field whose C type names a specific struct
(``SelectStmt *larg``, ``RangeVar *relation``) holds the fields directly, unwrapped. Fields equal
to their default (false, 0, NULL, empty list) are omitted. ``FIELDS`` records, from pglast's own
node metadata, which fields hold nodes and whether they are wrapped, so that generic walks
(DDL, SQL/JSON expressions) can descend without a hand-written table per node type.
"""

from __future__ import annotations

import keyword
from typing import Any

from pglast import ast

from policy.errors import AnalysisError

Node = dict[str, Any]


class Unanalyzable(AnalysisError):
    """The walker met something it does not model; the message says what (becomes the reason)."""

    code = "unanalyzable"


def _node_fields() -> dict[str, tuple[tuple[str, str | None], ...]]:
    """For each node type, its node-bearing fields: (name, struct type if unwrapped, else None)."""
    out: dict[str, tuple[tuple[str, str | None], ...]] = {}
    for name in dir(ast):
        slots = getattr(getattr(ast, name), "__slots__", None)
        if not isinstance(slots, dict):
            continue
        fields: list[tuple[str, str | None]] = []
        for attribute, info in slots.items():
            ctype = str(getattr(info, "c_type", ""))
            if not ctype.endswith("*") or ctype in ("char*", "Bitmapset*"):
                continue
            base = ctype[:-1]
            field = attribute
            if field.endswith("_") and keyword.iskeyword(field[:-1]):
                field = field[:-1]  # pglast renames Python keywords (def → def_); the JSON does not
            fields.append((field, None if base in ("Node", "Expr", "List") else base))
        out[name] = tuple(fields)
    return out


FIELDS = _node_fields()


def split(node: Node) -> tuple[str, Node]:
    """The type name and fields of a wrapped node."""
    for kind, fields in node.items():
        return kind, fields
    raise Unanalyzable("an empty node where an expression was expected")


def kind_of(node: Node) -> str:
    return split(node)[0]


def strings(items: list[Node] | None) -> list[str]:
    """The names in a list of String nodes (``A_Star`` becomes ``*``), as in ColumnRef.fields."""
    out: list[str] = []
    for item in items or ():
        kind, fields = split(item)
        if kind == "String":
            out.append(str(fields.get("sval", "")))
        elif kind == "A_Star":
            out.append("*")
        else:
            raise Unanalyzable(f"a {kind} where a name was expected")
    return out


def list_items(node: Node | None) -> list[Node]:
    """The items of a wrapped ``List`` node (``{"List": {"items": [...]}}``), or [] for none."""
    if not node:
        return []
    kind, fields = split(node)
    if kind != "List":
        return [node]
    items: list[Node] = fields.get("items", [])
    return items


def mentions(node: Node, kind: str) -> bool:
    """Whether a node of ``kind`` occurs anywhere inside ``node`` (iterative: trees can be deep)."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if kind in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def constant(node: Node | None) -> tuple[bool, str | None]:
    """(is a constant, its text) for an A_Const, also under casts; NULL is (True, None).

    The text is what the literal spells: ``'on'`` → ``on``, ``42`` → ``42``.
    """
    if not node:
        return False, None
    kind, fields = split(node)
    while kind == "TypeCast":
        kind, fields = split(fields["arg"])
    if kind != "A_Const":
        return False, None
    if fields.get("isnull"):
        return True, None
    for key in ("sval", "ival", "fval", "boolval", "bsval"):
        if key in fields:
            value = fields[key].get(key)
            if key == "ival":
                return True, str(int(value or 0))
            if key == "boolval":
                return True, "true" if value else "false"
            return True, "" if value is None else str(value)
    return True, None


def string_constant(node: Node | None) -> str | None:
    """The value of a string literal (also under casts), or None if it is anything else."""
    if not node:
        return None
    kind, fields = split(node)
    while kind == "TypeCast":
        kind, fields = split(fields["arg"])
    if kind == "A_Const" and "sval" in fields:
        return str(fields["sval"].get("sval", ""))
    return None


def integer_constant(node: Node) -> int | None:
    kind, fields = split(node)
    if kind == "A_Const" and "ival" in fields:
        return int(fields["ival"].get("ival", 0))
    return None


def defelems(items: list[Node] | None) -> dict[str, Node | None]:
    """DefElem options by name (``{"analyze": arg}``; arg None when the option has no value)."""
    out: dict[str, Node | None] = {}
    for item in items or ():
        kind, fields = split(item)
        if kind == "DefElem":
            out[str(fields.get("defname", "")).lower()] = fields.get("arg")
    return out


def defelem_text(arg: Node | None) -> str | None:
    """The text of a DefElem argument (String, Integer, Float, Boolean, A_Const, a name list)."""
    if arg is None:
        return None
    kind, fields = split(arg)
    if kind == "String":
        return str(fields.get("sval", ""))
    if kind == "Integer":
        return str(int(fields.get("ival", 0)))
    if kind == "Float":
        return str(fields.get("fval", "0"))
    if kind == "Boolean":
        return "true" if fields.get("boolval") else "false"
    if kind == "List":
        return ".".join(defelem_text(i) or "" for i in fields.get("items", []))
    if kind == "TypeName":
        return ".".join(strings(fields.get("names")))
    return constant(arg)[1]


def statement_text(sql: str, encoded: bytes | None, raw: Node) -> str:
    """The client's own text of one parsed statement (a RawStmt's location and length).

    pglast's offsets count UTF-8 bytes; ``encoded`` is ``sql`` encoded, or None when it is ASCII.
    A length of 0 means "to the end of the string".
    """
    start, length = int(raw.get("stmt_location", 0)), int(raw.get("stmt_len", 0))
    if encoded is None:
        return sql[start : start + length] if length else sql[start:]
    piece = encoded[start : start + length] if length else encoded[start:]
    return piece.decode("utf-8", errors="replace")
