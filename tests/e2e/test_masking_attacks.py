"""Attack corpus: every way we know to get clear PII out through Sekisho's masks.

Each attack runs through a gateway in front of the seeded test database as a restricted person and
everything the client receives (every cell, RowDescription, error and notice field, COPY line,
ParameterStatus and notification) goes through ``Detector``, built from the clear values read
directly from the database: a test fails if any clear PII value, or a significant fragment or
encoding of one, comes back in any form. Each statement is either refused by Sekisho (42501,
SK003, or 42601 for text PostgreSQL and Sekisho would read differently: the SQLSTATE is asserted)
or answered, possibly with PostgreSQL's own redacted error, with nothing clear; a statement that
keeps a value somewhere (a setting, a sequence, a table) is followed by the statements that would
read it back.

Two restricted people run the corpus, so that both relay paths are covered: ``contractor`` (the
maintenance role: 100 rows per statement, so simple queries are driven as extended messages) and
``alice``, here an uncapped ``exporter`` whose role allows most rule classes (COPY of protected
data, derived objects, views, DO blocks, user functions, protected writes): what those classes
allow must still never carry masked PII out of a result. ``lead`` may COPY with a cap of 3 rows
(driven COPY). ``maint`` is unrestricted and sees clear values. Statements that write run inside a
transaction that is rolled back. Known gaps (other sessions' statement texts, row counts computed
from PII) are expected failures, listed in KNOWN_LIMITATIONS.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import psycopg
import pytest

from gateway.wire import messages as m
from gateway.wire.framing import Frame
from policy.masks import masker
from policy.model import Mask
from tests.support import TEST_POLICY, Gateway, RawClient, Upstream, start_gateway

FOCUS = 5  # the customer most attacks read
REFUSALS = ("42501", "SK003")
# The suite's policy, with alice as a restricted person whose role allows nearly every rule class
# and has no row cap (simple queries then go through the relay's undriven path). Every role here
# allows PII in predicates, grouping and ordering (pii_use: allow), so that the corpus reaches the
# masks: with the suite's pii_use, many of these statements are refused before they run
# (tests/e2e/test_policy_enforcement.py covers that).
POLICY = (
    re.sub(r"    pii_use: \{[^}]*\}\n", "    pii_use: allow\n", TEST_POLICY)
    .replace(
        "  approvers: {restricted: true, max_rows: 100}\n",
        "  approvers: {restricted: true, max_rows: 100}\n"
        "  exporter:\n"
        "    restricted: true\n"
        "    pii_use: allow\n"
        "    allow: [copy_protected, derived_objects, views_over_protected, do_blocks, user_functions,\n"
        "            protected_writes, dynamic_sql]\n"
        "  capped_exporter: {restricted: true, max_rows: 3, allow: [copy_protected], pii_use: allow}\n",
    )
    .replace("  alice: {roles: [relay]}\n", "  alice: {roles: [exporter]}\n")
    .replace("  lead: {roles: [relay]}\n", "  lead: {roles: [capped_exporter]}\n")
)
MASKS = {
    "name": Mask("full"),
    "address": Mask("partial", keep_first=3),
    "phone": Mask("phone"),
    "email": Mask("email"),
    "card_number": Mask("card"),
}


# ----------------------------------------------------------------------------- clear values


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    address: str
    phone: str
    email: str
    card_number: str

    def masked(self, column: str) -> str:
        """What policy.masks makes of this customer's value (what a restricted person must see)."""
        out = masker(MASKS[column], b"")(str(getattr(self, column)).encode())
        assert out is not None
        return out.decode()


def read_clear(upstream: Upstream) -> list[Customer]:
    """Every seeded customer's PII, read directly from the database (never through Sekisho)."""
    with psycopg.connect(upstream.conninfo()) as conn:
        rows = conn.execute(
            "SELECT id, name, address, phone, email, card_number FROM customers ORDER BY id"
        ).fetchall()
    return [Customer(*row) for row in rows]


# ----------------------------------------------------------------------------- the detector


def _norm(text: str) -> str:
    """Full-width forms folded to ASCII and case folded: full-width or upper-case ``SATO`` is ``sato``."""
    return unicodedata.normalize("NFKC", text).casefold()


