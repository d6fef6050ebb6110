"""Masked PII as an inference channel (rule pii_inference): roles merged, counted uses, messages.

The statement-by-statement decisions are fixtures in tests/fixtures/decisions.sql; these tests
cover what a fixture cannot show: the merged settings, the uses a decision counts, the words of
a refusal and of ``sekisho explain``.
"""

from __future__ import annotations

import textwrap

from policy.analyze import analyze
from policy.catalog import TABLE, Catalog, Relation
from policy.decision import Allow, Decision, Deny, InferenceUse
from policy.engine import Named, evaluate
from policy.explain import render
from policy.loader import load_policy
from policy.model import DEFAULT_PII_USE, Policy
from policy.permissions import Permissions, permissions_for

CATALOG = Catalog.of(
    [
        Relation("public", "customers", TABLE, ("id", "name", "phone", "email", "created_at")),
        Relation("public", "orders", TABLE, ("id", "customer_id", "amount")),
    ],
    [],
)

POLICY = load_policy(
    textwrap.dedent(
        """\
        version: 1
        protected_tables:
          public.customers:
            pii: {name: full, phone: phone, email: email}
        roles:
          maintenance: {max_rows: 100}              # the defaults: exact lookups only
          counted: {pii_use: {where: allow, order_by: count, group_by: count, distinct: allow}}
          loose: {pii_use: allow}
          searcher: {pii_use: {where: refuse}}
          clear_email: {clear: [public.customers.email]}
          trusted: {allow: [pii_inference]}        # refused uses are allowed, and audited
          break_glass: {restricted: false}
          approvers: {}
        users:
          maint: {roles: [maintenance]}
          analyst: {roles: [counted]}
          both: {roles: [counted, maintenance]}
          loose: {roles: [loose]}
          searcher: {roles: [searcher]}
          support: {roles: [clear_email]}
          trusted: {roles: [trusted]}
          dba: {roles: [break_glass]}
          dba_and_maint: {roles: [break_glass, maintenance]}
        elevations:
          investigation:
            grants: {allow: [pii_inference]}
            approvers: [approvers]
        """
    ),
    "inference.yaml",
)


def decide(user: str, sql: str, named: Named | None = None, policy: Policy = POLICY) -> Decision:
    return evaluate(analyze(sql, CATALOG), policy, permissions_for(policy, user), named)


def permissions(user: str) -> Permissions:
    return permissions_for(POLICY, user)


# ---------------------------------------------------------------------- roles merged


def test_the_strictest_use_per_channel_wins_and_unrestricted_people_have_none() -> None:
    assert permissions("maint").pii_use == DEFAULT_PII_USE
    assert permissions("analyst").pii_use == {
        "join": "equality",
        "group_by": "count",
        "order_by": "count",
        "having": "refuse",
        "window": "refuse",
    }
    assert permissions("both").pii_use == DEFAULT_PII_USE  # refuse > equality > count > allow
    assert permissions("loose").pii_use == {}  # nothing to check
    assert permissions("dba").pii_use == {}
    assert permissions("dba_and_maint").pii_use == DEFAULT_PII_USE  # a restricted role binds
    assert permissions("nobody").pii_use == DEFAULT_PII_USE  # no role: restricted, defaults


def test_unrestricted_and_loose_people_are_never_refused() -> None:
    for user in ("dba", "loose"):
        decision = decide(user, "SELECT DISTINCT phone FROM customers WHERE email LIKE 'a%' ORDER BY phone")
        assert isinstance(decision, Allow), user
        assert decision.audited == ()
        assert decision.counted == ()


def test_columns_seen_in_clear_are_not_channels() -> None:
    assert isinstance(
        decide("support", "SELECT id FROM customers WHERE email LIKE 'a%' ORDER BY email"), Allow
    )
    refused = decide("support", "SELECT id FROM customers ORDER BY phone")
    assert isinstance(refused, Deny)
    assert refused.rule == "pii_inference"


def test_a_relation_missing_from_the_catalog_counts_as_the_protected_one_of_its_name() -> None:
    assert POLICY.masked_pii(("", "customers"), "phone", frozenset())
    assert not POLICY.masked_pii(("", "customers"), "id", frozenset())
    assert not POLICY.masked_pii(("", "customers"), "email", frozenset({("public", "customers", "email")}))
    assert not POLICY.masked_pii(("", "orders"), "phone", frozenset())


