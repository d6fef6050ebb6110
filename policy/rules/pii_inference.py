"""Masked PII that steers a result without being shown in it: the inference channels.

A mask hides a value in the result, not where the statement uses it. ``WHERE phone LIKE '090%'``
reveals a phone number a digit at a time, ``ORDER BY phone`` ranks every row by it, ``GROUP BY``
and ``DISTINCT`` tell equal values apart, a window partitions by it. Each role says per channel
(``pii_use``, policy.model.PII_CHANNELS) whether its people may do that (allow), may do it on the
record (count: the decision lists the use for quotas and alarms), may only look values up exactly
(equality: ``email = $1``, ``phone IN (...)``, a join on equal columns) or may not (refuse).

Only columns the person sees masked matter: a column shown in clear has nothing left to infer. A
PII expression in the select list is an output, shaped by masking, not a channel here (see
KNOWN_LIMITATIONS.md).
"""

from __future__ import annotations

from collections.abc import Iterator

from policy.decision import InferenceUse
from policy.facts import Clause, ColumnUse, Equality, StatementFacts
from policy.model import EQUALITY_CHANNELS
from policy.rules.base import RuleContext, Violation, show

RULE = "pii_inference"

# Where a use lands, by clause. LIMIT (LIMIT, OFFSET, TABLESAMPLE, arguments of set-returning
# functions) chooses how many rows come back, as a WHERE condition does.
_CHANNELS: dict[Clause, str] = {
    Clause.WHERE: "where",
    Clause.LIMIT: "where",
    Clause.JOIN: "join",
    Clause.GROUP: "group_by",
    Clause.ORDER: "order_by",
    Clause.DISTINCT: "distinct",
    Clause.HAVING: "having",
    Clause.WINDOW: "window",
}
_LABELS = {
    "where": "a WHERE condition",
    "join": "a join condition",
    "group_by": "GROUP BY",
    "order_by": "ORDER BY",
    "distinct": "DISTINCT (or UNION, INTERSECT, EXCEPT without ALL)",
    "having": "HAVING",
    "window": "a window's PARTITION BY or ORDER BY",
}
_ADVICE = {
    "group_by": "Group by columns that are not PII (such as id or created_at)",
    "order_by": "Sort by columns that are not PII (such as id or created_at)",
    "distinct": "Use UNION ALL instead of UNION, DISTINCT over columns that are not PII",
    "having": "Filter groups on columns that are not PII",
    "window": "Partition and order windows by columns that are not PII",
}


def channel_of(use: ColumnUse) -> tuple[str, bool] | None:
    """The inference channel of a column use, and whether it is an exact lookup there; None for
    uses that are not channels (the select list, RETURNING, SET, other function arguments)."""
    channel = _CHANNELS.get(use.clause)
    if channel is None:
        return None
    if channel == "where" and use.equality is Equality.COLUMN:
        channel = "join"  # WHERE a.x = b.y is a join condition written in WHERE
    return channel, use.equality is not Equality.NONE and channel in EQUALITY_CHANNELS


def uses(stmt: StatementFacts, ctx: RuleContext) -> Iterator[tuple[ColumnUse, str, bool, str]]:
    """Each masked PII use in a channel the person's roles do not simply allow:
    (use, channel, exact lookup, the merged setting for the channel)."""
    settings = ctx.permissions.pii_use
    if not settings:
        return
    for use in stmt.columns:
        found = channel_of(use)
        if found is None:
            continue
        channel, exact = found
        setting = settings.get(channel)
        if setting is not None and ctx.policy.masked_pii(use.relation, use.column, ctx.permissions.clear):
            yield use, channel, exact, setting


def decide(stmt: StatementFacts, ctx: RuleContext) -> Violation | None:
    for use, channel, exact, setting in uses(stmt, ctx):
        if setting == "refuse" or (setting == "equality" and not exact):
            return _violation(use, channel, setting, ctx)
    return None


def counted(stmt: StatementFacts, ctx: RuleContext) -> tuple[InferenceUse, ...]:
    """The uses in channels set to ``count``, once each. PREPARE lists what its statement uses, and
    every EXECUTE of it inherits the list (the relay records a prepared statement's allowance)."""
    found = {
        InferenceUse((*use.relation, use.column), channel, exact): None
        for use, channel, exact, setting in uses(stmt, ctx)
        if setting == "count"
    }
    return tuple(found)


def _violation(use: ColumnUse, channel: str, setting: str, ctx: RuleContext) -> Violation:
    """Name the column and the channel, and say what to do instead."""
    label = _LABELS[channel]
    if use.clause is Clause.LIMIT:
        label = "an expression that decides how many rows return (LIMIT, TABLESAMPLE, generate_series, ...)"
    what = f"the PII column {show(use.relation)}.{use.column} in {label}"
    lookups = ctx.permissions.pii_use.get("where") != "refuse"
    look_up = "look the customer up by id" + (" or by an exact value (= or IN)" if lookups else "")
    if channel == "where" and setting == "equality":
        what += " that is not an exact-value lookup"
        advice = (  # where is equality here, so exact lookups are allowed
            "Look the customer up by id or by an exact value (= or IN); patterns, ranges, casts and "
            "functions over this column are refused."
        )
    elif channel == "where":
        advice = f"Filter on columns that are not PII, or {look_up}."
    elif channel == "join" and setting == "equality":
        what += " that is not on equal values"
        advice = "Join on ids (such as o.customer_id = c.id), or on equal values of the column."
    elif channel == "join":
        advice = "Join on ids (such as o.customer_id = c.id) or on other columns that are not PII."
    else:
        advice = f"{_ADVICE[channel]}, or {look_up}."
    return Violation(RULE, what, advice=advice)