_BETWEEN_DIGITS = re.compile(r"(?<=\d)[\s\-().+/]+(?=\d)")
_DIGIT_RUN = re.compile(r"\d+")
_HEX_RUN = re.compile(r"[0-9a-f]{8,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
_INTEGER = re.compile(r"-?\d+")
_BYTE_RUN = re.compile(r"(?:0x[0-9a-f]{2}\s*){2,}")
MIN_DIGITS = 9  # digit needles at least this long are searched inside longer digit runs


@dataclass
class Received:
    """Everything one client got back: texts (cells, fields, lines) and result grids."""

    texts: list[str] = field(default_factory=list)
    grids: list[list[list[str]]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0

    def add_rows(self, rows: Iterable[Sequence[object]]) -> None:
        grid: list[list[str]] = []
        self.grids.append(grid)
        for row in rows:
            self.add_row(grid, row)

    def add_row(self, grid: list[list[str]], row: Sequence[object]) -> None:
        grid.append([_text_of(value) for value in row])
        self.rows += 1
        for value in row:
            self.texts += _forms_of(value)

    def add_error(self, fields: dict[str, str]) -> None:
        self.errors.append(fields)
        self.texts += fields.values()

    @property
    def sqlstates(self) -> list[str]:
        return [e.get("C", "") for e in self.errors]


def _text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _forms_of(value: object) -> list[str]:
    """A cell's text, and for bytes that are not text (binary results) also their hex and, when
    they have an integer's size, the big-endian integer they would be."""
    text = _text_of(value)
    forms = [text]
    readable = text.isprintable() and "\ufffd" not in text
    if isinstance(value, bytes | bytearray | memoryview) and not readable:
        raw = bytes(value)
        forms.append(raw.hex())
        if len(raw) in (2, 4, 8):
            forms.append(str(int.from_bytes(raw, "big", signed=True)))
    return forms


class Detector:
    """Finds clear PII, or a significant fragment or encoding of it, in what a client received.

    Searched for, in every text (case folded, full-width folded) and in decodings of it (reversed,
    hex, base64, bytes as encoding errors print them, lists of character codes, cells of a row or
    column joined): each customer's whole
    name (with and without its space), address and the part of it the mask hides, phone, email and
    its local part (with and without its digits), card number, and the MD5 and SHA-256 of each; in
    the digits of a text with separators between digits removed: the phone's and card's digit
    strings (with leading zeros dropped, as a number cast shows them) and the hidden part of the
    card. Shorter digit fragments count only as a whole digit run: the phone's hidden groups joined
    with a neighbour, and for the customer the attacks focus on, the middle group alone. The parts
    masks keep (the last 4 digits, the email domain, the first 3 address characters) are not
    needles, so masked values never count as leaks.
    """

    def __init__(self, customers: Sequence[Customer], focus: Iterable[int] = (FOCUS,)) -> None:
        self._needles: dict[int, dict[str, str]] = {}
        self._digits: dict[int, dict[str, str]] = {}
        self._runs: dict[str, str] = {}
        focused = set(focus)
        for c in customers:
            self._add_customer(c, c.id in focused)
        self._lengths = sorted(self._needles)
        self._digit_lengths = sorted(self._digits)

    def _needle(self, value: str, what: str, minimum: int = 2) -> None:
        text = _norm(value)
        if len(text) >= minimum:
            self._needles.setdefault(len(text), {})[text] = what

    def _digit_needle(self, digits: str, what: str) -> None:
        if len(digits) >= MIN_DIGITS:
            self._digits.setdefault(len(digits), {})[digits] = what
        else:
            self._runs[digits] = what

    def _add_customer(self, c: Customer, focused: bool) -> None:
        who = f"customer {c.id}"
        for column in ("name", "address", "phone", "email", "card_number"):
            value = str(getattr(c, column))
            self._needle(value, f"{who} {column}")
            self._needle(hashlib.md5(value.encode()).hexdigest(), f"{who} {column} md5")  # noqa: S324
            self._needle(hashlib.sha256(value.encode()).hexdigest(), f"{who} {column} sha256")
        self._needle(c.name.replace(" ", ""), f"{who} name without its space")
        self._needle(c.address[3:], f"{who} address (the hidden part)", 4)
        digit = re.search(r"\d", c.address)
        if digit is not None:
            self._needle(c.address[3 : digit.start()], f"{who} address (hidden town)", 4)
            self._needle(c.address[digit.start() :], f"{who} address (block)", 5)
        local = c.email.rsplit("@", 1)[0]
        self._needle(local, f"{who} email local part", 4)
        self._needle(local.rstrip("0123456789"), f"{who} email local part without digits", 5)
        digits = re.sub(r"\D", "", c.phone)
        self._digit_needle(digits, f"{who} phone digits")
        self._digit_needle(digits.lstrip("0"), f"{who} phone as a number")
        groups = re.findall(r"\d+", c.phone)
        if len(groups) == 3:
            self._digit_needle(groups[0] + groups[1], f"{who} phone prefix and middle")
            self._digit_needle(groups[1] + groups[2], f"{who} phone middle and last")
            if focused:
                self._digit_needle(groups[1], f"{who} phone middle group")
        card = re.sub(r"\D", "", c.card_number)
        self._digit_needle(card, f"{who} card digits")
        self._digit_needle(card[:-4], f"{who} card (the hidden digits)")

    # ------------------------------------------------------------------ searching

    def findings(self, received: Received) -> list[str]:
        found: dict[str, str] = {}
        for text in received.texts:
            self._scan(text, found)
        for grid in received.grids:
            for row in grid:
                self._scan_sequence(row, found)
            for column in zip(*grid, strict=False):
                self._scan_sequence(column, found)
        return [f"{what}: {excerpt!r}" for what, excerpt in sorted(found.items())]

    def _scan_sequence(self, cells: Sequence[str], found: dict[str, str]) -> None:
        """Cells that only mean something together: joined, and integers as character codes."""
        if len(cells) < 2:
            return
        self._scan("".join(cells), found, decode=False)
        codes = [int(c) for c in cells if re.fullmatch(r"-?\d+", c)]
        if len(codes) >= 3 and all(32 <= c <= 0x10FFFF for c in codes):
            self._scan("".join(map(chr, codes)), found, decode=False)

    def _scan(self, text: str, found: dict[str, str], *, decode: bool = True) -> None:
        if not text:
            return
        normalized = _norm(text)
        views = [normalized, normalized[::-1]]
        if decode:
            views += _decodings(text)
        for view in views:
            self._search(view, text, found)

    def _search(self, view: str, original: str, found: dict[str, str]) -> None:
        excerpt = original[:160]
        size = len(view)
        for length in self._lengths:
            if length > size:
                break
            needles = self._needles[length]
            for start in range(size - length + 1):
                what = needles.get(view[start : start + length])
                if what is not None:
                    found.setdefault(what, excerpt)
        digits = _BETWEEN_DIGITS.sub("", view)
        for run in _DIGIT_RUN.findall(digits):
            what = self._runs.get(run)
            if what is not None:
                found.setdefault(what, excerpt)
            for length in self._digit_lengths:
                if length > len(run):
                    break
                needles = self._digits[length]
                for start in range(len(run) - length + 1):
                    what = needles.get(run[start : start + length])
                    if what is not None:
                        found.setdefault(what, excerpt)


def _decodings(text: str) -> list[str]:
    """What a text may carry encoded: hex and base64 runs, and lists of character codes."""
    out: list[str] = []
    for run in _HEX_RUN.findall(text.lower()):
        raw = bytes.fromhex(run[: len(run) // 2 * 2])
        out.append(_norm(raw.decode("utf-8", "ignore")))
    for run in _BASE64_RUN.findall(text):
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4))
        except ValueError:
            continue
        out.append(_norm(raw.decode("utf-8", "ignore")))
    for run in _BYTE_RUN.findall(text.lower()):  # 0xe5 0xb0 0x8f, as encoding errors print bytes
        raw = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", run))
        out.append(_norm(raw.decode("utf-8", "ignore")))
    codes = [int(n) for n in _INTEGER.findall(text)]
    if len(codes) >= 3 and all(32 <= c <= 0x10FFFF for c in codes):
        out.append(_norm("".join(map(chr, codes))))
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def customers(upstream: Upstream) -> list[Customer]:
    found = read_clear(upstream)
    assert len(found) >= 1000
    return found


@pytest.fixture(scope="module")
def detector(customers: list[Customer]) -> Detector:
    return Detector(customers)


@pytest.fixture(scope="module")
def focus(customers: list[Customer]) -> Customer:
    return next(c for c in customers if c.id == FOCUS)


@pytest.fixture(scope="module")
def attack_gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("masking-attacks")
    (directory / "policy.yaml").write_text(POLICY)
    gw = start_gateway(directory, upstream.dsn)
    try:
        yield gw
    finally:
        gw.stop()
    assert "Traceback (most recent call last)" not in gw.log(), gw.log()[-4000:]


def test_the_detector_finds_clear_values_and_passes_masked_ones(
    detector: Detector, customers: list[Customer]
) -> None:
    """The detector itself: every form of a clear value is found, every masked form passes."""
    c = customers[FOCUS - 1]
    digits = re.sub(r"\D", "", c.phone)
    middle = re.findall(r"\d+", c.phone)[1]
    leaks = [
        c.name, c.name.replace(" ", ""), c.address, c.address[3:], c.phone, c.phone[::-1], digits,
        digits.lstrip("0"), middle, c.email, c.email.upper(), c.email.split("@")[0], c.card_number,
        c.card_number[:12], c.phone.replace("-", " "), c.email.encode().hex(), "\\x" + c.name.encode().hex(),
        base64.b64encode(c.email.encode()).decode(), hashlib.md5(c.phone.encode()).hexdigest(),  # noqa: S324
        ",".join(str(ord(ch)) for ch in c.email), f"(5,{c.name},x)",
        "".join(chr(ord(ch) + 0xFEE0) for ch in c.phone),  # in full-width characters
        " ".join(f"0x{byte:02x}" for byte in c.name.encode()),  # as encoding errors print bytes
    ]  # fmt: skip
    for leak in leaks:
        assert detector.findings(Received(texts=[leak])), leak
    row = Received()
    row.add_rows([list(c.phone)])  # one character per cell
    assert detector.findings(row)
    column = Received()
    column.add_rows([[str(ord(ch))] for ch in c.email])  # one character code per row
    assert detector.findings(column)
    masked = Received()
    masked.add_rows([[c.masked(col) for col in MASKS] for c in customers[:100]])
    masked.texts += ["****", "SELECT 100", "2015-01-01 03:55:00+00", "Index Scan using customers_pkey"]
    assert detector.findings(masked) == []


# ----------------------------------------------------------------------------- running attacks


def login(gw: Gateway, user: str) -> RawClient:
    client = RawClient(gw.port, 30)
    client.login(user, user, gw.database)
    return client


def exchange(client: RawClient, *messages: bytes, into: Received | None = None) -> Received:
    """Send messages in one write, read to ReadyForQuery; everything received is recorded."""
    received = into if into is not None else Received()
    client.send(b"".join(messages))
    grid: list[list[str]] | None = None
    for frame in client.recv_until(b"Z"):
        grid = _record(frame, received, grid)
    return received


def _record(frame: Frame, received: Received, grid: list[list[str]] | None) -> list[list[str]] | None:
    kind, body = frame.type, frame.body
    if kind == b"D":
        if grid is None:
            grid = []
            received.grids.append(grid)
        received.add_row(grid, m.DataRow.decode(body).values)
        return grid
    if kind in b"EN":
        fields = dict(
            m.ErrorResponse.decode(body).fields if kind == b"E" else m.NoticeResponse.decode(body).fields
        )
        if kind == b"E":
            received.add_error(fields)
        else:
            received.texts += fields.values()
    elif kind == b"d":
        received.rows += 1
        received.texts.append(m.CopyData.decode(body).data.decode("utf-8", "replace"))
    elif kind == b"S":
        status = m.ParameterStatus.decode(body)
        received.texts.append(f"{status.name}={status.value}")
    elif kind == b"T":
        received.texts += [f.name for f in m.RowDescription.decode(body).fields]
    else:
        received.texts.append(body.decode("utf-8", "replace"))
    return None if kind in b"CTIsZ" else grid


def query(client: RawClient, sql: str, into: Received | None = None) -> Received:
    return exchange(client, m.Query(sql).encode(), into=into)


@dataclass(frozen=True)
class Attack:
    """One attempt: ``sql`` and then ``reads`` (statements that would read back what it kept) in
    one session. ``expect`` is for ``sql``: ``rows`` (answered, no error), ``error`` (PostgreSQL's
    error, redacted), or the SQLSTATE of Sekisho's refusal; ``exporter`` overrides it for alice."""

    sql: str
    expect: str = "rows"
    reads: tuple[str, ...] = ()
    exporter: str | None = None

    def expected(self, user: str) -> str:
        return self.exporter if user == "alice" and self.exporter is not None else self.expect


def run_attack(gw: Gateway, user: str, attack: Attack) -> Received:
    """Run an attack in a fresh session; returns what its first statement got and, in ``texts``,
    everything the session received."""
    client = login(gw, user)
    try:
        first = query(client, attack.sql)
        everything = Received(list(first.texts), list(first.grids), list(first.errors), first.rows)
        for sql in attack.reads:
            query(client, sql, into=everything)
        query(client, "ROLLBACK", into=everything)
    finally:
        client.close()
    first.texts = everything.texts
    first.grids = everything.grids
    return first


def check(received: Received, expect: str, detector: Detector) -> None:
    leaks = detector.findings(received)
    assert leaks == [], "clear PII came back:\n" + "\n".join(leaks)
    if expect == "rows":
        assert received.errors == [], received.errors
    elif expect == "error":
        assert received.errors, "expected PostgreSQL to fail the statement"
        assert not set(received.sqlstates) & set(REFUSALS), received.errors
    else:
        refusals = [e for e in received.errors if e.get("C") == expect and "Sekisho" in e.get("M", "")]
        assert refusals, f"expected Sekisho to refuse with {expect}, got {received.errors}"


A = Attack
F = f"WHERE id = {FOCUS}"
ATTACKS: list[Attack] = [
    # --- plain and indirect references: masked with the column's own kind
    A(f"SELECT name, address, phone, email, card_number FROM customers {F}"),
    A(f"SELECT c.phone AS p, c.email AS \"e-mail\", c.name AS id FROM customers AS c WHERE c.id = {FOCUS}"),
    A(f"SELECT p, e FROM customers c(i, n, a, p, e) WHERE i = {FOCUS}"),
    A(f"SELECT * FROM customers {F}"),
    A(f"SELECT customers.* FROM customers {F}"),
    A("SELECT * FROM customers ORDER BY id LIMIT 5"),
    A(f"SELECT (c).phone, (c.*).email FROM customers c {F}"),
    A(f"WITH x AS (SELECT phone, email FROM customers {F}) SELECT * FROM x"),
    A(f"WITH t(a) AS (SELECT card_number FROM customers {F}) SELECT a FROM t"),
    A(f"WITH RECURSIVE r(v, n) AS (SELECT name, 1 FROM customers {F} UNION ALL SELECT v, n + 1 FROM r "
      "WHERE n < 3) SELECT v FROM r"),
    A("SELECT * FROM (SELECT phone AS id, id AS phone FROM customers) s WHERE phone = 5"),
    A(f"SELECT (SELECT phone FROM customers {F})"),
    A(f"SELECT s.x FROM (SELECT address AS x FROM customers {F}) s"),
    A(f"SELECT id FROM customers {F} AND phone IN (SELECT phone FROM customers)"),
    A(f"SELECT phone FROM customers {F} ORDER BY phone"),
    A(f"SELECT DISTINCT ON (email) email, phone FROM customers {F}"),
    # --- set operations
    A(f"SELECT phone FROM customers {F} UNION SELECT 'x'"),
    A(f"SELECT 'x' UNION ALL SELECT email FROM customers {F}"),
    A(f"SELECT email FROM customers {F} UNION ALL SELECT relname FROM pg_class WHERE relname = 'pg_class'"),
    A(f"SELECT phone FROM customers {F} INTERSECT SELECT phone FROM customers"),
    A(f"SELECT name FROM customers {F} EXCEPT SELECT name FROM customers WHERE id = {FOCUS + 1}"),
    A(f"SELECT x FROM (SELECT email AS x FROM customers {F} UNION SELECT phone FROM customers {F}) u"),
    # --- casts, and casts that make PostgreSQL quote the value in an error
    A(f"SELECT phone::text, phone::varchar, phone::bytea, phone::char(20), name::name FROM customers {F}"),
    A(f"SELECT CAST(phone AS integer) FROM customers {F}", "error"),
    A(f"SELECT replace(phone, '-', '')::int FROM customers {F}"),
    A(f"SELECT replace(phone, '-', '')::bigint, replace(card_number, ' ', '')::numeric FROM customers {F}"),
    A(f"SELECT to_number(phone, '99999999999') FROM customers {F}"),
    A(f"SELECT phone::date FROM customers {F}", "error"),
    A(f"SELECT card_number::numeric / 0 FROM customers {F}", "error"),
    A(f"SELECT card_number::int FROM customers {F}", "error"),
    A(f"SELECT name::int FROM customers {F}", "error"),
    A(f"SELECT email::inet FROM customers {F}", "error"),
    A(f"SELECT name::json FROM customers {F}", "error"),
    A(f"SELECT ('{{\"a\": ' || name || '}}')::jsonb FROM customers {F}", "error"),
    A(f"SELECT address::uuid FROM customers {F}", "error"),
    A(f"SELECT email::interval FROM customers {F}", "error"),
    A(f"SELECT email::money FROM customers {F}", "error"),
    A(f"SELECT phone::bit(4) FROM customers {F}", "error"),
    A(f"SELECT name::regclass FROM customers {F}", "error"),
    A(f"SELECT ('\"x\"\" ' || split_part(email, '.', 1) || ' \"\"\"')::regclass FROM customers {F}", "error"),
    A(f"SELECT to_timestamp(card_number::float8) FROM customers {F}", "error"),
    A(f"SELECT make_date(left(card_number, 9)::int, 1, 1) FROM customers {F}", "error"),
    A(f"SELECT chr((card_number::bigint % 2000000000)::int) FROM customers {F}", "error"),
    A(f"SELECT to_date(name, 'YYYY') FROM customers {F}", "error"),
    A(f"SELECT xmlparse(document name) FROM customers {F}", "error"),
    A(f"SELECT current_setting(name) FROM customers {F}", "error"),
    A(f"SELECT decode(email, 'base64') FROM customers {F}", "error"),
    A(f"SELECT jsonb_path_query('{{}}', ('strict $.' || split_part(email, '@', 1))::jsonpath) "
      f"FROM customers {F}", "error"),
    A(f"SELECT to_tsquery(name) FROM customers {F}", "error"),
    A(f"SELECT 1 / (CASE WHEN phone LIKE '0%' THEN 0 ELSE 1 END) FROM customers {F}", "error"),
    A(f"SELECT id FROM customers {F} AND phone::int > 0", "error"),
    A(f"SELECT id FROM customers {F} ORDER BY email::numeric", "error"),
    # --- values PostgreSQL prints unquoted: bytes in hex, code points, small numbers
    A(f"SELECT convert_to(name, 'LATIN1') FROM customers {F}", "error"),
    A(f"SELECT convert_from(substring(convert_to(name, 'UTF8') FROM 1 FOR 2), 'UTF8') FROM customers {F}",
      "error"),
    A(f"SELECT convert_from('\\xc3'::bytea || convert_to(substr(email, 1, 1), 'UTF8'), 'UTF8') "
      f"FROM customers {F}", "error"),
    A(f"SELECT unistr('\\+FF0A' || substr(replace(phone, '-', ''), 4, 1) || 'A') FROM customers {F}",
      "error"),
    A(f"SELECT unistr('\\+FF' || translate(substr(replace(phone, '-', ''), 3, 4), '0123456789', "
      f"'ABCDEFABCD')) FROM customers {F}", "error"),
    A(f"SELECT setweight(to_tsvector('a'), substr(phone, 4, 1)::\"char\") FROM customers {F}", "error"),
    A(f"SELECT format('%' || substr(phone, 4, 1) || '$s', 'a') FROM customers {F}", "error"),
    A(f"SELECT to_tsquery('a <' || substr(replace(phone, '-', ''), 3, 4) || '> b') FROM customers {F}"),
    # --- functions and operators: a computed value is redacted whole
    A(f"SELECT upper(name), lower(email), initcap(email), reverse(phone), substr(phone, 4, 4), "
      f"left(card_number, 12), right(email, 12), split_part(email, '@', 1) FROM customers {F}"),
    A(f"SELECT translate(phone, '0123456789', 'abcdefghij'), replace(phone, '-', ''), "
      f"regexp_replace(email, '@.*', ''), overlay(phone PLACING 'x' FROM 1 FOR 1), btrim(name) "
      f"FROM customers {F}"),
    A(f"SELECT md5(phone), sha256(convert_to(email, 'UTF8')), encode(convert_to(name, 'UTF8'), 'hex'), "
      f"encode(convert_to(email, 'UTF8'), 'base64'), encode(convert_to(address, 'UTF8'), 'escape') "
      f"FROM customers {F}"),
    A(f"SELECT length(name), octet_length(address), ascii(substr(phone, 5, 1)), position('-' IN phone), "
      f"strpos(email, '.'), to_hex(card_number::bigint) FROM customers {F}"),
    A("SELECT " + ", ".join(f"ascii(substr(phone, {i}, 1))" for i in range(1, 14)) + f" FROM customers {F}"),
    A(f"SELECT g, ascii(substr(email, g, 1)) FROM customers, generate_series(1, 20) g {F} ORDER BY g"),
    A(f"SELECT substr(phone, g, 1) FROM customers, generate_series(1, 13) g {F} ORDER BY g"),
    A(f"SELECT quote_literal(name), quote_ident(email), lpad(phone, 20, '*'), rpad(email, 40) "
      f"FROM customers {F}"),
    A(f"SELECT name || phone, concat(name, phone), concat_ws(',', email, phone), "
      f"format('%s %s', name, phone), phone || '' FROM customers {F}"),
    A(f"SELECT phone LIKE '03%', email ~ '^s', length(phone) > 12 FROM customers {F}"),
    A(f"SELECT to_json(phone), to_jsonb(email), json_build_array(name, phone), "
      f"jsonb_build_object('p', phone, 'e', email) FROM customers {F}"),
    A(f"SELECT ARRAY[phone], ARRAY[name, email], unnest(ARRAY[phone, card_number]) FROM customers {F}"),
    A(f"SELECT xmlelement(name p, phone), xmlforest(name, email), "
      f"xpath('/a/text()', xmlelement(name a, phone)) FROM customers {F}"),
    A(f"SELECT to_tsvector('simple', email), plainto_tsquery(name), name::tsvector FROM customers {F}"),
    A(f"SELECT pg_typeof(phone), pg_column_size(phone), num_nulls(phone, email) FROM customers {F}"),
    # --- aggregates and windows
    A("SELECT string_agg(phone, ','), array_agg(email), json_agg(card_number), jsonb_agg(name) "
      "FROM customers WHERE id <= 5"),
    A("SELECT min(phone), max(email), min(address), max(card_number) FROM customers WHERE id <= 5"),
    A("SELECT jsonb_object_agg(id, phone), json_object_agg(name, email) FROM customers WHERE id <= 5"),
    A("SELECT xmlagg(xmlelement(name p, phone)), array_agg(DISTINCT address) FROM customers WHERE id <= 5"),
    A("SELECT mode() WITHIN GROUP (ORDER BY name), percentile_disc(0.5) WITHIN GROUP (ORDER BY phone) "
      "FROM customers WHERE id <= 5"),
    A("SELECT string_agg(email, ',') FILTER (WHERE id > 2), count(DISTINCT phone) FROM customers "
      "WHERE id <= 5"),
    A("SELECT phone, count(*) FROM customers WHERE id <= 5 GROUP BY phone"),
    A("SELECT lag(phone) OVER (ORDER BY id), lead(email) OVER (ORDER BY id), "
      "first_value(name) OVER w, last_value(card_number) OVER w, nth_value(address, 2) OVER w "
      "FROM customers WHERE id <= 5 WINDOW w AS (ORDER BY id)"),
    A("SELECT id, row_number() OVER (PARTITION BY phone ORDER BY email) FROM customers WHERE id <= 5"),
    # --- CASE and friends
    A(f"SELECT CASE WHEN id = {FOCUS} THEN phone END, CASE phone WHEN phone THEN name END, "
      f"coalesce(NULL, phone), nullif(email, 'x'), greatest(phone, email) FROM customers {F}"),
    # --- row constructors and whole rows
    A(f"SELECT ROW(name, phone), (name, phone)::text, ROW(email, card_number)::text FROM customers {F}"),
    A(f"SELECT c FROM customers c {F}", "42501"),
    A(f"SELECT customers FROM customers {F}", "42501"),
    A(f"SELECT c.*::text FROM customers c {F}", "42501"),
    A(f"SELECT c::text FROM customers c {F}", "42501"),
    A(f"SELECT row_to_json(c) FROM customers c {F}", "42501"),
    A(f"SELECT to_jsonb(c) FROM customers c {F}", "42501"),
    A(f"SELECT to_json(c) ->> 'phone' FROM customers c {F}", "42501"),
    A(f"SELECT json_agg(c) FROM customers c {F}", "42501"),
    A(f"SELECT array_agg(c)::text FROM customers c {F}", "42501"),
    A(f"SELECT format('%s', c) FROM customers c {F}", "42501"),
    A(f"SELECT hashtext(c::text) FROM customers c {F}", "42501"),
    A(f"SELECT (SELECT c FROM customers c {F})::text", "42501"),
    A(f"SELECT s FROM (SELECT phone FROM customers {F}) s", "42501"),
    A(f"SELECT row_to_json(s) FROM (SELECT email AS e FROM customers {F}) s", "42501"),
    A(f"SELECT j.key, j.value FROM customers c, json_each_text(row_to_json(c)) j WHERE c.id = {FOCUS}",
      "42501"),
    A("SELECT r.* FROM customers c, jsonb_populate_record(NULL::customers, to_jsonb(c)) r "
      f"WHERE c.id = {FOCUS}", "SK003"),
    A(f"SELECT r.* FROM customers c, json_populate_record(NULL::customers, json_build_object('phone', "
      f"c.phone)) r WHERE c.id = {FOCUS}", "SK003"),
    A("SELECT r.phone FROM json_populate_recordset(NULL::customers, (SELECT json_agg(json_build_object("
      f"'phone', phone)) FROM customers {F})) r"),
    # --- VALUES, LATERAL and set-returning functions over PII in FROM
    A(f"SELECT v.x, c.phone FROM customers c JOIN (VALUES ({FOCUS}, 'a')) v(i, x) ON v.i = c.id"),
    A(f"SELECT v.column1, v.column2 FROM customers c, LATERAL (VALUES (c.phone, c.email)) v "
      f"WHERE c.id = {FOCUS}"),
    A(f"SELECT s.p FROM customers c, LATERAL (SELECT c.phone AS p) s WHERE c.id = {FOCUS}"),
    A(f"SELECT x FROM customers c, regexp_split_to_table(c.phone, '-') x WHERE c.id = {FOCUS}"),
    A(f"SELECT t.* FROM customers c, string_to_table(c.email, '@') t WHERE c.id = {FOCUS}"),
    A(f"SELECT * FROM customers c, string_to_table(c.phone, '-') WHERE c.id = {FOCUS}"),
    A(f"SELECT u FROM customers c, unnest(ARRAY[c.name, c.phone]) u WHERE c.id = {FOCUS}"),
    A(f"SELECT x, n FROM customers c, regexp_split_to_table(c.card_number, '') WITH ORDINALITY t(x, n) "
      f"WHERE c.id = {FOCUS}"),
    A(f"SELECT x FROM customers c, ROWS FROM (string_to_table(c.phone, '-')) x WHERE c.id = {FOCUS}"),
    A(f"SELECT r.* FROM customers c, json_to_record(json_build_object('p', c.phone, 'e', c.email)) "
      f"AS r(p text, e text) WHERE c.id = {FOCUS}"),
    A(f"SELECT j.key, j.value FROM customers c, json_each_text(json_build_object('p', c.phone)) j "
      f"WHERE c.id = {FOCUS}"),
    A(f"SELECT m FROM customers c, regexp_matches(c.email, '(.*)@') m WHERE c.id = {FOCUS}"),
    A(f"SELECT e FROM customers c, jsonb_array_elements_text(to_jsonb(ARRAY[c.phone])) e "
      f"WHERE c.id = {FOCUS}"),
    A(f"SELECT x FROM customers c, generate_series(1, length(c.phone)) x WHERE c.id = {FOCUS}"),
    A(f"SELECT * FROM unnest((SELECT array_agg(phone) FROM customers {F}))"),
    # --- EXPLAIN
    A(f"EXPLAIN (VERBOSE, COSTS OFF) SELECT phone FROM customers {F}"),
    A(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT phone FROM customers "
      f"WHERE phone = (SELECT phone FROM customers {F})"),
    A(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) "
      f"SELECT name, email FROM customers {F}"),
    A(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT YAML) SELECT * FROM customers {F}"),
    A(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT XML) "
      f"SELECT upper(phone) FROM customers {F}"),
    A(f"EXPLAIN ANALYZE SELECT phone::int FROM customers {F}", "error"),
    # --- prepared statements and cursors in SQL
    A(f"PREPARE p AS SELECT name, phone FROM customers WHERE id = $1; EXECUTE p({FOCUS})"),
    A(f"PREPARE p AS SELECT upper(email), card_number FROM customers {F}", reads=("EXECUTE p",)),
    A("PREPARE p(int) AS SELECT row_to_json(c) FROM customers c WHERE id = $1", "42501",
      reads=(f"EXECUTE p({FOCUS})",)),
    A(f"BEGIN; DECLARE c CURSOR FOR SELECT name, phone, card_number FROM customers WHERE id <= {FOCUS}; "
      "FETCH 2 FROM c; FETCH ALL FROM c; COMMIT"),
    A(f"DECLARE h CURSOR WITH HOLD FOR SELECT email, address FROM customers {F}",
      reads=("FETCH ALL FROM h", "MOVE BACKWARD ALL IN h", "FETCH NEXT FROM h")),
    A(f"BEGIN; DECLARE c CURSOR FOR SELECT c FROM customers c {F}", "42501", reads=("FETCH ALL FROM c",)),
    # --- several statements in one string
    A(f"SELECT 1; SELECT name, phone FROM customers {F}; SELECT upper(email) FROM customers {F}"),
    A(f"SELECT phone FROM customers {F}; SELECT phone::int FROM customers {F}", "error"),
    A(f"SELECT 1; SELECT c FROM customers c {F}", "42501"),
    A(f"BEGIN; SELECT email::int FROM customers {F}; COMMIT", "error"),
    # --- values kept outside the result: settings, sequences, locks, tables
    A(f"SELECT set_config('my.v', phone, false) FROM customers {F}", "42501",
      reads=("SHOW my.v", "SELECT current_setting('my.v', true)")),
    A(f"SELECT 1 FROM customers {F} AND set_config('application_name', email, false) IS NOT NULL", "42501",
      reads=("SHOW application_name",)),
    A(f"SELECT count(*) FROM customers {F} AND set_config('my.v', name, true) <> ''", "42501",
      reads=("SELECT current_setting('my.v', true)",)),
    A(f"UPDATE pg_settings SET setting = (SELECT phone FROM customers {F}) WHERE name = 'application_name'",
      "42501", reads=("SHOW application_name",)),
    A(f"CREATE TEMP SEQUENCE s; SELECT setval('s', replace(phone, '-', '')::bigint) FROM customers {F}",
      "42501", reads=("SELECT last_value FROM s",)),
    A(f"SELECT pg_advisory_lock(replace(phone, '-', '')::bigint) FROM customers {F}", "42501",
      reads=("SELECT classid, objid, (classid::bigint << 32) + objid::bigint FROM pg_locks "
             "WHERE locktype = 'advisory'",)),
    A(f"BEGIN; SELECT pg_try_advisory_xact_lock(replace(card_number, ' ', '')::bigint) FROM customers {F}",
      "42501", reads=("SELECT (classid::bigint << 32) + objid::bigint FROM pg_locks "
                      "WHERE locktype = 'advisory'",)),
    A(f"SELECT setseed(replace(phone, '-', '')::float8 / 1e11) FROM customers {F}", "42501"),
    A(f"PREPARE k AS SELECT set_config('my.v', phone, false) FROM customers {F}", "42501",
      reads=("EXECUTE k", "SHOW my.v")),
    A(f"DECLARE k CURSOR WITH HOLD FOR SELECT set_config('my.v', email, false) FROM customers {F}", "42501",
      reads=("FETCH ALL k", "SHOW my.v")),
    A(f"EXPLAIN ANALYZE SELECT set_config('my.v', name, false) FROM customers {F}", "42501",
      reads=("SHOW my.v",)),
    A(f"EXPLAIN SELECT set_config('my.v', name, false) FROM customers {F}", reads=("SHOW my.v",)),
    A("CREATE TEMP TABLE t (p text)", reads=(
        f"PREPARE w AS INSERT INTO t SELECT phone FROM customers {F}", "EXECUTE w",
        f"EXPLAIN ANALYZE INSERT INTO t SELECT email FROM customers {F}",
        f"WITH x AS (INSERT INTO t SELECT card_number FROM customers {F} RETURNING 1) SELECT count(*) FROM x",
        "TABLE t")),
    A("CREATE TEMP TABLE t (p text PRIMARY KEY)", "rows",
      reads=(f"INSERT INTO t SELECT phone FROM customers {F}",
             f"INSERT INTO t SELECT phone FROM customers {F}",
             "SELECT p FROM t")),
    A("CREATE TEMP TABLE t (p text CHECK (p = ''))", "rows",
      reads=(f"INSERT INTO t SELECT email FROM customers {F}", "SELECT p FROM t")),
    A("CREATE TEMP TABLE t (p text)", "rows",
      reads=("INSERT INTO t VALUES ('x')", f"UPDATE t SET p = (SELECT phone FROM customers {F})",
             f"UPDATE t SET p = c.email FROM customers c WHERE c.id = {FOCUS}",
             f"INSERT INTO t VALUES ((SELECT name FROM customers {F}))",
             f"MERGE INTO t USING customers c ON false WHEN NOT MATCHED AND c.id = {FOCUS} "
             "THEN INSERT VALUES (c.card_number)", "SELECT p FROM t")),
    A(f"CREATE TEMP TABLE t2 AS SELECT phone, email FROM customers {F}", "42501", reads=("TABLE t2",)),
    A(f"SELECT name, address INTO TEMP t3 FROM customers {F}", "42501", reads=("TABLE t3",)),
    A(f"CREATE TEMP VIEW v AS SELECT phone FROM customers {F}", "42501", reads=("TABLE v",)),
    A(f"PREPARE q AS SELECT phone FROM customers {F}; CREATE TEMP TABLE t4 AS EXECUTE q", "42501",
      reads=("TABLE t4",)),
    A(f"WITH w AS (SELECT card_number FROM customers {F}) SELECT * INTO TEMP t5 FROM w", "42501",
      reads=("TABLE t5",)),
    # --- writes to protected tables (refused for contractor; refused as PII copies for alice)
    A(f"BEGIN; UPDATE customers SET email = phone || '@x.example.com' {F}", "42501",
      reads=(f"SELECT email FROM customers {F}",)),
    A(f"BEGIN; UPDATE customers SET address = reverse(phone) {F}", "42501",
      reads=(f"SELECT address FROM customers {F}",)),
    A("BEGIN; UPDATE orders SET status = c.phone FROM customers c WHERE c.id = orders.customer_id "
      f"AND c.id = {FOCUS}", "42501", reads=(f"SELECT status FROM orders WHERE customer_id = {FOCUS}",)),
    A("BEGIN; INSERT INTO customers SELECT 100000 + id, name, address, phone, email, card_number, "
      "created_at "
      f"FROM customers {F} RETURNING phone", "42501"),
    A(f"BEGIN; UPDATE customers SET name = NULL {F}", "42501", exporter="error"),
    A(f"BEGIN; UPDATE customers SET created_at = created_at {F} RETURNING name, phone, email", "42501",
      exporter="rows"),
    # --- code that runs where masks cannot follow
    A(f"DO $$BEGIN RAISE NOTICE '%', (SELECT phone FROM customers {F}); END$$", "42501"),
    A(f"DO $$DECLARE r record; BEGIN SELECT * INTO r FROM customers {F}; RAISE EXCEPTION '%', r.email; END$$",
      "42501"),
    A("CREATE FUNCTION pg_temp.echo(text) RETURNS text LANGUAGE sql AS 'SELECT $1'", "rows",
      reads=(f"SELECT pg_temp.echo(phone) FROM customers {F}",)),
    A(f"SELECT query_to_xml('SELECT phone FROM customers {F}', true, false, '')", "42501",
      exporter="rows"),
    A(f"LISTEN ch; SELECT pg_notify('ch', phone) FROM customers {F}", "42501", reads=("SELECT 1",)),
    A(f"LISTEN ch; SELECT pg_notify('ch', (SELECT email FROM customers {F}))", "42501", reads=("SELECT 1",)),
    # --- the planner's samples and views over customers
    A("SELECT most_common_vals, histogram_bounds FROM pg_stats WHERE tablename = 'customers'", "42501",
      exporter="rows"),
    A("SELECT s::text FROM pg_stats s WHERE tablename = 'customers'", "42501"),
    A("SELECT stavalues1::text FROM pg_statistic WHERE starelid = 'customers'::regclass", "42501",
      exporter="rows"),
    A(f"SELECT name, phone FROM attack_view {F}", "42501", exporter="rows"),
    A(f"SELECT v::text FROM attack_view v {F}", "42501"),
    # --- names written every way PostgreSQL reads them
    A(f"SELECT PHONE, \"email\" FROM CUSTOMERS WHERE ID = {FOCUS}"),
    A(f"SELECT public.customers.phone FROM public.customers WHERE id = {FOCUS}"),
    A(f"SELECT sekisho_test.public.customers.phone FROM sekisho_test.public.customers WHERE id = {FOCUS}"),
    A(f"SELECT U&\"ph\\006Fne\" FROM customers {F}"),
    A(f"SELECT \"C\".card_number FROM customers AS \"C\" WHERE \"C\".id = {FOCUS}"),
    A(f"SET search_path = pg_temp, public; SELECT phone FROM customers {F}"),
    A("CREATE TEMP TABLE customers (id bigint, phone text)", "rows",
      reads=(f"SELECT phone FROM customers {F}", f"SELECT phone FROM public.customers {F}")),
    A(f"SELECT phone FROM ONLY customers {F}"),
    A(f"SELECT phone FROM customers TABLESAMPLE SYSTEM (100) {F}"),
    A(f"SELECT phone COLLATE \"C\" FROM customers {F}"),
    A(f"SELECT phone FROM customers {F} FOR SHARE"),
    A(f"SELECT phone -- a comment\n, /* another */ email FROM customers {F}"),
    A(f"SELECT phone FROM customers {F}\u00a0LIMIT 1", "42601"),
    # --- joins, join aliases and functional notation
    A(f"SELECT j.phone, j.amount FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j "
      f"WHERE j.customer_id = {FOCUS}"),
    A(f"SELECT j FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j WHERE j.customer_id = {FOCUS}",
      "42501"),
    A(f"SELECT phone FROM customers NATURAL JOIN (SELECT {FOCUS}::bigint AS id) f"),
    A(f"SELECT email, o.status FROM customers JOIN orders o ON o.customer_id = customers.id "
      f"WHERE customers.id = {FOCUS}"),
    A(f"SELECT phone(c) FROM customers c {F}", "42501"),
    A(f"SELECT text(c) FROM customers c {F}", "42501"),
    A(f"SELECT t.* FROM customers c CROSS JOIN LATERAL (SELECT c.*) t WHERE c.id = {FOCUS}"),
    A(f"SELECT t FROM customers c CROSS JOIN LATERAL (SELECT c) t WHERE c.id = {FOCUS}", "42501"),
    A(f"SELECT r FROM customers c, LATERAL row_to_json(c) r WHERE c.id = {FOCUS}", "42501"),
    # --- more query shapes
    A(f"VALUES ((SELECT phone FROM customers {F}))"),
    A(f"SELECT x FROM (VALUES ((SELECT email FROM customers {F}))) v(x)"),
    A("SELECT ARRAY(SELECT phone FROM customers WHERE id <= 5)"),
    A(f"SELECT (WITH y AS (SELECT phone FROM customers {F}) SELECT * FROM y)"),
    A(f"WITH x AS MATERIALIZED (SELECT name FROM customers {F}) SELECT * FROM x"),
    A("TABLE customers"),
    A("SELECT phone, email, count(*) FROM customers WHERE id <= 5 GROUP BY GROUPING SETS ((phone), (email))"),
    A("SELECT id FROM customers WHERE id <= 5 ORDER BY (SELECT phone)"),
    A(f"SELECT phone FROM customers {F} UNION ALL SELECT phone FROM customers {F} ORDER BY 1"),
    A(f"SELECT phone FROM customers WHERE id <= {FOCUS} ORDER BY id FETCH FIRST 1 ROWS WITH TIES"),
    A(f"SELECT array_agg(phone) OVER (), max(email) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) "
      f"FROM customers {F}"),
    A(f"SELECT jsonb_path_query(to_jsonb(phone), '$'), regexp_replace(phone, '(\\d+)-(\\d+)-(\\d+)', '\\2') "
      f"FROM customers {F}"),
    A(f"SELECT ts_headline(email, to_tsquery('x')), to_char(card_number::numeric, '9999 9999 9999 9999') "
      f"FROM customers {F}"),
    A(f"SELECT int8range(replace(phone, '-', '')::bigint, NULL) FROM customers {F}"),
    A(f"SELECT $$x$$ || phone, E'\\x' || email FROM customers {F}"),
    # --- a name recorded for a statement that never ran (an earlier statement of its string failed)
    A(f"SELECT 1/0; DECLARE c CURSOR WITH HOLD FOR SELECT id FROM customers {F}", "error",
      reads=(f"DECLARE c CURSOR WITH HOLD FOR SELECT name, phone FROM customers {F}", "FETCH ALL c",
             "FETCH ABSOLUTE 1 FROM c")),
    A("SELECT 1/0; PREPARE p AS SELECT 1", "error",
      reads=(f"PREPARE p AS SELECT name, phone FROM customers {F}", "EXECUTE p")),
    # --- names made through the protocol or SQL and used the other way
    A(f"BEGIN; DECLARE s SCROLL CURSOR FOR SELECT phone, email FROM customers WHERE id <= {FOCUS} "
      "ORDER BY id",
      reads=("FETCH ABSOLUTE 5 FROM s", "FETCH PRIOR FROM s", "MOVE FIRST IN s", "FETCH RELATIVE 2 FROM s",
             "FETCH BACKWARD ALL FROM s")),
    A("PREPARE p AS SELECT id FROM customers", reads=(
        "DEALLOCATE p", f"PREPARE p AS SELECT phone FROM customers {F}", "EXECUTE p",
        f"PREPARE p AS SELECT email FROM customers {F}", "EXECUTE p")),
    A(f"PREPARE p AS SELECT phone, name FROM customers {F}", reads=("CREATE TEMP TABLE t AS EXECUTE p",
                                                                  "TABLE t", "EXPLAIN (ANALYZE) EXECUTE p")),
]  # fmt: skip
USERS = ("contractor", "alice")


