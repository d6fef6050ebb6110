"""Statement shapes (gateway.shapes): the skeleton fast path answers exactly what pglast's normalize
answers, for every statement of the test corpus and for variants that change only literals, and
the gate never hands out an analysis made from a text of another shape."""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import ParseError, normalize

from gateway import gate, shapes
from gateway.gate import PolicyService
from gateway.shapes import FALSE, INTEGER, NUMBER, STRING, TRUE, shape_of, skeleton_of
from policy.analyze import analyze
from policy.facts import Analysis
from policy.loader import load_policy
from tests.support import TEST_POLICY
from tests.unit.test_analyze import CATALOG

TESTS = Path(__file__).resolve().parent.parent
SQL_START = re.compile(r"\s*(select|insert|update|delete|with|set|show|copy|explain|values|table)\b", re.I)


def pglast_shape(sql: str) -> str | None:
    """What shape_of answered before the fast path."""
    try:
        return normalize(sql)
    except (ParseError, ValueError):
        return None


def reset() -> None:
    shapes._cached_shape.cache_clear()
    shapes._skeletons.clear()


def corpus() -> list[str]:
    """The SQL of tests/fixtures/decisions.sql and the SQL-looking string constants of the unit tests."""
    found: dict[str, None] = {}
    block: list[str] = []
    for line in [*(TESTS / "fixtures" / "decisions.sql").read_text().splitlines(), ""]:
        if not line.strip():
            if block:
                found["\n".join(block)] = None
            block = []
        elif not line.startswith("--"):
            block.append(line)
    for path in sorted((TESTS / "unit").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and len(node.value) < 2000 and SQL_START.match(node.value):
                found[node.value] = None
    return list(found)


CORPUS = corpus()
VALUES: dict[str, Callable[[random.Random], str]] = {
    STRING: lambda r: "'" + r.choice(["", "x", "it''s", "5", "-", "a b", "t1", "0.5", "true"]) + "'",
    INTEGER: lambda r: r.choice(
        ["0", "1", "7", "42", "2147483647", "0002147483647", str(r.randrange(10**6))]
    ),
    NUMBER: lambda r: r.choice(["1.5", ".5", "1.", "1e5", "2.5E-3", "2147483648", "99999999999"]),
    TRUE: lambda r: r.choice(["true", "TRUE", "True"]),
    FALSE: lambda r: r.choice(["false", "FALSE"]),
}


def literals(sql: str) -> list[tuple[int, int, str]]:
    """(start, end, mark) of each literal the tokenizer finds ([] if it is not safe to tokenize)."""
    if skeleton_of(sql) is None:
        return []
    return [(m.start(), m.end(), shapes._mark(m)) for m in shapes._LITERAL.finditer(sql)]


def variant(sql: str, rnd: random.Random, *, same_class: bool = True) -> str:
    """``sql`` with its literals replaced by others (of the same class, or of any)."""
    out, last = [], 0
    for start, end, mark in literals(sql):
        kind = mark if same_class else rnd.choice(list(VALUES))
        out += [sql[last:start], VALUES[kind](rnd)]
        last = end
    return "".join(out) + sql[last:]


def variants(sql: str, count: int, seed: int) -> Iterator[str]:
    rnd = random.Random(seed)
    for i in range(count):
        yield variant(sql, rnd, same_class=i % 3 != 2)


def test_the_corpus_is_large_and_mostly_takes_the_fast_path() -> None:
    assert len(CORPUS) > 500
    safe = [sql for sql in CORPUS if literals(sql)]
    assert len(safe) > 200


def test_the_fast_path_agrees_with_pglast_on_the_corpus_and_its_literal_variants() -> None:
    hits = 0
    for n, sql in enumerate(CORPUS):
        reset()
        assert shape_of(sql) == pglast_shape(sql), sql
        for other in variants(sql, 6, n):
            before = shapes._cached_shape.cache_info().misses
            shape = shape_of(other)
            assert shape == pglast_shape(other), (sql, other)
            hits += shapes._cached_shape.cache_info().misses > before and _answered_fast(other)
    assert hits > 300  # the fast path did answer (not only pglast)


def key(sql: str) -> bytes:
    """The key ``_cached_shape`` files a text's skeletons under."""
    found = sql.encode("utf-8", "surrogatepass").translate(None, shapes._DIGITS)
    return b"'".join(found.split(b"'")[::2]) if b"'" in found else found


def _answered_fast(sql: str) -> bool:
    return any(s.shape and s.matches(sql) for s in shapes._skeletons.get(key(sql), ()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([s for s in CORPUS if literals(s)]), st.data())
def test_a_skeleton_matches_a_text_exactly_when_the_tokenizer_gives_that_skeleton(
    sql: str, data: st.DataObject
) -> None:
    """Any text put in a known skeleton's place: literals of any class and any content (quotes,
    backslashes, comments, dollars, non-ASCII) or none at all."""
    reset()
    shape_of(sql)
    pieces = []
    last = 0
    junk = st.text(alphabet=st.sampled_from(list("0123456789.eE+-'\\$\"/*_aZ &\u00a0é\n")), max_size=8)
    for start, end, _ in literals(sql):
        pieces.append(sql[last:start])
        pieces.append(
            data.draw(
                st.one_of(
                    st.just(sql[start:end]),
                    junk,
                    junk.map(lambda text: f"'{text}'"),
                    st.sampled_from(list(VALUES.values())).map(lambda f: f(random.Random(0))),
                )
            )
        )
        last = end
    other = "".join(pieces) + sql[last:]
    for skeleton in shapes._skeletons.get(key(other), ()):
        assert skeleton.matches(other) == (skeleton_of(other) == skeleton.text())
    assert shape_of(other) == pglast_shape(other)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT 1.'a'", "SELECT 1.5'a'"),  # a quote after a digit starts no string
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = '$x'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a--b'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a/*b'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a\\b'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = '\u00e9'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a\x01'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a' 'b'"),
        ("SELECT a FROM t WHERE b = 'q'", "SELECT a FROM t WHERE b = 'a'\n'b'"),
        ("SELECT a FROM t WHERE b = 5", "SELECT a FROM t WHERE b = 5.5"),
        ("SELECT a FROM t WHERE b = 5", "SELECT a FROM t WHERE b = 2147483648"),
        ("SELECT a FROM t WHERE b = 5", "SELECT a FROM t WHERE b = 5e"),
        ("SELECT a FROM t WHERE b = true", "SELECT a FROM t WHERE b = trueish"),
        ("SELECT a FROM t WHERE b = 1.5", "SELECT a FROM t WHERE b = 15"),
    ],
)
def test_a_skeleton_matches_no_text_the_tokenizer_reads_otherwise(first: str, second: str) -> None:
    reset()
    shape_of(first)
    (skeleton,) = shapes._skeletons[key(first)]
    assert skeleton.matches(first)
    assert not skeleton.matches(second)
    assert skeleton_of(second) != skeleton.text()
    assert shape_of(second) == pglast_shape(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT id FROM t1 WHERE id = 5", "SELECT id FROM t2 WHERE id = 6"),  # identifiers with digits
        ("SELECT a FROM t WHERE a = 5 AND b = t1.c", "SELECT a FROM t WHERE a = 6 AND b = t2.c"),
        ("SELECT id FROM t ORDER BY 1", "SELECT id FROM t ORDER BY 5"),  # positions, not literals
        ("SELECT id FROM t GROUP BY 1", "SELECT id FROM t GROUP BY 2147483647"),
        ('SELECT "a 1" FROM t', 'SELECT "a 2" FROM t'),  # quoted identifiers
        ("SELECT 1 FROM t LIMIT\u00a05", "SELECT 1 FROM t LIMIT\u00a06"),  # an alias to PostgreSQL
        ("SELECT 1 -- 5\n", "SELECT 1 -- 6\n"),
        ("SELECT 1 /* 5 */", "SELECT 1 /* 6 */"),
        ("SELECT $$5$$ FROM t1", "SELECT $$5$$ FROM t2"),
        ("SELECT 1::varchar(5)", "SELECT 1::varchar(6)"),  # type modifiers are kept
        ("FETCH 5 FROM c", "FETCH 6 FROM c"),
        ("SELECT 'a' FROM t", "SELECT 1 FROM t"),  # the same to pglast, other classes here
        ("SELECT x FROM t WHERE x = -1", "SELECT x FROM t WHERE x = 1"),
    ],
)
def test_two_texts_share_a_shape_exactly_when_pglast_says_so(first: str, second: str) -> None:
    reset()
    for sql in (first, second, first, second):  # the second time round, from the caches
        assert shape_of(sql) == pglast_shape(sql)
    assert (shape_of(first) == shape_of(second)) == (pglast_shape(first) == pglast_shape(second))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 FROM t LIMIT\u00a05",
        'SELECT "a 1" FROM t WHERE id = 5',
        "SELECT 1 -- 5",
        "SELECT 1 /* 5 */",
        "SELECT $1::int",
        "SELECT $$5$$",
        "SELECT E'a\\'b'",
        "SELECT E'ab'",
        "SELECT x'1F', b'101', U&'d\\0061t'",
        "SELECT 'unterminated",
    ],
)
def test_texts_the_tokenizer_cannot_be_trusted_with_go_to_pglast(sql: str) -> None:
    assert skeleton_of(sql) is None
    reset()
    assert shape_of(sql) == pglast_shape(sql)
    assert not shapes._skeletons


