"""PostgreSQL v3 messages: one frozen type per message with a symmetric codec, no I/O.

``encode()`` returns the whole wire form (type byte and length included); ``decode_frontend`` and
``decode_backend`` turn a frame's type and body back into a message. The same type byte means
different messages in each direction (``D`` is Describe from a client and DataRow from a server),
so decoding is always per direction. Text fields are decoded as UTF-8 with ``surrogateescape`` so
that any byte string survives a round trip; deciding what a statement *means* is policy's job, which
insists on valid UTF-8 there.

Startup-phase packets (no type byte) are decoded by ``decode_startup``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from gateway.wire.errors import ProtocolViolation

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")

PROTOCOL_V3 = 196608  # 3.0
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _cstr(text: str) -> bytes:
    raw = _b(text)
    if b"\0" in raw:
        raise ValueError("protocol strings cannot contain NUL")
    return raw + b"\0"


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + _U32.pack(len(body) + 4) + body


class _Cursor:
    """Reads fields from a message body; any overrun is a protocol violation."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _fail(self, why: str) -> ProtocolViolation:
        return ProtocolViolation(f"malformed {self._what} message: {why}")

    def int16(self) -> int:
        if self._pos + 2 > len(self._data):
            raise self._fail("truncated int16")
        (value,) = _I16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def uint16(self) -> int:
        if self._pos + 2 > len(self._data):
            raise self._fail("truncated int16")
        (value,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def int32(self) -> int:
        if self._pos + 4 > len(self._data):
            raise self._fail("truncated int32")
        (value,) = _I32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(value)

    def byte(self) -> bytes:
        if self._pos + 1 > len(self._data):
            raise self._fail("truncated byte")
        value = self._data[self._pos : self._pos + 1]
        self._pos += 1
        return value

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise self._fail(f"field of {n} bytes overruns the message")
        value = self._data[self._pos : self._pos + n]
        self._pos += n
        return value

    def cstring(self) -> str:
        end = self._data.find(b"\0", self._pos)
        if end < 0:
            raise self._fail("unterminated string")
        value = self._data[self._pos : end]
        self._pos = end + 1
        return _s(value)

    def nullable(self) -> bytes | None:
        length = self.int32()
        if length == -1:
            return None
        if length < -1:
            raise self._fail(f"negative field length {length}")
        return self.take(length)

    def count(self) -> int:
        # Int16 in the protocol docs, but PostgreSQL reads counts unsigned (pq_getmsgint(msg, 2))
        # and libpq sends up to 65535 parameters.
        return self.uint16()

    def rest(self) -> bytes:
        value = self._data[self._pos :]
        self._pos = len(self._data)
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self._fail(f"{len(self._data) - self._pos} unexpected trailing bytes")


def _nullable(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else _I32.pack(len(value)) + value


def _int16s(values: tuple[int, ...]) -> bytes:
    return _U16.pack(len(values)) + b"".join(_I16.pack(v) for v in values)


# --------------------------------------------------------------------------- startup phase


@dataclass(frozen=True, slots=True)
class StartupMessage:
    params: tuple[tuple[str, str], ...]
    protocol: int = PROTOCOL_V3

    def encode(self) -> bytes:
        body = _U32.pack(self.protocol)
        body += b"".join(_cstr(k) + _cstr(v) for k, v in self.params) + b"\0"
        return _U32.pack(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _U32.pack(8) + _U32.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _U32.pack(8) + _U32.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int

    def encode(self) -> bytes:
        return _U32.pack(16) + _U32.pack(CANCEL_REQUEST_CODE) + _U32.pack(self.pid) + _U32.pack(self.secret)


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(packet: bytes) -> StartupPacket:
    """Decode a whole startup-phase packet, length prefix included."""
    cur = _Cursor(packet, "startup")
    length = cur.int32()
    if length != len(packet):
        raise ProtocolViolation("startup packet length does not match its size")
    code = cur.int32() & 0xFFFFFFFF
    if code == SSL_REQUEST_CODE:
        cur.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        cur.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = cur.int32() & 0xFFFFFFFF
        secret = cur.int32() & 0xFFFFFFFF
        cur.end()
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0 to 3.0"
        )
    params: list[tuple[str, str]] = []
    while True:
        key = cur.cstring()
        if key == "":
            break
        params.append((key, cur.cstring()))
    cur.end()
    return StartupMessage(tuple(params), code)


# --------------------------------------------------------------------------- frontend


@dataclass(frozen=True, slots=True)
class Query:
    TYPE: ClassVar[bytes] = b"Q"
    sql: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.sql))

    @classmethod
    def decode(cls, body: bytes) -> Query:
        cur = _Cursor(body, "Query")
        sql = cur.cstring()
        cur.end()
        return cls(sql)