@pytest.fixture(scope="module")
def prepared_gateway(attack_gateway: Gateway) -> Iterator[Gateway]:
    """The attack gateway once the database has a view over customers (created through Sekisho by
    the unrestricted maint, so that Sekisho's catalog knows it at once); dropped afterwards."""
    with psycopg.connect(attack_gateway.conninfo("maint"), autocommit=True) as conn:
        conn.execute("CREATE OR REPLACE VIEW attack_view AS SELECT id, name, phone FROM customers")
    try:
        yield attack_gateway
    finally:
        with psycopg.connect(attack_gateway.conninfo("maint"), autocommit=True) as conn:
            conn.execute("DROP VIEW IF EXISTS attack_view")


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.sql[:70])
def test_attack(prepared_gateway: Gateway, detector: Detector, user: str, attack: Attack) -> None:
    received = run_attack(prepared_gateway, user, attack)
    check(received, attack.expected(user), detector)


def test_the_corpus_is_large_and_covers_every_outcome() -> None:
    assert len(ATTACKS) > 150
    assert {a.expect for a in ATTACKS} == {"rows", "error", "42501", "42601", "SK003"}


# ----------------------------------------------------------------------------- one value at a time
# Errors that print a value unquoted leak a few bytes or digits per statement: too few for the
# detector to call PII, but enough to read a column one character at a time. Their texts must carry
# no digit, no hex byte and no run of hex letters at all.

