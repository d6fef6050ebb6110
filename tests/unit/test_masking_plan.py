"""Which result columns a restricted person sees masked (policy.masking), over the decision
fixtures' policy and catalog: contractor is restricted (maintenance), lead sees nothing clear."""

from __future__ import annotations

import pytest

from gateway.gate import PolicyService, SessionGate
from policy.decision import Allow, Deny
from policy.engine import Named
from policy.errors import PolicyInvalid
from policy.loader import load_policy
from policy.masking import FULL, _source_mask
from tests.unit.test_decisions import CATALOG, fixtures


def decide(sql: str, user: str = "contractor", named: Named | None = None) -> Allow | Deny:
    policy, _ = fixtures()
    return SessionGate(PolicyService(policy, CATALOG), user).decide(sql, named or Named()).decision


def masks(sql: str, user: str = "contractor") -> list[list[tuple[int, str, bool]]]:
    decision = decide(sql, user)
    assert isinstance(decision, Allow), decision
    return [
        [] if plan is None else [(c.index, c.mask.kind, c.derived) for c in plan.columns]
        for plan in decision.masks
    ]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT id, name, phone FROM customers WHERE id = 5", [[(1, "full", False), (2, "phone", False)]]),
        ("SELECT c.email AS e FROM customers c", [[(0, "email", False)]]),
        ("WITH x AS (SELECT phone FROM customers) SELECT * FROM x", [[(0, "phone", False)]]),
        ("SELECT p FROM (SELECT phone AS p FROM customers) s", [[(0, "phone", False)]]),
        ("SELECT phone FROM customers UNION ALL SELECT phone FROM customers", [[(0, "phone", False)]]),
        ("SELECT phone FROM customers UNION ALL SELECT 'x'", [[(0, "full", True)]]),
        ("SELECT upper(email) FROM customers", [[(0, "full", True)]]),
        ("SELECT phone || '' FROM customers", [[(0, "full", True)]]),
        ("SELECT string_agg(phone, ',') FROM customers", [[(0, "full", True)]]),
        ("SELECT left(phone, 3) FROM customers", [[(0, "full", True)]]),
        ("SELECT phone::text FROM customers", [[(0, "full", True)]]),
        ("SELECT max(name) OVER () FROM customers", [[(0, "full", True)]]),
        ("SELECT CASE WHEN id > 0 THEN email END FROM customers", [[(0, "full", True)]]),
        ("SELECT (SELECT phone FROM customers LIMIT 1)", [[(0, "full", True)]]),
        ("SELECT count(phone), count(*) FROM customers", []),
        ("SELECT id FROM customers", []),
        ("SELECT 1; SELECT phone FROM customers", [[], [(0, "phone", False)]]),
        ("SELECT * FROM orders", []),
        ("SELECT pid, state, query FROM pg_stat_activity", [[(2, "full", False)]]),
        ("SELECT upper(query) FROM pg_stat_activity", [[(0, "full", True)]]),
    ],
)
def test_every_output_derived_from_pii_is_masked(
    sql: str, expected: list[list[tuple[int, str, bool]]]
) -> None:
    assert masks(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT c FROM customers c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_jsonb(c) FROM customers c",
        "SELECT c::text FROM customers c",
        "SELECT (customers.*)::text FROM customers",
        "SELECT json_agg(c) FROM customers c",
        "SELECT x FROM (SELECT c AS x FROM customers c) s",
    ],
)
def test_whole_rows_of_a_table_with_masked_pii_are_refused(sql: str) -> None:
    decision = decide(sql)
    assert isinstance(decision, Deny)
    assert decision.rule == "pii_whole_row"
    assert decision.sqlstate == "42501"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT attname, most_common_vals FROM pg_stats",
        "SELECT s.histogram_bounds::text FROM pg_stats s",
        "SELECT stavalues1 FROM pg_statistic",
    ],
)
def test_statistics_samples_are_refused(sql: str) -> None:
    """The planner's samples hold values of every analyzed column: reading them reads customers
    through the catalog (refused); were it allowed, the samples would be redacted whole."""
    decision = decide(sql)
    assert isinstance(decision, Deny)
    assert decision.rule == "views_over_protected"
    policy, _ = fixtures()
    permissions = SessionGate(PolicyService(policy, CATALOG), "contractor").permissions
    source = ("pg_catalog", "pg_stats", "most_common_vals")
    assert _source_mask(policy, permissions, source) == FULL


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('application_name', phone, false) FROM customers WHERE id = 1",
        "SELECT setval('orders_seq', card_number::bigint) FROM customers WHERE id = 1",
        "SELECT pg_advisory_lock(card_number::bigint) FROM customers WHERE id = 1",
        "SELECT pg_try_advisory_lock(length(phone)) FROM customers WHERE id = 1",
    ],
)
def test_values_stored_for_later_statements_are_refused(sql: str) -> None:
    decision = decide(sql)
    assert isinstance(decision, Deny)
    assert decision.rule == "pii_escape"


def test_unrestricted_people_see_clear_values() -> None:
    assert masks("SELECT phone FROM customers", "maint") == []
    assert isinstance(decide("SELECT c FROM customers c", "maint"), Allow)


