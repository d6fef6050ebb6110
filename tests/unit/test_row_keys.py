"""Row keys for coverage: which result columns carry a protected table's key (policy.masking), how
they are read from DataRows in text and binary formats (gateway.result_masks.KeyReader), and what
the relay reports per statement (simple and extended protocol, cursors, caps)."""

from __future__ import annotations

import uuid

import pytest

from gateway.relay import Relay
from gateway.result_masks import KEYS_PER_STATEMENT, KeyReader
from gateway.wire import messages as m
from policy.catalog import TABLE, Catalog, Relation
from policy.decision import Allow, Decision
from policy.facts import Analysis, OutputColumn, StatementFacts
from policy.loader import load_policy
from policy.masking import KeyColumns, key_columns
from tests.support import TEST_POLICY
from tests.unit.test_relay import Script, answer, client_got, send

POLICY = load_policy(TEST_POLICY, "test")
CATALOG = Catalog.of(
    [
        Relation("public", "customers", TABLE, ("id", "name", "phone"), key=("id",), key_types=(20,)),
        Relation("public", "orders", TABLE, ("id", "customer_id", "amount"), key=("id",), key_types=(20,)),
        Relation("public", "notes", TABLE, ("id", "body"), key=("id",), key_types=(23,)),
    ]
)
CUSTOMERS = "public.customers"
INT8, INT4, INT2, TEXT, NUMERIC, UUID = 20, 23, 21, 25, 1700, 2950


def out(
    name: str, *sources: tuple[str, str, str], direct: bool = True, whole_row: bool = False
) -> OutputColumn:
    return OutputColumn(name, frozenset(sources), direct, whole_row)


def stmt(*outputs: OutputColumn, command: str = "select", name: str | None = None) -> StatementFacts:
    return StatementFacts("…", "SelectStmt", command, outputs=outputs, returns_rows=True, prepared_name=name)


ID = ("public", "customers", "id")
NAME = ("public", "customers", "name")


def data_row(*values: bytes | None) -> bytes:
    """A DataRow body (without its type byte and length)."""
    return m.DataRow(values).encode()[5:]


def description(*fields: tuple[str, int, int]) -> bytes:
    return m.RowDescription(
        tuple(m.FieldDescription(n, type_oid=t, format=f) for n, t, f in fields)
    ).encode()[5:]


# ---------------------------------------------------------------------- which columns are the key


def test_a_plain_reference_to_the_primary_key_marks_the_key_column() -> None:
    plan = key_columns(stmt(out("name", NAME), out("id", ID)), POLICY, CATALOG)
    assert plan == KeyColumns(CUSTOMERS, (1,), (INT8,))


@pytest.mark.parametrize(
    "outputs",
    [
        (out("id", ID, direct=False),),  # id + 0, id::text: might not identify a row
        (out("name", NAME),),  # the key is not in the result
        (out("c", ID, NAME, whole_row=True),),  # a whole row
        (out("id", ID, ("public", "orders", "id")),),  # a UNION of two tables' keys
        (out("id", ("public", "notes", "id")),),  # notes is not protected
        (out("id", ("", "customers", "id")),),  # a relation the catalog does not know yet
    ],
)
def test_no_key_without_the_key_column_itself_of_a_protected_table(outputs: tuple[OutputColumn, ...]) -> None:
    assert key_columns(stmt(*outputs), POLICY, CATALOG) is None


def test_the_first_protected_table_in_result_order_wins() -> None:
    order_id = ("public", "orders", "id")
    plan = key_columns(stmt(out("order", order_id), out("customer", ID)), POLICY, CATALOG)
    assert plan == KeyColumns("public.orders", (0,), (INT8,))


def test_a_composite_key_needs_every_column_and_a_pii_key_is_digested() -> None:
    catalog = Catalog.of(
        [Relation("public", "customers", TABLE, ("id", "phone"), key=("phone", "id"), key_types=(TEXT, INT8))]
    )
    phone = ("public", "customers", "phone")
    assert key_columns(stmt(out("id", ID)), POLICY, catalog) is None
    plan = key_columns(stmt(out("id", ID), out("phone", phone)), POLICY, catalog)
    assert plan == KeyColumns(CUSTOMERS, (1, 0), (TEXT, INT8), digest=True)


