"""StatementFacts.max_rows (policy/analysis/bounds.py): a proven upper bound on a SELECT's rows.

Pure tests over a hand-built catalog. The relay forwards a capped string as it came when the bound
fits under the cap, so every case where PostgreSQL could return more rows must give None; the
negative cases below were each checked against PostgreSQL 15 to return several rows.
"""

from __future__ import annotations

import pytest
from pglast.parser import normalize

from policy.analyze import analyze
from policy.catalog import PARTITIONED, TABLE, VIEW, Catalog, Function, Relation
from policy.facts import Analysis

ACCOUNTS = ("aid", "bid", "abalance", "filler")
CATALOG = Catalog.of(
    [
        Relation("public", "pgbench_accounts", TABLE, ACCOUNTS, key=("aid",), key_types=(23,)),
        Relation("public", "pairs", TABLE, ("a", "b", "v"), key=("a", "b"), key_types=(23, 23)),
        Relation("public", "nokey", TABLE, ("x", "y")),
        Relation("public", "parent", TABLE, ("id", "v"), key=("id",), key_types=(23,), children=True),
        Relation("public", "parts", PARTITIONED, ("id", "v"), key=("id",), key_types=(20,)),
        Relation("public", "acct_view", VIEW, ACCOUNTS, frozenset({("public", "pgbench_accounts")})),
        Relation("archive", "pairs", TABLE, ("a", "b", "v"), key=("a", "b"), key_types=(23, 23)),
    ],
    [Function("pg_catalog", "count", "internal"), Function("pg_catalog", "generate_series", "internal")],
)
SHADOWED_COUNT = Catalog.of(CATALOG.relations.values(), [Function("public", "count", "sql")])


def bound(sql: str, path: tuple[str, ...] = ("public",), catalog: Catalog = CATALOG) -> int | None:
    analysis = analyze(sql, catalog, path)
    assert analysis.error is None
    (stmt,) = analysis.statements
    assert stmt.unanalyzable is None, stmt.unanalyzable
    return stmt.max_rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",  # pgbench -S
        "SELECT * FROM pgbench_accounts WHERE aid = 1",
        "SELECT a.abalance FROM pgbench_accounts a WHERE a.aid = '1'",
        "SELECT abalance FROM public.pgbench_accounts WHERE public.pgbench_accounts.aid = 1",
        "SELECT pgbench_accounts.* FROM pgbench_accounts WHERE 1 = aid AND abalance > 0",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1::bigint",
        "SELECT abalance FROM pgbench_accounts WHERE aid = CAST('1' AS integer)",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1::int",
        "SELECT abalance, aid::text, 'x', $1 FROM pgbench_accounts "
        "WHERE (aid = 1 AND bid = 2) AND abalance > 0",
        "SELECT abalance FROM pgbench_accounts WHERE aid = NULL",
        "SELECT v FROM pairs WHERE a = 1 AND b = 2",
        "SELECT v FROM pairs WHERE b = 2 AND (v > 0 AND a = 1)",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 ORDER BY abalance FOR UPDATE",
        "SELECT DISTINCT abalance FROM pgbench_accounts WHERE aid = 1 GROUP BY abalance HAVING abalance > 0",
        "SELECT DISTINCT ON (bid) bid FROM pgbench_accounts WHERE aid = 1 ORDER BY bid, 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 AND bid IN (SELECT a FROM pairs) OFFSET 0",
        "SELECT ctid, xmin FROM pgbench_accounts WHERE aid = 1",
        "SELECT v FROM ONLY parent WHERE id = 1",  # its children's rows are left out
        "SELECT v FROM parts WHERE id = 1",  # a partitioned table's key holds across partitions
        "SELECT count(*) FROM pgbench_accounts",
        "SELECT count(*), max(abalance), 1 FROM pgbench_accounts a JOIN pairs p ON p.a = a.aid",
        "SELECT pg_catalog.sum(abalance) FROM pgbench_accounts HAVING count(*) > 1",
    ],
)
def test_a_key_lookup_or_an_aggregate_returns_one_row_at_most(sql: str) -> None:
    assert bound(sql) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT abalance FROM pgbench_accounts",
        "SELECT abalance FROM pgbench_accounts JOIN pairs ON a = aid WHERE aid = 1",  # a join
        "SELECT abalance FROM pgbench_accounts, pairs WHERE aid = 1",
        "SELECT abalance FROM acct_view WHERE aid = 1",  # a view
        "SELECT abalance FROM (SELECT * FROM pgbench_accounts) s WHERE aid = 1",  # a subquery in FROM
        "SELECT x FROM generate_series(1, 10) x WHERE x = 1",
        "SELECT abalance FROM pgbench_accounts TABLESAMPLE SYSTEM (50) WHERE aid = 1",
        "WITH w AS (SELECT 1) SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 "
        "UNION SELECT abalance FROM pgbench_accounts WHERE aid = 2",
        "SELECT y FROM nokey WHERE x = 1",  # no key
        "SELECT v FROM pairs WHERE a = 1",  # part of a composite key
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 OR aid = 2",
        "SELECT abalance FROM pgbench_accounts WHERE NOT aid <> 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid IN (1, 2)",
        "SELECT abalance FROM pgbench_accounts WHERE aid > 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = bid",
        "SELECT abalance FROM pgbench_accounts WHERE aid::text = '1'",  # a cast of the key
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1::float8",  # compared as float8
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",  # its type is the client's to declare
        "SELECT abalance FROM pgbench_accounts WHERE aid = abs(-1)",
        "SELECT abalance FROM pgbench_accounts a WHERE pgbench_accounts.aid = 1",  # not its name
        "SELECT * FROM pgbench_accounts AS a(k) WHERE k = 1",  # renamed columns
        "SELECT v FROM parent WHERE id = 1",  # and its inheritance children
        # Set-returning functions, operators (one can be a set-returning function) and attribute
        # notation naming a function multiply rows wherever PostgreSQL evaluates them after the scan.
        "SELECT generate_series(1, 1000) FROM pgbench_accounts WHERE aid = 1",
        "SELECT aid + 1 FROM pgbench_accounts WHERE aid = 1",
        "SELECT a.many FROM pgbench_accounts a WHERE aid = 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 ORDER BY generate_series(1, 3)",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 GROUP BY abalance, generate_series(1, 3)",
        "SELECT DISTINCT ON (generate_series(1, 3)) abalance FROM pgbench_accounts WHERE aid = 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 GROUP BY ROLLUP (abalance)",  # adds a total
        "SELECT abalance AS x FROM pgbench_accounts WHERE aid = 1 ORDER BY x",  # stricter than needed
        # Aggregates: only without GROUP BY, windows, or anything else in the select list.
        "SELECT count(*) FROM pgbench_accounts GROUP BY bid",
        "SELECT count(*) OVER () FROM pgbench_accounts",
        "SELECT count(*), generate_series(1, 3) FROM pgbench_accounts",
        "SELECT count(*) FROM pgbench_accounts ORDER BY generate_series(1, 3)",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abalance) FROM pgbench_accounts",
        "SELECT bid FROM pgbench_accounts HAVING count(*) > 1",
        # A LIMIT count is replaced by $n in the normalized text analyses are shared by.
        "SELECT abalance FROM pgbench_accounts LIMIT 5",
        "VALUES (1)",
        "SELECT 1",
    ],
)
def test_anything_else_has_no_bound(sql: str) -> None:
    assert bound(sql) is None


