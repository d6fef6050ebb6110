"""The statement-aware relay as a pure state machine: client messages in, scripted PostgreSQL answers
in, and the exact messages each side receives checked (h11-style: no sockets)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import pytest

from gateway.quota_gate import Claim, QuotaGate
from gateway.relay import SENTINEL, Relay
from gateway.result_masks import maskers_for
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame, FrameReader
from policy.decision import Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Analysis, FetchDirection, FetchFacts, StatementFacts
from policy.masking import ColumnMask, ResultMask
from policy.model import Mask

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


def test_a_stale_cursor_cannot_unmask_or_uncap_a_redefinition() -> None:
    """Red-team finding: a DECLARE recorded for a string whose earlier statement failed never ran,
    so PostgreSQL accepted a later DECLARE of the name, and FETCH used the stale record's masks
    (none: clear PII) and budget. A redefinition with other masks now forgets the name; one with
    the same masks keeps the budget with fewer rows left."""
    stale = "SELECT 1/0; DECLARE c CURSOR WITH HOLD FOR SELECT 1"
    masked = "DECLARE c CURSOR WITH HOLD FOR SELECT phone FROM customers"
    capped = "DECLARE c CURSOR WITH HOLD FOR SELECT id FROM customers"
    plan = ResultMask(1, (ColumnMask(0, Mask("phone"), derived=False, source="public.customers.phone"),))

    def declare(sql: str) -> Analysis:
        return facts(sql, rows=False, command="declare", name="c")

    table: dict[str, tuple[Analysis, Decision]] = {
        stale: (declare(stale), Allow()),
        masked: (declare(masked), Allow(100, "max_rows", mask=plan, masks=(plan,), redact=True)),
        capped: (declare(capped), Allow(100, "max_rows", redact=True)),
    }
    relay = Relay(Script(table), restricted=True, maskers=maskers_for(b"k" * 32))
    send(relay, m.Query(stale).encode(), m.Query(masked).encode())
    assert "c" not in relay.cursors
    send(relay, m.Query(stale).encode(), m.Query(capped).encode())
    assert relay.cursors["c"].budget.cap == 100
    assert relay.cursors["c"].redact


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


# ----------------------------------------------------------------------------- FETCH counts lowered

F, B = FetchDirection.FORWARD, FetchDirection.BACKWARD
DECLARE = "DECLARE c CURSOR FOR SELECT id FROM customers"


def fetching(sql: str, direction: FetchDirection, count: int | None, *, cursor: str = "c") -> Analysis:
    move = sql.upper().startswith("MOVE")
    stmt = StatementFacts(sql, "FetchStmt", "move" if move else "fetch", returns_rows=not move,
                          prepared_name=cursor, fetch=FetchFacts(direction, count))  # fmt: skip
    return Analysis((stmt,))


def with_cursor(
    table: dict[str, tuple[Analysis, Decision]], cap: Allow, declare: str = DECLARE, name: str = "c"
) -> Relay:
    """A restricted relay in a transaction with cursor ``name`` declared under ``cap``."""
    table = {declare: (facts(declare, rows=False, command="declare", name=name), cap), **table}
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(declare).encode())
    answer(relay, m.CommandComplete("DECLARE CURSOR").encode(), m.ReadyForQuery("T").encode())
    relay.to_upstream.clear()
    client_got(relay)
    return relay


def parsed(relay: Relay) -> list[str]:
    return [x.sql for x in upstream_got(relay) if isinstance(x, m.Parse)]


CAP = Allow(100, "max_rows of role maintenance")


@pytest.mark.parametrize(
    ("sql", "direction", "count", "sent"),
    [
        ("FETCH ALL FROM c", F, None, 'FETCH FORWARD 101 FROM "c"'),
        ("FETCH FORWARD 1000000 FROM c", F, 1000000, 'FETCH FORWARD 101 FROM "c"'),
        ("FETCH BACKWARD ALL FROM c", B, None, 'FETCH BACKWARD 101 FROM "c"'),
        ("FETCH BACKWARD 5000 FROM c", B, 5000, 'FETCH BACKWARD 101 FROM "c"'),
        ("FETCH -5000 FROM c", B, 5000, 'FETCH BACKWARD 101 FROM "c"'),  # analysis folds the sign
        # Within what the budget can still release plus one: the client's own text.
        ("FETCH 101 FROM c", F, 101, "FETCH 101 FROM c"),
        ("FETCH BACKWARD 40 FROM c", B, 40, "FETCH BACKWARD 40 FROM c"),
        ("FETCH c", F, 1, "FETCH c"),
        # One row at most, wherever the position: never rewritten.
        ("FETCH ABSOLUTE 1000000 FROM c", FetchDirection.ABSOLUTE, 1000000, "FETCH ABSOLUTE 1000000 FROM c"),
        ("FETCH RELATIVE 5000 FROM c", FetchDirection.RELATIVE, 5000, "FETCH RELATIVE 5000 FROM c"),
    ],
)
def test_a_capped_fetch_asks_postgresql_for_one_row_past_the_budget(
    sql: str, direction: FetchDirection, count: int | None, sent: str
) -> None:
    relay = with_cursor({sql: (fetching(sql, direction, count), CAP)}, CAP)
    send(relay, m.Query(sql).encode())
    assert parsed(relay) == [sent]


def test_move_is_never_rewritten() -> None:
    move, fetch = "MOVE FORWARD ALL FROM c", "FETCH ALL FROM c"
    table: dict[str, tuple[Analysis, Decision]] = {move: (fetching(move, F, None), CAP)}
    both = f"{move}; {fetch}"
    table[both] = (Analysis((*fetching(move, F, None).statements, *fetching(fetch, F, None).statements)), CAP)
    relay = with_cursor(table, CAP)
    send(relay, m.Query(move).encode())
    assert upstream_got(relay) == [m.Query(move)]  # no rows: forwarded as it came
    answer(relay, m.CommandComplete("MOVE 2000").encode(), m.ReadyForQuery("T").encode())
    client_got(relay)
    send(relay, m.Query(both).encode())  # driven (the FETCH returns rows): the MOVE keeps its text
    assert parsed(relay) == [move, 'FETCH FORWARD 101 FROM "c"']


def test_a_lowered_fetch_is_cut_with_a_notice_and_a_fetch_tag() -> None:
    """What is left of the cursor's budget bounds the FETCH; the client sees what it saw before."""
    fetch40, fetch_all = "FETCH 40 FROM c", "FETCH ALL FROM c"
    table = {fetch40: (fetching(fetch40, F, 40), CAP), fetch_all: (fetching(fetch_all, F, None), CAP)}
    relay = with_cursor(table, CAP)
    send(relay, m.Query(fetch40).encode())
    assert parsed(relay) == [fetch40]
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC,
           *[row(str(i)) for i in range(40)], m.CommandComplete("FETCH 40").encode(),
           m.ReadyForQuery("T").encode())  # fmt: skip
    client_got(relay)
    send(relay, m.Query(fetch_all).encode())
    sent = upstream_got(relay)
    assert sent[0] == m.Parse("", 'FETCH FORWARD 61 FROM "c"', ())
    assert m.Execute("", 61) in sent
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC,
           *[row(str(i)) for i in range(40, 101)], m.PortalSuspended().encode(),
           m.ReadyForQuery("T").encode())  # fmt: skip
    got = client_got(relay)
    assert [x.values[0] for x in got if isinstance(x, m.DataRow)] == [str(i).encode() for i in range(40, 100)]
    assert isinstance(got[-3], m.NoticeResponse)
    assert "cut the result at 100 rows" in dict(got[-3].fields)["M"]
    assert got[-2:] == [m.CommandComplete("FETCH 60"), m.ReadyForQuery("T")]


