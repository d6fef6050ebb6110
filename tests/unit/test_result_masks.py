"""Masking in the result stream, over bytes: RowDescription, DataRow, COPY lines, errors."""

from __future__ import annotations

import pytest

from gateway.result_masks import (
    TEXT_OID,
    Maskers,
    StreamMask,
    redact_fields,
    redact_text,
    split_csv,
    split_text,
    unescape_text,
)
from gateway.wire import messages as m
from gateway.wire.framing import Frame
from policy.masking import ColumnMask, CopyFormat, ResultMask, copy_format
from policy.model import Mask


def _readable(column: ColumnMask) -> object:
    return lambda v: None if v is None else b"<" + column.mask.kind.encode() + b">"


def _opaque(column: ColumnMask) -> object:
    return lambda v: None if v is None else b"<opaque>"


MASKERS = Maskers(_readable, _opaque)  # type: ignore[arg-type]
PLAN = ResultMask(3, (ColumnMask(1, Mask("phone"), derived=False, source="public.customers.phone"),))


def frame(raw: bytes) -> Frame:
    return Frame(raw[:1], raw)


def values(raw: bytes) -> tuple[bytes | None, ...]:
    return m.DataRow.decode(raw[5:]).values


def test_masked_columns_are_announced_as_text_and_their_values_masked() -> None:
    stream = StreamMask(PLAN, MASKERS)
    fields = (
        m.FieldDescription("id", 16400, 1, 23, 4, -1, 0),
        m.FieldDescription("phone", 16400, 4, 1043, -1, 24, 0),
        m.FieldDescription("name", 16400, 2, 25, -1, -1, 0),
    )
    described = m.RowDescription.decode(stream.row_description(m.RowDescription(fields).encode()[5:])[5:])
    assert described.fields[0] == fields[0]
    assert described.fields[2] == fields[2]
    masked = described.fields[1]
    assert (masked.name, masked.type_oid, masked.table_oid, masked.column) == ("phone", TEXT_OID, 0, 0)
    row = m.DataRow((b"5", b"090-1234-5678", b"Sato")).encode()
    assert values(stream.rows(frame(row))) == (b"5", b"<phone>", b"Sato")
    assert values(stream.rows(frame(m.DataRow((b"6", None, b"Ito")).encode()))) == (b"6", None, b"Ito")
    assert not stream.mismatch


def test_binary_values_of_non_text_types_are_opaque() -> None:
    stream = StreamMask(PLAN, MASKERS, formats=(1,))
    fields = tuple(m.FieldDescription(n, type_oid=t, format=1) for n, t in (("a", 23), ("b", 20), ("c", 25)))
    stream.row_description(m.RowDescription(fields).encode()[5:])
    row = m.DataRow((b"\0\0\0\1", b"\0" * 8, b"x")).encode()
    assert values(stream.rows(frame(row)))[1] == b"<opaque>"
    text_typed = StreamMask(PLAN, MASKERS, formats=(1,))
    fields = tuple(
        m.FieldDescription(n, type_oid=t, format=1) for n, t in (("a", 23), ("b", 1043), ("c", 25))
    )
    text_typed.row_description(m.RowDescription(fields).encode()[5:])
    assert values(text_typed.rows(frame(row)))[1] == b"<phone>"


def test_a_result_of_another_width_than_expected_is_redacted_whole() -> None:
    stream = StreamMask(PLAN, MASKERS)
    fields = tuple(m.FieldDescription(n) for n in ("a", "b"))
    described = m.RowDescription.decode(stream.row_description(m.RowDescription(fields).encode()[5:])[5:])
    assert stream.mismatch
    assert all(f.type_oid == TEXT_OID for f in described.fields)
    assert values(stream.rows(frame(m.DataRow((b"1", b"2")).encode()))) == (b"<full>", b"<full>")


@pytest.mark.parametrize(
    ("options", "line", "expected"),
    [
        ((), "5\t090-1234-5678\tSato\n", "5\t<phone>\tSato\n"),
        ((), "5\t\\N\tSato\n", "5\t\\N\tSato\n"),
        ((), "5\ta\\tb\\\\c\tSato\n", "5\t<phone>\tSato\n"),
        ((("delimiter", "|"),), "5|a\\|b|Sato\n", "5|<phone>|Sato\n"),
        ((("format", "csv"),), '5,"090,1234",Sato\n', '5,"<phone>",Sato\n'),
        ((("format", "csv"),), '5,,"x"\n', '5,,"x"\n'),  # unquoted empty: NULL stays NULL
        ((("format", "csv"),), '5,"a""b",Sato\n', '5,"<phone>",Sato\n'),
    ],
)
def test_copy_lines_are_masked_field_by_field(
    options: tuple[tuple[str, str], ...], line: str, expected: str
) -> None:
    copy = copy_format(options)
    assert isinstance(copy, CopyFormat)
    stream = StreamMask(ResultMask(3, PLAN.columns, copy), MASKERS)
    response = m.CopyOutResponse(0, (0, 0, 0)).encode()
    assert stream.describe(frame(response)) == response
    out = stream.rows(frame(m.CopyData(line.encode()).encode()))
    assert m.CopyData.decode(out[5:]).data.decode() == expected