@dataclass(frozen=True, slots=True)
class Parse:
    TYPE: ClassVar[bytes] = b"P"
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        types = _U16.pack(len(self.param_types)) + b"".join(
            _U32.pack(t & 0xFFFFFFFF) for t in self.param_types
        )
        return _frame(self.TYPE, _cstr(self.name) + _cstr(self.sql) + types)

    @classmethod
    def decode(cls, body: bytes) -> Parse:
        cur = _Cursor(body, "Parse")
        name, sql = cur.cstring(), cur.cstring()
        types = tuple(cur.int32() & 0xFFFFFFFF for _ in range(cur.count()))
        cur.end()
        return cls(name, sql, types)


@dataclass(frozen=True, slots=True)
class Bind:
    TYPE: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = _cstr(self.portal) + _cstr(self.statement) + _int16s(self.param_formats)
        body += _U16.pack(len(self.params)) + b"".join(_nullable(p) for p in self.params)
        body += _int16s(self.result_formats)
        return _frame(self.TYPE, body)

    @classmethod
    def decode(cls, body: bytes) -> Bind:
        cur = _Cursor(body, "Bind")
        portal, statement = cur.cstring(), cur.cstring()
        param_formats = tuple(cur.int16() for _ in range(cur.count()))
        params = tuple(cur.nullable() for _ in range(cur.count()))
        result_formats = tuple(cur.int16() for _ in range(cur.count()))
        cur.end()
        return cls(portal, statement, param_formats, params, result_formats)


def bind_target(body: bytes) -> tuple[str, str]:
    """The (portal, statement) of a Bind body, checking the whole structure as ``Bind.decode``
    does but building no parameter tuples: the relay's hot path needs only the names."""
    end = len(body)
    first = body.find(b"\0")
    second = body.find(b"\0", first + 1) if first >= 0 else -1
    if second < 0:
        raise ProtocolViolation("malformed Bind message: unterminated string")
    pos = second + 1
    # A field cut short reads as a smaller number, and the walk then misses the end: caught below.
    pos += 2 + 2 * int.from_bytes(body[pos : pos + 2], "big")
    params = int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    for _ in range(params):
        length = int.from_bytes(body[pos : pos + 4], "big", signed=True)
        if pos + 4 > end or length < -1:
            raise ProtocolViolation("malformed Bind message: bad parameter length")
        pos += 4 + max(length, 0)
    pos += 2 + 2 * int.from_bytes(body[pos : pos + 2], "big")
    if pos != end:
        raise ProtocolViolation("malformed Bind message: fields overrun or underrun the message")
    return _s(body[:first]), _s(body[first + 1 : second])


@dataclass(frozen=True, slots=True)
class _Targeted:
    """Describe and Close share one layout: a target kind ('S'tatement or 'P'ortal) and a name."""

    TYPE: ClassVar[bytes] = b""
    kind: Literal["S", "P"]
    name: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.kind.encode() + _cstr(self.name))

    @classmethod
    def decode(cls, body: bytes) -> Self:
        cur = _Cursor(body, cls.__name__)
        kind = cur.byte()
        if kind not in (b"S", b"P"):
            raise ProtocolViolation(f"invalid {cls.__name__} target type {kind!r}")
        name = cur.cstring()
        cur.end()
        return cls("S" if kind == b"S" else "P", name)


@dataclass(frozen=True, slots=True)
class Describe(_Targeted):
    TYPE: ClassVar[bytes] = b"D"


@dataclass(frozen=True, slots=True)
class Close(_Targeted):
    TYPE: ClassVar[bytes] = b"C"


@dataclass(frozen=True, slots=True)
class Execute:
    TYPE: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.portal) + _I32.pack(self.max_rows))

    @classmethod
    def decode(cls, body: bytes) -> Execute:
        cur = _Cursor(body, "Execute")
        portal = cur.cstring()
        max_rows = cur.int32()
        cur.end()
        return cls(portal, max_rows)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    TYPE: ClassVar[bytes] = b"F"
    oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0

    def encode(self) -> bytes:
        body = _U32.pack(self.oid & 0xFFFFFFFF) + _int16s(self.arg_formats)
        body += _U16.pack(len(self.args)) + b"".join(_nullable(a) for a in self.args)
        body += _I16.pack(self.result_format)
        return _frame(self.TYPE, body)

    @classmethod
    def decode(cls, body: bytes) -> FunctionCall:
        cur = _Cursor(body, "FunctionCall")
        oid = cur.int32() & 0xFFFFFFFF
        arg_formats = tuple(cur.int16() for _ in range(cur.count()))
        args = tuple(cur.nullable() for _ in range(cur.count()))
        result_format = cur.int16()
        cur.end()
        return cls(oid, arg_formats, args, result_format)


