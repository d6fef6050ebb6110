"""Exceptions of the wire codec.

WireError                 (code: machine-readable, sqlstate: what the peer is told)
└── ProtocolViolation     malformed, truncated, oversized or unexpected message (08P01)
"""

from __future__ import annotations


class WireError(Exception):
    """Root of every codec error."""

    code = "wire_error"
    sqlstate = "08P01"


class ProtocolViolation(WireError):
    """The peer broke the protocol; the connection cannot continue."""

    code = "protocol_violation"