def test_a_name_two_schemas_could_mean_has_no_bound() -> None:
    assert bound("SELECT v FROM pairs WHERE a = 1 AND b = 2", ("public", "archive")) is None
    assert bound("SELECT v FROM archive.pairs WHERE a = 1 AND b = 2", ("public", "archive")) == 1


def test_no_bound_when_pg_catalog_is_searched_after_another_schema() -> None:
    """``=`` and the type names would be looked up in public first: anyone's operator."""
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 1"
    assert bound(sql, ("pg_catalog", "public")) == 1
    assert bound(sql, ("public", "pg_catalog")) is None


def test_an_aggregate_name_defined_outside_pg_catalog_has_no_bound() -> None:
    assert bound("SELECT count(*) FROM pgbench_accounts", catalog=SHADOWED_COUNT) is None
    assert bound("SELECT pg_catalog.count(*) FROM pgbench_accounts", catalog=SHADOWED_COUNT) == 1


def test_statements_that_wrap_a_select_have_no_bound() -> None:
    for sql in (
        "EXPLAIN SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "SELECT abalance INTO t FROM pgbench_accounts WHERE aid = 1",
        "PREPARE p AS SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "DECLARE c CURSOR FOR SELECT abalance FROM pgbench_accounts WHERE aid = 1",
    ):
        (stmt,) = analyze(sql, CATALOG).statements
        assert stmt.max_rows is None, sql


def _strings(sql: str) -> Analysis:
    return analyze(sql, CATALOG)


def test_a_strings_bound_is_the_sum_over_the_statements_that_return_rows() -> None:
    point = "SELECT abalance FROM pgbench_accounts WHERE aid = {}"
    assert _strings(f"BEGIN; {point.format(1)}; {point.format(2)}; COMMIT").max_rows == 2
    assert _strings(f"{point.format(1)}; SELECT abalance FROM pgbench_accounts").max_rows is None
    assert _strings("BEGIN").max_rows is None  # returns no rows: nothing to bound


def test_the_bound_depends_on_no_literal_and_keeps_the_analysis_shareable() -> None:
    """Analyses are cached by normalized text: texts of one shape must get the same bound."""
    pairs = [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 99999",
        ),
        ("SELECT abalance FROM pgbench_accounts LIMIT 1", "SELECT abalance FROM pgbench_accounts LIMIT 1000"),
    ]
    for one, other in pairs:
        assert normalize(one) == normalize(other)
        first, second = analyze(one, CATALOG), analyze(other, CATALOG)
        assert first.cacheable
        assert second.cacheable
        assert first.max_rows == second.max_rows