@dataclass(frozen=True, slots=True)
class CopyFail:
    TYPE: ClassVar[bytes] = b"f"
    message: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.message))

    @classmethod
    def decode(cls, body: bytes) -> CopyFail:
        cur = _Cursor(body, "CopyFail")
        message = cur.cstring()
        cur.end()
        return cls(message)


@dataclass(frozen=True, slots=True)
class AuthPayload:
    """A 'p' message: password, SASLInitialResponse or SASLResponse, told apart by context."""

    TYPE: ClassVar[bytes] = b"p"
    data: bytes

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, body: bytes) -> AuthPayload:
        return cls(bytes(body))


def sasl_initial_response(mechanism: str, initial: bytes) -> AuthPayload:
    return AuthPayload(_cstr(mechanism) + _I32.pack(len(initial)) + initial)


def parse_sasl_initial_response(payload: bytes) -> tuple[str, bytes]:
    """Split a SASLInitialResponse into its mechanism name and initial client response."""
    cur = _Cursor(payload, "SASLInitialResponse")
    mechanism = cur.cstring()
    initial = cur.nullable()
    cur.end()
    return mechanism, initial or b""


def password_message(password: str) -> AuthPayload:
    return AuthPayload(_cstr(password))


@dataclass(frozen=True, slots=True)
class _Empty:
    """A message with no fields (Sync, Flush, ...): its wire form is fixed."""

    TYPE: ClassVar[bytes] = b""

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if body:
            raise ProtocolViolation(f"malformed {cls.__name__} message: unexpected body")
        return cls()


@dataclass(frozen=True, slots=True)
class Sync(_Empty):
    TYPE: ClassVar[bytes] = b"S"


@dataclass(frozen=True, slots=True)
class Flush(_Empty):
    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class Terminate(_Empty):
    TYPE: ClassVar[bytes] = b"X"


@dataclass(frozen=True, slots=True)
class CopyDone(_Empty):
    TYPE: ClassVar[bytes] = b"c"


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse(_Empty):
    TYPE: ClassVar[bytes] = b"I"


@dataclass(frozen=True, slots=True)
class ParseComplete(_Empty):
    TYPE: ClassVar[bytes] = b"1"


@dataclass(frozen=True, slots=True)
class BindComplete(_Empty):
    TYPE: ClassVar[bytes] = b"2"


@dataclass(frozen=True, slots=True)
class CloseComplete(_Empty):
    TYPE: ClassVar[bytes] = b"3"


@dataclass(frozen=True, slots=True)
class NoData(_Empty):
    TYPE: ClassVar[bytes] = b"n"


@dataclass(frozen=True, slots=True)
class PortalSuspended(_Empty):
    TYPE: ClassVar[bytes] = b"s"


@dataclass(frozen=True, slots=True)
class CopyData:
    TYPE: ClassVar[bytes] = b"d"
    data: bytes

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, body: bytes) -> CopyData:
        return cls(bytes(body))


