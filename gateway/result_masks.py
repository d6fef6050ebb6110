"""Masking in the result stream: RowDescription, DataRow, ErrorResponse and NoticeResponse bodies.

Plain functions and one small class over bytes, testable without sockets. The relay creates a
``StreamMask`` only for results that have masked columns, so results without any pay nothing per
row. A masked column is announced to the client as ``text`` (its masked form is text whatever the
column's type), and its values are masked from their text form. Values in binary format are only
readable when the column's type is one whose binary form is its text (text, varchar, char, name,
json...); any other binary value is opaque to Sekisho and is redacted whole (a token of its bytes,
or NULL, when the mask kind is one of those).

``KeyReader`` reads the row key of a protected table's rows (``policy.masking.KeyColumns``) from
the DataRows the client is sent, for the coverage alarm. The relay creates one only for results
that carry such a key, so results of unprotected tables still pay nothing per row.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from gateway.wire import messages as m
from gateway.wire.framing import Frame
from policy.masking import FULL as _FULL
from policy.masking import ColumnMask, CopyFormat, KeyColumns, ResultMask
from policy.masks import masker, redact_derived

Masker = Callable[[bytes | None], bytes | None]


@dataclass(frozen=True, slots=True)
class Maskers:
    """How a column's values are masked: ``readable`` for values whose text Sekisho can read,
    ``opaque`` for binary values of types whose binary form is not text."""

    readable: Callable[[ColumnMask], Masker]
    opaque: Callable[[ColumnMask], Masker]


def maskers_for(key: bytes) -> Maskers:
    """The maskers of a gateway, with its token key; one masker per distinct column mask."""

    @functools.lru_cache(maxsize=4096)
    def readable(column: ColumnMask) -> Masker:
        return redact_derived(column.mask, key) if column.derived else masker(column.mask, key)

    @functools.lru_cache(maxsize=4096)
    def opaque(column: ColumnMask) -> Masker:
        return redact_derived(column.mask, key)

    return Maskers(readable, opaque)


TEXT_OID = 25
# Types whose binary send format is the text itself (UTF-8 in a UTF8 database).
_TEXT_BINARY = frozenset(
    {25, 1043, 1042, 19, 705, 114, 142, 18}
)  # text varchar bpchar name unknown json xml char
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")


class StreamMask:
    """Masks one row source (a simple-query statement, a portal) across its RowDescription and
    DataRows. ``formats`` are the result format codes the client asked for in Bind."""

    __slots__ = ("_columns", "_formats", "_header", "_maskers", "_plan", "_types", "_width", "mismatch")

    def __init__(
        self,
        plan: ResultMask,
        maskers: Maskers,
        formats: tuple[int, ...] = (),
        types: dict[int, int] | None = None,
    ) -> None:
        self._plan = plan
        self._maskers = maskers
        self._formats = formats
        # Column -> type OID, from a RowDescription of this result or of its prepared statement.
        self._types: dict[int, int] = types or {}
        self._width = plan.width
        self.mismatch = False  # the result's width differed from the analysis: everything redacted
        self._columns = self._build(plan.columns)
        self._header = plan.copy is not None and plan.copy.header  # a COPY header line passes as is

    def _format(self, index: int) -> int:
        formats = self._formats
        if not formats:
            return 0
        if len(formats) == 1:
            return formats[0]
        return formats[index] if index < len(formats) else 0

    def _build(self, columns: tuple[ColumnMask, ...]) -> tuple[tuple[int, Masker], ...]:
        out = []
        for column in columns:
            binary = self._format(column.index) == 1
            readable = not binary or self._types.get(column.index) in _TEXT_BINARY
            make = self._maskers.readable if readable else self._maskers.opaque
            out.append((column.index, make(column)))
        return tuple(out)

    def row_description(self, body: bytes) -> bytes:
        """The RowDescription frame the client gets: masked columns become text."""
        description = m.RowDescription.decode(body)
        fields = description.fields
        columns = self._plan.columns
        if len(fields) != self._width:
            # Analysis expected another shape: fail closed, every column is redacted whole.
            self.mismatch = True
            self._width = len(fields)
            columns = tuple(ColumnMask(i, _FULL, derived=True, source="?") for i in range(len(fields)))
        self._types = {i: f.type_oid for i, f in enumerate(fields)}
        if any(f.format == 1 for f in fields):
            self._formats = tuple(f.format for f in fields)
        self._columns = self._build(columns)
        masked = {index for index, _ in self._columns}
        out = tuple(
            m.FieldDescription(f.name, 0, 0, TEXT_OID, -1, -1, f.format) if i in masked else f
            for i, f in enumerate(fields)
        )
        return m.RowDescription(out).encode()

    @property
    def types(self) -> dict[int, int]:
        return self._types

    def describe(self, frame: Frame) -> bytes:
        """A RowDescription or CopyOutResponse, as the client gets it."""
        if frame.type == b"T":
            return self.row_description(frame.body)
        return self.copy_response(frame)

    def rows(self, frame: Frame) -> bytes:
        """A DataRow or CopyData, as the client gets it."""
        if frame.type == b"D":
            return self.data_row(frame.body)
        return self.copy_data(frame)

    def copy_response(self, frame: Frame) -> bytes:
        """CopyOutResponse: rows come as text or CSV lines, masked in ``copy_data``."""
        if self._plan.copy is None or frame.body[:1] != b"\x00":
            self.mismatch = True  # binary COPY, or COPY the plan did not expect: no data goes out
        return frame.raw

    def copy_data(self, frame: Frame) -> bytes:
        """One COPY line with its masked fields rewritten (nothing at all when it cannot be read)."""
        copy = self._plan.copy
        if self.mismatch or copy is None:
            return b""
        if self._header:
            self._header = False
            return frame.raw
        try:
            line = frame.body.decode("utf-8")
        except UnicodeDecodeError:
            self.mismatch = True
            return b""
        end = "\n" if line.endswith("\n") else ""
        body = line[: len(line) - len(end)]
        fields = split_csv(body, copy) if copy.csv else split_text(body, copy)
        if len(fields) != self._width:
            self.mismatch = True
            return b""
        for index, mask_value in self._columns:
            raw = fields[index]
            if copy.csv:
                value = None if raw == copy.null else unquote_csv(raw, copy)
                masked = mask_value(None if value is None else value.encode())
                fields[index] = (
                    copy.null if masked is None else quote_csv(masked.decode(errors="replace"), copy)
                )
            else:
                value = None if raw == copy.null else unescape_text(raw)
                masked = mask_value(None if value is None else value.encode())
                fields[index] = (
                    copy.null if masked is None else escape_text(masked.decode(errors="replace"), copy)
                )
        return m.CopyData((copy.delimiter.join(fields) + end).encode()).encode()

    def data_row(self, body: bytes) -> bytes:
        """The DataRow frame the client gets, with masked values."""
        values = _values(body)
        if len(values) != self._width:
            self.mismatch = True
            full = self._maskers.opaque(ColumnMask(0, _FULL, derived=True, source="?"))
            values = [full(v) for v in values]
        else:
            for index, masker in self._columns:
                values[index] = masker(values[index])
        return m.DataRow(tuple(values)).encode()


def _values(body: bytes) -> list[bytes | None]:
    """The values of a DataRow body (the relay only sees well-framed messages from the server)."""
    return _read_values(body, 2, _U16.unpack_from(body)[0])


def _read_values(data: bytes, pos: int, count: int) -> list[bytes | None]:
    """``count`` length-prefixed values of a DataRow, the first at ``pos`` (NULL: length -1)."""
    out: list[bytes | None] = []
    for _ in range(count):
        length = _I32.unpack_from(data, pos)[0]
        pos += 4
        if length < 0:
            out.append(None)
        else:
            out.append(data[pos : pos + length])
            pos += length
    return out


# ---------------------------------------------------------------------- row keys, for coverage

KEYS_PER_STATEMENT = 5000  # row keys one event carries; a capped result sends fewer rows anyway
_KEY_SEPARATOR = "\x1f"  # between the columns of a composite key (a control character, not in keys)
_INT_BINARY = frozenset({20, 21, 23, 26})  # int8 int2 int4 oid: big-endian integers
_UUID_OID = 2950


def _key_text(value: bytes, binary: bool, type_oid: int) -> str | None:
    """A key column's value as the text PostgreSQL prints for it, whatever the format it came in
    (so that a row read in text and in binary counts once); None when Sekisho cannot read it."""
    if not binary:
        return value.decode("utf-8", "replace")
    if type_oid in _INT_BINARY:
        return str(int.from_bytes(value, "big", signed=type_oid != 26))
    if type_oid == _UUID_OID and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    if type_oid in _TEXT_BINARY:
        return value.decode("utf-8", "replace")
    return None  # numeric, dates...: binary forms Sekisho does not decode; the row is not counted


class KeyReader:
    """Reads one result's row keys (``KeyColumns``) from its DataRows: the key's text, its columns
    joined by U+001F, or a digest of that when a key column is PII (events then never hold the
    value). ``formats`` are the result format codes of Bind; a RowDescription, when one comes,
    says them again and must agree with the plan's column types, or no key is read (fail quiet:
    a wrong key would count rows nobody saw)."""

    __slots__ = ("_binary", "_digest", "_fast", "_indexes", "_last", "_types", "table")

    def __init__(self, plan: KeyColumns, formats: tuple[int, ...] = ()) -> None:
        self.table = plan.table
        self._indexes = plan.indexes
        self._types = plan.types
        self._digest = plan.digest
        self._last = max(plan.indexes) if plan.indexes else -1
        self._binary = tuple(_format_of(formats, i) == 1 for i in plan.indexes)
        self._fast = self._indexes == (0,) and not self._binary[0]

    def describe(self, body: bytes) -> None:
        """A RowDescription of the result: formats from it, and a check that the key is there."""
        fields = m.RowDescription.decode(body).fields
        if self._last >= len(fields) or any(
            fields[i].type_oid != t for i, t in zip(self._indexes, self._types, strict=True)
        ):
            self._indexes, self._binary, self._last, self._fast = (), (), -1, False
            return
        self._binary = tuple(fields[i].format == 1 for i in self._indexes)
        self._fast = self._indexes == (0,) and not self._binary[0]

    def key(self, data: bytes, offset: int = 0) -> str | None:
        """The row key of the DataRow body at ``offset`` of ``data`` (5 for a whole frame, which
        spares a copy); None for a row without one (NULL, unreadable)."""
        if self._fast and len(data) >= offset + 6:  # the common ``SELECT id, ...``: the first value, as text
            length = _I32.unpack_from(data, offset + 2)[0]
            if length < 0:
                return None
            start = offset + 6
            text = data[start : start + length].decode("utf-8", "replace")
            return _digest(text) if self._digest else text
        if self._last < 0:
            return None
        values = _values_upto(data, offset, self._last)
        if values is None:
            return None
        parts: list[str] = []
        for index, binary, type_oid in zip(self._indexes, self._binary, self._types, strict=True):
            value = values[index]
            part = None if value is None else _key_text(value, binary, type_oid)
            if part is None:
                return None
            parts.append(part)
        text = parts[0] if len(parts) == 1 else _KEY_SEPARATOR.join(parts)
        return _digest(text) if self._digest else text


def _format_of(formats: tuple[int, ...], index: int) -> int:
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    return formats[index] if index < len(formats) else 0


def _digest(text: str) -> str:
    return "#" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def _values_upto(data: bytes, offset: int, last: int) -> list[bytes | None] | None:
    """The first ``last + 1`` values of the DataRow body at ``offset``; None if it has fewer."""
    count = _U16.unpack_from(data, offset)[0]
    if last >= count:
        return None
    return _read_values(data, offset + 2, last + 1)


# ---------------------------------------------------------------------- errors and notices

_KEEP = frozenset("SVCMPsctdnFLR")  # severity, code, position, identifiers, source location
# From the first quote to the last: PostgreSQL does not escape quotes inside the values it quotes,
# so a value with a quote of its own (``relation "x" kobayashi "" does not exist``) must not end
# the redaction early.
_DOUBLE_QUOTED = re.compile(r'"[\s\S]*"')
_SINGLE_QUOTED = re.compile(r"'[\s\S]*'")
# Any word with a digit: numbers, and values PostgreSQL prints unquoted in hex (``invalid byte
# sequence for encoding "UTF8": 0xe5 0xb0``, ``invalid Unicode code point: FF0A3A``).
_NUMBERISH = re.compile(r"[\w.+\-]*\d[\w.+\-]*")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")  # PostgreSQL's own (English) words are ASCII: these are values
_WITHHELD = "Sekisho withheld this detail: the statement read PII that is masked for you"


def redact_fields(fields: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The fields of an ErrorResponse or NoticeResponse with nothing that could quote a value.

    The message keeps the words before its first colon (PostgreSQL puts the offending value after
    one), without quoted text, words with digits or non-ASCII text; DETAIL, HINT, CONTEXT and the
    internal query are replaced or dropped, since they quote rows (``Failing row contains (...)``,
    ``Key (phone)=(...)``)."""
    out = [(code, redact_text(value) if code == "M" else value) for code, value in fields if code in _KEEP]
    out.append(("D", _WITHHELD))
    return tuple(out)