def test_a_lowered_fetch_quotes_the_cursor_name() -> None:
    declare = 'DECLARE "My ""odd"" cursor" CURSOR FOR SELECT id FROM customers'
    sql = 'FETCH ALL FROM "My ""odd"" cursor"'
    name = 'My "odd" cursor'
    relay = with_cursor({sql: (fetching(sql, F, None, cursor=name), Allow(100, "max_rows"))},
                        Allow(30, "max_rows"), declare, name)  # fmt: skip
    send(relay, m.Query(sql).encode())
    assert parsed(relay) == ['FETCH FORWARD 31 FROM "My ""odd"" cursor"']  # that cursor's budget


def test_a_fetch_later_in_a_string_is_bounded_by_the_budget_left_when_it_is_sent() -> None:
    select, fetch = "SELECT id FROM orders", "FETCH BACKWARD ALL FROM c"
    sql = f"{select}; {fetch}"
    analysis = Analysis((facts(select).statements[0], fetching(fetch, B, None).statements[0]))
    relay = with_cursor({sql: (analysis, Allow(30, "max_rows"))}, CAP)
    send(relay, m.Query(sql).encode())
    assert parsed(relay) == [select, 'FETCH BACKWARD 31 FROM "c"']  # the string's own cap is 30


def test_a_lowered_fetch_in_error_mode_still_fails_the_statement() -> None:
    strict = Allow(10, "max_rows of role strict", "error")
    sql = "FETCH ALL FROM c"
    relay = with_cursor({sql: (fetching(sql, F, None), strict)}, strict)
    send(relay, m.Query(sql).encode())
    assert parsed(relay) == ['FETCH FORWARD 11 FROM "c"']
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC,
           *[row(str(i)) for i in range(11)], m.PortalSuspended().encode())  # fmt: skip
    assert upstream_got(relay) == [m.Parse("", SENTINEL, ()), m.Sync()]
    got = client_got(relay)
    assert sum(isinstance(x, m.DataRow) for x in got) == 10
    assert isinstance(got[-1], m.ErrorResponse)
    assert got[-1].sqlstate == "SK001"


