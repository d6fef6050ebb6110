"""The statement-aware relay as a pure state machine: client messages in, scripted PostgreSQL answers
in, and the exact messages each side receives checked (h11-style: no sockets)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from gateway.relay import SENTINEL, Relay
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame, FrameReader
from policy.decision import Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Analysis, StatementFacts

DENY = Deny("copy_protected", "42501", "Sekisho policy refuses COPY of protected data", hint="ask")


def facts(sql: str, *, rows: bool = True, command: str = "select", name: str | None = None) -> Analysis:
    return Analysis((StatementFacts(sql, "SelectStmt", command, returns_rows=rows, prepared_name=name),))


class Script:
    """A decide() that answers from a table of SQL text -> (analysis, decision)."""

    def __init__(self, table: dict[str, tuple[Analysis, Decision]]) -> None:
        self.table = table
        self.seen: list[str] = []

    def __call__(self, sql: str, named: Named) -> tuple[Analysis, Decision]:
        self.seen.append(sql)
        return self.table[sql]


def frames(data: Iterable[bytes]) -> list[Frame]:
    reader = FrameReader()
    for chunk in data:
        reader.feed(chunk)
    return reader.read_all()


def send(relay: Relay, *messages: bytes) -> None:
    for frame in frames(messages):
        relay.client_frame(frame)


def answer(relay: Relay, *messages: bytes) -> None:
    for frame in frames(messages):
        relay.upstream_frame(frame)


def upstream_got(relay: Relay) -> list[object]:
    got = [m.decode_frontend(f.type, f.body) for f in frames(relay.to_upstream)]
    relay.to_upstream.clear()
    return got


def client_got(relay: Relay) -> list[object]:
    got = [m.decode_backend(f.type, f.body) for f in frames(relay.to_client)]
    relay.to_client.clear()
    return got


def row(*values: str) -> bytes:
    return m.DataRow(tuple(v.encode() for v in values)).encode()


ROWDESC = m.RowDescription((m.FieldDescription("id", type_oid=20),)).encode()
SYNTAX = m.ErrorResponse(m.error_fields("ERROR", "42601", 'syntax error at or near "SEKISHO"')).encode()


def test_unrestricted_uncapped_query_passes_byte_for_byte() -> None:
    relay = Relay(Script({"SELECT 1": (facts("SELECT 1"), Allow())}), restricted=False)
    query = m.Query("SELECT 1").encode()
    send(relay, query)
    assert relay.to_upstream == [query]
    reply = [ROWDESC, row("1"), m.CommandComplete("SELECT 1").encode(), m.ReadyForQuery("I").encode()]
    answer(relay, *reply)
    assert relay.to_client == reply
    assert not relay.pending


def test_refused_query_is_failed_by_postgresql_and_reported_as_ours() -> None:
    sql = "COPY customers TO STDOUT"
    relay = Relay(Script({sql: (facts(sql), DENY)}), restricted=True)
    send(relay, m.Query(sql).encode())
    assert upstream_got(relay) == [m.Query(SENTINEL)]
    answer(relay, SYNTAX, m.ReadyForQuery("E").encode())
    got = client_got(relay)
    assert isinstance(got[0], m.ErrorResponse)
    assert got[0].sqlstate == "42501"
    assert got[0].get("M") == DENY.message
    assert got[0].get("H") == "ask"
    assert got[1] == m.ReadyForQuery("E")  # PostgreSQL's own status after a failed statement
    assert relay.refusals == 1


def test_capped_simple_query_is_driven_with_an_execute_limit_and_cut() -> None:
    sql = "SELECT id FROM customers"
    table: dict[str, tuple[Analysis, Decision]] = {
        sql: (facts(sql), Allow(2, "max_rows of role maintenance")),
        "SELECT 1": (facts("SELECT 1"), Allow()),
    }
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(sql).encode(), m.Query("SELECT 1").encode())
    assert upstream_got(relay) == [
        m.Parse("", sql, ()),
        m.Bind("", "", (), (), ()),
        m.Describe("P", ""),
        m.Execute("", 3),  # cap + 1: PostgreSQL stops producing rows right after the cap
        m.Sync(),  # truncating needs no second round trip
        m.Query("SELECT 1"),  # and the next query is pipelined behind it, as the client sent it
    ]
    assert not relay.barrier
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC, row("1"), row("2"),
           row("3"), m.PortalSuspended().encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    got = client_got(relay)
    assert got[:3] == [m.RowDescription.decode(ROWDESC[5:]), m.DataRow((b"1",)), m.DataRow((b"2",))]
    assert isinstance(got[3], m.NoticeResponse)
    assert "cut the result at 2 rows (max_rows of role maintenance)" in dict(got[3].fields)["M"]
    assert got[4:] == [m.CommandComplete("SELECT 2"), m.ReadyForQuery("I")]
    answer(relay, ROWDESC, row("1"), m.CommandComplete("SELECT 1").encode(), m.ReadyForQuery("I").encode())
    assert client_got(relay)[-1] == m.ReadyForQuery("I")
    assert not relay.pending


def test_capped_multi_statement_string_shares_one_budget_in_one_pipeline() -> None:
    first, second = "SELECT id FROM orders LIMIT 3", "SELECT id FROM orders LIMIT 3"
    sql = f"{first}; {second}"
    analysis = Analysis((
        StatementFacts(first, "SelectStmt", "select", returns_rows=True),
        StatementFacts(second, "SelectStmt", "select", returns_rows=True),
    ))  # fmt: skip
    relay = Relay(Script({sql: (analysis, Allow(4, "max_rows"))}), restricted=True)
    send(relay, m.Query(sql).encode())
    sent = upstream_got(relay)
    assert [x for x in sent if isinstance(x, m.Execute)] == [m.Execute("", 5), m.Execute("", 5)]
    assert sent[-1] == m.Sync()
    statement_reply = [m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC, row("1"), row("2"),
                       row("3"), m.CommandComplete("SELECT 3").encode()]  # fmt: skip
    answer(relay, *statement_reply, *statement_reply, m.ReadyForQuery("I").encode())
    got = client_got(relay)
    assert sum(isinstance(x, m.DataRow) for x in got) == 4  # 3 + 1: the budget spans the string
    assert [x for x in got if isinstance(x, m.CommandComplete)] == [
        m.CommandComplete("SELECT 3"), m.CommandComplete("SELECT 1"),
    ]  # fmt: skip
    assert got[-1] == m.ReadyForQuery("I")


def test_capped_query_in_error_mode_fails_the_statement_upstream_too() -> None:
    sql = "SELECT id FROM customers"
    relay = Relay(Script({sql: (facts(sql), Allow(1, "max_rows of role strict", "error"))}), restricted=True)
    send(relay, m.Query(sql).encode())
    upstream_got(relay)
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC, row("1"), row("2"),
           m.PortalSuspended().encode())  # fmt: skip
    assert upstream_got(relay) == [m.Parse("", SENTINEL, ()), m.Sync()]
    got = client_got(relay)
    assert got[:2] == [m.RowDescription.decode(ROWDESC[5:]), m.DataRow((b"1",))]
    assert isinstance(got[2], m.ErrorResponse)
    assert got[2].sqlstate == "SK001"
    answer(relay, SYNTAX, m.ReadyForQuery("E").encode())
    assert client_got(relay) == [m.ReadyForQuery("E")]  # PostgreSQL's error was swallowed


def test_result_under_the_cap_is_untouched() -> None:
    sql = "SELECT id FROM customers WHERE id = 1"
    relay = Relay(Script({sql: (facts(sql), Allow(100, "max_rows"))}), restricted=True)
    send(relay, m.Query(sql).encode())
    assert upstream_got(relay)[-2:] == [m.Execute("", 101), m.Sync()]
    replies = [m.ParseComplete(), m.BindComplete()]
    answer(relay, *(x.encode() for x in replies), ROWDESC, row("1"), m.CommandComplete("SELECT 1").encode(),
           m.ReadyForQuery("I").encode())  # fmt: skip
    assert client_got(relay) == [
        m.RowDescription.decode(ROWDESC[5:]),
        m.DataRow((b"1",)),
        m.CommandComplete("SELECT 1"),
        m.ReadyForQuery("I"),
    ]


def test_portal_rows_are_counted_across_executes() -> None:
    sql = "SELECT id FROM customers"
    relay = Relay(Script({sql: (facts(sql), Allow(5, "max_rows"))}), restricted=True)
    send(relay, m.Parse("s1", sql).encode(), m.Bind("p1", "s1").encode(), m.Execute("p1", 3).encode(),
         m.Sync().encode())  # fmt: skip
    assert upstream_got(relay)[2] == m.Execute("p1", 3)  # the client's own page is below the cap
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), row("1"), row("2"), row("3"),
           m.PortalSuspended().encode(), m.ReadyForQuery("T").encode())  # fmt: skip
    assert [type(x).__name__ for x in client_got(relay)] == [
        "ParseComplete", "BindComplete", "DataRow", "DataRow", "DataRow", "PortalSuspended", "ReadyForQuery",
    ]  # fmt: skip
    send(relay, m.Execute("p1", 0).encode(), m.Sync().encode())
    assert upstream_got(relay) == [m.Execute("p1", 3), m.Sync()]  # 2 left: ask for 3
    answer(relay, row("4"), row("5"), row("6"), m.PortalSuspended().encode(), m.ReadyForQuery("T").encode())
    got = client_got(relay)
    assert got[:2] == [m.DataRow((b"4",)), m.DataRow((b"5",))]
    assert isinstance(got[2], m.NoticeResponse)
    assert got[3:] == [m.CommandComplete("SELECT 2"), m.ReadyForQuery("T")]


def test_refused_parse_skips_to_sync_and_the_name_never_runs() -> None:
    sql = "SELECT pg_read_file('/etc/passwd')"
    relay = Relay(Script({sql: (facts(sql), DENY)}), restricted=True)
    send(relay, m.Parse("evil", sql).encode(), m.Bind("", "evil").encode(), m.Execute("").encode(),
         m.Sync().encode())  # fmt: skip
    sent = upstream_got(relay)
    assert sent[0] == m.Parse("evil", SENTINEL, ())
    assert sent[1] == m.Bind("", "evil")
    assert sent[2] == m.Parse("sekisho.refused", SENTINEL, ())  # the unbound portal is not executed either
    assert sent[3] == m.Sync()
    answer(relay, SYNTAX, m.ReadyForQuery("I").encode())
    got = client_got(relay)
    assert len(got) == 2
    assert isinstance(got[0], m.ErrorResponse)
    assert got[0].sqlstate == "42501"
    assert got[1] == m.ReadyForQuery("I")
    assert not relay.pending
    assert "evil" not in relay.statements


def test_pipelined_error_skips_to_its_sync_only() -> None:
    ok, bad = "SELECT 1", "SELECT nope"
    relay = Relay(Script({ok: (facts(ok), Allow()), bad: (facts(bad), Allow())}), restricted=False)
    batch = [m.Parse("", bad), m.Bind("", ""), m.Execute(""), m.Sync(), m.Parse("", ok), m.Bind("", ""),
             m.Execute(""), m.Sync()]  # fmt: skip
    send(relay, *(x.encode() for x in batch))
    undefined = m.ErrorResponse(m.error_fields("ERROR", "42703", 'column "nope" does not exist')).encode()
    replies = [m.ReadyForQuery("I"), m.ParseComplete(), m.BindComplete()]
    answer(relay, undefined, *(x.encode() for x in replies), row("1"), m.CommandComplete("SELECT 1").encode(),
           m.ReadyForQuery("I").encode())  # fmt: skip
    got = client_got(relay)
    assert [type(x).__name__ for x in got] == [
        "ErrorResponse", "ReadyForQuery", "ParseComplete", "BindComplete", "DataRow", "CommandComplete",
        "ReadyForQuery",
    ]  # fmt: skip
    assert not relay.pending


def test_fetch_draws_on_its_cursors_budget_across_statements() -> None:
    declare = "DECLARE c CURSOR FOR SELECT id FROM customers"
    fetch = "FETCH 3 FROM c"
    table = {
        declare: (facts(declare, rows=False, command="declare", name="c"), Allow(4, "max_rows")),
        fetch: (facts(fetch, command="fetch", name="c"), Allow(4, "max_rows")),
    }
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(declare).encode())
    assert upstream_got(relay) == [m.Query(declare)]  # no rows of its own: forwarded as it came
    answer(relay, m.CommandComplete("DECLARE CURSOR").encode(), m.ReadyForQuery("T").encode())
    client_got(relay)
    for expected_rows, limit in ((3, 5), (1, 2)):  # the cursor has 4 rows in all; the second FETCH gets 1
        send(relay, m.Query(fetch).encode())
        execute = [x for x in upstream_got(relay) if isinstance(x, m.Execute)]
        assert execute == [m.Execute("", limit)]
        answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC,
               *[row(str(i)) for i in range(3)], m.CommandComplete("FETCH 3").encode())  # fmt: skip
        upstream_got(relay)
        answer(relay, m.ReadyForQuery("T").encode())
        got = client_got(relay)
        assert sum(isinstance(x, m.DataRow) for x in got) == expected_rows


def test_function_call_is_refused_for_restricted_people() -> None:
    relay = Relay(Script({}), restricted=True)
    send(relay, m.FunctionCall(764, (0,), (b"/etc/passwd",), 0).encode())  # lo_import
    assert upstream_got(relay) == [m.Query(SENTINEL)]
    answer(relay, SYNTAX, m.ReadyForQuery("I").encode())
    got = client_got(relay)
    assert isinstance(got[0], m.ErrorResponse)
    assert got[0].sqlstate == "SK003"


def test_a_refused_parse_keeps_an_existing_statement_of_that_name() -> None:
    """PostgreSQL keeps s1 when a second Parse of s1 fails; Sekisho keeps its decision for it too."""
    good, bad = "SELECT id FROM orders", "SELECT pg_read_file('/etc/passwd')"
    relay = Relay(
        Script({good: (facts(good), Allow(50, "max_rows")), bad: (facts(bad), DENY)}), restricted=True
    )
    send(relay, m.Parse("s1", good).encode(), m.Sync().encode())
    answer(relay, m.ParseComplete().encode(), m.ReadyForQuery("I").encode())
    send(relay, m.Parse("s1", bad).encode(), m.Sync().encode())
    answer(relay, SYNTAX, m.ReadyForQuery("I").encode())
    relay.to_upstream.clear()
    client_got(relay)
    send(relay, m.Bind("p", "s1").encode(), m.Execute("p").encode(), m.Sync().encode())
    assert upstream_got(relay)[1] == m.Execute("p", 51)  # the old statement runs, with its own cap


def test_a_failed_prepare_cannot_loosen_an_existing_name() -> None:
    """PREPARE p (customers); PREPARE p AS SELECT 1 fails upstream (42P05): p must keep its cap."""
    capped, loose = "PREPARE p AS SELECT id FROM customers", "PREPARE p AS SELECT 1"
    table: dict[str, tuple[Analysis, Decision]] = {
        capped: (facts(capped, rows=False, command="prepare", name="p"), Allow(100, "max_rows")),
        loose: (facts(loose, rows=False, command="prepare", name="p"), Allow()),
    }
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(capped).encode(), m.Query(loose).encode())
    assert relay.statements["p"].allowance.row_cap == 100


def test_a_query_inside_an_unfinished_extended_batch_is_refused() -> None:
    relay = Relay(Script({"SELECT 1": (facts("SELECT 1"), Allow())}), restricted=True)
    with pytest.raises(ProtocolViolation):
        send(relay, m.Parse("", "SELECT 1").encode(), m.Query("SELECT 1").encode())


def test_error_mode_execute_flushes_so_the_results_arrive() -> None:
    sql = "SELECT id FROM customers WHERE id = $1"
    relay = Relay(Script({sql: (facts(sql), Allow(10, "max_rows", "error"))}), restricted=True)
    send(relay, m.Parse("", sql).encode(), m.Bind("", "").encode(), m.Execute("").encode(), m.Sync().encode())
    sent = upstream_got(relay)
    assert sent[-2:] == [m.Execute("", 11), m.Flush()]  # the Sync waits behind the barrier
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), row("1"),
           m.CommandComplete("SELECT 1").encode())  # fmt: skip
    assert upstream_got(relay) == [m.Sync()]


def test_a_driven_query_sends_the_clients_own_text_not_the_cached_analysis_text() -> None:
    """Analyses are cached by normalized shape: the cached statement text may carry another
    statement's literals (or $1). The driven pipeline must send what this client sent."""
    sql = "SELECT id FROM customers WHERE id > 1990"
    cached = facts("SELECT id FROM customers WHERE id > $1")  # what the shape cache may hold
    relay = Relay(Script({sql: (cached, Allow(100, "max_rows"))}), restricted=True)
    send(relay, m.Query(sql).encode())
    assert upstream_got(relay)[0] == m.Parse("", sql, ())
