"""FrameReader: reassembly across arbitrary chunk boundaries, bounds checked before buffering."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import DEFAULT_MAX_MESSAGE, MAX_STARTUP_PACKET, Frame, FrameReader


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=30)
ENCODED = st.one_of(
    st.builds(_frame, st.binary(min_size=1, max_size=1), st.binary(max_size=80)),
    st.builds(lambda sql: m.Query(sql).encode(), TEXT),
    st.builds(lambda values: m.DataRow(tuple(values)).encode(), st.lists(st.none() | st.binary(max_size=20))),
    st.builds(lambda data: m.CopyData(data).encode(), st.binary(max_size=200)),
    st.just(m.Sync().encode()),
    st.just(m.ReadyForQuery("I").encode()),
    st.builds(lambda msg: m.ErrorResponse(m.error_fields("ERROR", "42501", msg)).encode(), TEXT),
)


@st.composite
def _chunked(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Some encoded messages, and their concatenation cut at arbitrary points."""
    frames = draw(st.lists(ENCODED, max_size=12))
    stream = b"".join(frames)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=20))))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return frames, chunks


@settings(max_examples=300)
@given(sample=_chunked())
def test_frames_reassemble_across_any_chunking(sample: tuple[list[bytes], list[bytes]]) -> None:
    frames, chunks = sample
    reader = FrameReader()
    got: list[Frame] = []
    for chunk in chunks:
        reader.feed(chunk)
        got += reader.read_all()
    assert [f.raw for f in got] == frames
    assert [f.type for f in got] == [raw[:1] for raw in frames]
    assert [f.body for f in got] == [raw[5:] for raw in frames]
    assert reader.buffered == 0
    assert reader.read() is None


@settings(max_examples=300)
@given(sample=_chunked(), data=st.data())
def test_partial_frame_stays_buffered(sample: tuple[list[bytes], list[bytes]], data: st.DataObject) -> None:
    frames, _ = sample
    tail = data.draw(ENCODED)
    cut = data.draw(st.integers(0, len(tail) - 1))
    reader = FrameReader()
    reader.feed(b"".join(frames) + tail[:cut])
    assert [f.raw for f in reader.read_all()] == frames
    assert reader.buffered == cut
    reader.feed(tail[cut:])
    assert [f.raw for f in reader.read_all()] == [tail]
    assert reader.buffered == 0


def test_header_split_byte_by_byte() -> None:
    raw = m.Query("select 1").encode()
    reader = FrameReader()
    for byte in raw[:-1]:
        reader.feed(bytes([byte]))
        assert reader.read() is None
    reader.feed(raw[-1:])
    assert reader.read() == Frame(b"Q", raw)
    assert reader.read() is None


def test_empty_body_frame() -> None:
    reader = FrameReader()
    reader.feed(b"S\x00\x00\x00\x04Z")
    assert reader.read() == Frame(b"S", b"S\x00\x00\x00\x04")
    assert reader.read() is None
    assert reader.buffered == 1


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_length_below_four_is_a_violation(length: int) -> None:
    reader = FrameReader()
    reader.feed(b"Q" + struct.pack("!I", length))
    with pytest.raises(ProtocolViolation, match=f"invalid message length {length} for message type b'Q'"):
        reader.read()


def test_length_over_the_limit_fails_on_the_header_alone() -> None:
    reader = FrameReader(max_message=1024)
    # Only the 5-byte header has arrived: the reader must not wait for the claimed 1025 bytes.
    reader.feed(b"d" + struct.pack("!I", 1025))
    with pytest.raises(ProtocolViolation, match="1025 bytes, over the limit of 1024"):
        reader.read()
    at_limit = FrameReader(max_message=1024)
    raw = _frame(b"d", b"x" * 1020)
    at_limit.feed(raw)
    assert at_limit.read() == Frame(b"d", raw)


def test_huge_claimed_length_is_refused_by_default() -> None:
    reader = FrameReader()
    reader.feed(b"Q\xff\xff\xff\xff")
    with pytest.raises(ProtocolViolation, match=f"over the limit of {DEFAULT_MAX_MESSAGE}"):
        reader.read_all()
    assert reader.buffered == 5


