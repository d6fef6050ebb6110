"""The v3 message codec: a round trip per message type, hand-written wire forms, and hostile bytes.

Every wire message class in ``gateway.wire.messages`` has a hypothesis strategy here; a test fails
if a class is added without one. Decoding is per direction, so each class is checked through the
decoder of the direction(s) that carry it.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation

INT16 = st.integers(-(2**15), 2**15 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
BYTES = st.binary(max_size=40)
NULLABLE = st.none() | BYTES

# Text fields are NUL-terminated on the wire. Decoding uses surrogateescape, so the strings a
# decoder can produce are valid Unicode text *or* arbitrary (NUL-free) bytes decoded that way.
TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20),
    st.binary(max_size=20).map(lambda raw: raw.replace(b"\0", b"").decode("utf-8", "surrogateescape")),
)
NON_EMPTY_TEXT = TEXT.filter(bool)
# Error and notice field codes are one byte, never NUL.
FIELD_CODE = st.integers(1, 255).map(lambda i: bytes([i]).decode("utf-8", "surrogateescape"))
TARGET = st.sampled_from(["S", "P"])


def _tuple(elements: SearchStrategy[Any], max_size: int = 6) -> SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=max_size).map(tuple)


FIELD_DESCRIPTION = st.builds(
    m.FieldDescription,
    name=TEXT,
    table_oid=UINT32,
    column=INT16,
    type_oid=UINT32,
    type_size=INT16,
    type_modifier=INT32,
    format=INT16,
)
FIELDS = _tuple(st.tuples(FIELD_CODE, TEXT))

STRATEGIES: dict[type[Any], SearchStrategy[Any]] = {
    # startup phase
    m.StartupMessage: st.builds(
        m.StartupMessage,
        params=_tuple(st.tuples(NON_EMPTY_TEXT, TEXT)),
        protocol=st.integers(0, 0xFFFF).map(lambda minor: (3 << 16) | minor),
    ),
    m.SSLRequest: st.just(m.SSLRequest()),
    m.GSSENCRequest: st.just(m.GSSENCRequest()),
    m.CancelRequest: st.builds(m.CancelRequest, pid=UINT32, secret=UINT32),
    # frontend
    m.Query: st.builds(m.Query, sql=TEXT),
    m.Parse: st.builds(m.Parse, name=TEXT, sql=TEXT, param_types=_tuple(UINT32)),
    m.Bind: st.builds(
        m.Bind,
        portal=TEXT,
        statement=TEXT,
        param_formats=_tuple(INT16),
        params=_tuple(NULLABLE),
        result_formats=_tuple(INT16),
    ),
    m.Describe: st.builds(m.Describe, kind=TARGET, name=TEXT),
    m.Close: st.builds(m.Close, kind=TARGET, name=TEXT),
    m.Execute: st.builds(m.Execute, portal=TEXT, max_rows=INT32),
    m.FunctionCall: st.builds(
        m.FunctionCall, oid=UINT32, arg_formats=_tuple(INT16), args=_tuple(NULLABLE), result_format=INT16
    ),
    m.CopyFail: st.builds(m.CopyFail, message=TEXT),
    m.AuthPayload: st.builds(m.AuthPayload, data=BYTES),
    m.Sync: st.just(m.Sync()),
    m.Flush: st.just(m.Flush()),
    m.Terminate: st.just(m.Terminate()),
    # both directions
    m.CopyData: st.builds(m.CopyData, data=BYTES),
    m.CopyDone: st.just(m.CopyDone()),
    # backend
    m.Authentication: st.builds(m.Authentication, code=INT32, data=BYTES),
    m.BackendKeyData: st.builds(m.BackendKeyData, pid=UINT32, secret=UINT32),
    m.ParameterStatus: st.builds(m.ParameterStatus, name=TEXT, value=TEXT),
    m.ReadyForQuery: st.builds(m.ReadyForQuery, status=st.sampled_from(["I", "T", "E"])),
    m.ErrorResponse: st.builds(m.ErrorResponse, fields=FIELDS),
    m.NoticeResponse: st.builds(m.NoticeResponse, fields=FIELDS),
    m.RowDescription: st.builds(m.RowDescription, fields=_tuple(FIELD_DESCRIPTION, max_size=4)),
    m.DataRow: st.builds(m.DataRow, values=_tuple(NULLABLE)),
    m.CommandComplete: st.builds(m.CommandComplete, tag=TEXT),
    m.EmptyQueryResponse: st.just(m.EmptyQueryResponse()),
    m.ParseComplete: st.just(m.ParseComplete()),
    m.BindComplete: st.just(m.BindComplete()),
    m.CloseComplete: st.just(m.CloseComplete()),
    m.NoData: st.just(m.NoData()),
    m.PortalSuspended: st.just(m.PortalSuspended()),
    m.ParameterDescription: st.builds(m.ParameterDescription, type_oids=_tuple(UINT32)),
    m.CopyInResponse: st.builds(m.CopyInResponse, format=st.integers(0, 255), column_formats=_tuple(INT16)),
    m.CopyOutResponse: st.builds(m.CopyOutResponse, format=st.integers(0, 255), column_formats=_tuple(INT16)),
    m.CopyBothResponse: st.builds(
        m.CopyBothResponse, format=st.integers(0, 255), column_formats=_tuple(INT16)
    ),
    m.NotificationResponse: st.builds(m.NotificationResponse, pid=UINT32, channel=TEXT, payload=TEXT),
    m.FunctionCallResponse: st.builds(m.FunctionCallResponse, value=NULLABLE),
    m.NegotiateProtocolVersion: st.builds(
        m.NegotiateProtocolVersion, newest_minor=UINT32, unrecognized=_tuple(TEXT)
    ),
}

STARTUP_CLASSES: list[type[Any]] = [m.StartupMessage, m.SSLRequest, m.GSSENCRequest, m.CancelRequest]


def _classes(table: dict[bytes, Any]) -> list[type[Any]]:
    # The dispatch tables hold bound classmethods ``cls.decode``; their __self__ is the class.
    return sorted((decoder.__self__ for decoder in table.values()), key=lambda cls: cls.__name__)


FRONTEND_CLASSES = _classes(m.FRONTEND)
BACKEND_CLASSES = _classes(m.BACKEND)


def _name(cls: type[Any]) -> str:
    return cls.__name__


def _is_wire_message(obj: object) -> bool:
    """A concrete message class: a dataclass with its own non-empty TYPE byte and an encoder."""
    return (
        isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and hasattr(obj, "encode")
        and bool(getattr(obj, "TYPE", b""))
    )


def test_every_message_class_has_a_strategy_and_a_direction() -> None:
    typed = {obj for obj in vars(m).values() if _is_wire_message(obj)}
    assert len(typed) == 36  # 14 frontend + 24 backend, CopyData and CopyDone in both
    assert typed == set(FRONTEND_CLASSES) | set(BACKEND_CLASSES)
    assert typed | set(STARTUP_CLASSES) == set(STRATEGIES)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack("!I", raw[1:5])
    assert length == len(raw) - 1, "length field must count itself and the body, not the type byte"
    return raw[:1], raw[5:]


@pytest.mark.parametrize("cls", FRONTEND_CLASSES, ids=_name)
@settings(max_examples=200)
@given(data=st.data())
def test_frontend_round_trip(cls: type[Any], data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[cls])
    raw = msg.encode()
    kind, body = _split(raw)
    assert kind == cls.TYPE
    decoded = m.decode_frontend(kind, body)
    assert type(decoded) is cls
    assert decoded == msg
    assert decoded.encode() == raw  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", BACKEND_CLASSES, ids=_name)
@settings(max_examples=200)
@given(data=st.data())
def test_backend_round_trip(cls: type[Any], data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[cls])
    raw = msg.encode()
    kind, body = _split(raw)
    assert kind == cls.TYPE
    decoded = m.decode_backend(kind, body)
    assert type(decoded) is cls
    assert decoded == msg
    assert decoded.encode() == raw  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", STARTUP_CLASSES, ids=_name)
@settings(max_examples=200)
@given(data=st.data())
def test_startup_round_trip(cls: type[Any], data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[cls])
    raw = msg.encode()
    assert struct.unpack("!I", raw[:4])[0] == len(raw)
    decoded = m.decode_startup(raw)
    assert type(decoded) is cls
    assert decoded == msg
    assert decoded.encode() == raw


@settings(max_examples=200)
@given(mechanism=TEXT, initial=BYTES)
def test_sasl_initial_response_round_trip(mechanism: str, initial: bytes) -> None:
    payload = m.sasl_initial_response(mechanism, initial)
    assert m.parse_sasl_initial_response(payload.data) == (mechanism, initial)


@settings(max_examples=200)
@given(mechanisms=_tuple(NON_EMPTY_TEXT))
def test_authentication_sasl_mechanisms_round_trip(mechanisms: tuple[str, ...]) -> None:
    auth = m.Authentication.sasl(mechanisms)
    assert auth.code == m.AUTH_SASL
    decoded = m.decode_backend(b"R", auth.encode()[5:])
    assert isinstance(decoded, m.Authentication)
    assert decoded.sasl_mechanisms() == mechanisms


def test_large_parameter_counts_round_trip() -> None:
    # PostgreSQL reads these counts as unsigned 16-bit (pq_getmsgint(msg, 2)) and libpq allows up
    # to 65535 parameters, so counts above 32767 are legal and must not look negative.
    many = 40_000
    bind = m.Bind("", "", (), (None,) * many, ())
    assert bind.encode()[5 + 2 + 2 : 5 + 2 + 4] == b"\x9c\x40"
    assert m.decode_frontend(b"B", bind.encode()[5:]) == bind
    parse = m.Parse("", "select", (23,) * many)
    assert m.decode_frontend(b"P", parse.encode()[5:]) == parse
    description = m.ParameterDescription((25,) * 65_535)
    assert m.decode_backend(b"t", description.encode()[5:]) == description


# --------------------------------------------------------------------------- hand-written wire forms


def test_query_wire_form() -> None:
    raw = b"Q\x00\x00\x00\x0dselect 1\x00"
    assert m.Query("select 1").encode() == raw
    assert m.decode_frontend(b"Q", raw[5:]) == m.Query("select 1")


def test_ready_for_query_wire_form() -> None:
    raw = b"Z\x00\x00\x00\x05I"
    assert m.ReadyForQuery("I").encode() == raw
    assert m.decode_backend(b"Z", b"I") == m.ReadyForQuery("I")
    assert m.decode_backend(b"Z", b"T") == m.ReadyForQuery("T")
    assert m.decode_backend(b"Z", b"E") == m.ReadyForQuery("E")


def test_error_response_wire_form() -> None:
    body = b"SERROR\x00VERROR\x00C42501\x00Mpermission denied for table t\x00\x00"
    raw = b"E" + struct.pack("!I", len(body) + 4) + body
    error = m.ErrorResponse(
        (("S", "ERROR"), ("V", "ERROR"), ("C", "42501"), ("M", "permission denied for table t"))
    )
    assert error.encode() == raw
    decoded = m.decode_backend(b"E", body)
    assert decoded == error
    assert isinstance(decoded, m.ErrorResponse)
    assert decoded.sqlstate == "42501"
    assert decoded.get("M") == "permission denied for table t"
    assert decoded.get("D") is None
    assert m.ErrorResponse(m.error_fields("ERROR", "42501", "permission denied for table t")) == error


def test_startup_packet_wire_forms() -> None:
    startup = b"\x00\x00\x00\x27\x00\x03\x00\x00user\x00alice\x00database\x00customers\x00\x00"
    message = m.StartupMessage((("user", "alice"), ("database", "customers")))
    assert message.encode() == startup
    assert m.decode_startup(startup) == message
    assert m.SSLRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert m.GSSENCRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    cancel = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef"
    assert m.CancelRequest(12345, 0xDEADBEEF).encode() == cancel
    assert m.decode_startup(cancel) == m.CancelRequest(12345, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("message", "raw"),
    [
        (m.Sync(), b"S\x00\x00\x00\x04"),
        (m.Terminate(), b"X\x00\x00\x00\x04"),
        (m.Parse("", "select $1", (23,)), b"P\x00\x00\x00\x15\x00select $1\x00\x00\x01\x00\x00\x00\x17"),
        (
            m.Bind("", "", (0,), (b"42",), (1,)),
            b"B\x00\x00\x00\x16\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0242\x00\x01\x00\x01",
        ),
        (
            m.Bind("", "s1", (), (None,), ()),
            b"B\x00\x00\x00\x12\x00s1\x00\x00\x00\x00\x01\xff\xff\xff\xff\x00\x00",
        ),
        (m.Execute("", 0), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
        (m.Describe("S", "stmt"), b"D\x00\x00\x00\x0aSstmt\x00"),
    ],
    ids=["Sync", "Terminate", "Parse", "Bind", "Bind-null", "Execute", "Describe"],
)
def test_frontend_wire_forms(message: Any, raw: bytes) -> None:
    assert message.encode() == raw
    assert m.decode_frontend(raw[:1], raw[5:]) == message


@pytest.mark.parametrize(
    ("message", "raw"),
    [
        (m.Authentication(m.AUTH_OK), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
        (
            m.Authentication.sasl(("SCRAM-SHA-256",)),
            b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
        ),
        (m.BackendKeyData(1234, 0xDEADBEEF), b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef"),
        (m.ParameterStatus("TimeZone", "UTC"), b"S\x00\x00\x00\x11TimeZone\x00UTC\x00"),
        (m.CommandComplete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
        (m.DataRow((b"1", None)), b"D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x011\xff\xff\xff\xff"),
        (
            m.RowDescription((m.FieldDescription("?column?", 0, 0, 23, 4, -1, 0),)),
            b"T\x00\x00\x00\x21\x00\x01?column?\x00\x00\x00\x00\x00\x00\x00"
            b"\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00",
        ),
        (m.CopyOutResponse(0, (0, 0)), b"H\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00"),
        (
            m.NegotiateProtocolVersion(0, ("_pq_.x",)),
            b"v\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\x00",
        ),
    ],
    ids=[
        "AuthenticationOk",
        "AuthenticationSASL",
        "BackendKeyData",
        "ParameterStatus",
        "CommandComplete",
        "DataRow",
        "RowDescription",
        "CopyOutResponse",
        "NegotiateProtocolVersion",
    ],
)
def test_backend_wire_forms(message: Any, raw: bytes) -> None:
    assert message.encode() == raw
    assert m.decode_backend(raw[:1], raw[5:]) == message


def test_same_type_byte_means_different_messages_per_direction() -> None:
    assert m.decode_frontend(b"D", b"Sstmt\x00") == m.Describe("S", "stmt")
    assert m.decode_backend(b"D", b"\x00\x01\x00\x00\x00\x01x") == m.DataRow((b"x",))
    assert m.decode_frontend(b"S", b"") == m.Sync()
    assert m.decode_backend(b"S", b"a\x00b\x00") == m.ParameterStatus("a", "b")
    assert m.decode_frontend(b"C", b"Pp\x00") == m.Close("P", "p")
    assert m.decode_backend(b"C", b"Pp\x00") == m.CommandComplete("Pp")
    assert m.decode_frontend(b"H", b"") == m.Flush()
    assert m.decode_backend(b"H", b"\x01\x00\x00") == m.CopyOutResponse(1, ())
    # a backend-only type from a client, and the other way round, is a violation
    with pytest.raises(ProtocolViolation, match="invalid frontend message type b'Z'"):
        m.decode_frontend(b"Z", b"I")
    with pytest.raises(ProtocolViolation, match="invalid backend message type b'Q'"):
        m.decode_backend(b"Q", b"select 1\x00")


@pytest.mark.parametrize(
    ("decode", "kind", "body", "why"),
    [
        (m.decode_frontend, b"Q", b"select 1", "unterminated string"),
        (m.decode_frontend, b"Q", b"select 1\x00x", "1 unexpected trailing bytes"),
        (m.decode_frontend, b"S", b"\x00", "unexpected body"),
        (m.decode_frontend, b"D", b"Xname\x00", "invalid Describe target type"),
        (m.decode_frontend, b"E", b"\x00\x00\x00", "truncated int32"),
        (
            m.decode_frontend,
            b"B",
            b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00",
            "negative field length",
        ),
        (m.decode_frontend, b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09ab\x00\x00", "overruns"),
        (m.decode_backend, b"Z", b"X", "status"),
        (m.decode_backend, b"E", b"Cxx\x00", "truncated byte"),
        (m.decode_backend, b"v", b"\x00\x00\x00\x00\xff\xff\xff\xff", "negative count"),
    ],
)
def test_malformed_bodies_are_protocol_violations(decode: Any, kind: bytes, body: bytes, why: str) -> None:
    with pytest.raises(ProtocolViolation, match=why):
        decode(kind, body)


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"\x00\x00", "truncated int32"),
        (b"\x00\x00\x00\x09\x04\xd2\x16\x2f", "length does not match"),
        (b"\x00\x00\x00\x09\x04\xd2\x16\x2f\x00", "1 unexpected trailing bytes"),
        (b"\x00\x00\x00\x0c\x04\xd2\x16\x2e\x00\x00\x00\x01", "truncated int32"),
        (b"\x00\x00\x00\x09\x00\x02\x00\x00\x00", "unsupported frontend protocol 2.0"),
        (b"\x00\x00\x00\x0d\x00\x03\x00\x00user\x00", "unterminated string"),
    ],
)
def test_malformed_startup_packets(packet: bytes, why: str) -> None:
    with pytest.raises(ProtocolViolation, match=why):
        m.decode_startup(packet)


def test_encoders_refuse_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="NUL"):
        m.Query("select\x001").encode()
    with pytest.raises(ValueError, match="invalid error field code"):
        m.ErrorResponse((("CC", "x"),)).encode()
    with pytest.raises(ValueError, match="invalid error field code"):
        m.ErrorResponse((("\0", "x"),)).encode()


# --------------------------------------------------------------------------- hostile bytes

FRONTEND_KIND = st.sampled_from(sorted(m.FRONTEND)) | st.binary(min_size=1, max_size=1)
BACKEND_KIND = st.sampled_from(sorted(m.BACKEND)) | st.binary(min_size=1, max_size=1)
# Random bodies mostly fail at the first field; small integers and NULs reach deeper.
BODY = st.binary(max_size=64) | st.lists(
    st.sampled_from([b"\x00", b"\x00\x00\x00\x01", b"\xff\xff", b"a", b"S"]), max_size=16
).map(b"".join)


def _check_decoded(decoded: Any, kind: bytes, body: bytes) -> None:
    # Whatever a decoder accepts is canonical: encoding it gives back exactly the bytes it came from.
    assert kind == decoded.TYPE
    assert decoded.encode() == kind + struct.pack("!I", len(body) + 4) + body


@settings(max_examples=500)
@given(kind=FRONTEND_KIND, body=BODY)
def test_frontend_decoder_raises_only_protocol_violation(kind: bytes, body: bytes) -> None:
    try:
        decoded = m.decode_frontend(kind, body)
    except ProtocolViolation:
        return
    _check_decoded(decoded, kind, body)


@settings(max_examples=500)
@given(kind=BACKEND_KIND, body=BODY)
def test_backend_decoder_raises_only_protocol_violation(kind: bytes, body: bytes) -> None:
    try:
        decoded = m.decode_backend(kind, body)
    except ProtocolViolation:
        return
    _check_decoded(decoded, kind, body)


@st.composite
def _mutated(draw: st.DrawFn, classes: list[type[Any]]) -> tuple[bytes, bytes]:
    """A valid message body, then truncated, extended or with some bytes overwritten."""
    cls = draw(st.sampled_from(classes))
    body = bytearray(draw(STRATEGIES[cls]).encode()[5:])
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["truncate", "extend", "overwrite"]))
        if how == "truncate":
            del body[draw(st.integers(0, len(body))) :]
        elif how == "extend":
            body += draw(st.binary(min_size=1, max_size=8))
        elif body:
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return cls.TYPE, bytes(body)


@settings(max_examples=500)
@given(sample=_mutated(FRONTEND_CLASSES))
def test_mutated_frontend_messages_raise_only_protocol_violation(sample: tuple[bytes, bytes]) -> None:
    kind, body = sample
    try:
        decoded = m.decode_frontend(kind, body)
    except ProtocolViolation:
        return
    _check_decoded(decoded, kind, body)


@settings(max_examples=500)
@given(sample=_mutated(BACKEND_CLASSES))
def test_mutated_backend_messages_raise_only_protocol_violation(sample: tuple[bytes, bytes]) -> None:
    kind, body = sample
    try:
        decoded = m.decode_backend(kind, body)
    except ProtocolViolation:
        return
    _check_decoded(decoded, kind, body)


STARTUP_CODE = st.sampled_from(
    [m.PROTOCOL_V3, m.SSL_REQUEST_CODE, m.GSSENC_REQUEST_CODE, m.CANCEL_REQUEST_CODE, 0x00030001, 0x00020000]
).map(lambda code: struct.pack("!I", code))


@settings(max_examples=500)
@given(
    packet=st.one_of(
        st.binary(max_size=40),
        st.tuples(STARTUP_CODE, BODY).map(lambda t: struct.pack("!I", 8 + len(t[1])) + t[0] + t[1]),
    )
)
def test_startup_decoder_raises_only_protocol_violation(packet: bytes) -> None:
    try:
        decoded = m.decode_startup(packet)
    except ProtocolViolation:
        return
    assert decoded.encode() == packet


@settings(max_examples=300)
@given(payload=BODY)
def test_sasl_helpers_raise_only_protocol_violation(payload: bytes) -> None:
    try:
        mechanism, initial = m.parse_sasl_initial_response(payload)
        assert isinstance(mechanism, str)
        assert isinstance(initial, bytes)
    except ProtocolViolation:
        pass
    try:
        names = m.Authentication(m.AUTH_SASL, payload).sasl_mechanisms()
        assert all(names)
    except ProtocolViolation:
        pass


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_bind_target_agrees_with_the_full_decoder(body: bytes) -> None:
    """The relay's fast Bind reader accepts exactly what Bind.decode accepts, with the same names."""
    try:
        full = m.Bind.decode(body)
    except ProtocolViolation:
        with pytest.raises(ProtocolViolation):
            m.bind_target(body)
        return
    assert m.bind_target(body) == (full.portal, full.statement)


@given(STRATEGIES[m.Bind])
def test_bind_target_reads_every_valid_bind(bind: m.Bind) -> None:
    assert m.bind_target(bind.encode()[5:]) == (bind.portal, bind.statement)
