"""The statement-aware relay between one client and its upstream link, as a sans-IO state machine.

Theory of operation
-------------------
The client's messages are decided on as they arrive (a Query or Parse is analyzed and evaluated;
Bind, Execute, Close and Sync follow the decision of the statement or portal they name) and each
one that expects an answer pushes an entry on ``pending``. PostgreSQL answers strictly in order, so
every upstream message belongs to the entry at the head of the queue; asynchronous messages
(NoticeResponse, ParameterStatus, NotificationResponse) belong to nobody and pass straight through.

Refusals are rendered by PostgreSQL itself: the refused Query or Parse is replaced by a statement
that fails to parse (``SENTINEL``), and the resulting ErrorResponse is rewritten into Sekisho's
refusal. PostgreSQL therefore does exactly what it does for any failed statement (aborts the
transaction block, skips extended messages until Sync, drops the unnamed statement) and the
client sees the real transaction status in ReadyForQuery.

Row caps are counted per row source: a simple-query string (across all its statements), a portal
(across Executes, after PortalSuspended) and a cursor (across FETCHes). Execute's row limit is set
to what remains of the cap plus one, so PostgreSQL stops producing rows as soon as the cap is
passed. A capped simple query is driven as extended messages for the same reason (the client's own
text, statement by statement, with Execute limits), except strings that copy data in. At the cap the
client gets the first N rows, a NOTICE naming the rule, and a CommandComplete; or, when the policy
says ``on_row_cap: error``, an error with SQLSTATE SK001 and an aborted statement.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pglast.parser import ParseError, split

from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame
from policy.decision import ROW_CAP_REACHED, UNANALYZABLE, Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Analysis

SENTINEL = "SEKISHO REFUSED THIS STATEMENT"
# A statement name no client uses, for refusals that must not disturb the client's own statements.
_REFUSAL_STATEMENT = "sekisho.refused"
_TAG_COUNT = re.compile(r"\d+$")
_WITH_HOLD = re.compile(r"\bwith\s+hold\b", re.IGNORECASE)
_CUT_HINT = "Narrow the query (a WHERE clause or LIMIT), or ask a compliance lead for an elevation."

Decide = Callable[[str, Named], tuple[Analysis, Decision]]


@dataclass(slots=True)
class RowBudget:
    """Rows one source may still release (a string, a portal, a cursor)."""

    cap: int | None
    rule: str | None
    on_cap: str = "truncate"
    sent: int = 0

    @classmethod
    def of(cls, decision: Allow) -> RowBudget:
        return cls(decision.row_cap, decision.cap_rule, decision.on_cap)

    def remaining(self) -> int | None:
        return None if self.cap is None else max(self.cap - self.sent, 0)


@dataclass(slots=True)
class Rows:
    """What one statement's rows draw on: its own budget and, for FETCH, its cursor's."""

    budgets: list[RowBudget]
    released: int = 0  # rows of the current statement that reached the client
    cut: bool = False

    @property
    def capped(self) -> bool:
        return any(b.cap is not None for b in self.budgets)

    def remaining(self) -> int | None:
        left = [r for b in self.budgets if (r := b.remaining()) is not None]
        return min(left) if left else None

    def admit(self) -> bool:
        """Count one row if every budget has room; otherwise remember that the result was cut."""
        if all(b.cap is None or b.sent < b.cap for b in self.budgets):
            for b in self.budgets:
                b.sent += 1
            self.released += 1
            return True
        self.cut = True
        return False

    def limiting(self) -> RowBudget:
        capped = [b for b in self.budgets if b.cap is not None]
        return min(capped, key=lambda b: b.remaining() or 0)

    def next_statement(self) -> None:
        self.released = 0
        self.cut = False


@dataclass(slots=True)
class _Prepared:
    allowance: Allow
    command: str
    cursors: tuple[str, ...] = ()  # cursors its FETCHes draw on


@dataclass(slots=True)
class _Cursor:
    """A portal or SQL cursor: rows are counted across every Execute or FETCH on it."""

    budget: RowBudget
    command: str
    fetches: tuple[str, ...] = ()  # SQL cursors its FETCH statement draws on
    holdable: bool = False  # DECLARE ... WITH HOLD: survives the end of its transaction


@dataclass(slots=True)
class _Cycle:
    """A simple Query forwarded as it came: everything up to ReadyForQuery belongs to it."""

    rows: Rows | None = None
    refused: Deny | None = None


@dataclass(slots=True)
class _Drive:
    """A capped simple Query, run as extended messages so that Execute's row limit applies.

    With ``on_row_cap: truncate`` every statement is sent at once, ending with one Sync (one round
    trip, as the simple query had); each Execute is limited to the cap plus one and the budget
    across statements is enforced by counting. With ``error`` the statements are driven one at a
    time, so that a cut can still make the statement fail before the Sync."""

    statements: list[tuple[str, bool]]  # (text, returns rows)
    rows: Rows
    stepwise: bool
    index: int = 0
    awaiting_z: bool = False
    swallow_error: bool = False


@dataclass(slots=True)
class _Step:
    """One extended-protocol message awaiting its answer."""

    kind: str  # parse | bind | describe | execute | close | sync
    refused: Deny | None = None
    rows: Rows | None = None
    command: str = "select"
    swallow_error: bool = False


Pending = _Cycle | _Drive | _Step

# The message that answers each extended step last (Describe of a statement sends its
# ParameterDescription 't' first, which is not final).
_FINAL = {"parse": b"1", "bind": b"2", "describe": b"Tn", "execute": b"CsI", "close": b"3", "sync": b"Z"}


@dataclass
class Relay:
    """Decides on client messages and shapes upstream answers; collects bytes to send each way."""

    decide: Decide
    restricted: bool
    to_upstream: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)
    pending: deque[Pending] = field(default_factory=deque)
    statements: dict[str, _Prepared] = field(default_factory=dict)  # protocol and SQL prepared statements
    cursors: dict[str, _Cursor] = field(default_factory=dict)  # portals and SQL cursors (one namespace)
    held: deque[Frame] = field(default_factory=deque)
    barrier: bool = False  # client messages wait while a capped statement is driven or checked
    discard_until_sync: bool = False
    refusals: int = 0
    open_batch: bool = False  # extended messages sent since the last Sync
    _named: Named | None = None  # cache of named(); cleared whenever a name is created or dropped

    # ------------------------------------------------------------------ rendering

    def named(self) -> Named:
        """The session's names for the engine, rebuilt only after a name was created or dropped.

        A cursor is given with the allowance it was declared with; what remains of its budget is
        enforced here, by drawing every FETCH on the cursor's own budget."""
        if self._named is None:
            statements = {k: v.allowance for k, v in self.statements.items()}
            cursors = {
                k: Allow(c.budget.cap, c.budget.rule, c.budget.on_cap) for k, c in self.cursors.items()
            }
            self._named = Named(statements, cursors)
        return self._named

    @staticmethod
    def _error(deny: Deny) -> bytes:
        return m.ErrorResponse(
            m.error_fields("ERROR", deny.sqlstate, deny.message, deny.detail, deny.hint)
        ).encode()

    @staticmethod
    def _cut_notice(budget: RowBudget) -> bytes:
        text = f"Sekisho cut the result at {budget.cap} rows ({budget.rule})"
        return m.NoticeResponse(m.error_fields("NOTICE", "01000", text, None, _CUT_HINT)).encode()

    def _cap_error(self, budget: RowBudget) -> bytes:
        message = f"Sekisho stopped the result: it exceeds {budget.cap} rows ({budget.rule})"
        return self._error(Deny("row_cap", ROW_CAP_REACHED, message, hint=_CUT_HINT))

    def _rows_for(self, analysis: Analysis, decision: Allow) -> Rows:
        """The budgets a string's rows draw on: its own, and each cursor it FETCHes from."""
        budgets = [RowBudget.of(decision)]
        if not analysis.names_used:
            return Rows(budgets)
        for stmt in analysis.statements:
            cursor = self.cursors.get(stmt.prepared_name or "") if stmt.command in ("fetch", "move") else None
            if cursor is not None and all(b is not cursor.budget for b in budgets):
                budgets.append(cursor.budget)  # once per cursor, however many FETCHes draw on it
        return Rows(budgets)

    # ------------------------------------------------------------------ client side

    def client_frame(self, frame: Frame) -> None:
        """Handle one whole frontend message (already checked by the session for type and size)."""
        if self.barrier:
            self.held.append(frame)
            return
        kind = frame.type
        if self.discard_until_sync:
            if kind != b"S":
                return
            self.discard_until_sync = False
        if kind in b"PBEDC":
            self.open_batch = True
        elif kind == b"S":
            self.open_batch = False
        elif kind in b"QF" and self.open_batch and self.restricted:
            # PostgreSQL would skip or interleave it unpredictably with the unfinished batch.
            raise ProtocolViolation(
                "a Query or FunctionCall inside an unfinished extended-query batch (no Sync yet) "
                "is not supported through Sekisho"
            )
        if kind == b"Q":
            self._query(m.Query.decode(frame.body).sql, frame)
        elif kind == b"P":
            self._parse(m.Parse.decode(frame.body), frame)
        elif kind == b"B":
            self._bind(*m.bind_target(frame.body), frame)
        elif kind == b"E":
            self._execute(m.Execute.decode(frame.body), frame)
        elif kind == b"D":
            self.pending.append(_Step("describe"))
            self.to_upstream.append(frame.raw)
        elif kind == b"C":
            close = m.Close.decode(frame.body)
            if close.kind == "S":
                self._named = None
                self.statements.pop(close.name, None)
            else:
                self._named = None
                self.cursors.pop(close.name, None)
            self.pending.append(_Step("close"))
            self.to_upstream.append(frame.raw)
        elif kind == b"S":
            self.pending.append(_Step("sync"))
            self.to_upstream.append(frame.raw)
        elif kind == b"F":
            self._function_call(frame)
        else:  # Flush, CopyData, CopyDone, CopyFail: no answer of their own
            self.to_upstream.append(frame.raw)

    def release_held(self) -> None:
        """Process client messages that waited behind a barrier, until the next barrier."""
        while self.held and not self.barrier:
            self.client_frame(self.held.popleft())

    def _refuse(self, deny: Deny, parse_name: str | None = None) -> None:
        """Make PostgreSQL fail in the refused message's place; its error is rewritten into ours."""
        self.refusals += 1
        if parse_name is None:
            self.pending.append(_Cycle(refused=deny))
            self.to_upstream.append(m.Query(SENTINEL).encode())
        else:
            self.pending.append(_Step("parse", refused=deny))
            self.to_upstream.append(m.Parse(parse_name, SENTINEL, ()).encode())

    def _query(self, sql: str, frame: Frame) -> None:
        analysis, decision = self.decide(sql, self.named())
        if isinstance(decision, Deny):
            self._refuse(decision)
            return
        self._record_names(analysis, decision)
        rows = self._rows_for(analysis, decision)
        if not rows.capped or not analysis.returns_rows or analysis.copies_in:
            self.pending.append(_Cycle(rows=rows if rows.capped else None))
            self.to_upstream.append(frame.raw)
            return
        texts = _own_statements(sql, len(analysis.statements))
        if texts is None:  # cannot split the client's text as analysis did: count, do not drive
            self.pending.append(_Cycle(rows=rows))
            self.to_upstream.append(frame.raw)
            return
        stepwise = any(b.on_cap == "error" for b in rows.budgets if b.cap is not None)
        statements = [(text, s.returns_rows) for text, s in zip(texts, analysis.statements, strict=True)]
        drive = _Drive(statements, rows, stepwise)
        self.pending.append(drive)
        if stepwise:
            self.barrier = True
            self._send_statement(drive, drive.index, flush=True)
            return
        for index in range(len(drive.statements)):
            self._send_statement(drive, index, flush=False)
        self.to_upstream.append(m.Sync().encode())

    def _record_names(self, analysis: Analysis, decision: Allow) -> None:
        """PREPARE and DECLARE create names that later EXECUTE/FETCH (or Bind/Execute) use."""
        if not analysis.names_used:
            return
        for stmt in analysis.statements:
            name = stmt.prepared_name
            if name is None:
                continue
            if stmt.command == "prepare":
                self._define_statement(name, _Prepared(decision, "select"))
            elif stmt.command == "declare":
                holdable = _WITH_HOLD.search(stmt.text) is not None  # a false match only keeps a budget
                self._define_cursor(name, _Cursor(RowBudget.of(decision), "fetch", holdable=holdable))
            elif stmt.command == "deallocate":
                self._named = None
                self.statements.pop(name, None)
            elif stmt.command == "close":
                self._named = None
                self.cursors.pop(name, None)

    def _parse(self, parse: m.Parse, frame: Frame) -> None:
        analysis, decision = self.decide(parse.sql, self.named())
        if isinstance(decision, Deny):
            if parse.name == "":
                # PostgreSQL drops the unnamed statement before parsing, even when parsing fails;
                # a named one that exists stays (the failed Parse cannot replace it).
                self._named = None
                self.statements.pop("", None)
            self._refuse(decision, parse_name=parse.name)
            return
        self._record_names(analysis, decision)
        first = analysis.statements[0] if analysis.statements else None
        fetches = tuple(
            s.prepared_name for s in analysis.statements if s.command in ("fetch", "move") and s.prepared_name
        )
        self._define_statement(parse.name, _Prepared(decision, first.command if first else "select", fetches))
        self.pending.append(_Step("parse"))
        self.to_upstream.append(frame.raw)

    def _define_statement(self, name: str, prepared: _Prepared) -> None:
        """Record a statement name. PostgreSQL may still reject or skip the definition (the name
        exists, an earlier error skips to Sync), keeping what it had: so an existing name only ever
        becomes stricter here, never looser. DEALLOCATE and Close forget a name first."""
        self._named = None
        old = self.statements.get(name)
        if old is not None and _stricter(old.allowance, prepared.allowance) is old.allowance:
            prepared = _Prepared(old.allowance, prepared.command, tuple({*old.cursors, *prepared.cursors}))
        self.statements[name] = prepared

    def _define_cursor(self, name: str, cursor: _Cursor) -> None:
        """Record a portal or cursor. PostgreSQL refuses to redefine an open named one (42P03), so
        an existing named cursor keeps its budget; all are forgotten when the transaction ends."""
        self._named = None
        if name and name in self.cursors:
            return
        self.cursors[name] = cursor

    def _bind(self, portal: str, statement: str, frame: Frame) -> None:
        prepared = self.statements.get(statement)
        self._named = None
        if prepared is not None:
            self._define_cursor(
                portal, _Cursor(RowBudget.of(prepared.allowance), prepared.command, prepared.cursors)
            )
        elif not portal or portal not in self.cursors:
            self.cursors.pop(portal, None)
        self.pending.append(_Step("bind"))
        self.to_upstream.append(frame.raw)

    def _execute(self, execute: m.Execute, frame: Frame) -> None:
        cursor = self.cursors.get(execute.portal)
        if cursor is None:
            if self.restricted:
                self._refuse(
                    Deny("unanalyzable", UNANALYZABLE,
                         f'Sekisho has no decision for portal "{execute.portal}", so it is not executed',
                         hint="Bind the portal through Sekisho in this session."),
                    parse_name=_REFUSAL_STATEMENT,
                )  # fmt: skip
                return
            self.pending.append(_Step("execute"))
            self.to_upstream.append(frame.raw)
            return
        rows = Rows([cursor.budget, *self._fetched_cursors(cursor)])
        self.pending.append(_Step("execute", rows=rows, command=cursor.command))
        remaining = rows.remaining()
        if remaining is None:
            self.to_upstream.append(frame.raw)
            return
        wanted = execute.max_rows if execute.max_rows > 0 else None
        limit = remaining + 1 if wanted is None else min(wanted, remaining + 1)
        self.to_upstream.append(m.Execute(execute.portal, limit).encode())
        if cursor.budget.on_cap == "error":
            # The rest waits: on a cut the statement must fail upstream too. Flush, or PostgreSQL
            # would keep the results until the Sync that is now waiting behind the barrier.
            self.to_upstream.append(m.Flush().encode())
            self.barrier = True

    def _fetched_cursors(self, portal: _Cursor) -> list[RowBudget]:
        """Budgets of the SQL cursors a portal's FETCH statement draws on."""
        return [self.cursors[name].budget for name in portal.fetches if name in self.cursors]

    def _function_call(self, frame: Frame) -> None:
        if self.restricted:
            self._refuse(
                Deny("unanalyzable", UNANALYZABLE,
                     "Sekisho refuses direct function calls by OID (the fastpath interface): what they "
                     "run cannot be analyzed",
                     hint="Call the function from a SELECT statement instead.")
            )  # fmt: skip
            return
        self.pending.append(_Cycle())
        self.to_upstream.append(frame.raw)

    # ------------------------------------------------------------------ driving a capped simple query

    def _send_statement(self, drive: _Drive, index: int, *, flush: bool) -> None:
        text, returns_rows = drive.statements[index]
        remaining = drive.rows.remaining()
        limit = 0 if not returns_rows or remaining is None else remaining + 1
        self.to_upstream += [
            m.Parse("", text, ()).encode(),
            m.Bind("", "", (), (), ()).encode(),
            m.Describe("P", "").encode(),
            m.Execute("", limit).encode(),
        ]
        if flush:
            self.to_upstream.append(m.Flush().encode())

    def _drive_upstream(self, drive: _Drive, frame: Frame) -> None:
        kind = frame.type
        if drive.awaiting_z:
            if kind == b"Z":
                self.pending.popleft()
                self.to_client.append(frame.raw)
                if drive.stepwise:
                    self.barrier = False
                    self.release_held()
            elif kind == b"E" and drive.swallow_error:
                drive.swallow_error = False
            elif kind not in b"123n":
                self.to_client.append(frame.raw)
            return
        if kind in b"12n3":
            return
        if kind == b"D" or (kind == b"d" and drive.statements[drive.index][1]):
            if drive.rows.admit():
                self.to_client.append(frame.raw)
            return
        if kind == b"E":
            self.to_client.append(frame.raw)
            self._drive_finish(drive)
            return
        if kind in b"CsI":
            if drive.rows.cut or kind == b"s":
                budget = drive.rows.limiting()
                if budget.on_cap == "error":
                    self.to_client.append(self._cap_error(budget))
                    self.to_upstream.append(m.Parse("", SENTINEL, ()).encode())
                    drive.swallow_error = True
                    self._drive_finish(drive)
                    return
                tag = m.CommandComplete.decode(frame.body).tag if kind == b"C" else "SELECT 0"
                self.to_client.append(self._cut_notice(budget))
                self.to_client.append(m.CommandComplete(_retag(tag, drive.rows.released)).encode())
            else:
                self.to_client.append(frame.raw)
            drive.index += 1
            drive.rows.next_statement()
            if drive.index >= len(drive.statements):
                self._drive_finish(drive)
            elif drive.stepwise:
                self._send_statement(drive, drive.index, flush=True)
            return
        self.to_client.append(frame.raw)  # RowDescription, CopyOutResponse, CopyDone

    def _drive_finish(self, drive: _Drive) -> None:
        """Wait for ReadyForQuery; stepwise drives send their Sync now (pipelined ones already did)."""
        drive.awaiting_z = True
        if drive.stepwise:
            self.to_upstream.append(m.Sync().encode())

    # ------------------------------------------------------------------ upstream side

    def upstream_frame(self, frame: Frame) -> None:
        """Handle one whole backend message."""
        kind = frame.type
        if kind == b"Z" and frame.raw[5:6] == b"I" and self.cursors:
            # A transaction ended: PostgreSQL closed its portals and cursors, except WITH HOLD ones.
            self.cursors = {k: c for k, c in self.cursors.items() if c.holdable}
            self._named = None
        if kind in b"NSA" or not self.pending:
            if self.restricted and kind in b"Dd":
                raise ProtocolViolation("rows from the database that Sekisho was not expecting")
            self.to_client.append(frame.raw)
            return
        head = self.pending[0]
        if isinstance(head, _Drive):
            self._drive_upstream(head, frame)
        elif isinstance(head, _Cycle):
            self._cycle_upstream(head, frame)
        else:
            self._step_upstream(head, frame)

    def _cycle_upstream(self, cycle: _Cycle, frame: Frame) -> None:
        kind = frame.type
        if kind == b"Z":
            self.pending.popleft()
            self.to_client.append(frame.raw)
            return
        if cycle.refused is not None:
            if kind == b"E":
                self.to_client.append(self._error(cycle.refused))
            return
        rows = cycle.rows
        if rows is None:
            self.to_client.append(frame.raw)
            return
        if kind in b"Dd":
            if rows.admit():
                self.to_client.append(frame.raw)
            return
        if kind == b"C" and rows.cut:
            self.to_client.append(self._cut_notice(rows.limiting()))
            tag = m.CommandComplete.decode(frame.body).tag
            self.to_client.append(m.CommandComplete(_retag(tag, rows.released)).encode())
            rows.next_statement()
            return
        if kind in b"CTE":
            rows.next_statement()
        self.to_client.append(frame.raw)

    def _step_upstream(self, step: _Step, frame: Frame) -> None:
        kind = frame.type
        if kind == b"E":
            self._step_error(step, frame)
            return
        if step.rows is not None and step.rows.capped and self._counted(step, step.rows, frame):
            return
        if kind in _FINAL[step.kind]:
            self.pending.popleft()
        self.to_client.append(frame.raw)

    def _counted(self, step: _Step, rows: Rows, frame: Frame) -> bool:
        """Count and cut an Execute's rows; True when the frame was handled here."""
        kind = frame.type
        if kind in b"Dd":
            if rows.admit():
                self.to_client.append(frame.raw)
            return True
        if kind not in b"Cs":
            return False
        self.pending.popleft()
        if not rows.cut:
            self.to_client.append(frame.raw)
        else:
            budget = rows.limiting()
            if budget.on_cap == "error":
                self.to_client.append(self._cap_error(budget))
                # Make the statement fail upstream as well, then skip to Sync as PostgreSQL would.
                self.pending.appendleft(_Step("parse", swallow_error=True))
                self.to_upstream.append(m.Parse("", SENTINEL, ()).encode())
                self.discard_until_sync = True
            else:
                tag = (
                    m.CommandComplete.decode(frame.body).tag if kind == b"C" else f"{step.command.upper()} 0"
                )
                self.to_client.append(self._cut_notice(budget))
                self.to_client.append(m.CommandComplete(_retag(tag, rows.released)).encode())
        if self.barrier:
            self.barrier = False
            self.release_held()
        return True

    def _step_error(self, step: _Step, frame: Frame) -> None:
        """An error ends the extended batch: PostgreSQL skips everything until Sync."""
        if step.refused is not None:
            self.to_client.append(self._error(step.refused))
        elif not step.swallow_error:
            self.to_client.append(frame.raw)
        if step.kind == "sync":
            return  # an error at Sync (e.g. a failed implicit COMMIT): ReadyForQuery follows
        while self.pending and not (isinstance(self.pending[0], _Step) and self.pending[0].kind == "sync"):
            self.pending.popleft()
        if self.barrier:
            self.barrier = False
            self.release_held()


def _own_statements(sql: str, count: int) -> list[str] | None:
    """The client's own statements, exactly as sent. Analyses are cached by normalized shape, so
    an analysis's statement texts may carry another statement's literals: never send those."""
    if count == 1:
        return [sql]
    try:
        texts = list(split(sql))
    except ParseError:
        return None
    return texts if len(texts) == count else None


def _stricter(a: Allow, b: Allow) -> Allow:
    """The allowance with the smaller row cap (no cap is the loosest)."""
    if a.row_cap is None:
        return b
    if b.row_cap is None:
        return a
    return a if a.row_cap <= b.row_cap else b


def _retag(tag: str, rows: int) -> str:
    """A CommandComplete tag with the row count replaced by what the client actually received."""
    return _TAG_COUNT.sub(str(rows), tag) if _TAG_COUNT.search(tag) else tag