def test_incomplete_header_waits() -> None:
    reader = FrameReader(max_message=8)
    reader.feed(b"Q\xff\xff\xff")  # an oversized length, but its last byte has not arrived
    assert reader.read() is None
    assert reader.read_all() == []


# --------------------------------------------------------------------------- startup packets


@pytest.mark.parametrize("length", [0, 4, 7, MAX_STARTUP_PACKET + 1, 2**31, 2**32 - 1])
def test_startup_length_out_of_bounds(length: int) -> None:
    reader = FrameReader()
    reader.feed(struct.pack("!I", length))  # the length prefix alone is enough to refuse
    with pytest.raises(ProtocolViolation, match=f"invalid length of startup packet: {length}"):
        reader.read_startup()


def test_startup_length_bounds_are_inclusive() -> None:
    reader = FrameReader()
    ssl = m.SSLRequest().encode()
    reader.feed(ssl)
    assert reader.read_startup() == ssl
    biggest = struct.pack("!I", MAX_STARTUP_PACKET) + b"\x00" * (MAX_STARTUP_PACKET - 4)
    reader.feed(biggest[:-1])
    assert reader.read_startup() is None
    reader.feed(biggest[-1:])
    assert reader.read_startup() == biggest
    assert reader.buffered == 0


def test_startup_waits_for_the_whole_packet() -> None:
    packet = m.StartupMessage((("user", "alice"),)).encode()
    reader = FrameReader()
    reader.feed(packet[:3])
    assert reader.read_startup() is None
    reader.feed(packet[3:-1])
    assert reader.read_startup() is None
    reader.feed(packet[-1:])
    assert reader.read_startup() == packet


def test_startup_then_regular_frames() -> None:
    packet = m.StartupMessage((("user", "alice"),)).encode()
    query = m.Query("select 1").encode()
    reader = FrameReader()
    reader.feed(packet + query + m.Sync().encode()[:2])
    assert reader.read_startup() == packet
    assert reader.read_all() == [Frame(b"Q", query)]
    assert reader.buffered == 2


def test_take_rest_hands_over_unframed_bytes() -> None:
    # After SSLRequest the client starts the TLS handshake; those bytes belong to the TLS layer.
    client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    reader = FrameReader()
    reader.feed(m.SSLRequest().encode() + client_hello)
    assert reader.read_startup() == m.SSLRequest().encode()
    assert reader.take_rest() == client_hello
    assert reader.buffered == 0
    assert reader.take_rest() == b""
    assert reader.read_startup() is None
    assert reader.read() is None


# --------------------------------------------------------------------------- hostile bytes

OPERATION = st.sampled_from(["read", "read_all", "read_startup", "take_rest"])
CHUNK = st.binary(max_size=24) | ENCODED | st.integers(0, 2**32 - 1).map(lambda n: struct.pack("!I", n))


@settings(max_examples=500)
@given(
    steps=st.lists(st.tuples(CHUNK, OPERATION), max_size=12),
    max_message=st.integers(4, 300) | st.just(DEFAULT_MAX_MESSAGE),
)
def test_reader_raises_only_protocol_violation(steps: list[tuple[bytes, str]], max_message: int) -> None:
    reader = FrameReader(max_message=max_message)
    try:
        for chunk, operation in steps:
            reader.feed(chunk)
            before = reader.buffered
            frames: list[Frame] = []
            if operation == "read":
                frame = reader.read()
                frames = [] if frame is None else [frame]
                consumed = sum(len(f.raw) for f in frames)
            elif operation == "read_all":
                frames = reader.read_all()
                consumed = sum(len(f.raw) for f in frames)
            elif operation == "read_startup":
                packet = reader.read_startup()
                if packet is not None:
                    assert 8 <= len(packet) <= MAX_STARTUP_PACKET
                    assert struct.unpack("!I", packet[:4])[0] == len(packet)
                consumed = 0 if packet is None else len(packet)
            else:
                consumed = len(reader.take_rest())
                assert consumed == before
            for frame in frames:
                assert struct.unpack("!I", frame.raw[1:5])[0] == len(frame.raw) - 1 <= max_message
                assert frame.type == frame.raw[:1]
            assert reader.buffered == before - consumed
    except ProtocolViolation:
        pass