def test_a_copy_header_passes_and_binary_copy_sends_nothing() -> None:
    copy = copy_format((("format", "csv"), ("header", "true")))
    assert isinstance(copy, CopyFormat)
    stream = StreamMask(ResultMask(3, PLAN.columns, copy), MASKERS)
    stream.describe(frame(m.CopyOutResponse(0, (0, 0, 0)).encode()))
    header = m.CopyData(b"id,phone,name\n").encode()
    assert stream.rows(frame(header)) == header
    binary = StreamMask(ResultMask(3, PLAN.columns, copy), MASKERS)
    binary.describe(frame(m.CopyOutResponse(1, (1, 1, 1)).encode()))
    assert binary.rows(frame(m.CopyData(b"PGCOPY\n\xff\r\n\0").encode())) == b""


@pytest.mark.parametrize(
    ("options", "header"),
    [
        ((("format", "csv"), ("header", None)), True),  # a bare HEADER
        ((("format", "csv"), ("header", "ON")), True),
        ((("format", "csv"), ("header", "1")), True),
        ((("format", "csv"), ("header", "false")), False),
        ((("format", "csv"), ("header", "0")), False),
        ((("format", "csv"),), False),
    ],
)
def test_copy_header_options_read_as_postgresql_reads_them(
    options: tuple[tuple[str, str | None], ...], header: bool
) -> None:
    copy = copy_format(options)
    assert isinstance(copy, CopyFormat)
    assert copy.header is header


def test_copy_formats_sekisho_cannot_mask_are_named() -> None:
    assert copy_format((("format", "binary"),)) == "binary COPY data cannot be masked"
    assert "encoding" in str(copy_format((("encoding", "LATIN1"),)))
    assert copy_format((("format", "csv"), ("delimiter", ";"))) == CopyFormat(
        csv=True, delimiter=";", null=""
    )


def test_copy_text_parsing() -> None:
    text = CopyFormat()
    assert split_text("a\\tb\tc\\\\\td", text) == ["a\\tb", "c\\\\", "d"]
    assert unescape_text("a\\tb\\\\c\\nd\\x41\\101") == "a\tb\\c\ndAA"
    assert split_csv('"a,b",c,"d""e"', CopyFormat(csv=True, delimiter=",")) == ['"a,b"', "c", '"d""e"']


def test_error_texts_lose_quoted_values_and_details() -> None:
    fields = (
        ("S", "ERROR"),
        ("C", "22P02"),
        ("M", 'invalid input syntax for type integer: "090-1234-5678"'),
        ("D", "Key (phone)=(090-1234-5678) already exists."),
        ("W", "SQL function ... 09012345678"),
        ("t", "customers"),
    )
    redacted = dict(redact_fields(fields))
    assert "090" not in "".join(redacted.values())
    assert redacted["C"] == "22P02"
    assert redacted["M"].startswith("invalid input syntax for type integer: ")
    assert redacted["t"] == "customers"
    assert "W" not in redacted
    assert "withheld" in redacted["D"]
    assert "1234" not in dict(redact_fields((("M", "value 12345678 out of range"),)))["M"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'invalid input syntax for type integer: "090-1234-5678"',
            "invalid input syntax for type integer: …",
        ),
        # PostgreSQL does not escape quotes inside a quoted value: the redaction spans all of them.
        ('relation "x" kobayashi "" does not exist', 'relation "…" does not exist'),
        # Values printed unquoted, in hex or as code points: every word with a digit goes.
        (
            'character with byte sequence 0xe5 0xb0 0x8f in encoding "UTF8" has no equivalent',
            'character with byte sequence # # # in encoding "…" has no equivalent',
        ),
        ("invalid byte sequence for encoding UTF8: 0xc3 0x6b", "invalid byte sequence for encoding #: …"),
        ("invalid Unicode code point: FF0A3A", "invalid Unicode code point: …"),
        ("unrecognized weight: 51", "unrecognized weight: …"),
        ("requested character too large for encoding 4123", "requested character too large for encoding #"),
        ("column 小林 does not exist", "column … does not exist"),
        ("division by zero", "division by zero"),
    ],
)
def test_error_messages_keep_no_value_in_any_form(message: str, expected: str) -> None:
    assert redact_text(message) == expected
