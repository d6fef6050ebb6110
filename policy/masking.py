"""Which result columns a restricted person sees masked, decided once per statement from its lineage.

Every output column that derives from a PII column the person does not see clear is masked: with
the column's own mask kind when the value is the column itself (through aliases, CTEs, subqueries,
set operations), and redacted as a whole when an expression made it (``upper(email)``,
``string_agg(phone, ',')``), except where the kind still means something for a derived value (a
token tokenizes it, null stays null). A whole-row reference to a table with masked PII cannot be
masked field by field in the stream, so it is refused; so is a statement over such a table whose
result columns analysis cannot trace (fail closed). Columns of an unprotected view over such a table
are masked whole (lineage does not follow view definitions), and so are the planner's statistics
samples. Masks apply to results only, so values derived from masked PII that would outlive the
statement elsewhere (a table, a setting, a sequence, a lock, a notification, an unanalyzed function)
are refused as ``pii_escape``, whatever the person's rule classes allow. The plan is data:
``gateway/result_masks.py`` applies it to RowDescription, DataRow and COPY messages.

``key_columns`` marks, from the same lineage, where a result carries a protected table's row key
(the catalog's primary key, as plain output columns), so that the relay can report which rows each
person was sent and the coverage alarm can count the distinct ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from policy.analysis.statements import SAMPLED_VALUES
from policy.catalog import Catalog, QualifiedName
from policy.decision import POLICY_REFUSED, UNANALYZABLE, Deny
from policy.facts import Access, Clause, OutputColumn, StatementFacts
from policy.model import Mask, Policy
from policy.permissions import Permissions

CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
FULL = Mask("full")
NULL = Mask("null")
Source = tuple[str, str, str]  # (schema, table, column)
MaskOf = Callable[[Source], Mask | None]  # a column's mask for this person and statement


@dataclass(frozen=True, slots=True)
class ColumnMask:
    index: int  # position in the result
    mask: Mask
    derived: bool  # an expression over the PII value, not the value itself
    source: str  # the PII column, schema.table.column (the first one, for messages)


@dataclass(frozen=True, slots=True)
class CopyFormat:
    """How COPY ... TO STDOUT writes rows, so that masked fields can be found and rewritten."""

    csv: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    header: bool = False


@dataclass(frozen=True, slots=True)
class ResultMask:
    """The masks of one result: ``width`` columns expected, ``columns`` of them masked; for
    COPY TO STDOUT, the format its rows come in."""

    width: int
    columns: tuple[ColumnMask, ...]
    copy: CopyFormat | None = None

    def describe(self) -> str:
        return ", ".join(
            f"#{c.index + 1} {c.source} as {c.mask.kind}{' (derived)' if c.derived else ''}"
            for c in self.columns
        )


@dataclass(frozen=True, slots=True)
class Masking:
    """What masking a statement needs: ``result`` for its rows (or for the rows a PREPAREd or
    DECLAREd name will return), and ``redact`` when it touches a table with masked PII, so that
    error and notice texts (which can quote values) are redacted."""

    result: ResultMask | None = None
    redact: bool = False


NO_MASKING = Masking()


@dataclass(frozen=True, slots=True)
class KeyColumns:
    """Where a result carries the row key of a protected table: what coverage counts per row."""

    table: str  # schema.table
    indexes: tuple[int, ...]  # result positions of the key's columns, in key order
    types: tuple[int, ...]  # their type OIDs, to read binary values
    digest: bool = False  # a key column is PII: the key is reported as a digest, never as the value


def key_columns(stmt: StatementFacts, policy: Policy, catalog: Catalog) -> KeyColumns | None:
    """The row key of the first protected table (in result order) whose whole key the result
    carries as plain column references; None when none does. Only a value that is the key column
    itself (through aliases, CTEs, subqueries) identifies a row: ``id + 0`` or ``id::text`` might
    not, and a count of wrong keys would be worse than none. The plan does not depend on the
    person, so every session reports the same keys for the same rows."""
    outputs = stmt.outputs
    if not outputs:
        return None
    placed: dict[QualifiedName, dict[str, int]] = {}
    for index, output in enumerate(outputs):
        if output.direct and not output.whole_row and len(output.sources) == 1:
            (schema, table, column) = next(iter(output.sources))
            placed.setdefault((schema, table), {}).setdefault(column, index)
    for relation, columns in placed.items():
        found = catalog.relations.get(relation)
        if found is None or not found.key or not policy.is_protected(relation):
            continue
        if all(c in columns for c in found.key):
            pii = policy.tables[relation].pii
            return KeyColumns(
                ".".join(relation),
                tuple(columns[c] for c in found.key),
                found.key_types,
                digest=any(c in pii for c in found.key),
            )
    return None


# Other sessions' statement texts, literals included: a person looking a customer up by a clear
# value would show it to whoever reads them. Redacted whole for restricted people.
OTHER_SESSIONS_TEXT = frozenset({("pg_catalog", "pg_stat_activity", "query")})


def mask_of(policy: Policy, permissions: Permissions, source: Source) -> Mask | None:
    """The mask this person sees for a column, or None if it is not PII or is shown clear.

    A relation the catalog did not know (schema "") matches every protected table of that name,
    so a stale catalog masks rather than reveals."""
    if source in permissions.clear:
        return None
    schema, table, column = source
    for relation in _candidates(policy, (schema, table)):
        mask = policy.tables[relation].pii.get(column)
        if mask is not None:
            return mask
    return None


def _hidden_uses(stmt: StatementFacts, permissions: Permissions) -> list[str]:
    """Hidden columns the statement reads, uses or outputs, whole rows of their tables included."""
    if not permissions.hidden:
        return []
    tables = {(s, t) for s, t, _ in permissions.hidden}
    used = {(*u.relation, u.column) for u in stmt.columns}
    found = {".".join(c) for c in permissions.hidden & used}
    for output in stmt.outputs or ():
        found |= {".".join(s) for s in output.sources if s in permissions.hidden}
        if output.whole_row:
            found |= {f"{s}.{t}.*" for s, t, _ in output.sources if (s, t) in tables}
    return sorted(found)


def _source_mask(policy: Policy, permissions: Permissions, source: Source) -> Mask | None:
    """A column's mask; the planner's statistics samples (pg_stats.most_common_vals, ...) hold
    values of every analyzed column, PII included, so they are redacted whole."""
    schema, table, column = source
    if schema == "pg_catalog" and column in SAMPLED_VALUES.get(table, ()):
        return FULL
    return mask_of(policy, permissions, source)


def has_masked_pii(policy: Policy, permissions: Permissions, relation: QualifiedName) -> bool:
    return any(
        (*candidate, column) not in permissions.clear
        for candidate in _candidates(policy, relation)
        for column in policy.tables[candidate].pii
    )


def plan(stmt: StatementFacts, policy: Policy, permissions: Permissions) -> Masking | Deny:
    """The masking of one statement for a restricted person (callers skip unrestricted ones)."""
    hidden = _hidden_uses(stmt, permissions)
    if hidden:
        return Deny(
            "pii_hidden",
            POLICY_REFUSED,
            f"Sekisho refuses {', '.join(hidden)} for {permissions.user}: the policy hides this column "
            "from the role completely, masked or not (rule pii_hidden)",
            hint="Leave the column out (name the columns you need instead of * or a whole row).",
        )
    reads = [t for t in stmt.tables if t.access == Access.READ]
    masked_tables = {t.relation for t in reads if has_masked_pii(policy, permissions, t.relation)}
    # A view over a table with masked PII that the policy does not describe itself: analysis does
    # not trace its columns to the table's, so every column of it is masked whole.
    masked_views = {
        t.via_view
        for t in reads
        if t.via_view is not None
        and t.via_view[0] not in CATALOG_SCHEMAS
        and not policy.is_protected(t.via_view)
        and t.relation in masked_tables
    }

    def masks(source: Source) -> Mask | None:
        if (source[0], source[1]) in masked_views or source in OTHER_SESSIONS_TEXT:
            return FULL
        if source[0] in CATALOG_SCHEMAS and not masked_tables:
            return None  # statistics samples hide nothing from someone who sees every PII clear
        return _source_mask(policy, permissions, source)

    escape = _escape(stmt, masks, permissions)
    if escape is not None:
        return escape
    if not masked_tables:
        # A write or DDL on such a table reads no rows out, but its errors quote them
        # (``Failing row contains (...)`` of a NOT NULL violation, ``Key (name)=(...)``).
        touches = any(has_masked_pii(policy, permissions, t.relation) for t in stmt.tables)
        texts = tuple(
            ColumnMask(
                i, FULL, derived=not out.direct, source=".".join(sorted(out.sources & OTHER_SESSIONS_TEXT)[0])
            )
            for i, out in enumerate(stmt.outputs or ())
            if out.sources & OTHER_SESSIONS_TEXT
        )
        result = ResultMask(len(stmt.outputs or ()), texts) if texts else None
        return Masking(result, redact=touches) if touches or texts else NO_MASKING
    if stmt.do_block:
        return Deny(
            "pii_escape",
            POLICY_REFUSED,
            f"Sekisho refuses this DO block for {permissions.user}: it reads PII that is masked for "
            "you, and what a block raises or stores cannot be masked (rule pii_escape)",
            hint="Select the columns you need: masked columns are shown masked.",
        )
    carries_rows = stmt.returns_rows or stmt.command in ("prepare", "declare")
    if stmt.outputs is None:
        if not carries_rows:
            return Masking(redact=True)
        return Deny(
            "unanalyzable",
            UNANALYZABLE,
            "Sekisho cannot tell which result columns of this statement carry PII, so it is refused "
            f"for {permissions.user} (rule unanalyzable)",
            hint="Name the columns you need in a plain SELECT.",
        )
    columns: list[ColumnMask] = []
    for index, output in enumerate(stmt.outputs):
        if output.whole_row and any(
            has_masked_pii(policy, permissions, (s, t)) or masks((s, t, c)) for s, t, c in output.sources
        ):
            return _whole_row(output, permissions)
        column = _column_mask(index, output, masks)
        if column is not None:
            columns.append(column)
    if not columns:
        return Masking(None, redact=True)
    copy: CopyFormat | None = None
    if stmt.copy is not None:
        found = copy_format(stmt.copy.options)
        if isinstance(found, str):
            return Deny(
                "copy_protected",
                POLICY_REFUSED,
                f"Sekisho refuses this COPY for {permissions.user}: it carries PII masked for you, "
                f"and {found} (rule copy_protected)",
                hint="Use COPY in text or CSV format, or SELECT the columns you need.",
            )
        copy = found
    return Masking(ResultMask(len(stmt.outputs), tuple(columns), copy), redact=True)


def copy_format(options: tuple[tuple[str, str | None], ...]) -> CopyFormat | str:
    """The COPY row format from its options, or why Sekisho cannot mask rows written that way."""
    given = dict(options)
    fmt = (given.pop("format", None) or "text").lower()
    if fmt not in ("text", "csv"):
        return f"{fmt} COPY data cannot be masked"
    csv = fmt == "csv"
    default = CopyFormat(csv=csv, delimiter="," if csv else "\t", null="" if csv else "\\N")
    delimiter = given.pop("delimiter", None) or default.delimiter
    null = given.pop("null", None)
    quote = given.pop("quote", None) or default.quote
    escape = given.pop("escape", None) or quote
    # A bare HEADER means true, as PostgreSQL reads it (true, false, on, off, 1 and 0 otherwise).
    header = "header" in given and (given.pop("header") or "true").lower() not in ("false", "off", "0")
    given.pop("force_quote", None)
    encoding = given.pop("encoding", None)
    if encoding is not None and encoding.replace("-", "").replace("_", "").lower() != "utf8":
        return f"COPY data in encoding {encoding} cannot be masked"
    if given:
        return f"COPY option {', '.join(sorted(given))} is not supported with masked columns"
    if len(delimiter) != 1 or len(quote) != 1 or len(escape) != 1:
        return "a multi-character delimiter, quote or escape cannot be masked"
    return CopyFormat(csv, delimiter, default.null if null is None else null, quote, escape, header)


def _escape(stmt: StatementFacts, masks: MaskOf, permissions: Permissions) -> Deny | None:
    """A refusal when values derived from masked PII would outlive the statement outside its
    result, where no mask applies: kept in session state (``set_config('x', phone, false)`` and
    then ``SHOW x``) or copied into a table (``UPDATE customers SET email = phone``, INSERT ...
    SELECT, CREATE TABLE AS), whatever the person's rule classes allow."""
    copied = set(stmt.written)
    if stmt.creates_object or stmt.writes_from_query:
        copied |= {(*use.relation, use.column) for use in stmt.columns if use.clause == Clause.OUTPUT}
    kept = "a setting, sequence, lock, notification or unanalyzed function"
    for where, sources in ((kept, stmt.kept), ("a table", copied)):
        masked = sorted({".".join(s) for s in sources if masks(s) is not None})
        if masked:
            return Deny(
                "pii_escape",
                POLICY_REFUSED,
                f"Sekisho refuses to keep values of {', '.join(masked[:3])} in {where} for "
                f"{permissions.user}: that PII is masked for you, and masks apply only to results "
                "(rule pii_escape)",
                hint="Select the columns you need: masked columns are shown masked.",
            )
    return None


