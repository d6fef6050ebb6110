"""Statement shapes: PostgreSQL's normalized text (literals as $n), the key under which analyses are
shared (``gateway.gate``) and the fingerprint of audit records.

pglast's ``normalize`` (libpg_query) parses the text (about 2 us), most of what a statement costs
when it differs from a known one only in literals (pgbench -S). So a text that ``re`` can tokenize
as PostgreSQL does gets a *skeleton*: the text with every literal replaced by the mark of its
lexical class. The first text of a skeleton is normalized by pglast, and its shape is kept for the
skeleton only if pglast replaced exactly the spans the skeleton marked; a skeleton whose shape did
not match (pglast kept a literal: ``ORDER BY 1``, a type modifier, a FETCH count, ``-1``) is kept
as such, and its texts go to pglast every time. A later text finds its skeleton without being
tokenized: under a key that costs two C calls (the text without digits and string contents), a
skeleton matches it if its pieces are in place and between them is one literal of each mark's class,
checked with the tokenizer's own pattern for that class and neighbours (``Skeleton.matches``).

Why one verified text answers for every text of its skeleton: they are the same characters outside
their literals, and their literals are the same tokens to PostgreSQL's lexer (a string's content
cannot change how it lexes when it has no backslash, and the marks keep apart what lexes or walks
differently: strings, integers that fit int4 (ICONST, which GROUP BY and ORDER BY keep), other
numbers (FCONST), true and false). Same tokens give the same parse tree; libpg_query's walk chooses
the constants to replace, and numbers them, by that tree, not by their values, and copies the text
between them verbatim. The one value-dependent choice it has (a subscription's connection string
is found by searching the text) is excluded by name.

A text is tokenized only when that is safe: printable ASCII (PostgreSQL reads any non-ASCII byte,
even U+00A0, as part of an identifier), none of ``$`` (parameters, dollar quotes), backslash,
``"`` (quoted identifiers), ``--`` or ``/*`` (comments), and no quote glued to a prefix
(``E'..'``, ``B'..'``, ``X'..'``, ``U&'..'``). Anything else, and any text whose tokenization
leaves a quote behind, goes to pglast as before. ``?`` is an operator character like any other
(the marks are control characters no safe text holds).
"""

from __future__ import annotations

import functools
import re
from typing import Final

from pglast.parser import ParseError, normalize

SHAPE_TEXT_LIMIT: Final = 64 * 1024  # longer strings are not normalized (nor cached by shape)
SHAPE_CACHED_TEXT: Final = 2048  # shapes of strings up to this long are remembered (bounded memory)
SKELETON_KEYS: Final = 4096  # keys remembered (the oldest forgotten first)
SKELETON_CHARS: Final = 4 * 1024 * 1024  # characters of keys, pieces and shapes remembered
SAME_KEY_LIMIT: Final = 8  # skeletons under one key (t1, t2, ... share a key)

# The marks: ASCII control characters that a text safe to tokenize never contains.
STRING: Final = "\x01"
INTEGER: Final = "\x02"  # fits int4: ICONST to PostgreSQL's lexer (GROUP BY 1 and ORDER BY 1 keep it)
NUMBER: Final = "\x03"  # any other number: FCONST
TRUE: Final = "\x04"
FALSE: Final = "\x05"
_MARK: Final = re.compile("[\x01-\x05]")
_PARAMETER: Final = re.compile(r"\$\d+")
_DIGITS: Final = b"0123456789"
# Outside the printable ASCII and PostgreSQL's spaces (so no mark), or: a parameter or dollar quote,
# a backslash, a quoted identifier, a comment.
_UNSAFE: Final = re.compile(r"""[^\t\n\r\f\x20-\x7e]|[$\\"]|--|/\*""")
# One pattern per mark; each also checks the literal's neighbours, so that it matches exactly where
# the tokenizer (``_LITERAL``) would find that literal.
_INT4: Final = (  # 0 to 2147483647, with any leading zeros (PostgreSQL's strtoint)
    r"0*(?:\d{1,9}|1\d{9}|2(?:0\d{8}|1(?:[0-3]\d{7}|4(?:[0-6]\d{6}|7(?:[0-3]\d{5}|4(?:[0-7]\d{4}"
    r"|8(?:[0-2]\d{3}|3(?:[0-5]\d{2}|6(?:[0-3]\d|4[0-7])))))))))(?![\w.])"
)
_PATTERNS: Final = {
    # No prefix (E, B, X, U&), no unsafe character or comment in it.
    STRING: r"""(?<![\w&])'(?:[^'\x00-\x08\x0b\x0e-\x1f\x7f-\U0010ffff$\\"/-]|-(?!-)|/(?!\*)|'')*'""",
    INTEGER: rf"(?<![\w.]){_INT4}",
    NUMBER: rf"(?<![\w.])(?!{_INT4})(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.])",
    TRUE: r"(?<![\w.])(?i:true)(?![\w.])",
    FALSE: r"(?<![\w.])(?i:false)(?![\w.])",
}
_AT: Final = {mark: re.compile(pattern, re.ASCII) for mark, pattern in _PATTERNS.items()}
_LITERAL: Final = re.compile(
    "|".join(f"(?P<m{ord(mark)}>{pattern})" for mark, pattern in _PATTERNS.items()), re.ASCII
)


