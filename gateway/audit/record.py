"""Audit records as bytes: canonical encoding and the hash chain (plain functions, no I/O).

A record is a JSON object. Its canonical form (sorted keys, no spaces, UTF-8) is what is hashed and
stored, so a verifier recomputes exactly the bytes that were sealed. Each record of a chain carries
its sequence number and the hash of the one before: ``hash = sha256(prev_hash || seq || body)``.
Editing a record changes its hash; deleting one leaves a gap in ``seq`` and a ``prev`` that names a
record that is not there; moving one breaks the ``prev`` links on both sides. The first record of a
chain has an all-zero ``prev``.

A spool line is ``seq TAB prev TAB hash TAB body NEWLINE`` (hashes in hex): the canonical body never
holds a raw newline or tab (JSON escapes them), so one line is one record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = bytes(32)  # ``prev`` of a chain's first record


class SpoolLineError(ValueError):
    """A spool line that is not a sealed record (a torn write at a crash, or damage)."""


def canonical(record: Mapping[str, Any]) -> bytes:
    """The record's one byte form: sorted keys, compact, UTF-8 (non-ASCII kept as is). orjson, for
    it is on every statement's path; only these sealed bytes are ever hashed again, never a
    re-serialization, so the verifier does not depend on the encoder."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def chain_hash(prev: bytes, seq: int, body: bytes) -> bytes:
    """The hash sealing ``body`` as record ``seq`` after the record whose hash is ``prev``."""
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + body).digest()


@dataclass(frozen=True, slots=True)
class Sealed:
    """One record of a chain as it is spooled and stored."""

    seq: int
    prev: bytes
    hash: bytes
    body: bytes  # canonical JSON

    def line(self) -> bytes:
        return b"%d\t%s\t%s\t%s\n" % (self.seq, self.prev.hex().encode(), self.hash.hex().encode(), self.body)

    def record(self) -> dict[str, Any]:
        value = orjson.loads(self.body)
        if not isinstance(value, dict):
            raise SpoolLineError(f"record {self.seq} is not a JSON object")
        return value


def seal(seq: int, prev: bytes, record: Mapping[str, Any]) -> Sealed:
    body = canonical(record)
    return Sealed(seq, prev, chain_hash(prev, seq, body), body)


def parse_line(line: bytes) -> Sealed:
    """A spool line back into its record; raises SpoolLineError for anything else."""
    parts = line.rstrip(b"\n").split(b"\t", 3)
    if len(parts) != 4 or not line.endswith(b"\n"):
        raise SpoolLineError("incomplete spool line")
    try:
        seq = int(parts[0])
        prev, digest = bytes.fromhex(parts[1].decode()), bytes.fromhex(parts[2].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpoolLineError(f"malformed spool line: {exc}") from None
    if len(prev) != 32 or len(digest) != 32:
        raise SpoolLineError("malformed spool line: hashes must be 32 bytes")
    sealed = Sealed(seq, prev, digest, parts[3])
    if chain_hash(prev, seq, sealed.body) != digest:
        raise SpoolLineError(f"spool line {seq} does not match its hash")
    return sealed


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a chain does not hold, for ``sekisho audit verify`` to name."""

    seq: int  # the record where the chain stops holding
    reason: str


def check_link(expected_seq: int, prev_hash: bytes, sealed: Sealed) -> Break | None:
    """Whether ``sealed`` is the record that must follow (``expected_seq``, after ``prev_hash``)."""
    if chain_hash(sealed.prev, sealed.seq, sealed.body) != sealed.hash:
        return Break(sealed.seq, "its content does not match its hash (the record was edited)")
    if sealed.seq != expected_seq:
        if sealed.seq > expected_seq:
            last = sealed.seq - 1
            missing = f"record {last} is" if last == expected_seq else f"records {expected_seq}-{last} are"
            return Break(sealed.seq, f"{missing} missing before it (deleted)")
        return Break(
            sealed.seq, f"sequence number {sealed.seq} where {expected_seq} was expected (reordered)"
        )
    if sealed.prev != prev_hash:
        return Break(
            sealed.seq,
            "it does not link to the record before it (records were deleted, reordered or replaced)",
        )
    return None