def _column_mask(index: int, output: OutputColumn, masks: MaskOf) -> ColumnMask | None:
    found = [(source, mask) for source in sorted(output.sources) if (mask := masks(source))]
    if not found:
        return None
    first = ".".join(found[0][0])
    kinds = {mask for _, mask in found}
    if output.direct:
        return ColumnMask(index, kinds.pop() if len(kinds) == 1 else FULL, derived=False, source=first)
    return ColumnMask(index, _derived_mask(kinds), derived=True, source=first)


def _derived_mask(kinds: Iterable[Mask]) -> Mask:
    """A value computed from PII is redacted whole, unless every kind involved is one that still
    means something for it: a token (tokenize the derived value) or null."""
    distinct = set(kinds)
    if len(distinct) == 1:
        only = distinct.pop()
        if only.kind in ("token", "null"):
            return only
        return FULL
    return NULL if all(k.kind == "null" for k in distinct) else FULL


def _whole_row(output: OutputColumn, permissions: Permissions) -> Deny:
    tables = ", ".join(sorted({f"{s}.{t}" if s else t for s, t, _ in output.sources}))
    return Deny(
        "pii_whole_row",
        POLICY_REFUSED,
        f'Sekisho refuses whole-row output "{output.name}" of {tables} for {permissions.user}: the row '
        "carries PII that must be masked, which a whole-row value cannot be (rule pii_whole_row)",
        detail="Whole-row references (SELECT c FROM customers c, row_to_json(c), c::text, json_agg(c)) "
        "would carry the PII fields in clear.",
        hint="Name the columns you need: masked columns are then shown masked.",
    )


def _candidates(policy: Policy, relation: QualifiedName) -> list[QualifiedName]:
    if relation in policy.tables:
        return [relation]
    if relation[0] == "":
        return [qn for qn in policy.tables if qn[1] == relation[1]]
    return []