def test_integers_are_told_apart_from_other_numbers_where_postgresql_does() -> None:
    assert skeleton_of("SELECT 2147483647, 2147483648, 0002147483647, 1.5, t1, true, FALSE") == (
        f"SELECT {INTEGER}, {NUMBER}, {INTEGER}, {NUMBER}, t1, {TRUE}, {FALSE}"
    )
    reset()
    for sql in ("SELECT x FROM t ORDER BY 2147483648", "SELECT x FROM t ORDER BY 2147483647"):
        assert shape_of(sql) == pglast_shape(sql)
    assert shape_of("SELECT x FROM t ORDER BY 2147483647") == "SELECT x FROM t ORDER BY 2147483647"


def test_a_setting_shares_a_shape_but_never_an_analysis() -> None:
    """pglast normalizes SET's value too (``SET x = $1``): what keeps ``'a'`` and ``'b'`` apart is
    that such an analysis is not cacheable, so the gate analyzes each text afresh."""
    reset()
    service = PolicyService(load_policy(TEST_POLICY, "tests/support.py"), CATALOG)
    first, _ = service.analyze("SET search_path = 'a'")
    assert shape_of("SET search_path = 'b'") == pglast_shape("SET search_path = 'b'")
    assert service.lookup("SET search_path = 'b'") is None
    second, _ = service.analyze("SET search_path = 'b'")
    assert first.statements[0].settings != second.statements[0].settings


