"""PII masks: pure functions that rewrite one cell of a result, called by the relay for every cell.

A cell is PostgreSQL's *text* representation of a value as UTF-8 bytes (Sekisho pins
``client_encoding`` to UTF8), or ``None`` for SQL NULL. ``masker(mask, key)`` returns the function
for one policy mask; ``redact_derived(mask, key)`` the function for a value computed from a PII
column (``upper(email)``, ``phone || ''``, ``string_agg(phone, ',')``), whose layout no kind can
know, so it is redacted as a whole unless the kind still means something (token, null).

What each kind shows (``FULL`` is ``****``; NULL stays NULL except under ``null``):

==========  =====================================================================================
full        ``FULL`` for every value, whatever its length (so the length is not shown either).
partial     The first ``keep_first`` and/or last ``keep_last`` characters around ``FULL``. At least
            half the characters (rounded up) stay hidden: a short value keeps fewer, keep_first
            served first (``abc`` with keep_last 4 gives ``****c``). Neither option: ``FULL``.
email       ``FULL`` + ``@domain`` (after the last ``@``). A value with no local part, or whose
            domain is not a host name of two or more labels, is ``FULL``.
phone       Every character but separators (``-``, spaces, parentheses, ``+``, ``.``, ``/`` and
            their full-width and dash forms) becomes ``*``, except the last 4 digits (ASCII or
            full-width) when the value has at least 8 digits, so that the kept digits are at most
            half (Japanese numbers have 10 or 11). Fewer than 8 digits keep none; a value with no
            digit at all is ``FULL``.
card        As phone (last 4 digits of at least 8; separators in place).
token       ``tok_`` + 16 hex digits of HMAC-SHA256(key, value): equal values give equal tokens
            under one key, so masked columns can still be joined, grouped and counted; without
            the key a token cannot be reversed or recomputed from a guess.
null        Always NULL.
==========  =====================================================================================

Whatever the input (invalid UTF-8, empty, shorter than what a kind keeps, no digits, no ``@``),
these functions never raise and never show more than the table allows: bytes that are not UTF-8
are ``FULL`` (token hashes them as they are). Characters are code points, not bytes. The output is
text whatever the column's type, so a masked column must be described to the client as text.

A deterministic token is an equality oracle for anyone who can have a chosen value tokenized next to
a real one (a write they may read back, or an expression mixing a literal into a PII column), so the
analysis must keep derived expressions to functions that cannot inject values.

Performance: the relay calls these per cell, so each kind is a closure built once per mask, with
regular expressions and translation tables compiled at import and an ASCII fast path that stays in
C (``bytes.translate``, slicing) for the common case.
"""

from __future__ import annotations

import hashlib
import re
from binascii import hexlify
from collections.abc import Callable

from policy.errors import MaskError
from policy.model import MASK_KINDS, Mask

Masker = Callable[[bytes | None], bytes | None]

FULL = b"****"
TOKEN_PREFIX = b"tok_"
TOKEN_HEX_DIGITS = 16  # 64 bits: collisions stay negligible for counting distinct values
MIN_TOKEN_KEY_BYTES = 32  # 256 bits, as HMAC-SHA256 wants; generated keys have exactly that
KEEP_DIGITS = 4  # phone and card: the last 4 digits ...
MIN_DIGITS_TO_KEEP = 2 * KEEP_DIGITS  # ... only when they are at most half of the digits

_ASCII_DIGITS = "0123456789"
DIGITS = _ASCII_DIGITS + "".join(map(chr, range(0xFF10, 0xFF1A)))  # and full-width 0-9
_ASCII_SEPARATORS = " -()+./"
# Full-width forms, dashes and the long-vowel marks people type for hyphens in Japanese numbers.
SEPARATORS = (
    _ASCII_SEPARATORS
    + "\u00a0\u3000"  # no-break space, ideographic space
    + "\uff08\uff09\uff0b\uff0d\uff0e\uff0f"  # full-width ( ) + - . /
    + "\u30fc\uff70"  # katakana long-vowel marks (full and half width)
    + "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"  # hyphens, dashes, minus
)

_STAR = ord("*")
# ASCII fast path: separators stay, everything else becomes '*' (the tail also keeps digits).
_ASCII_STARS = bytes(c if chr(c) in _ASCII_SEPARATORS else _STAR for c in range(256))
_ASCII_TAIL = bytes(c if chr(c) in _ASCII_SEPARATORS + _ASCII_DIGITS else _STAR for c in range(256))
_ASCII_DIGIT_BYTES = _ASCII_DIGITS.encode()
# The general path: the same over str (digits in the first part of a value become '*' too).


class _StarsBut(dict[int, str]):
    """A ``str.translate`` table: the characters it lists map as listed, every other one to '*'."""

    def __missing__(self, _char: int) -> str:
        return "*"


_STARS = _StarsBut({ord(c): c for c in SEPARATORS} | {ord(c): "*" for c in DIGITS})
_TAIL = _StarsBut({ord(c): c for c in SEPARATORS + DIGITS})
_DIGIT_SET = frozenset(DIGITS)
# A host name of two or more labels (letters and digits of any script, inner hyphens), no spaces.
_LABEL = r"[^\W_]+(?:-+[^\W_]+)*"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_MAX_DOMAIN = 253
_SHA256_BLOCK = 64
_IPAD = bytes(c ^ 0x36 for c in range(256))
_OPAD = bytes(c ^ 0x5C for c in range(256))