def test_reading_masked_pii_redacts_error_texts() -> None:
    redacting = decide("SELECT id FROM customers WHERE phone = '1'")
    assert isinstance(redacting, Allow)
    assert redacting.redact
    plain = decide("SELECT id FROM orders")
    assert isinstance(plain, Allow)
    assert not plain.redact


def test_prepared_statements_and_cursors_carry_their_masks() -> None:
    prepared = decide("PREPARE p AS SELECT phone FROM customers; EXECUTE p")
    assert isinstance(prepared, Allow)
    assert [None if plan is None else plan.columns[0].mask.kind for plan in prepared.masks] == [
        "phone",
        "phone",
    ]
    cursor = decide("DECLARE c CURSOR FOR SELECT email FROM customers; FETCH 5 FROM c")
    assert isinstance(cursor, Allow)
    assert [None if plan is None else plan.columns[0].mask.kind for plan in cursor.masks] == [
        "email",
        "email",
    ]
    # A name from an earlier string inherits the masks it was created with.
    earlier = Named(statements={"q": prepared.statement(0)})
    later = decide("EXECUTE q", named=earlier)
    assert isinstance(later, Allow)
    assert later.masks == prepared.masks[:1]


HIDING = """
version: 1
protected_tables:
  public.customers:
    pii: {name: full, phone: phone, card_number: card}
roles:
  support: {max_rows: 100, hidden: [public.customers.card_number], pii_use: allow}
users:
  sam: {roles: [support]}
"""


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        ("SELECT name, phone FROM customers WHERE id = 1", True),
        ("SELECT card_number FROM customers WHERE id = 1", False),
        ("SELECT * FROM customers WHERE id = 1", False),
        ("SELECT id FROM customers WHERE card_number = '4111'", False),
        ("SELECT count(*) FROM customers GROUP BY card_number", False),
        ("SELECT x FROM (SELECT card_number AS x FROM customers) s", False),
        ("SELECT length(card_number) FROM customers", False),
    ],
)
def test_hidden_columns_cannot_be_touched_at_all(sql: str, allowed: bool) -> None:
    policy = load_policy(HIDING, "hiding.yaml")
    decision = SessionGate(PolicyService(policy, CATALOG), "sam").decide(sql, Named()).decision
    if allowed:
        assert isinstance(decision, Allow), decision
    else:
        assert isinstance(decision, Deny), sql
        assert decision.rule == "pii_hidden"
        assert "public.customers.card_number" in decision.message


def test_a_hidden_column_must_be_a_pii_column() -> None:
    bad = HIDING.replace("hidden: [public.customers.card_number]", "hidden: [public.customers.id]")
    with pytest.raises(PolicyInvalid, match=r"roles\.support\.hidden\[0\]: id is not a PII column"):
        load_policy(bad, "hiding.yaml")


def test_statistics_samples_and_views_are_masked_where_they_are_allowed() -> None:
    """operator may read through views (views_over_protected): the samples are redacted whole,
    every column of an unprotected view over customers too, and their whole rows are refused."""
    assert masks("SELECT attname, null_frac, most_common_vals FROM pg_stats", "operator") == [
        [(2, "full", False)]
    ]
    assert masks("SELECT stavalues1::text FROM pg_statistic", "operator") == [[(0, "full", True)]]
    assert masks("SELECT id, name FROM customer_names", "operator") == [
        [(0, "full", False), (1, "full", False)]
    ]
    for sql in ("SELECT s::text FROM pg_stats s", "SELECT row_to_json(v) FROM customer_names v"):
        decision = decide(sql, "operator")
        assert isinstance(decision, Deny)
        assert decision.rule == "pii_whole_row"


@pytest.mark.parametrize(
    ("sql", "user"),
    [
        ("SELECT set_config('my.v', phone, false) FROM customers WHERE id = 5", "contractor"),
        ("SELECT set_config('application_name', name, false) IS NULL FROM customers", "contractor"),
        ("SELECT setval('s', length(email)) FROM customers", "contractor"),
        ("SELECT pg_try_advisory_xact_lock(hashtext(card_number)) FROM customers", "contractor"),
        ("SELECT setseed(length(phone) / 99.0) FROM customers WHERE id = 5", "contractor"),
        ("CREATE TABLE x AS SELECT lower(email) FROM customers", "operator"),
        ("UPDATE notes SET body = (SELECT max(address) FROM customers)", "operator"),
        ("SELECT my_func(name) FROM customers", "operator"),
        ("DO $$BEGIN PERFORM name FROM customers; END$$", "operator"),
    ],
)  # fmt: skip
def test_masked_pii_never_leaves_the_result(sql: str, user: str) -> None:
    """Values derived from masked PII are refused wherever they would outlive the statement outside
    its result (settings, sequences, locks, tables, unanalyzed bodies), whatever the role allows."""
    decision = decide(sql, user)
    assert isinstance(decision, Deny), decision
    assert (decision.rule, decision.sqlstate) == ("pii_escape", "42501")


def test_session_state_from_other_data_stays_allowed() -> None:
    for sql in (
        "SELECT set_config('application_name', 'report', false)",
        "SELECT setval('s', (SELECT max(id) FROM orders))",
        "SELECT pg_advisory_lock(id) FROM customers WHERE id = 5",
        "SELECT count(*) FROM customers WHERE phone = '090-0000-0000'",
    ):
        assert isinstance(decide(sql), Allow), sql