# --------------------------------------------------------------------------- backend

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """Every AuthenticationXXX message: the request code and whatever data follows it."""

    TYPE: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    def encode(self) -> bytes:
        return _frame(self.TYPE, _I32.pack(self.code) + self.data)

    @classmethod
    def decode(cls, body: bytes) -> Authentication:
        cur = _Cursor(body, "Authentication")
        code = cur.int32()
        return cls(code, cur.rest())

    @classmethod
    def sasl(cls, mechanisms: tuple[str, ...]) -> Authentication:
        return cls(AUTH_SASL, b"".join(_cstr(m) for m in mechanisms) + b"\0")

    def sasl_mechanisms(self) -> tuple[str, ...]:
        cur = _Cursor(self.data, "AuthenticationSASL")
        names: list[str] = []
        while name := cur.cstring():
            names.append(name)
        cur.end()
        return tuple(names)


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    TYPE: ClassVar[bytes] = b"K"
    pid: int
    secret: int

    def encode(self) -> bytes:
        return _frame(self.TYPE, _U32.pack(self.pid) + _U32.pack(self.secret))

    @classmethod
    def decode(cls, body: bytes) -> BackendKeyData:
        cur = _Cursor(body, "BackendKeyData")
        pid, secret = cur.int32() & 0xFFFFFFFF, cur.int32() & 0xFFFFFFFF
        cur.end()
        return cls(pid, secret)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    TYPE: ClassVar[bytes] = b"S"
    name: str
    value: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.name) + _cstr(self.value))

    @classmethod
    def decode(cls, body: bytes) -> ParameterStatus:
        cur = _Cursor(body, "ParameterStatus")
        name, value = cur.cstring(), cur.cstring()
        cur.end()
        return cls(name, value)


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    TYPE: ClassVar[bytes] = b"Z"
    status: Literal["I", "T", "E"]

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.status.encode())

    @classmethod
    def decode(cls, body: bytes) -> ReadyForQuery:
        if body == b"I":
            return cls("I")
        if body == b"T":
            return cls("T")
        if body == b"E":
            return cls("E")
        raise ProtocolViolation(f"malformed ReadyForQuery message: status {body!r}")


def _fields(body: bytes, what: str) -> tuple[tuple[str, str], ...]:
    cur = _Cursor(body, what)
    fields: list[tuple[str, str]] = []
    while True:
        code = cur.byte()
        if code == b"\0":
            break
        fields.append((_s(code), cur.cstring()))
    cur.end()
    return tuple(fields)


def _encode_fields(fields: tuple[tuple[str, str], ...]) -> bytes:
    out = b""
    for code, value in fields:
        raw = _b(code)
        if len(raw) != 1 or raw == b"\0":
            raise ValueError(f"invalid error field code {code!r}")
        out += raw + _cstr(value)
    return out + b"\0"


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error: ordered (field code, value) pairs, e.g. ("C", "42501")."""

    TYPE: ClassVar[bytes] = b"E"
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return _frame(self.TYPE, _encode_fields(self.fields))

    @classmethod
    def decode(cls, body: bytes) -> ErrorResponse:
        return cls(_fields(body, "ErrorResponse"))

    def get(self, code: str) -> str | None:
        for key, value in self.fields:
            if key == code:
                return value
        return None

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    TYPE: ClassVar[bytes] = b"N"
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return _frame(self.TYPE, _encode_fields(self.fields))

    @classmethod
    def decode(cls, body: bytes) -> NoticeResponse:
        return cls(_fields(body, "NoticeResponse"))


def error_fields(
    severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The fields of an error or notice that Sekisho itself raises."""
    fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
    if detail:
        fields.append(("D", detail))
    if hint:
        fields.append(("H", hint))
    return tuple(fields)


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int = 0
    column: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


@dataclass(frozen=True, slots=True)
class RowDescription:
    TYPE: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        body = _U16.pack(len(self.fields))
        for f in self.fields:
            body += _cstr(f.name) + struct.pack(
                "!IhIhih",
                f.table_oid & 0xFFFFFFFF,
                f.column,
                f.type_oid & 0xFFFFFFFF,
                f.type_size,
                f.type_modifier,
                f.format,
            )
        return _frame(self.TYPE, body)

    @classmethod
    def decode(cls, body: bytes) -> RowDescription:
        cur = _Cursor(body, "RowDescription")
        fields = []
        for _ in range(cur.count()):
            name = cur.cstring()
            table_oid = cur.int32() & 0xFFFFFFFF
            column = cur.int16()
            type_oid = cur.int32() & 0xFFFFFFFF
            type_size = cur.int16()
            type_modifier = cur.int32()
            fmt = cur.int16()
            fields.append(FieldDescription(name, table_oid, column, type_oid, type_size, type_modifier, fmt))
        cur.end()
        return cls(tuple(fields))