def test_a_prepared_fetch_binds_a_bounded_fetch_of_sekishos_own() -> None:
    sql = "FETCH ALL FROM c"
    relay = with_cursor({sql: (fetching(sql, F, None), CAP)}, CAP)
    send(relay, m.Parse("s", sql, (23,)).encode(), m.Bind("p", "s", (0,), (b"7",)).encode(),
         m.Describe("P", "p").encode(), m.Execute("p").encode(), m.Sync().encode())  # fmt: skip
    assert upstream_got(relay) == [
        m.Parse("s", sql, (23,)),  # the client's statement stays as it was prepared
        m.Describe("S", "s"),  # fails, as the Bind would, if PostgreSQL does not hold "s"
        m.Close("S", "sekisho.fetch"),
        m.Parse("sekisho.fetch", 'FETCH FORWARD 101 FROM "c"', (23,)),
        m.Bind("p", "sekisho.fetch", (0,), (b"7",)),
        m.Close("S", "sekisho.fetch"),  # the portal keeps its plan; no client message can reach it
        m.Describe("P", "p"),
        m.Execute("p", 101),
        m.Sync(),
    ]
    answer(relay, m.ParseComplete().encode(), m.ParameterDescription((23,)).encode(), ROWDESC,
           m.CloseComplete().encode(), m.ParseComplete().encode(), m.BindComplete().encode(),
           m.CloseComplete().encode(), ROWDESC, *[row(str(i)) for i in range(101)],
           m.PortalSuspended().encode(), m.ReadyForQuery("T").encode())  # fmt: skip
    got = client_got(relay)
    assert [type(x).__name__ for x in got[:3]] == ["ParseComplete", "BindComplete", "RowDescription"]
    assert sum(isinstance(x, m.DataRow) for x in got) == 100
    assert isinstance(got[-3], m.NoticeResponse)
    assert got[-2:] == [m.CommandComplete("FETCH 100"), m.ReadyForQuery("T")]
    assert not relay.pending


