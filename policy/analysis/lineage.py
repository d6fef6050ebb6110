"""Lineage: which base columns a value derives from.

A ``Lin`` is immutable and cheap to combine. ``derived`` is for expressions (any operator, cast or
function makes the value no longer a plain column); ``alternatives`` is for values that are one of
several plain columns (set-operation branches, a name that could mean more than one relation).
"""

from __future__ import annotations

from typing import NamedTuple

Source = tuple[str, str, str]  # (schema, relation, column)


class Lin(NamedTuple):
    sources: frozenset[Source]
    direct: bool = False  # a plain reference to a column: no expression in between
    whole_row: bool = False  # derives from a whole-row reference


NONE = Lin(frozenset())


def derived(*lins: Lin) -> Lin:
    """An expression over these values: every source counts, the result is not a plain column."""
    if not lins:
        return NONE
    if len(lins) == 1:
        only = lins[0]
        return only._replace(direct=False) if only.direct else only
    sources: frozenset[Source] = frozenset().union(*(lin.sources for lin in lins))
    return Lin(sources, False, any(lin.whole_row for lin in lins))


def alternatives(lins: list[Lin]) -> Lin:
    """A value that is one of these: plain only if every alternative is plain."""
    if len(lins) == 1:
        return lins[0]
    if not lins:
        return NONE
    sources: frozenset[Source] = frozenset().union(*(lin.sources for lin in lins))
    return Lin(sources, all(lin.direct for lin in lins), any(lin.whole_row for lin in lins))


def whole_row(lins: list[Lin]) -> Lin:
    """A whole-row value made of these columns."""
    sources: frozenset[Source] = frozenset().union(*(lin.sources for lin in lins))
    return Lin(sources, False, True)