@dataclass(frozen=True, slots=True)
class DataRow:
    TYPE: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return _frame(self.TYPE, _U16.pack(len(self.values)) + b"".join(_nullable(v) for v in self.values))

    @classmethod
    def decode(cls, body: bytes) -> DataRow:
        cur = _Cursor(body, "DataRow")
        values = tuple(cur.nullable() for _ in range(cur.count()))
        cur.end()
        return cls(values)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    TYPE: ClassVar[bytes] = b"C"
    tag: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.tag))

    @classmethod
    def decode(cls, body: bytes) -> CommandComplete:
        cur = _Cursor(body, "CommandComplete")
        tag = cur.cstring()
        cur.end()
        return cls(tag)


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    TYPE: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return _frame(
            self.TYPE,
            _U16.pack(len(self.type_oids)) + b"".join(_U32.pack(t) for t in self.type_oids),
        )

    @classmethod
    def decode(cls, body: bytes) -> ParameterDescription:
        cur = _Cursor(body, "ParameterDescription")
        oids = tuple(cur.int32() & 0xFFFFFFFF for _ in range(cur.uint16()))
        cur.end()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class _CopyResponse:
    """CopyIn/CopyOut/CopyBothResponse share one layout: overall format and column formats."""

    TYPE: ClassVar[bytes] = b""
    format: int
    column_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        return _frame(self.TYPE, bytes([self.format]) + _int16s(self.column_formats))

    @classmethod
    def decode(cls, body: bytes) -> Self:
        cur = _Cursor(body, cls.__name__)
        fmt = cur.byte()[0]
        cols = tuple(cur.int16() for _ in range(cur.count()))
        cur.end()
        return cls(fmt, cols)


@dataclass(frozen=True, slots=True)
class CopyInResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"G"


@dataclass(frozen=True, slots=True)
class CopyOutResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class CopyBothResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"W"


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    TYPE: ClassVar[bytes] = b"A"
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _U32.pack(self.pid) + _cstr(self.channel) + _cstr(self.payload))

    @classmethod
    def decode(cls, body: bytes) -> NotificationResponse:
        cur = _Cursor(body, "NotificationResponse")
        pid = cur.int32() & 0xFFFFFFFF
        channel, payload = cur.cstring(), cur.cstring()
        cur.end()
        return cls(pid, channel, payload)


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    TYPE: ClassVar[bytes] = b"V"
    value: bytes | None

    def encode(self) -> bytes:
        return _frame(self.TYPE, _nullable(self.value))

    @classmethod
    def decode(cls, body: bytes) -> FunctionCallResponse:
        cur = _Cursor(body, "FunctionCallResponse")
        value = cur.nullable()
        cur.end()
        return cls(value)


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    TYPE: ClassVar[bytes] = b"v"
    newest_minor: int
    unrecognized: tuple[str, ...] = ()

    def encode(self) -> bytes:
        body = _U32.pack(self.newest_minor) + _U32.pack(len(self.unrecognized))
        return _frame(self.TYPE, body + b"".join(_cstr(o) for o in self.unrecognized))

    @classmethod
    def decode(cls, body: bytes) -> NegotiateProtocolVersion:
        cur = _Cursor(body, "NegotiateProtocolVersion")
        newest = cur.int32() & 0xFFFFFFFF
        count = cur.int32()
        if count < 0:
            raise ProtocolViolation("malformed NegotiateProtocolVersion message: negative count")
        options = tuple(cur.cstring() for _ in range(count))
        cur.end()
        return cls(newest, options)


# --------------------------------------------------------------------------- dispatch

Message = object
_Decoder = Callable[[bytes], Message]

FRONTEND: dict[bytes, _Decoder] = {
    cls.TYPE: cls.decode
    for cls in (
        Query, Parse, Bind, Describe, Close, Execute, Sync, Flush, Terminate,
        CopyData, CopyDone, CopyFail, FunctionCall, AuthPayload,
    )
}  # fmt: skip

BACKEND: dict[bytes, _Decoder] = {
    cls.TYPE: cls.decode
    for cls in (
        Authentication, BackendKeyData, ParameterStatus, ReadyForQuery, ErrorResponse,
        NoticeResponse, RowDescription, DataRow, CommandComplete, EmptyQueryResponse,
        ParseComplete, BindComplete, CloseComplete, NoData, PortalSuspended,
        ParameterDescription, CopyInResponse, CopyOutResponse, CopyBothResponse, CopyData,
        CopyDone, NotificationResponse, FunctionCallResponse, NegotiateProtocolVersion,
    )
}  # fmt: skip


def decode_frontend(kind: bytes, body: bytes) -> Message:
    """Decode a message a client sent; an unknown type is a protocol violation."""
    decoder = FRONTEND.get(kind)
    if decoder is None:
        raise ProtocolViolation(f"invalid frontend message type {kind!r}")
    return decoder(body)


def decode_backend(kind: bytes, body: bytes) -> Message:
    """Decode a message a server sent; an unknown type is a protocol violation."""
    decoder = BACKEND.get(kind)
    if decoder is None:
        raise ProtocolViolation(f"invalid backend message type {kind!r}")
    return decoder(body)