def test_a_prepared_fetch_is_bounded_by_the_cursor_it_reads_at_bind() -> None:
    """A prepared FETCH outlives its cursor: prepared when c had nothing left, it must still get
    a whole budget from the next transaction's c (a count fixed at Parse would give it one row)."""
    sql = "FETCH ALL FROM c"
    relay = with_cursor({sql: (fetching(sql, F, None), CAP)}, CAP)
    relay.cursors["c"].budget.sent = 100
    send(relay, m.Parse("s", sql).encode(), m.Bind("p", "s").encode(), m.Sync().encode())
    assert 'FETCH FORWARD 1 FROM "c"' in parsed(relay)
    answer(relay, m.ParseComplete().encode(), m.ParameterDescription(()).encode(), ROWDESC,
           m.CloseComplete().encode(), m.ParseComplete().encode(), m.BindComplete().encode(),
           m.CloseComplete().encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    assert [type(x).__name__ for x in client_got(relay)] == ["ParseComplete", "BindComplete", "ReadyForQuery"]
    assert "c" not in relay.cursors  # the transaction ended
    send(relay, m.Query(DECLARE).encode())
    answer(relay, m.CommandComplete("DECLARE CURSOR").encode(), m.ReadyForQuery("T").encode())
    relay.to_upstream.clear()
    send(relay, m.Bind("p", "s").encode(), m.Sync().encode())
    assert 'FETCH FORWARD 101 FROM "c"' in parsed(relay)


def test_a_prepared_fetch_within_the_budget_binds_the_clients_statement() -> None:
    sql = "FETCH 100 FROM c"
    relay = with_cursor({sql: (fetching(sql, F, 100), CAP)}, CAP)
    send(relay, m.Parse("s", sql).encode(), m.Bind("p", "s").encode(), m.Execute("p").encode(),
         m.Sync().encode())  # fmt: skip
    assert upstream_got(relay) == [m.Parse("s", sql), m.Bind("p", "s"), m.Execute("p", 101), m.Sync()]


def test_a_bounded_bind_of_a_statement_postgresql_lacks_fails_as_the_bind_would() -> None:
    sql = "FETCH ALL FROM c"
    relay = with_cursor({sql: (fetching(sql, F, None), CAP)}, CAP)
    send(relay, m.Parse("s", sql).encode(), m.Sync().encode())
    answer(relay, m.ParseComplete().encode(), m.ReadyForQuery("T").encode())
    client_got(relay)
    send(relay, m.Bind("p", "s").encode(), m.Execute("p").encode(), m.Sync().encode())
    upstream_got(relay)
    missing = m.ErrorResponse(m.error_fields("ERROR", "26000", 'prepared statement "s" does not exist'))
    answer(relay, missing.encode(), m.ReadyForQuery("E").encode())
    assert client_got(relay) == [missing, m.ReadyForQuery("E")]
    assert not relay.pending


def test_a_redefinition_in_the_same_batch_binds_what_it_defines() -> None:
    """Parse of an existing name fails upstream (42P05) and PostgreSQL then skips the rest of the
    batch, the Bind included: so within one batch the Bind may follow the new definition."""
    select, fetch = "SELECT id FROM customers", "FETCH ALL FROM c"
    relay = with_cursor({select: (facts(select), CAP), fetch: (fetching(fetch, F, None), CAP)}, CAP)
    send(relay, m.Parse("s", select).encode(), m.Parse("s", fetch).encode(), m.Bind("p", "s").encode())
    got = upstream_got(relay)
    assert got[:2] == [m.Parse("s", select), m.Parse("s", fetch)]
    assert m.Bind("p", "sekisho.fetch") in got  # the bounded FETCH


def test_a_bind_waits_for_the_answer_to_an_earlier_batchs_parse_of_its_statement() -> None:
    """Across a Sync a failed Parse no longer takes the Bind with it: the Bind must run what
    PostgreSQL kept, so it waits for the Parse's answer, then binds the statement that stands."""
    select, fetch = "SELECT id FROM customers", "FETCH ALL FROM c"
    relay = with_cursor({select: (facts(select), CAP), fetch: (fetching(fetch, F, None), CAP)}, CAP)
    send(relay, m.Parse("s", select).encode(), m.Sync().encode())
    answer(relay, m.ParseComplete().encode(), m.ReadyForQuery("T").encode())
    relay.to_upstream.clear()
    send(relay, m.Parse("s", fetch).encode(), m.Sync().encode(), m.Bind("p", "s").encode())
    assert upstream_got(relay) == [m.Parse("s", fetch), m.Sync()]  # the Bind waits
    duplicate = m.error_fields("ERROR", "42P05", 'prepared statement "s" already exists')
    answer(relay, m.ErrorResponse(duplicate).encode())
    assert upstream_got(relay)[-1] == m.Bind("p", "s")  # the SELECT PostgreSQL kept, not a FETCH
    assert relay.statements["s"].fetch is None


def test_sekishos_own_statement_names_are_never_recorded_for_a_client() -> None:
    """Were a client's statement recorded as "sekisho.fetch", binding it would run a bounded FETCH
    of Sekisho's under that statement's (perhaps uncapped) decision."""
    sql = "SELECT 1"
    relay = Relay(Script({sql: (facts(sql), Allow())}), restricted=True)
    send(relay, m.Parse("sekisho.fetch", sql).encode(), m.Bind("q", "sekisho.fetch").encode(),
         m.Execute("q").encode(), m.Sync().encode())  # fmt: skip
    assert "sekisho.fetch" not in relay.statements
    assert upstream_got(relay)[2] == m.Parse("sekisho.refused", SENTINEL, ())  # the Execute is refused


def test_a_capped_sql_execute_with_literals_is_bound_with_a_row_limit() -> None:
    """SQL EXECUTE would run the whole query upstream; binding the same prepared statement with
    the literals' text lets Execute's limit stop it. Other arguments keep the SQL EXECUTE."""
    literal, computed = "EXECUTE p(5, 'x', NULL)", "EXECUTE p(2 + 3, 'x', NULL)"

    def execute(sql: str, params: tuple[str | None, ...] | None) -> Analysis:
        stmt = StatementFacts(sql, "ExecuteStmt", "execute", returns_rows=True, prepared_name="p",
                              execute_params=params)  # fmt: skip
        return Analysis((stmt,))

    cap = Allow(2, "max_rows of role maintenance")
    table: dict[str, tuple[Analysis, Decision]] = {
        literal: (execute(literal, ("5", "x", None)), cap),
        computed: (execute(computed, None), cap),
    }
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(literal).encode())
    assert upstream_got(relay) == [
        m.Bind("", "p", (), (b"5", b"x", None), ()),
        m.Describe("P", ""),
        m.Execute("", 3),
        m.Sync(),
    ]
    relay.to_upstream.clear()
    send(relay, m.Query(computed).encode())
    assert upstream_got(relay)[0] == m.Parse("", computed, ())