# ---------------------------------------------------------------------- reading keys from DataRows


def test_text_keys_are_read_as_sent_and_nulls_are_skipped() -> None:
    first = KeyReader(KeyColumns(CUSTOMERS, (0,), (INT8,)))
    assert first.key(data_row(b"1234", b"x")) == "1234"
    assert first.key(data_row(None, b"x")) is None
    later = KeyReader(KeyColumns(CUSTOMERS, (2,), (INT8,)))
    assert later.key(data_row(b"a", None, b"77")) == "77"
    assert later.key(data_row(b"a", b"b")) is None  # fewer columns than the plan: no key


@pytest.mark.parametrize(
    ("type_oid", "value", "expected"),
    [
        (INT8, (-5).to_bytes(8, "big", signed=True), "-5"),
        (INT8, (2**40).to_bytes(8, "big"), str(2**40)),
        (INT4, (123456).to_bytes(4, "big"), "123456"),
        (INT2, (7).to_bytes(2, "big"), "7"),
        (UUID, uuid.UUID(int=1).bytes, str(uuid.UUID(int=1))),
        (TEXT, "鈴木".encode(), "鈴木"),
    ],
)
def test_binary_keys_read_as_their_text_form(type_oid: int, value: bytes, expected: str) -> None:
    reader = KeyReader(KeyColumns(CUSTOMERS, (1,), (type_oid,)), formats=(0, 1))
    assert reader.key(data_row(b"name", value)) == expected
    # The same row read in text counts as the same key.
    assert (
        KeyReader(KeyColumns(CUSTOMERS, (1,), (type_oid,))).key(data_row(b"name", expected.encode()))
        == expected
    )