def masker(mask: Mask, key: bytes) -> Masker:
    """The function that masks one cell under ``mask``; build it once per mask, call it per cell.

    ``key`` is the token key (used only by kind token). Raises ``MaskError`` for a kind not in
    ``MASK_KINDS`` or a token key shorter than 32 bytes: a bad mask is a fault, found when the
    policy is put to use, never while rows stream.
    """
    kind = mask.kind
    if kind == "full":
        return _full
    if kind == "partial":
        return _partial(max(mask.keep_first or 0, 0), max(mask.keep_last or 0, 0))
    if kind == "email":
        return _email
    if kind in ("phone", "card"):
        return _last_digits
    if kind == "token":
        return _token(_token_key(key))
    if kind == "null":
        return _null
    raise MaskError(f"unknown mask kind {kind!r} (known: {', '.join(MASK_KINDS)})")


def redact_derived(mask: Mask | None, key: bytes) -> Masker:
    """The function for a value derived from a PII column by an expression.

    Its text no longer has the column's layout (``upper(email)``, ``string_agg(phone, ',')``), so
    showing part of it could show anything: it is ``FULL`` unless the kind is token (the derived
    value is tokenized, so it still joins and counts) or null. ``mask`` None (sources with
    different masks, or none known) is ``FULL``. Raises ``MaskError`` as ``masker`` does.
    """
    if mask is None:
        return _full
    masked = masker(mask, key)  # validates the kind and key
    return masked if mask.kind in ("token", "null") else _full


def _full(value: bytes | None) -> bytes | None:
    return None if value is None else FULL


def _null(_value: bytes | None) -> None:
    return None


def _partial(keep_first: int, keep_last: int) -> Masker:
    if keep_first == keep_last == 0:
        return _full

    def mask(value: bytes | None) -> bytes | None:
        if value is None:
            return None
        if value.isascii():  # one byte per character: slice the bytes themselves
            size = len(value)
            budget = size // 2  # at most half shown, so at least half (rounded up) hidden
            first = min(keep_first, budget)
            last = min(keep_last, budget - first)
            return value[:first] + FULL + value[size - last :]
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return FULL
        size = len(text)
        budget = size // 2
        first = min(keep_first, budget)
        last = min(keep_last, budget - first)
        return text[:first].encode() + FULL + text[size - last :].encode()

    return mask


def _email(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    at = value.rfind(b"@")
    if at <= 0 or len(value) - at - 1 > _MAX_DOMAIN:
        return FULL
    try:
        if not value.isascii():
            value.decode()  # the hidden part too: a value that is not UTF-8 is not an address
        domain = value[at + 1 :].decode()
    except UnicodeDecodeError:
        return FULL
    if _DOMAIN.fullmatch(domain) is None:
        return FULL
    return FULL + value[at:]


def _last_digits(value: bytes | None) -> bytes | None:
    """Phone and card: separators in place, the last 4 digits of 8 or more, '*' for the rest."""
    if value is None:
        return None
    if value.isascii():
        digits = len(value) - len(value.translate(None, _ASCII_DIGIT_BYTES))
        if digits == 0:
            return FULL
        if digits < MIN_DIGITS_TO_KEEP:
            return value.translate(_ASCII_STARS)
        start = len(value)
        seen = 0
        while seen < KEEP_DIGITS:  # from the end: the 4th digit is a few characters back
            start -= 1
            if 48 <= value[start] <= 57:
                seen += 1
        return value[:start].translate(_ASCII_STARS) + value[start:].translate(_ASCII_TAIL)
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return FULL
    # One pass from the end finds the 4th digit and stops at the 8th: translating the whole str to
    # count its digits would cost more than the mask itself.
    position = len(text)
    seen = 0
    tail = 0
    while position and seen < MIN_DIGITS_TO_KEEP:
        position -= 1
        if text[position] in _DIGIT_SET:
            seen += 1
            if seen == KEEP_DIGITS:
                tail = position
    if seen == 0:
        return FULL
    if seen < MIN_DIGITS_TO_KEEP:
        return text.translate(_STARS).encode()
    return (text[:tail].translate(_STARS) + text[tail:].translate(_TAIL)).encode()


def _token_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) < MIN_TOKEN_KEY_BYTES:
        raise MaskError(f"a token key must be at least {MIN_TOKEN_KEY_BYTES} bytes")
    return key


def _token(key: bytes) -> Masker:
    # HMAC-SHA256 (RFC 2104) with the key's inner and outer hash states computed once: copying a
    # state per call costs half of hmac.digest, which sets the key up again every time.
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    outer = hashlib.sha256(key.translate(_OPAD))
    half = TOKEN_HEX_DIGITS // 2

    def mask(value: bytes | None) -> bytes | None:
        if value is None:
            return None
        digest = inner.copy()
        digest.update(value)
        final = outer.copy()
        final.update(digest.digest())
        return TOKEN_PREFIX + hexlify(final.digest()[:half])

    return mask