def test_the_gate_never_hands_out_an_analysis_made_from_another_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[int, str] = {}

    def recording(sql: str, *args: object, **kwargs: object) -> Analysis:
        analysis = analyze(sql, *args, **kwargs)  # type: ignore[arg-type]
        made[id(analysis)] = sql
        return analysis

    monkeypatch.setattr(gate, "analyze", recording)
    reset()
    service = PolicyService(load_policy(TEST_POLICY, "tests/support.py"), CATALOG)
    checked = 0
    for n, sql in enumerate(s for s in CORPUS if literals(s)):
        for text in (sql, *variants(sql, 3, n)):
            analysis, _ = service.analyze(text)
            source = made[id(analysis)]
            if source != text:
                assert pglast_shape(source) == pglast_shape(text), (source, text)
                checked += 1
    assert checked > 100


def test_the_skeletons_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes, "SKELETON_KEYS", 10)
    monkeypatch.setattr(shapes, "SKELETON_CHARS", 2000)
    reset()
    for i in range(60):
        shape_of(f"SELECT c{'x' * i} FROM t WHERE id = 5")  # a key each
        shape_of(f"SELECT a FROM t{i} WHERE id = 5")  # one key for all
    held = shapes._skeletons
    assert len(held) <= 10
    assert all(len(same) <= shapes.SAME_KEY_LIMIT for same in held.values())
    assert held.chars == sum(shapes._size(k, s) for k, same in held.items() for s in same) <= 2000
    # The newest are kept, and still answer.
    assert shape_of("SELECT a FROM t59 WHERE id = 6") == "SELECT a FROM t59 WHERE id = $1"
    assert any(s.matches("SELECT a FROM t59 WHERE id = 6") for s in held[key("SELECT a FROM t WHERE id = ")])


def test_long_texts_take_no_fast_path() -> None:
    reset()
    sql = "SELECT a FROM t WHERE b IN (" + ", ".join(["1"] * 2000) + ")"
    assert len(sql) > shapes.SHAPE_CACHED_TEXT
    assert shape_of(sql) == pglast_shape(sql)
    assert not shapes._skeletons