def redact_text(text: str) -> str:
    """A message without anything that could be a value: ``invalid input syntax for type integer:
    "090-1234-5678"`` becomes ``invalid input syntax for type integer: …``."""
    text = _SINGLE_QUOTED.sub("'…'", _DOUBLE_QUOTED.sub('"…"', text))
    head, colon, _ = text.partition(":")
    head = _NON_ASCII.sub("…", _NUMBERISH.sub("#", head))
    return f"{head}: …" if colon else head


def redact_error(body: bytes) -> bytes:
    return m.ErrorResponse(redact_fields(m.ErrorResponse.decode(body).fields)).encode()


def redact_notice(body: bytes) -> bytes:
    return m.NoticeResponse(redact_fields(m.NoticeResponse.decode(body).fields)).encode()


# ---------------------------------------------------------------------- COPY text and CSV lines

_TEXT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TEXT_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)


def split_text(line: str, copy: CopyFormat) -> list[str]:
    """The raw fields of a text-format COPY line (a backslash escapes the next character)."""
    fields: list[str] = []
    start = 0
    i = 0
    n = len(line)
    delimiter = copy.delimiter
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == delimiter:
            fields.append(line[start:i])
            start = i + 1
        i += 1
    fields.append(line[start:])
    return fields


def unescape_text(raw: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8) & 0xFF)
        return _TEXT_ESCAPES.get(code, code)

    return _TEXT_ESCAPE.sub(one, raw)