ONE_BY_ONE = [
    f"SELECT convert_to(substr(name, 2, 1), 'LATIN1') FROM customers {F}",
    f"SELECT convert_from(substring(convert_to(name, 'UTF8') FROM 1 FOR 2), 'UTF8') FROM customers {F}",
    f"SELECT convert_from('\\xf0'::bytea || convert_to(substr(email, 1, 3), 'UTF8'), 'UTF8') "
    f"FROM customers {F}",
    f"SELECT unistr('\\+FF0A' || substr(replace(phone, '-', ''), 4, 1) || 'A') FROM customers {F}",
    f"SELECT unistr('\\UF' || substr(phone, 4, 1) || 'F' || substr(phone, 5, 1) || 'F' "
    "|| substr(phone, 6, 1) "
    f"|| 'F' || substr(phone, 7, 1)) FROM customers {F}",
    f"SELECT unistr('\\+FF' || translate(substr(replace(phone, '-', ''), 3, 4), '0123456789', 'ABCDEFABCD')) "
    f"FROM customers {F}",
    f"SELECT chr(-ascii(substr(email, 2, 1))) FROM customers {F}",
    f"SELECT chr((card_number::bigint % 2000000000)::int) FROM customers {F}",
    f"SELECT make_date(left(card_number, 9)::int, 1, 1) FROM customers {F}",
    f"SELECT repeat('x', -1)::int + ascii(email) FROM customers {F} "
    "AND 1 / (ascii(email) - ascii(email)) = 0",
    f"SELECT to_tsquery('a <' || (20000 + substr(replace(phone, '-', ''), 3, 4)::int) || '> b') "
    f"FROM customers {F}",
]  # fmt: skip
_VALUE_LIKE = re.compile(r"\d|0x|\b[A-Fa-f]{4,}\b")


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("sql", ONE_BY_ONE, ids=lambda s: s[7:70])
def test_errors_leak_no_character_at_a_time(
    attack_gateway: Gateway, detector: Detector, user: str, sql: str
) -> None:
    received = run_attack(attack_gateway, user, Attack(sql, "error"))
    check(received, "error", detector)
    for error in received.errors:
        for code in "MDHWq":
            assert not _VALUE_LIKE.search(error.get(code, "")), (code, error)


