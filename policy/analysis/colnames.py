"""Result column names, as PostgreSQL's ``FigureColname`` chooses them for unnamed expressions.

Names are for people (``sekisho explain``, audit); rules bind masks by position, not by name.
"""

from __future__ import annotations

from policy.analysis.tree import Node, split, strings

_FIXED = {
    "CaseExpr": "case",
    "A_ArrayExpr": "array",
    "RowExpr": "row",
    "CoalesceExpr": "coalesce",
    "GroupingFunc": "grouping",
    "XmlSerialize": "xmlserialize",
    "JsonObjectConstructor": "json_object",
    "JsonArrayConstructor": "json_array",
    "JsonArrayQueryConstructor": "json_array",
    "JsonObjectAgg": "json_objectagg",
    "JsonArrayAgg": "json_arrayagg",
    "JsonParseExpr": "json",
    "JsonScalarExpr": "json_scalar",
    "JsonSerializeExpr": "json_serialize",
    "MergeSupportFunc": "merge_action",
}
UNNAMED = "?column?"


def figure_colname(node: Node) -> str:
    name = _figure(node)
    return UNNAMED if name is None else name


def _figure(node: Node) -> str | None:
    kind, fields = split(node)
    if kind == "ColumnRef":
        names = [n for n in strings(fields.get("fields")) if n != "*"]
        return names[-1] if names else None
    if kind == "A_Indirection":
        for item in reversed(fields.get("indirection", [])):
            item_kind, item_fields = split(item)
            if item_kind == "String":
                return str(item_fields.get("sval", ""))
        return _figure(fields["arg"])
    if kind == "FuncCall":
        return strings(fields.get("funcname"))[-1]
    if kind == "TypeCast":
        inner = _figure(fields["arg"])
        if inner is not None:
            return inner
        names = strings(fields.get("typeName", {}).get("names"))
        return names[-1] if names else None
    if kind == "CollateClause":
        return _figure(fields["arg"])
    if kind == "A_Expr":
        return "nullif" if fields.get("kind") == "AEXPR_NULLIF" else None
    if kind == "SubLink":
        link = fields.get("subLinkType")
        if link == "EXISTS_SUBLINK":
            return "exists"
        if link == "ARRAY_SUBLINK":
            return "array"
        if link == "EXPR_SUBLINK":
            _, select = split(fields["subselect"])
            targets = select.get("targetList") or []
            if targets:
                _, target = split(targets[0])
                return str(target["name"]) if target.get("name") else _figure(target["val"])
        return None
    if kind == "MinMaxExpr":
        return "greatest" if fields.get("op") == "IS_GREATEST" else "least"
    if kind == "SQLValueFunction":
        op = str(fields.get("op", ""))
        return op.removeprefix("SVFOP_").removesuffix("_N").lower() or None
    if kind == "XmlExpr":
        op = str(fields.get("op", ""))
        return None if op == "IS_DOCUMENT" else op.removeprefix("IS_").lower() or None
    if kind == "JsonFuncExpr":
        return str(fields.get("op", "")).removesuffix("_OP").lower() or None
    return _FIXED.get(kind)