def shape_of(sql: str) -> str | None:
    """PostgreSQL's normalized text (literals as $n), the key under which analyses are shared;
    None for strings too long to be worth it or that do not parse."""
    if len(sql) <= SHAPE_CACHED_TEXT:
        return _cached_shape(sql)
    return _shape(sql)


@functools.lru_cache(maxsize=1024)  # the gate's lookup and then the statement's audit record ask
def _cached_shape(sql: str) -> str | None:
    if not sql.isascii():
        return _shape(sql)
    key = sql.encode().translate(None, _DIGITS)
    if b"'" in key:
        key = b"'".join(key.split(b"'")[::2])  # the text outside strings, without digits
    for skeleton in _skeletons.get(key, ()):
        if skeleton.matches(sql):
            return skeleton.shape or _shape(sql)
    shape = _shape(sql)
    text = skeleton_of(sql)
    if text is not None:
        _skeletons.remember(key, Skeleton(text, shape))
    return shape


def skeleton_of(sql: str) -> str | None:
    """The text with each literal replaced by the mark of its class; None when ``re`` cannot be
    trusted to find the literals as PostgreSQL's lexer would."""
    if _UNSAFE.search(sql) is not None:
        return None
    skeleton = _LITERAL.sub(_mark, sql)
    return None if "'" in skeleton else skeleton  # an unterminated or prefixed string


def _mark(literal: re.Match[str]) -> str:
    return chr(int((literal.lastgroup or "m0")[1:]))


class Skeleton:
    """A skeleton as the text between its literals (``pieces``) and the marks of their classes,
    with the shape of the first text seen ("" when pglast must be asked for each text)."""

    __slots__ = ("_steps", "marks", "pieces", "shape", "size")

    def __init__(self, skeleton: str, shape: str | None) -> None:
        self.pieces = tuple(_MARK.split(skeleton))
        self.marks = "".join(_MARK.findall(skeleton))
        self._steps = tuple((_AT[m], p) for m, p in zip(self.marks, self.pieces[1:], strict=True))
        self.size = len(skeleton)
        self.shape = shape if shape is not None and self.agrees(shape) else ""

    def text(self) -> str:
        """The skeleton as ``skeleton_of`` gives it."""
        pieces = self.pieces
        return pieces[0] + "".join(m + p for m, p in zip(self.marks, pieces[1:], strict=True))

    def agrees(self, shape: str) -> bool:
        """Whether pglast replaced exactly the literals this skeleton marks (the text had no $, so
        every $n in the shape is pglast's), and nothing makes the shape depend on a value."""
        text = self.text()
        if "subscription" in text.lower():  # libpg_query finds a conninfo by searching the text
            return False
        return _PARAMETER.sub("\x01", shape) == _MARK.sub("\x01", text)

    def matches(self, sql: str) -> bool:
        """Whether ``skeleton_of(sql)`` is this skeleton, found without scanning the whole text:
        the pieces in place and between them one literal of each mark's class (whose pattern
        checks its neighbours as the tokenizer does)."""
        first = self.pieces[0]
        if not sql.startswith(first):
            return False
        pos = len(first)
        for pattern, piece in self._steps:
            found = pattern.match(sql, pos)
            if found is None:
                return False
            pos = found.end()
            if not sql.startswith(piece, pos):
                return False
            pos += len(piece)
        return pos == len(sql)


def _shape(sql: str) -> str | None:
    if len(sql) > SHAPE_TEXT_LIMIT:
        return None
    try:
        return normalize(sql)
    except (ParseError, ValueError):
        return None


class _Skeletons(dict[bytes, list[Skeleton]]):
    """Skeletons by a cheap key (the text without digits and string contents, which texts of
    other skeletons can share: t1 and t2), bounded by keys and characters, the oldest key first."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def remember(self, key: bytes, skeleton: Skeleton) -> None:
        size = _size(key, skeleton)
        while self and (len(self) >= SKELETON_KEYS or self.chars + size > SKELETON_CHARS):
            oldest = next(iter(self))
            self.chars -= sum(_size(oldest, s) for s in self.pop(oldest))
        same = self.setdefault(key, [])
        for old in [s for s in same if s.pieces == skeleton.pieces and s.marks == skeleton.marks]:
            same.remove(old)  # defensive: a held skeleton matches its own texts, so is not made again
            self.chars -= _size(key, old)
        if len(same) >= SAME_KEY_LIMIT:
            self.chars -= _size(key, same.pop(0))
        same.append(skeleton)
        self.chars += size

    def clear(self) -> None:
        super().clear()
        self.chars = 0


def _size(key: bytes, skeleton: Skeleton) -> int:
    return len(key) + 2 * skeleton.size + len(skeleton.shape)  # the key, pieces, marks and shape


_skeletons = _Skeletons()