# ----------------------------------------------------------------------------- extended protocol


def bind(statement: str, formats: tuple[int, ...]) -> bytes:
    return m.Bind("", statement, (), (), formats).encode()


BINARY_QUERY = (
    "SELECT name, phone, email, phone::bytea, length(phone), replace(phone, '-', '')::bigint, "
    f"ascii(email), card_number::numeric, upper(address) FROM customers {F}"
)


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("formats", [(), (1,), (0, 1, 0, 1, 1, 1, 1, 1, 0)], ids=["text", "binary", "mixed"])
def test_protocol_portals_in_text_and_binary(
    attack_gateway: Gateway, detector: Detector, focus: Customer, user: str, formats: tuple[int, ...]
) -> None:
    """Parse/Bind/Execute with every result format: the unnamed statement, a named one described
    before binding, and a portal executed a row at a time."""
    client = login(attack_gateway, user)
    try:
        unnamed = exchange(
            client,
            m.Parse("", BINARY_QUERY, ()).encode(),
            bind("", formats),
            m.Describe("P", "").encode(),
            m.Execute("", 0).encode(),
            m.Sync().encode(),
        )
        named = exchange(
            client,
            m.Parse(
                "s1", f"SELECT email, phone FROM customers WHERE id BETWEEN {FOCUS} AND {FOCUS + 2}", ()
            ).encode(),
            m.Describe("S", "s1").encode(),
            m.Sync().encode(),
        )
        portal = exchange(
            client,
            bind("s1", formats[:1]),
            m.Execute("", 1).encode(),
            m.Execute("", 1).encode(),
            m.Sync().encode(),
        )
        failing = exchange(
            client,
            m.Parse("", f"SELECT phone::int FROM customers {F}", ()).encode(),
            bind("", formats),
            m.Execute("", 0).encode(),
            m.Sync().encode(),
        )
    finally:
        client.close()
    for received in (unnamed, named, portal, failing):
        check(received, "error" if received is failing else "rows", detector)
    assert unnamed.grids[0][0][:3] == [focus.masked("name"), focus.masked("phone"), focus.masked("email")]
    assert portal.rows == 2