def test_binary_values_of_other_types_are_not_guessed() -> None:
    reader = KeyReader(KeyColumns(CUSTOMERS, (0,), (NUMERIC,)), formats=(1,))
    assert reader.key(data_row(b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07")) is None


def test_a_row_description_sets_formats_and_a_type_mismatch_turns_reading_off() -> None:
    reader = KeyReader(KeyColumns(CUSTOMERS, (0,), (INT8,)))
    reader.describe(description(("id", INT8, 1)))  # a BINARY cursor's FETCH
    assert reader.key(data_row((42).to_bytes(8, "big"))) == "42"
    mismatched = KeyReader(KeyColumns(CUSTOMERS, (0,), (INT8,)))
    mismatched.describe(description(("id", NUMERIC, 0)))
    assert mismatched.key(data_row(b"42")) is None
    narrow = KeyReader(KeyColumns(CUSTOMERS, (1,), (INT8,)))
    narrow.describe(description(("id", INT8, 0)))
    assert narrow.key(data_row(b"42")) is None


def test_composite_and_digested_keys() -> None:
    composite = KeyReader(KeyColumns(CUSTOMERS, (1, 0), (TEXT, INT4)), formats=(1, 0))
    assert composite.key(data_row((9).to_bytes(4, "big"), b"tokyo")) == "tokyo\x1f9"
    assert composite.key(data_row(None, b"tokyo")) is None
    digested = KeyReader(KeyColumns(CUSTOMERS, (0,), (TEXT,), digest=True))
    key = digested.key(data_row(b"090-1234-5678"))
    assert key is not None
    assert key.startswith("#")
    assert "-" not in key  # a digest, not the phone number
    assert key == digested.key(data_row(b"090-1234-5678"))  # stable: the same row counts once


# ---------------------------------------------------------------------- what the relay reports

SELECT = "SELECT id, name FROM customers"
PLAN = KeyColumns(CUSTOMERS, (0,), (INT8,))
ROWDESC = m.RowDescription(
    (m.FieldDescription("id", type_oid=INT8), m.FieldDescription("name", type_oid=TEXT))
).encode()
PROTECTED = frozenset({("public", "customers")})


def relay_for(table: dict[str, tuple[Analysis, Decision]], *, restricted: bool = False) -> Relay:
    plans = {id(a.statements[0]): PLAN for a, _ in table.values() if "customers" in a.statements[0].text}
    relay = Relay(Script(table), restricted)
    relay.key_columns = lambda s: plans.get(id(s))
    return relay


def rows(start: int, count: int) -> list[bytes]:
    return [m.DataRow((str(i).encode(), b"n")).encode() for i in range(start, start + count)]


def test_simple_query_reports_the_keys_of_the_rows_sent() -> None:
    analysis = Analysis((StatementFacts(SELECT, "SelectStmt", "select", returns_rows=True),))
    relay = relay_for({SELECT: (analysis, Allow(protected=PROTECTED))})
    send(relay, m.Query(SELECT).encode())
    answered = [ROWDESC, *rows(1, 3), m.CommandComplete("SELECT 3").encode(), m.ReadyForQuery("I").encode()]
    answer(relay, *answered)
    assert b"".join(relay.to_client) == b"".join(answered)  # keys are read, rows are untouched
    (outcome,) = relay.finished
    assert (outcome.keys, outcome.key_table) == (["1", "2", "3"], CUSTOMERS)


def test_a_cut_result_reports_only_the_rows_that_reached_the_client() -> None:
    analysis = Analysis((StatementFacts(SELECT, "SelectStmt", "select", returns_rows=True),))
    relay = relay_for({SELECT: (analysis, Allow(2, "max_rows", protected=PROTECTED))}, restricted=True)
    send(relay, m.Query(SELECT).encode())
    relay.to_upstream.clear()
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC, *rows(10, 3),
           m.PortalSuspended().encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    assert len([msg for msg in client_got(relay) if isinstance(msg, m.DataRow)]) == 2
    (outcome,) = relay.finished
    assert outcome.keys == ["10", "11"]


def test_unprotected_results_get_no_key_reading() -> None:
    sql = "SELECT id FROM notes"
    analysis = Analysis((StatementFacts(sql, "SelectStmt", "select", returns_rows=True),))
    relay = relay_for({sql: (analysis, Allow())})
    relay.key_columns = lambda s: pytest.fail("no key plan is asked for an unprotected statement")
    send(relay, m.Query(sql).encode())
    answer(relay, ROWDESC, *rows(1, 2), m.CommandComplete("SELECT 2").encode(), m.ReadyForQuery("I").encode())
    assert relay.finished[0].keys == []


def test_extended_protocol_binary_results_and_the_key_limit() -> None:
    analysis = Analysis((StatementFacts(SELECT, "SelectStmt", "select", returns_rows=True),))
    relay = relay_for({SELECT: (analysis, Allow(protected=PROTECTED))})
    send(
        relay,
        m.Parse("", SELECT, ()).encode(),
        m.Bind("", "", (), (), (1, 0)).encode(),
        m.Execute("", 0).encode(),
        m.Sync().encode(),
    )
    many = [m.DataRow((i.to_bytes(8, "big"), b"n")).encode() for i in range(KEYS_PER_STATEMENT + 10)]
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), *many,
           m.CommandComplete(f"SELECT {len(many)}").encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    (outcome,) = relay.finished
    assert outcome.rows == len(many)
    assert len(outcome.keys) == KEYS_PER_STATEMENT
    assert outcome.keys[:3] == ["0", "1", "2"]


def test_fetch_reports_the_keys_of_its_cursors_rows() -> None:
    declare = "DECLARE c CURSOR FOR SELECT id, name FROM customers"
    fetch = "FETCH 2 FROM c"
    declared = Analysis((StatementFacts(declare, "DeclareCursorStmt", "declare", prepared_name="c"),))
    fetched = Analysis((StatementFacts(fetch, "FetchStmt", "fetch", returns_rows=True, prepared_name="c"),))
    relay = relay_for({declare: (declared, Allow(protected=PROTECTED)), fetch: (fetched, Allow())})
    send(relay, m.Query(declare).encode())
    answer(relay, m.CommandComplete("DECLARE CURSOR").encode(), m.ReadyForQuery("T").encode())
    send(relay, m.Query(fetch).encode())
    answer(relay, ROWDESC, *rows(5, 2), m.CommandComplete("FETCH 2").encode(), m.ReadyForQuery("T").encode())
    assert [(o.keys, o.key_table) for o in relay.finished] == [([], None), (["5", "6"], CUSTOMERS)]
