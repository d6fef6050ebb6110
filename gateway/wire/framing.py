"""Splitting a byte stream into PostgreSQL v3 protocol frames, with no I/O.

Every regular message is ``type byte | int32 length (self-inclusive) | body``; the startup-phase
packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no type byte. A reader is
fed whatever bytes arrived and hands back whole frames; a frame keeps the exact bytes that arrived
(``raw``) so the relay can forward it untouched (STYLE.md: re-encode only what you change).

Bounds are enforced here, before any allocation proportional to the claimed length, so a peer that
announces a 2 GiB message costs nothing but the error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.wire.errors import ProtocolViolation

_HEADER = struct.Struct("!cI")
_INT32 = struct.Struct("!I")

# PostgreSQL's own limit for startup packets (MAX_STARTUP_PACKET_LENGTH in pqcomm.h).
MAX_STARTUP_PACKET = 10_000
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message: its type byte and the exact bytes that carried it."""

    type: bytes
    raw: bytes

    @property
    def body(self) -> bytes:
        return self.raw[5:]


class FrameReader:
    """Incremental frame splitter for one direction of one connection."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = b""
        self._max = max_message

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else bytes(data)

    def read_startup(self) -> bytes | None:
        """Return one whole startup-phase packet (length prefix included), or None if incomplete."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _INT32.unpack_from(buf, 0)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if len(buf) < length:
            return None
        self._buf = buf[length:]
        return buf[:length]

    def read(self) -> Frame | None:
        """Return the next whole message, or None if more bytes are needed."""
        buf = self._buf
        if len(buf) < 5:
            return None
        kind, length = _HEADER.unpack_from(buf, 0)
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length} for message type {kind!r}")
        if length > self._max:
            raise ProtocolViolation(
                f"message of type {kind!r} is {length} bytes, over the limit of {self._max}"
            )
        end = length + 1
        if len(buf) < end:
            return None
        if len(buf) == end:
            self._buf = b""
            return Frame(kind, buf)
        self._buf = buf[end:]
        return Frame(kind, buf[:end])

    def read_all(self) -> list[Frame]:
        """Every whole message buffered now, in order."""
        frames: list[Frame] = []
        while (frame := self.read()) is not None:
            frames.append(frame)
        return frames

    def take_rest(self) -> bytes:
        """Hand over (and forget) the bytes not yet framed, e.g. when switching to TLS."""
        rest, self._buf = self._buf, b""
        return rest