@pytest.mark.parametrize("user", USERS)
def test_psycopg_prepared_binary_and_named_cursors(
    attack_gateway: Gateway, detector: Detector, focus: Customer, user: str
) -> None:
    received = Received()
    with psycopg.connect(attack_gateway.conninfo(user), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: received.texts.append(str(diag.message_primary)))
        for binary in (False, True):
            for _ in range(3):  # psycopg prepares server-side after repeated runs
                cur = conn.cursor(binary=binary)
                received.add_rows(cur.execute(BINARY_QUERY, prepare=True).fetchall())
                received.add_rows(
                    cur.execute("SELECT phone, upper(name) FROM customers WHERE id = %s", (FOCUS,)).fetchall()
                )
            with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
                conn.cursor(binary=binary).execute("SELECT email::int FROM customers WHERE id = %s", (FOCUS,))
            diag = caught.value.diag
            received.texts += [str(v) for v in (diag.message_primary, diag.message_detail, diag.context)]
        with conn.transaction(), conn.cursor(name="attack", binary=True) as named:
            named.execute(
                "SELECT name, phone, card_number, md5(email) FROM customers WHERE id <= %s", (FOCUS,)
            )
            received.add_rows(named.fetchmany(2))
            received.add_rows(named.fetchall())
        received.texts.append(str(conn.info.parameter_status("application_name")))
    check(received, "rows", detector)
    assert [focus.masked("phone"), "****"] in received.grids[1]