def test_every_finished_string_and_execute_leaves_an_outcome() -> None:
    """The session turns these into statement events: rows, bytes, errors, refusals, cuts."""
    ok, bad, capped = "SELECT 1", "COPY customers TO STDOUT", "SELECT id FROM customers"
    table: dict[str, tuple[Analysis, Decision]] = {
        ok: (facts(ok), Allow()),
        bad: (facts(bad, command="copy"), DENY),
        capped: (facts(capped), Allow(1, "max_rows of role maintenance")),
    }
    relay = Relay(Script(table), restricted=True)
    send(relay, m.Query(ok).encode())
    answer(
        relay,
        ROWDESC,
        row("1"),
        row("2"),
        m.CommandComplete("SELECT 2").encode(),
        m.ReadyForQuery("I").encode(),
    )
    send(relay, m.Query(bad).encode())
    answer(relay, SYNTAX, m.ReadyForQuery("I").encode())
    send(relay, m.Query(capped).encode())
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), ROWDESC, row("1"), row("2"),
           m.PortalSuspended().encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    first, second, third = relay.finished
    assert (first.sql, first.rows, first.size, first.sqlstate, first.cut) == (
        ok,
        2,
        2 * len(row("1")),
        None,
        False,
    )
    assert (second.sql, second.decision, second.rows, second.sqlstate) == (bad, DENY, 0, "42501")
    assert (third.rows, third.cut) == (1, True)
    # Extended protocol: one outcome per Execute, with the statement's text.
    relay.finished.clear()
    send(relay, m.Parse("", ok).encode(), m.Bind("", "").encode(), m.Execute("").encode(), m.Sync().encode())
    answer(relay, m.ParseComplete().encode(), m.BindComplete().encode(), row("1"),
           m.CommandComplete("SELECT 1").encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    (execute,) = relay.finished
    assert (execute.sql, execute.rows) == (ok, 1)


# ---------------------------------------------------------------- strings with a proven row bound

POINT = "SELECT id FROM customers WHERE id = 1"


def bounded(sql: str, max_rows: int | None = 1) -> Analysis:
    return Analysis((StatementFacts(sql, "SelectStmt", "select", returns_rows=True, max_rows=max_rows),))


class CountingQuota:
    """A QuotaGate's claim and settle, recorded: what a row source reserves and gives back."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.claims: list[tuple[frozenset[tuple[str, str]], int | None]] = []
        self.settled: list[int] = []

    def claim(self, tables: frozenset[tuple[str, str]], cap: int | None) -> Claim:
        self.claims.append((tables, cap))
        return Claim((), self.rows, "quota: 3 rows of protected tables per 1h")

    def settle(self, claim: Claim, sent: int) -> None:
        self.settled.append(sent)


def test_a_capped_query_proven_under_the_cap_is_forwarded_as_it_came() -> None:
    relay = Relay(Script({POINT: (bounded(POINT), Allow(100, "max_rows"))}), restricted=True)
    query = m.Query(POINT).encode()
    send(relay, query)
    assert relay.to_upstream == [query]  # no Parse/Bind/Describe/Execute(limit)/Sync
    reply = [ROWDESC, row("1"), m.CommandComplete("SELECT 1").encode(), m.ReadyForQuery("I").encode()]
    answer(relay, *reply)
    assert relay.to_client == reply
    (outcome,) = relay.finished
    assert (outcome.rows, outcome.cut) == (1, False)
    assert not relay.pending


@pytest.mark.parametrize(
    ("analysis", "allowance"),
    [
        (bounded(POINT, None), Allow(100, "max_rows")),  # no bound
        (bounded(POINT, 2), Allow(1, "max_rows")),  # a bound above the cap
        (bounded(POINT), Allow(100, "max_rows", "error")),  # a cut must fail the statement upstream
    ],
)
def test_a_capped_query_without_a_bound_under_the_cap_is_still_driven(
    analysis: Analysis, allowance: Allow
) -> None:
    relay = Relay(Script({POINT: (analysis, allowance)}), restricted=True)
    send(relay, m.Query(POINT).encode())
    sent = upstream_got(relay)
    assert sent[0] == m.Parse("", POINT, ())
    assert m.Execute("", (allowance.row_cap or 0) + 1) in sent


def test_a_bound_counts_against_what_remains_of_every_budget() -> None:
    """The quota's claim (3 rows) is smaller than the cap: a string bounded at 4 is driven."""
    two = f"{POINT}; {POINT}"
    four = f"{two}; {two}"
    pair = Analysis(bounded(POINT).statements * 2)
    table: dict[str, tuple[Analysis, Decision]] = {
        two: (pair, Allow(100, "max_rows", protected=frozenset({("public", "customers")}))),
        four: (
            Analysis(pair.statements * 2),
            Allow(100, "max_rows", protected=frozenset({("public", "customers")})),
        ),
    }
    quota = CountingQuota(rows=3)
    relay = Relay(Script(table), restricted=True, quota=cast(QuotaGate, quota))
    send(relay, m.Query(two).encode())
    assert relay.to_upstream == [m.Query(two).encode()]
    relay.to_upstream.clear()
    answer(relay, ROWDESC, row("1"), m.CommandComplete("SELECT 1").encode(), ROWDESC, row("1"),
           m.CommandComplete("SELECT 1").encode(), m.ReadyForQuery("I").encode())  # fmt: skip
    assert quota.claims == [(frozenset({("public", "customers")}), 100)]  # charged as before
    assert quota.settled == [2]  # the rows sent
    send(relay, m.Query(four).encode())
    assert isinstance(upstream_got(relay)[0], m.Parse)


def test_a_wrong_bound_is_still_cut_at_the_cap() -> None:
    """A bound from a stale catalog (a key dropped since) can be wrong: the rows are counted."""
    relay = Relay(
        Script({POINT: (bounded(POINT), Allow(2, "max_rows of role maintenance"))}), restricted=True
    )
    send(relay, m.Query(POINT).encode())
    assert upstream_got(relay) == [m.Query(POINT)]
    answer(relay, ROWDESC, *(row(str(i)) for i in range(5)), m.CommandComplete("SELECT 5").encode(),
           m.ReadyForQuery("I").encode())  # fmt: skip
    got = client_got(relay)
    assert got[:3] == [m.RowDescription.decode(ROWDESC[5:]), m.DataRow((b"0",)), m.DataRow((b"1",))]
    assert isinstance(got[3], m.NoticeResponse)
    assert "cut the result at 2 rows (max_rows of role maintenance)" in dict(got[3].fields)["M"]
    assert got[4:] == [m.CommandComplete("SELECT 2"), m.ReadyForQuery("I")]
    (outcome,) = relay.finished
    assert (outcome.rows, outcome.cut, outcome.cut_by) == (2, True, "max_rows of role maintenance")
