"""One TCP/TLS connection as an asyncio Protocol, with two modes.

During the handshake (startup, TLS, authentication) the owner awaits whole packets with
``read_startup``/``read_frame``. Once the session is established the owner installs a synchronous
``on_data`` callback and every arriving chunk goes straight to it: the relay's hot path has no
awaits and no per-chunk task switches.

Backpressure is wired between the two endpoints of a session: when this side's write buffer passes
its high-water mark, the peer stops reading, so a client that stops reading a large result stops
the upstream (and the kernel's TCP window stops PostgreSQL), and Sekisho's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from gateway.wire.framing import DEFAULT_MAX_MESSAGE, Frame, FrameReader

WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) while a handshake step waited for it."""

    code = "connection_closed"


class Endpoint(asyncio.Protocol):
    """A connection whose reads are awaited during handshake and pushed during relay."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader(max_message)
        self.peer: Endpoint | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._paused_peer = False

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self.reader.feed(data)
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._eof = True
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)
        if self.peer is not None and self._paused_peer:
            self._resume_peer()
        if self.on_lost is not None:
            callback, self.on_lost = self.on_lost, None
            callback(exc)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            self._paused_peer = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self._resume_peer()

    def _resume_peer(self) -> None:
        peer = self.peer
        self._paused_peer = False
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- handshake reads

    async def wait_data(self) -> None:
        """Wait until more bytes arrive (or raise ConnectionClosed)."""
        if self._eof:
            raise ConnectionClosed("connection closed by peer")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_startup(self) -> bytes:
        """The next startup-phase packet (length prefix included)."""
        while (packet := self.reader.read_startup()) is None:
            await self.wait_data()
        return packet

    async def read_frame(self) -> Frame:
        """The next whole typed message."""
        while (frame := self.reader.read()) is None:
            await self.wait_data()
        return frame

    # ---------------------------------------------------------------- writes

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def ssl_object(self) -> ssl.SSLObject | None:
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    async def start_tls(self, context: ssl.SSLContext, *, server_side: bool, host: str | None) -> None:
        """Upgrade to TLS in place; bytes already buffered in plaintext are a protocol attack."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(
            self.transport, self, context, server_side=server_side,
            server_hostname=None if server_side else host,
        )  # fmt: skip
        if new is None:
            raise ConnectionClosed("connection closed during TLS handshake")
        self.transport = new
        new.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