@pytest.mark.parametrize("user", USERS)
def test_asyncpg_binary_results_prepared_statements_and_cursors(
    attack_gateway: Gateway, detector: Detector, focus: Customer, user: str
) -> None:
    async def attack() -> Received:
        received = Received()
        conn = await asyncpg.connect(attack_gateway.url(user))
        conn.add_log_listener(lambda _c, message: received.texts.append(str(message)))
        try:
            received.add_rows(await conn.fetch(BINARY_QUERY))
            statement = await conn.prepare("SELECT name, phone, email FROM customers WHERE id = $1")
            received.add_rows(await statement.fetch(FOCUS))
            received.texts += [
                str(await conn.fetchval("SELECT card_number FROM customers WHERE id = $1", FOCUS))
            ]
            async with conn.transaction():
                received.add_rows(
                    [
                        r
                        async for r in conn.cursor(
                            "SELECT phone, address FROM customers WHERE id <= $1", FOCUS
                        )
                    ]
                )
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.fetch("SELECT email::date FROM customers WHERE id = $1", FOCUS)
            received.texts += [str(v) for v in caught.value.as_dict().values()]
        finally:
            await conn.close()
        return received

    received = asyncio.run(attack())
    check(received, "rows", detector)
    assert received.grids[1] == [[focus.masked("name"), focus.masked("phone"), focus.masked("email")]]


def test_a_stale_cursor_record_unmasks_and_uncaps_nothing(
    attack_gateway: Gateway, detector: Detector
) -> None:
    """A DECLARE that never ran (its string failed first) left a record that a later DECLARE or
    Bind of the same name once inherited: no masks, and the stale statement's row cap."""
    client = login(attack_gateway, "contractor")
    try:
        stale = query(client, "SELECT 1/0; DECLARE c CURSOR WITH HOLD FOR SELECT 1")
        assert stale.sqlstates == ["22012"]
        query(client, "DECLARE c CURSOR WITH HOLD FOR SELECT id FROM customers")
        assert query(client, "FETCH ALL c").rows == 100  # the maintenance role's cap
        query(client, "CLOSE c")
        query(client, "SELECT 1/0; DECLARE d CURSOR WITH HOLD FOR SELECT 1")
        portal = exchange(
            client,
            m.Parse("s1", f"SELECT name, phone FROM customers {F}", ()).encode(),
            m.Bind("d", "s1", (), (), ()).encode(),
            m.Execute("d", 0).encode(),
            m.Sync().encode(),
        )
    finally:
        client.close()
    check(portal, "SK003", detector)


# ----------------------------------------------------------------------------- COPY (alice may)

COPY_QUERY = (
    f"SELECT id, name, address, phone, email, card_number, upper(email) FROM customers WHERE id <= {FOCUS}"
)


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ("", "rows"),
        ("WITH (FORMAT csv)", "rows"),
        ("WITH (FORMAT csv, HEADER)", "rows"),
        ("WITH (FORMAT csv, HEADER true, DELIMITER '|', QUOTE '''', ESCAPE '\\')", "rows"),
        ("WITH (FORMAT csv, FORCE_QUOTE *, NULL 'NULL')", "rows"),
        ("WITH (FORMAT csv, QUOTE '0')", "rows"),
        ("WITH (FORMAT text, DELIMITER '-')", "rows"),
        ("WITH (FORMAT text, DELIMITER '@', NULL '')", "rows"),
        ("WITH (DELIMITER ',', HEADER)", "rows"),
        ("CSV HEADER FORCE QUOTE *", "rows"),
        ("WITH (FORMAT binary)", "42501"),
        ("WITH (ENCODING 'SJIS')", "42501"),
        ("WITH (FORMAT csv, ENCODING 'EUC_JP')", "42501"),
    ],
)
def test_copy_to_stdout_carries_only_masked_values(
    attack_gateway: Gateway, detector: Detector, options: str, expect: str
) -> None:
    attack = Attack(f"COPY ({COPY_QUERY}) TO STDOUT {options}", expect)
    received = run_attack(attack_gateway, "alice", attack)
    check(received, expect, detector)
    if expect == "rows":
        assert received.rows == FOCUS + (1 if "HEADER" in options.upper() else 0)


@pytest.mark.parametrize(
    ("sql", "expect"),
    [
        ("COPY customers TO STDOUT", "rows"),
        ("COPY customers (id, phone, email) TO STDOUT WITH (FORMAT csv)", "rows"),
        (f"COPY (SELECT c FROM customers c {F}) TO STDOUT", "42501"),
        (f"COPY (SELECT row_to_json(c) FROM customers c {F}) TO STDOUT", "42501"),
        (f"COPY (SELECT phone FROM customers {F}) TO STDOUT; SELECT phone::int FROM customers {F}", "error"),
        ("COPY customers TO STDOUT WITH (FORMAT binary)", "42501"),
        (
            f"SELECT 1; COPY (SELECT name, phone FROM customers {F}) TO STDOUT WITH (FORMAT csv, HEADER); "
            f"SELECT upper(email), card_number FROM customers {F}",
            "rows",
        ),
        (f"COPY (SELECT name, phone FROM customers {F}) TO STDOUT", "42501"),  # contractor: copy_protected
    ],
)
def test_copy_of_tables_and_whole_rows(
    attack_gateway: Gateway, detector: Detector, sql: str, expect: str
) -> None:
    user = "contractor" if sql.endswith("TO STDOUT") and "SELECT name, phone" in sql else "alice"
    received = run_attack(attack_gateway, user, Attack(sql, expect))
    check(received, expect, detector)


