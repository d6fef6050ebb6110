# ruff: noqa: RUF001 - full-width digits and separators are the inputs under test
"""PII masks: each kind on the formats it meets, the inputs that break naive masks, and properties
that hold for any input (never raise, never show more than the kind allows, tokens keyed)."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.errors import MaskError, PolicyError
from policy.masks import FULL, SEPARATORS, masker, redact_derived
from policy.model import MASK_KINDS, Mask

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TOKEN = re.compile(rb"tok_[0-9a-f]{16}")

# Digits as the test reads them, independently of the module: ASCII and full-width 0-9.
ASCII_AND_WIDE_DIGITS = frozenset("0123456789０１２３４５６７８９")  # full-width on purpose


def _mask(mask: Mask, value: str | bytes | None) -> bytes | None:
    raw = value.encode() if isinstance(value, str) else value
    return masker(mask, KEY)(raw)


def _partial(first: int | None = None, last: int | None = None) -> Mask:
    return Mask("partial", keep_first=first, keep_last=last)


# --------------------------------------------------------------------------- table of cases

CASES = [
    # full: one constant, whatever the value and its length
    (Mask("full"), "山田 太郎", "****"),
    (Mask("full"), "a", "****"),
    (Mask("full"), "", "****"),
    (Mask("full"), b"\xff\xfe", "****"),
    # partial: keep_last / keep_first around the constant; at least half (rounded up) hidden
    (_partial(last=4), "4111111111111111", "****1111"),
    (_partial(last=4), "12345678", "****5678"),
    (_partial(last=4), "1234567", "****567"),  # 7 characters: at most 3 shown
    (_partial(last=4), "abc", "****c"),  # 3 characters: 1 shown, never all 3
    (_partial(last=4), "ab", "****b"),
    (_partial(last=4), "a", "****"),
    (_partial(last=4), "", "****"),
    (_partial(first=3), "東京都港区芝公園4-2-8", "東京都****"),  # characters, not bytes
    (_partial(first=3), "東京都", "東****"),
    (_partial(first=3), "東京", "東****"),
    (_partial(first=1), "山田太郎", "山****"),
    (_partial(first=2, last=2), "abcdefgh", "ab****gh"),
    (_partial(first=2, last=2), "abcde", "ab****"),  # budget 2: keep_first served first
    (_partial(first=1, last=3), "abcdef", "a****ef"),
    (_partial(first=10**9), "abcdef", "abc****"),
    (_partial(), "anything", "****"),  # neither option keeps nothing
    (_partial(first=3), b"\xe6\x9d\xb1\xe4\xba\xac\xe9\x83\xbd\xff", "****"),  # not UTF-8
    (_partial(last=2), b"abcdef\x80", "****"),
    # email: the domain after the last @, if it is a host name
    (Mask("email"), "taro.yamada@example.co.jp", "****@example.co.jp"),
    (Mask("email"), "a@example.com", "****@example.com"),
    (Mask("email"), '"a@b"@example.com', "****@example.com"),  # multiple @: the last one
    (Mask("email"), "a@b@c", "****"),
    (Mask("email"), "taro@例え.jp", "****@例え.jp"),
    (Mask("email"), "TARO@Mail-1.Example.COM", "****@Mail-1.Example.COM"),
    (Mask("email"), "no at sign at all", "****"),
    (Mask("email"), "@example.com", "****"),  # no local part: nothing to hide, so show nothing
    (Mask("email"), "taro@", "****"),
    (Mask("email"), "taro@localhost", "****"),  # one label: not shown
    (Mask("email"), "taro@exa mple.com", "****"),
    (Mask("email"), "taro@example.com ", "****"),
    (Mask("email"), "taro@-example.com", "****"),
    (Mask("email"), "taro@example..com", "****"),
    (Mask("email"), "山田太郎 東京都港区", "****"),
    (Mask("email"), "", "****"),
    (Mask("email"), b"taro@example.\xff", "****"),
    (Mask("email"), b"ta\xffro@example.com", "****"),
    (Mask("email"), "x@" + "a." * 130 + "jp", "****"),  # longer than a host name can be
    # phone: separators in place, the last 4 digits when there are at least 8
    (Mask("phone"), "090-1234-5678", "***-****-5678"),
    (Mask("phone"), "03-1234-5678", "**-****-5678"),
    (Mask("phone"), "+81-90-1234-5678", "+**-**-****-5678"),
    (Mask("phone"), "+81 3 1234 5678", "+** * **** 5678"),
    (Mask("phone"), "(03) 1234-5678", "(**) ****-5678"),
    (Mask("phone"), "0120-123-456", "****-**3-456"),
    (Mask("phone"), "09012345678", "*******5678"),
    (Mask("phone"), "０９０－１２３４－５６７８", "***－****－５６７８"),
    (Mask("phone"), "０９０ー１２３４ー５６７８", "***ー****ー５６７８"),  # long-vowel mark as hyphen
    (Mask("phone"), "090-1234-５６７８", "***-****-５６７８"),  # mixed widths
    (Mask("phone"), "０３（１２３４）５６７８", "**（****）５６７８"),
    (Mask("phone"), "090-1234-5678 自宅", "***-****-5678 **"),  # words are not separators
    (Mask("phone"), "tel:090-1234-5678", "*******-****-5678"),  # ':' is not a separator either
    (Mask("phone"), "090-1234-5678 ext 12", "***-****-**78 *** 12"),  # the value's last 4 digits
    (Mask("phone"), "12345678", "****5678"),  # 8 digits: 4 kept, 4 hidden
    (Mask("phone"), "1234567", "*******"),  # fewer than 8 digits: none kept
    (Mask("phone"), "03-1234", "**-****"),
    (Mask("phone"), "110", "***"),
    (Mask("phone"), "#7119", "*****"),
    (Mask("phone"), "不明", "****"),  # no digit: the constant
    (Mask("phone"), "n/a", "****"),
    (Mask("phone"), "---", "****"),
    (Mask("phone"), "", "****"),
    (Mask("phone"), b"090-1234-5678\xff", "****"),
    # card: the last 4 digits, separators in place
    (Mask("card"), "4111 1111 1111 1111", "**** **** **** 1111"),
    (Mask("card"), "4111-1111-1111-1111", "****-****-****-1111"),
    (Mask("card"), "4111111111111111", "************1111"),
    (Mask("card"), "3782 822463 10005", "**** ****** *0005"),
    (Mask("card"), "４１１１ １１１１ １１１１ １１１１", "**** **** **** １１１１"),
    (Mask("card"), "1234", "****"),
    (Mask("card"), "", "****"),
    # null: NULL for everything
    (Mask("null"), "090-1234-5678", None),
    (Mask("null"), "", None),
    (Mask("null"), b"\xff", None),
]


@pytest.mark.parametrize(("mask", "clear", "expected"), CASES)
def test_mask_cases(mask: Mask, clear: str | bytes, expected: str | None) -> None:
    assert _mask(mask, clear) == (expected.encode() if expected is not None else None)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_null_stays_null(kind: str) -> None:
    assert masker(Mask(kind), KEY)(None) is None
    assert redact_derived(Mask(kind), KEY)(None) is None
    assert redact_derived(None, KEY)(None) is None


# --------------------------------------------------------------------------- tokens


def _reference_token(key: bytes, value: bytes) -> bytes:
    return b"tok_" + hmac.new(key, value, hashlib.sha256).hexdigest()[:16].encode()


@pytest.mark.parametrize(
    "value", [b"", b"a", b"taro.yamada@example.co.jp", "山田太郎".encode(), b"\xff\x00", b"x" * 10_000]
)
@pytest.mark.parametrize("key", [KEY, b"k" * 64, b"long key " * 20])  # block-sized and hashed keys
def test_token_is_hmac_sha256(key: bytes, value: bytes) -> None:
    token = masker(Mask("token"), key)(value)
    assert token == _reference_token(key, value)
    assert token is not None
    assert TOKEN.fullmatch(token)


def test_tokens_are_deterministic_per_key_and_value() -> None:
    tokenize = masker(Mask("token"), KEY)
    again = masker(Mask("token"), bytes(KEY))  # a separately built masker with an equal key
    other = masker(Mask("token"), OTHER_KEY)
    phone = b"090-1234-5678"
    assert tokenize(phone) == tokenize(phone) == again(phone)
    assert tokenize(phone) != other(phone)
    assert tokenize(phone) != tokenize(b"090-1234-5679")
    assert tokenize(b"") != tokenize(b"0")


@settings(max_examples=300)
@given(st.binary(), st.binary())
def test_token_equality_follows_value_equality(a: bytes, b: bytes) -> None:
    tokenize = masker(Mask("token"), KEY)
    assert (tokenize(a) == tokenize(b)) == (a == b)
    assert tokenize(a) != masker(Mask("token"), OTHER_KEY)(a)


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 31])
def test_token_key_must_be_long_enough(key: bytes) -> None:
    with pytest.raises(MaskError, match="at least 32 bytes"):
        masker(Mask("token"), key)
    with pytest.raises(MaskError):
        redact_derived(Mask("token"), key)
    assert masker(Mask("full"), key)(b"x") == FULL  # other kinds do not use the key


def test_unknown_kind_is_a_fault_when_built() -> None:
    with pytest.raises(MaskError, match="unknown mask kind 'blur'") as caught:
        masker(Mask("blur"), KEY)
    assert isinstance(caught.value, PolicyError)
    assert caught.value.code == "mask_invalid"
    with pytest.raises(MaskError):
        redact_derived(Mask("blur"), KEY)


# --------------------------------------------------------------------------- derived values


@pytest.mark.parametrize(
    "mask", [Mask("full"), _partial(last=4), Mask("email"), Mask("phone"), Mask("card"), None]
)
@pytest.mark.parametrize("value", ["TARO@EXAMPLE.COM", "090-1234-5678,03-1234-5678", "", "x"])
def test_derived_values_are_redacted_whole(mask: Mask | None, value: str) -> None:
    assert redact_derived(mask, KEY)(value.encode()) == FULL


def test_derived_values_under_token_and_null() -> None:
    derived = b"TARO@EXAMPLE.COM"
    assert redact_derived(Mask("token"), KEY)(derived) == _reference_token(KEY, derived)
    assert redact_derived(Mask("null"), KEY)(derived) is None


# --------------------------------------------------------------------------- properties

# Text that looks like what each kind meets, mixed with arbitrary text so that the edges are hit.
_PHONEISH = st.text(
    alphabet=st.sampled_from("0123456789０１２３４５６７８９-－ー() +（）.ext自宅"),
    max_size=30,
)
_EMAILISH = st.emails() | st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=8), st.text(max_size=12))
TEXTS = st.text() | _PHONEISH | _EMAILISH
MASKS = st.sampled_from([Mask("full"), Mask("email"), Mask("phone"), Mask("card")]) | st.builds(
    _partial, st.none() | st.integers(1, 12), st.none() | st.integers(1, 12)
)


def _check_allowance(mask: Mask, clear: str, out: str) -> None:
    """What the output may show of the clear value, per kind, as the README states it."""
    if mask.kind == "full":
        assert out == "****"
    elif mask.kind == "partial":
        # clear[:a] + **** + clear[n-b:], a <= keep_first, b <= keep_last, a + b <= n // 2
        n = len(clear)
        shapes = {
            clear[:a] + "****" + clear[n - b :]
            for a in range((mask.keep_first or 0) + 1)
            for b in range((mask.keep_last or 0) + 1)
            if a + b <= n // 2
        }
        assert out in shapes
    elif mask.kind == "email":
        if out != "****":
            domain = out.removeprefix("****@")
            assert out == "****@" + domain
            assert clear.endswith("@" + domain)
            assert len(clear) > len(domain) + 1  # a local part was there, and is hidden
            assert "@" not in domain
            assert not any(c.isspace() for c in domain)
    else:  # phone, card
        positions = [i for i, c in enumerate(clear) if c in ASCII_AND_WIDE_DIGITS]
        if not positions:
            assert out == "****"
            return
        assert len(out) == len(clear)
        may_show = set(positions[-4:]) if len(positions) >= 8 else set()
        for i, (c, o) in enumerate(zip(clear, out, strict=True)):
            if c in SEPARATORS or i in may_show:
                assert o == c
            else:
                assert o == "*", (i, c, o)


def test_separators_are_not_information() -> None:
    # The allowance check trusts SEPARATORS: no digit may hide in it, and no letter but the
    # katakana long-vowel marks (Unicode letters) that Japanese input uses for hyphens.
    assert not any(c.isdigit() or c.isnumeric() for c in SEPARATORS)
    assert {c for c in SEPARATORS if c.isalpha()} == {"\u30fc", "\uff70"}


@settings(max_examples=1000)
@given(MASKS, TEXTS)
def test_output_shows_no_more_than_the_kind_allows(mask: Mask, clear: str) -> None:
    out = _mask(mask, clear)
    assert out is not None
    _check_allowance(mask, clear, out.decode())


@settings(max_examples=500)
@given(MASKS, TEXTS.filter(lambda s: len(s) >= 6 and "*" not in s))
def test_clear_value_never_appears_in_the_output(mask: Mask, clear: str) -> None:
    # Any value of 6 or more characters: the output neither equals nor contains it. (A value made
    # of '*' could coincide with its own mask, hence no '*' in the input; shorter values can equal
    # their mask, e.g. '****'.)
    out = _mask(mask, clear)
    assert out is not None
    assert clear.encode() not in out


@settings(max_examples=1000)
@given(st.sampled_from(MASK_KINDS), st.binary(max_size=64))
def test_any_bytes_never_raise(kind: str, raw: bytes) -> None:
    mask = Mask(kind, keep_first=2, keep_last=2) if kind == "partial" else Mask(kind)
    out = masker(mask, KEY)(raw)
    derived = redact_derived(mask, KEY)(raw)
    if kind == "null":
        assert out is None
        assert derived is None
        return
    assert out is not None
    assert derived is not None
    try:
        raw.decode()
    except UnicodeDecodeError:
        if kind != "token":
            assert out == FULL  # not UTF-8: nothing of it is shown
    if kind not in ("token", "null"):
        out.decode()  # whatever came in, what goes out is UTF-8
        assert derived == FULL


# --------------------------------------------------------------------------- the README's table

_README = Path(__file__).resolve().parents[2] / "README.md"
_EXAMPLE = re.compile(r"`([^`]*)` → `([^`]*)`(?: \((keep_first|keep_last) (\d+)\))?")


def _readme_examples() -> list[tuple[Mask, str, str]]:
    examples = []
    for line in _README.read_text(encoding="utf-8").splitlines():
        kind = line.split("|")[1].strip() if line.startswith("| ") else ""
        if kind not in ("full", "partial", "email", "phone", "card"):
            continue
        for clear, shown, option, count in _EXAMPLE.findall(line):
            mask = Mask(kind, **({option: int(count)} if option else {}))
            examples.append((mask, clear, shown))
    return examples


def test_readme_mask_examples_are_what_the_masks_do() -> None:
    examples = _readme_examples()
    assert {mask.kind for mask, _, _ in examples} == {"full", "partial", "email", "phone", "card"}
    for mask, clear, shown in examples:
        assert _mask(mask, clear) == shown.encode(), (mask, clear)