def escape_text(value: str, copy: CopyFormat) -> str:
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if copy.delimiter not in "\t\n\r\\":
        out = out.replace(copy.delimiter, "\\" + copy.delimiter)
    return out


def split_csv(line: str, copy: CopyFormat) -> list[str]:
    """The raw fields of a CSV COPY line, quotes kept (an unquoted empty field is NULL)."""
    fields: list[str] = []
    start = 0
    i = 0
    n = len(line)
    quoted = False
    while i < n:
        ch = line[i]
        if quoted:
            if ch == copy.escape and i + 1 < n and line[i + 1] == copy.quote:
                i += 2
                continue
            if ch == copy.quote:
                quoted = False
        elif ch == copy.quote:
            quoted = True
        elif ch == copy.delimiter:
            fields.append(line[start:i])
            start = i + 1
        i += 1
    fields.append(line[start:])
    return fields


def unquote_csv(raw: str, copy: CopyFormat) -> str:
    if len(raw) >= 2 and raw[0] == copy.quote and raw[-1] == copy.quote:
        return raw[1:-1].replace(copy.escape + copy.quote, copy.quote)
    return raw


def quote_csv(value: str, copy: CopyFormat) -> str:
    escaped = value.replace(copy.escape, copy.escape + copy.escape) if copy.escape != copy.quote else value
    return copy.quote + escaped.replace(copy.quote, copy.escape + copy.quote) + copy.quote