@pytest.mark.parametrize("options", ["", "WITH (FORMAT csv, HEADER)", "WITH (FORMAT csv, QUOTE '0')"])
def test_capped_copy_is_driven_and_masked(attack_gateway: Gateway, detector: Detector, options: str) -> None:
    """lead may COPY with a cap of 3 rows: the COPY is driven as extended messages and cut."""
    attack = Attack(f"COPY ({COPY_QUERY}) TO STDOUT {options}; SELECT name, phone FROM customers {F}")
    received = run_attack(attack_gateway, "lead", attack)
    check(received, "rows", detector)
    assert 0 < received.rows <= 3


def test_copy_through_the_extended_protocol(attack_gateway: Gateway, detector: Detector) -> None:
    client = login(attack_gateway, "alice")
    try:
        received = exchange(
            client,
            m.Parse("c1", f"COPY ({COPY_QUERY}) TO STDOUT WITH (FORMAT csv, HEADER)", ()).encode(),
            m.Bind("", "c1", (), (), ()).encode(),
            m.Execute("", 0).encode(),
            m.Bind("", "c1", (), (), ()).encode(),
            m.Execute("", 0).encode(),
            m.Sync().encode(),
        )
    finally:
        client.close()
    check(received, "rows", detector)
    assert received.rows == 2 * (FOCUS + 1)


def test_copy_through_psycopg_and_psql(attack_gateway: Gateway, detector: Detector, focus: Customer) -> None:
    received = Received()
    with psycopg.connect(attack_gateway.conninfo("alice"), autocommit=True) as conn:
        with conn.cursor().copy(f"COPY ({COPY_QUERY}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            received.texts += [bytes(block).decode() for block in copy]
        with conn.cursor().copy(f"COPY ({COPY_QUERY}) TO STDOUT") as copy:
            received.add_rows(list(copy.rows()))
    done = subprocess.run(
        ["psql", "-X", "-c", rf"\copy ({COPY_QUERY}) to stdout with (format csv, header)"],
        env=attack_gateway.env("alice"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    received.texts += [done.stdout, done.stderr]
    check(received, "rows", detector)
    assert f'"{focus.masked("phone")}"' in done.stdout
    assert done.stdout.startswith("id,name,address,phone,email,card_number,upper\n")


# ----------------------------------------------------------------------------- notices and statuses


@pytest.mark.parametrize("user", USERS)
def test_debug_messages_and_parameter_statuses_carry_nothing_clear(
    attack_gateway: Gateway, detector: Detector, user: str
) -> None:
    attack = Attack(
        "SET client_min_messages = debug5",
        reads=(
            f"SELECT name, phone, upper(email) FROM customers {F}",
            f"SELECT phone::int FROM customers {F}",
            "SET debug_print_plan = on",
            f"SELECT card_number FROM customers {F} AND email LIKE '%@%'",
            "SET application_name = 'attack'",
        ),
    )
    check(run_attack(attack_gateway, user, attack), "rows", detector)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT query FROM pg_stat_activity WHERE query LIKE '%looked_up%' AND pid <> pg_backend_pid()",
        "SELECT a.query FROM pg_stat_get_activity(NULL) a WHERE a.query LIKE '%looked_up%' "
        "AND a.pid <> pg_backend_pid()",
        "SELECT q FROM pg_stat_get_backend_idset() b, pg_stat_get_backend_activity(b) q "
        "WHERE q LIKE '%looked_up%' AND pg_stat_get_backend_pid(b) <> pg_backend_pid()",
    ],
)
def test_other_sessions_query_texts(
    attack_gateway: Gateway, detector: Detector, focus: Customer, sql: str
) -> None:
    """Another session's statement text, literals included: an unrestricted person looking a
    customer up by a clear value must not show that value to a restricted one. The view's query
    column comes back redacted; the functions behind it are refused (admin_functions)."""
    started = threading.Event()

    def busy() -> None:
        with psycopg.connect(attack_gateway.conninfo("maint"), autocommit=True) as conn:
            started.set()
            conn.execute(f"SELECT pg_sleep(3), '{focus.email}' AS looked_up")

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        started.wait(10)
        received = Received()
        with psycopg.connect(attack_gateway.conninfo("contractor"), autocommit=True) as conn:
            if "pg_stat_get" in sql:
                with pytest.raises(psycopg.Error) as caught:
                    conn.execute(sql)
                assert caught.value.sqlstate == "42501"
                return
            probe = (
                "SELECT pid, query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active'"
            )
            for _ in range(40):
                rows = conn.execute(probe).fetchall()
                if rows:
                    received.add_rows(rows)
                    assert all(query == "****" for _, query in rows)
                    break
                time.sleep(0.1)
    finally:
        worker.join()
    assert received.rows >= 1
    check(received, "rows", detector)


@pytest.mark.xfail(reason="real gap (KNOWN_LIMITATIONS.md): row counts computed from masked PII are answered")
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM customers c, generate_series(1, substr(c.phone, 4, 4)::int) g "
        "WHERE c.id = {id}",
        "SELECT sum(1) FROM (SELECT generate_series(1, substr(phone, 4, 4)::int) FROM customers "
        "WHERE id = {id}) s",
        "SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 10000) "
        "LIMIT (SELECT substr(phone, 4, 4)::int FROM customers WHERE id = {id})) s",
        "SELECT count(*) FROM generate_series(1, 9999) g "
        "WHERE g <= (SELECT substr(phone, 4, 4)::int FROM customers WHERE id = {id})",
    ],
)
def test_row_counts_computed_from_pii(attack_gateway: Gateway, detector: Detector, sql: str) -> None:
    """The number of rows is not a cell: a set-returning function, a LIMIT or a predicate over a
    masked value makes count(*) (or the CommandComplete tag) that value, in one statement."""
    check(run_attack(attack_gateway, "contractor", Attack(sql.format(id=FOCUS))), "rows", detector)


# ----------------------------------------------------------------------------- legitimate work


def test_masked_lookups_show_the_masked_forms(attack_gateway: Gateway, customers: list[Customer]) -> None:
    by_id = {c.id: c for c in customers}
    with psycopg.connect(attack_gateway.conninfo("contractor"), autocommit=True) as conn:
        assert conn.execute(f"SELECT name, phone FROM customers WHERE id = {FOCUS}").fetchall() == [
            (by_id[FOCUS].masked("name"), by_id[FOCUS].masked("phone"))
        ]
        rows = conn.execute("SELECT id, email FROM customers WHERE id BETWEEN 1 AND 3 ORDER BY id").fetchall()
        assert rows == [(i, by_id[i].masked("email")) for i in (1, 2, 3)]
        assert all(email.startswith("****@") and "." in email for _, email in rows)
        row = conn.execute(
            f"SELECT id, name, address, phone, email, card_number FROM customers WHERE id = {FOCUS}"
        ).fetchone()
        assert row == (FOCUS, *(by_id[FOCUS].masked(col) for col in MASKS))
        assert conn.execute("SELECT count(*), count(DISTINCT phone) FROM customers").fetchone() == (
            len(customers),
            len({c.phone for c in customers}),
        )
        joined = conn.execute(
            "SELECT o.id, o.amount, c.name, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
            f"WHERE c.id = {FOCUS} ORDER BY o.id"
        ).fetchall()
        assert joined
        assert {(name, email) for _, _, name, email in joined} == {
            (by_id[FOCUS].masked("name"), by_id[FOCUS].masked("email"))
        }
        assert conn.execute(
            "SELECT count(*) FROM customers WHERE email LIKE %s", (by_id[FOCUS].email,)
        ).fetchone() == (1,)


def test_psql_expanded_output_shows_masked_values(attack_gateway: Gateway, focus: Customer) -> None:
    done = subprocess.run(
        ["psql", "-X", "-c", "\\x on", "-c",
         f"SELECT name, address, phone, email, card_number FROM customers {F}"],
        env=attack_gateway.env("contractor"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line.partition("|") for line in done.stdout.splitlines() if "|" in line]
    fields = {key.strip(): value.strip() for key, _, value in lines}
    assert fields == {column: focus.masked(column) for column in MASKS}
    assert Detector([focus]).findings(Received(texts=[done.stdout])) == []


def test_the_unrestricted_maint_sees_clear_values(attack_gateway: Gateway, focus: Customer) -> None:
    with psycopg.connect(attack_gateway.conninfo("maint"), autocommit=True) as conn:
        row = conn.execute(
            f"SELECT name, address, phone, email, card_number, row_to_json(c)::text FROM customers c {F}"
        ).fetchone()
    assert row is not None
    assert row[:5] == (focus.name, focus.address, focus.phone, focus.email, focus.card_number)
    assert focus.phone in str(row[5])