# ---------------------------------------------------------------------- counted uses


def test_counted_uses_are_listed_once_on_the_decision() -> None:
    decision = decide(
        "analyst",
        "SELECT id FROM customers WHERE phone LIKE '0%' ORDER BY phone, 1; "
        "SELECT count(*) FROM customers GROUP BY phone ORDER BY phone",
    )
    assert isinstance(decision, Allow)
    assert decision.counted == (
        InferenceUse(("public", "customers", "phone"), "order_by"),
        InferenceUse(("public", "customers", "phone"), "group_by"),
    )
    assert decision.audited == ()  # counted is not audited: the policy allows it


def test_every_execute_counts_what_its_prepared_statement_uses() -> None:
    prepared = decide("analyst", "PREPARE p AS SELECT id FROM customers ORDER BY name")
    assert isinstance(prepared, Allow)
    assert prepared.counted == (InferenceUse(("public", "customers", "name"), "order_by"),)
    executed = decide("analyst", "EXECUTE p", Named({"p": prepared}))
    assert isinstance(executed, Allow)
    assert executed.counted == prepared.counted


def test_the_cap_keeps_counted_uses() -> None:
    use = InferenceUse(("public", "customers", "phone"), "order_by")
    assert Allow(counted=(use,)).with_cap(10, "rule").counted == (use,)


# ---------------------------------------------------------------------- refusals and explain


def test_a_refusal_names_the_column_the_channel_and_what_to_do() -> None:
    refused = decide("maint", "SELECT id FROM customers ORDER BY 2, phone")
    assert isinstance(refused, Deny)
    assert (refused.rule, refused.sqlstate) == ("pii_inference", "42501")
    assert refused.message == (
        "Sekisho policy refuses the PII column public.customers.phone in ORDER BY for maint "
        "(rule pii_inference)"
    )
    assert refused.hint is not None
    assert refused.hint.startswith(
        "Sort by columns that are not PII (such as id or created_at), or look the customer up by id "
        "or by an exact value (= or IN). If your work needs this, request the elevation 'investigation'"
    )
    pattern = decide("maint", "SELECT id FROM customers WHERE phone LIKE '090%'")
    assert isinstance(pattern, Deny)
    assert "public.customers.phone in a WHERE condition that is not an exact-value lookup" in pattern.message
    join = decide("maint", "SELECT 1 FROM customers c JOIN orders o ON c.name > o.amount::text")
    assert isinstance(join, Deny)
    assert "public.customers.name in a join condition that is not on equal values" in join.message


def test_where_refused_means_no_exact_lookups_either() -> None:
    refused = decide("searcher", "SELECT id FROM customers WHERE email = 'a@example.com'")
    assert isinstance(refused, Deny)
    assert refused.hint is not None
    assert refused.hint.startswith("Filter on columns that are not PII, or look the customer up by id.")


def test_a_role_allowing_the_class_is_audited_instead_of_refused() -> None:
    decision = decide("trusted", "SELECT id FROM customers WHERE phone LIKE '090%' ORDER BY phone")
    assert isinstance(decision, Allow)
    assert decision.audited == ("pii_inference",)


def test_explain_shows_exact_lookups_the_settings_and_counted_uses() -> None:
    sql = "SELECT id FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.email = $1 ORDER BY name"
    analysis = analyze(sql, CATALOG)
    decision = evaluate(analysis, POLICY, permissions("analyst"))
    text = render(analysis, decision, POLICY, permissions("analyst"))
    assert "join:      public.orders.customer_id (equal column), public.customers.id (equal column)" in text
    assert "where:     public.customers.email (exact value)" in text
    assert (
        "masked PII: join equality, group_by count, order_by count, having refuse, window refuse "
        "(pii_use; other channels allow)"
    ) in text
    assert "counted:    public.customers.name in order_by (pii_use: count)" in text
    maint = render(analysis, decide("maint", sql), POLICY, permissions("maint"))
    assert "DENY 42501 (rule pii_inference)" in maint
    assert "(pii_use)" in maint  # every channel is set
