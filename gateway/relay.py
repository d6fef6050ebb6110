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
text, statement by statement, with Execute limits), except strings that copy data in, and strings
that provably return no more rows than the cap still allows (``StatementFacts.max_rows``: a key
lookup, an aggregate), which are forwarded as they came and counted as they pass. At the cap the
client gets the first N rows, a NOTICE naming the rule, and a CommandComplete; or, when the policy
says ``on_row_cap: error``, an error with SQLSTATE SK001 and an aborted statement.

A FETCH is a utility statement: PostgreSQL runs it to completion into its portal's store before
Execute's row limit applies, so ``FETCH ALL`` would read the whole cursor however few rows are sent.
A capped FETCH FORWARD/BACKWARD that asks for more than its budgets can still release plus one is
therefore sent as a FETCH of that many (``_FetchPlan``): in a driven query when its statement is
sent, and for a prepared FETCH at Bind, through a private statement (``_bind_bounded``).

Row keys: for a statement whose result carries a protected table's row key (``key_columns``, from
the catalog's primary keys and the analysis's lineage), the key of every row sent is read
(``KeyReader``) into the Outcome, at most ``KEYS_PER_STATEMENT``, for the coverage alarm. Like
masks, a key plan is decided when a name is made (PREPARE, DECLARE, Parse) and inherited by what
uses it (EXECUTE, FETCH, Bind); results without one pay nothing per row.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pglast.parser import ParseError, split

from gateway.quota_gate import Claim, Need, QuotaGate
from gateway.result_masks import (
    KEYS_PER_STATEMENT,
    KeyReader,
    Maskers,
    StreamMask,
    redact_error,
    redact_notice,
)
from gateway.wire import messages as m
from gateway.wire.errors import ProtocolViolation
from gateway.wire.framing import Frame
from policy.decision import ROW_CAP_REACHED, UNANALYZABLE, Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Analysis, FetchDirection, FetchFacts, StatementFacts
from policy.masking import KeyColumns, ResultMask

SENTINEL = "SEKISHO REFUSED THIS STATEMENT"
# Statement names of Sekisho's own, for refusals that must not disturb the client's statements and
# for bounded FETCHes. The relay never records a client's statement under them, so a restricted
# client cannot bind or EXECUTE one (no decision: refused).
_REFUSAL_STATEMENT = "sekisho.refused"
_FETCH_STATEMENT = "sekisho.fetch"
_RESERVED_STATEMENTS = frozenset({_REFUSAL_STATEMENT, _FETCH_STATEMENT})
_STREAMING = (FetchDirection.FORWARD, FetchDirection.BACKWARD)  # the others return one row at most
_INT32_MAX = 2**31 - 1  # FETCH counts are 32-bit integers in PostgreSQL's grammar
_TAG_COUNT = re.compile(r"\d+$")
_WITH_HOLD = re.compile(r"\bwith\s+hold\b", re.IGNORECASE)
_CUT_HINT = "Narrow the query (a WHERE clause or LIMIT), or ask a compliance lead for an elevation."
# A plan to mask with no means to apply it (a relay built without maskers): never send clear.
_MASKING_UNAVAILABLE = Deny("unanalyzable", UNANALYZABLE, "Sekisho cannot mask this result here")

Decide = Callable[[str, Named], tuple[Analysis, Decision]]
# The audit trail's word on running an allowed statement now (its text, analysis, allowance): a
# refusal, or None once it is on the record (a simple Query, or a Bind of a prepared statement).
Admit = Callable[[str, "Analysis | None", Allow], "Deny | None"]
KeysOf = Callable[[StatementFacts], KeyColumns | None]  # policy.masking.key_columns, bound


@dataclass(slots=True)
class RowBudget:
    """Rows one source may still release (a string, a portal, a cursor)."""

    cap: int | None
    rule: str | None
    on_cap: str = "truncate"
    sent: int = 0
    claim: Claim | None = None  # rows reserved from the person's quota for this source

    @classmethod
    def of(cls, decision: Allow, claim: Claim | None = None) -> RowBudget:
        """The policy's cap, or the quota's claim where that is smaller (the quota names the cut)."""
        if claim is not None and (decision.row_cap is None or claim.rows < decision.row_cap):
            return cls(claim.rows, claim.rule or decision.cap_rule, decision.on_cap, claim=claim)
        return cls(decision.row_cap, decision.cap_rule, decision.on_cap, claim=claim)

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


@dataclass(frozen=True, slots=True)
class _FetchPlan:
    """A FETCH whose count the relay may lower: the cursor it reads and how far it goes."""

    cursor: str
    fetch: FetchFacts
    param_types: tuple[int, ...] = ()  # of the Parse that prepared it: a Bind must still match them

    @classmethod
    def of(cls, stmt: StatementFacts, param_types: tuple[int, ...] = ()) -> _FetchPlan | None:
        if stmt.command != "fetch" or stmt.fetch is None or stmt.prepared_name is None:
            return None  # MOVE returns no rows: it is never rewritten
        return cls(stmt.prepared_name, stmt.fetch, param_types)

    def bounded(self, remaining: int | None) -> str | None:
        """The FETCH to send instead, asking for ``remaining`` + 1 rows (the row past the budget is
        how a cut is told from an exact fit); None when the client's own asks for no more, returns
        one row at most (ABSOLUTE, RELATIVE) or nothing caps it. The text is generated, never
        spliced: direction and count are ours, the cursor name is always quoted."""
        if remaining is None or self.fetch.direction not in _STREAMING:
            return None
        limit = remaining + 1
        if (self.fetch.count is not None and self.fetch.count <= limit) or limit > _INT32_MAX:
            return None
        name = '"' + self.cursor.replace('"', '""') + '"'
        return f"FETCH {self.fetch.direction.value.upper()} {limit} FROM {name}"


@dataclass(slots=True)
class Outcome:
    """What became of one client string (simple protocol) or one Execute (extended): the session
    turns it into a StatementEvent for quotas, detection and audit."""

    sql: str
    decision: Decision
    analysis: Analysis | None
    started: float = field(default_factory=time.time)
    rows: int = 0  # rows that reached the client
    size: int = 0  # bytes of those rows
    sqlstate: str | None = None  # the first error's SQLSTATE
    error: str | None = None  # its message, as the client got it (redacted where PII was touched)
    cut: bool = False  # a cap or quota cut the result
    cut_by: str | None = None  # the rule whose cap or quota cut it
    keys: list[str] = field(default_factory=list)  # row keys of the rows sent, of one table
    key_table: str | None = None  # schema.table the keys belong to

    def failed(self, body: bytes) -> None:
        """The first error of the statement, from the ErrorResponse body the client was sent."""
        if self.sqlstate is None:
            fields = dict(m.ErrorResponse.decode(body).fields)
            self.sqlstate = fields.get("C")
            self.error = fields.get("M")

    def cut_at(self, budget: RowBudget) -> None:
        self.cut = True
        self.cut_by = budget.rule

    def take_key(self, reader: KeyReader, frame: Frame) -> None:
        """Note the row key of a DataRow sent to the client (one table per outcome, bounded)."""
        if len(self.keys) >= KEYS_PER_STATEMENT or (self.key_table not in (None, reader.table)):
            return
        key = reader.key(frame.raw, 5)
        if key is not None:
            self.keys.append(key)
            self.key_table = reader.table


@dataclass(slots=True)
class _Prepared:
    allowance: Allow
    command: str
    cursors: tuple[str, ...] = ()  # cursors its FETCHes draw on
    fetch: _FetchPlan | None = None  # a FETCH statement: lowered at Bind when it asks for too much
    batch: int | None = None  # a Parse not yet answered: the batch it was sent in (None: answered)
    sql: str = ""  # its text, for the events of its Executes
    analysis: Analysis | None = None
    types: dict[int, int] | None = None  # result column types, once a Describe of it told us
    keys: KeyColumns | None = None  # where its rows carry a protected table's row key


@dataclass(slots=True)
class _Cursor:
    """A portal or SQL cursor: rows are counted across every Execute or FETCH on it."""

    budget: RowBudget
    command: str
    fetches: tuple[str, ...] = ()  # SQL cursors its FETCH statement draws on
    holdable: bool = False  # DECLARE ... WITH HOLD: survives the end of its transaction
    declared: bool = False  # a SQL cursor (DECLARE), read with FETCH; not a protocol portal
    sql: str = ""  # the statement it runs, for events
    analysis: Analysis | None = None
    decision: Decision = field(default_factory=Allow)
    mask: ResultMask | None = None  # masks of its rows (kept for the engine: FETCH inherits them)
    redact: bool = False  # it reads masked PII: error and notice texts are redacted
    stream: StreamMask | None = None  # a portal's masking state, across Describe and Executes
    keys: KeyColumns | None = None  # where its rows carry a protected table's row key
    reader: KeyReader | None = None  # a portal's: reads those keys in its result formats


@dataclass(slots=True)
class _Shape:
    """Masking and row keys across the statements of one simple-query string (or driven string)."""

    masks: tuple[ResultMask | None, ...]
    maskers: Maskers | None
    keys: tuple[KeyColumns | None, ...] = ()
    index: int = 0
    current: StreamMask | None = None
    reader: KeyReader | None = None

    def start(self, frame: Frame) -> bytes:
        """A statement's result starts (RowDescription or CopyOutResponse): what the client gets."""
        plan = self.masks[self.index] if self.index < len(self.masks) else None
        maskers = self.maskers
        self.current = None if plan is None or maskers is None else StreamMask(plan, maskers)
        keys = self.keys[self.index] if self.index < len(self.keys) else None
        self.reader = None
        if keys is not None and frame.type == b"T":  # COPY lines are not read for keys
            self.reader = KeyReader(keys)
            self.reader.describe(frame.body)
        return frame.raw if self.current is None else self.current.describe(frame)

    def row(self, frame: Frame, outcome: Outcome | None) -> bytes:
        """A DataRow or CopyData of the current statement, as the client gets it."""
        reader = self.reader
        if reader is not None and outcome is not None and frame.type == b"D":
            outcome.take_key(reader, frame)
        return frame.raw if self.current is None else self.current.rows(frame)

    def next_statement(self) -> None:
        self.index += 1
        self.current = None
        self.reader = None


@dataclass(slots=True)
class _Cycle:
    """A simple Query forwarded as it came: everything up to ReadyForQuery belongs to it."""

    rows: Rows | None = None
    refused: Deny | None = None
    shape: _Shape | None = None
    redact: bool = False
    outcome: Outcome | None = None


@dataclass(slots=True)
class _Drive:
    """A capped simple Query, run as extended messages so that Execute's row limit applies.

    With ``on_row_cap: truncate`` every statement is sent at once, ending with one Sync (one round
    trip, as the simple query had); each Execute is limited to the cap plus one and the budget
    across statements is enforced by counting. With ``error`` the statements are driven one at a
    time, so that a cut can still make the statement fail before the Sync."""

    statements: list[tuple[str, StatementFacts]]  # the client's own text and the statement's facts
    rows: Rows
    stepwise: bool
    index: int = 0
    awaiting_z: bool = False
    swallow_error: bool = False
    shape: _Shape | None = None
    redact: bool = False
    outcome: Outcome | None = None


@dataclass(slots=True)
class _Step:
    """One extended-protocol message awaiting its answer."""

    kind: str  # parse | bind | describe | execute | close | sync
    refused: Deny | None = None
    rows: Rows | None = None
    command: str = "select"
    swallow_error: bool = False
    hidden: bool = False  # a message of Sekisho's own: its answers are not the client's
    stream: StreamMask | None = None  # describe and execute: the masks of the rows it describes
    reader: KeyReader | None = None  # describe and execute of a portal: its row keys
    redact: bool = False
    describes: _Prepared | None = None  # describe of a statement: it learns its result types
    outcome: Outcome | None = None  # execute, and refused parse
    # parse: the name, what it meant before and what this Parse makes it mean
    defines: tuple[str, _Prepared | None, _Prepared] | None = None


Pending = _Cycle | _Drive | _Step

# The message that answers each extended step last (Describe of a statement sends its
# ParameterDescription 't' first, which is not final).
_FINAL = {"parse": b"1", "bind": b"2", "describe": b"Tn", "execute": b"CsI", "close": b"3", "sync": b"Z"}


@dataclass
class Relay:
    """Decides on client messages and shapes upstream answers; collects bytes to send each way."""

    decide: Decide
    restricted: bool
    maskers: Maskers | None = None  # None: nobody is masked in this session (unrestricted)
    key_columns: KeysOf | None = None  # None: row keys are not reported (no coverage)
    quota: QuotaGate | None = None  # the person's row quotas, when the policy sets any
    admit: Admit | None = None  # the audit trail's admission of each statement run
    quota_wait: bool = False  # a statement waits (behind the barrier) for the session to top up
    finished: list[Outcome] = field(default_factory=list)  # for the session to turn into events
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
    batch: int = 0  # Syncs and Queries sent: which batch a client message belongs to
    awaiting_parse: bool = False  # a Bind waits (behind the barrier) for an earlier batch's Parse
    _named: Named | None = None  # cache of named(); cleared whenever a name is created or dropped

    # ------------------------------------------------------------------ rendering

    def named(self) -> Named:
        """The session's names for the engine, rebuilt only after a name was created or dropped.

        A cursor is given with the allowance it was declared with; what remains of its budget is
        enforced here, by drawing every FETCH on the cursor's own budget."""
        if self._named is None:
            # Not the unnamed statement and portal: no SQL statement can name them (a zero-length
            # identifier does not parse), so changes to them need no rebuild.
            statements = {k: v.allowance for k, v in self.statements.items() if k}
            # A FETCH reads the tables its cursor was declared over: quotas, masks and events
            # follow them (the engine merges ``protected`` and ``counted`` into the FETCH's own).
            cursors = {
                k: Allow(
                    c.budget.cap, c.budget.rule, c.budget.on_cap, c.decision.protected, mask=c.mask,
                    redact=c.redact, counted=c.decision.counted,
                ) if isinstance(c.decision, Allow) else Allow(
                    c.budget.cap, c.budget.rule, c.budget.on_cap, mask=c.mask, redact=c.redact
                )
                for k, c in self.cursors.items()
                if k
            }  # fmt: skip
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

    def _rows_for(self, analysis: Analysis, decision: Allow, claim: Claim | None) -> Rows:
        """The budgets a string's rows draw on: its own, and each cursor it FETCHes from."""
        budgets = [RowBudget.of(decision, claim)]
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
            self.batch += 1
            self._query(m.Query.decode(frame.body).sql, frame)
        elif kind == b"P":
            self._parse(m.Parse.decode(frame.body), frame)
        elif kind == b"B":
            self._bind(*m.bind_target(frame.body), frame)
        elif kind == b"E":
            self._execute(m.Execute.decode(frame.body), frame)
        elif kind == b"D":
            self.pending.append(self._describe(frame) if self.maskers is not None else _Step("describe"))
            self.to_upstream.append(frame.raw)
        elif kind == b"C":
            close = m.Close.decode(frame.body)
            if close.name:
                self._named = None  # (the unnamed ones are not in named(): no SQL can name them)
            if close.kind == "S":
                self.statements.pop(close.name, None)
            else:
                self.cursors.pop(close.name, None)
            self.pending.append(_Step("close"))
            self.to_upstream.append(frame.raw)
        elif kind == b"S":
            self.batch += 1
            self.pending.append(_Step("sync"))
            self.to_upstream.append(frame.raw)
        elif kind == b"F":
            self._function_call(frame)
        else:  # Flush, CopyData, CopyDone, CopyFail: no answer of their own
            self.to_upstream.append(frame.raw)

    def _describe(self, frame: Frame) -> _Step:
        """A Describe whose RowDescription announces masked columns as text."""
        describe = m.Describe.decode(frame.body)
        if describe.kind == "P":
            cursor = self.cursors.get(describe.name)
            if cursor is None:
                return _Step("describe")
            return _Step("describe", stream=cursor.stream, redact=cursor.redact, reader=cursor.reader)
        prepared = self.statements.get(describe.name)
        if prepared is None or self.maskers is None:
            return _Step("describe")
        mask = prepared.allowance.mask
        stream = None if mask is None else StreamMask(mask, self.maskers)
        return _Step("describe", stream=stream, redact=prepared.allowance.redact, describes=prepared)

    def release_held(self) -> None:
        """Process client messages that waited behind a barrier, until the next barrier."""
        while self.held and not self.barrier:
            self.client_frame(self.held.popleft())

    def _refuse(self, deny: Deny, parse_name: str | None = None, sql: str = "") -> None:
        """Make PostgreSQL fail in the refused message's place; its error is rewritten into ours."""
        self.refusals += 1
        outcome = Outcome(sql, deny, None, sqlstate=deny.sqlstate)
        if parse_name is None:
            self.pending.append(_Cycle(refused=deny, outcome=outcome))
            self.to_upstream.append(m.Query(SENTINEL).encode())
        else:
            self.pending.append(_Step("parse", refused=deny, outcome=outcome))
            self.to_upstream.append(m.Parse(parse_name, SENTINEL, ()).encode())

    def _claim(self, decision: Allow) -> Claim | Need | Deny | None:
        """Rows the person's quota lets this source send (None: no quota applies to it)."""
        if self.quota is None or not decision.protected:
            return None
        return self.quota.claim(decision.protected, decision.row_cap)

    def _wait_for_quota(self, frame: Frame) -> None:
        """Hold this message (and all after it) until the session has topped the quota up."""
        self.quota_wait = self.barrier = True
        self.held.appendleft(frame)

    def quota_ready(self) -> None:
        """The session topped the quota up: the held messages go on."""
        self.quota_wait = self.barrier = False
        self.release_held()

    def _settle(self, rows: Rows | None) -> None:
        """A row source finished: its unsent claim goes back to the quota balance."""
        if rows is not None and self.quota is not None:
            budget = rows.budgets[0]
            if budget.claim is not None:
                self.quota.settle(budget.claim, budget.sent)
                budget.claim = None

    def _shaping(self, analysis: Analysis, decision: Allow) -> _Shape | None:
        """The masking and key-reading state of a string's results; None when no result is masked
        and none carries a protected table's row key (its rows then pass untouched)."""
        keys: tuple[KeyColumns | None, ...] = ()
        # A FETCH's decision does not carry its cursor's protected tables: its names are looked at.
        if self.key_columns is not None and (decision.protected or analysis.names_used):
            keys = tuple(self._key_plan(stmt) for stmt in analysis.statements)
            if not any(keys):
                keys = ()
        masks = decision.masks if self.maskers is not None else ()  # callers refuse masks without maskers
        if not masks and not keys:
            return None
        return _Shape(masks, self.maskers, keys)

    def _key_plan(self, stmt: StatementFacts) -> KeyColumns | None:
        """Where a statement's rows carry a protected table's row key: EXECUTE and FETCH inherit
        it from their name (as they inherit masks); other statements have their own."""
        name = stmt.prepared_name or ""
        if stmt.command == "fetch":
            cursor = self.cursors.get(name)
            return None if cursor is None else cursor.keys
        if stmt.command == "execute":
            prepared = self.statements.get(name)
            return None if prepared is None else prepared.keys
        return None if self.key_columns is None else self.key_columns(stmt)

    def _keys_for(self, stmt: StatementFacts, decision: Allow) -> KeyColumns | None:
        """A new name's key plan; only statements that read protected tables have one."""
        return self._key_plan(stmt) if decision.protected and self.key_columns is not None else None

    def _query(self, sql: str, frame: Frame) -> None:
        analysis, decision = self.decide(sql, self.named())
        if isinstance(decision, Allow) and decision.masks and self.maskers is None:
            decision = _MASKING_UNAVAILABLE
        if isinstance(decision, Deny):
            self._refuse(decision, sql=sql)
            return
        if self.admit is not None and (unaudited := self.admit(sql, analysis, decision)) is not None:
            self._refuse(unaudited, sql=sql)
            return
        claim = self._claim(decision) if analysis.returns_rows else None
        if claim is Need.TOP_UP:
            self._wait_for_quota(frame)
            return
        if isinstance(claim, Deny):
            self._refuse(claim, sql=sql)
            return
        outcome = Outcome(sql, decision, analysis)
        self._record_names(analysis, decision)
        rows = self._rows_for(analysis, decision, claim)
        shape, redact = self._shaping(analysis, decision), decision.redact
        if not rows.capped or not analysis.returns_rows or analysis.copies_in or _within(analysis, rows):
            cycle = _Cycle(rows=rows if rows.capped else None, shape=shape, redact=redact, outcome=outcome)
            self.pending.append(cycle)
            self.to_upstream.append(frame.raw)
            return
        texts = _own_statements(sql, len(analysis.statements))
        if texts is None:  # cannot split the client's text as analysis did: count, do not drive
            self.pending.append(_Cycle(rows=rows, shape=shape, redact=redact, outcome=outcome))
            self.to_upstream.append(frame.raw)
            return
        stepwise = any(b.on_cap == "error" for b in rows.budgets if b.cap is not None)
        statements = list(zip(texts, analysis.statements, strict=True))
        drive = _Drive(statements, rows, stepwise, shape=shape, redact=redact, outcome=outcome)
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
        for index, stmt in enumerate(analysis.statements):
            name = stmt.prepared_name
            if name is None:
                continue
            if stmt.command == "prepare":
                keys = self._keys_for(stmt, decision)
                self._define_statement(name, _Prepared(decision.statement(index), "select", keys=keys))
            elif stmt.command == "declare":
                holdable = _WITH_HOLD.search(stmt.text) is not None  # a false match only keeps a budget
                own = decision.statement(index)
                cursor = _Cursor(
                    RowBudget.of(own), "fetch", holdable=holdable, declared=True, decision=own,
                    mask=own.mask, redact=own.redact, keys=self._keys_for(stmt, decision),
                )  # fmt: skip
                self._define_cursor(name, cursor)
            elif stmt.command == "deallocate":
                self._named = None
                self.statements.pop(name, None)
            elif stmt.command == "close":
                self._named = None
                self.cursors.pop(name, None)

    def _parse(self, parse: m.Parse, frame: Frame) -> None:
        analysis, decision = self.decide(parse.sql, self.named())
        if isinstance(decision, Allow) and decision.masks and self.maskers is None:
            decision = _MASKING_UNAVAILABLE
        if isinstance(decision, Deny):
            if parse.name == "":
                # PostgreSQL drops the unnamed statement before parsing, even when parsing fails;
                # a named one that exists stays (the failed Parse cannot replace it).
                self.statements.pop("", None)
            self._refuse(decision, parse_name=parse.name, sql=parse.sql)
            return
        self._record_names(analysis, decision)
        first = analysis.statements[0] if analysis.statements else None
        fetches = tuple(
            s.prepared_name for s in analysis.statements if s.command in ("fetch", "move") and s.prepared_name
        )
        alone = first if len(analysis.statements) == 1 else None  # PostgreSQL refuses a Parse of more
        plan = None if alone is None else _FetchPlan.of(alone, parse.param_types)
        prepared = _Prepared(decision.statement(0), first.command if first else "select", fetches, plan)
        prepared.sql, prepared.analysis = parse.sql, analysis
        prepared.keys = None if first is None else self._keys_for(first, decision)
        # A Parse's outcome is known from its own answer, so the definition is exact: recorded now,
        # and undone in _step_error if PostgreSQL rejects or skips it.
        defines = None
        if parse.name not in _RESERVED_STATEMENTS:
            if parse.name:
                self._named = None
            defines = (parse.name, self.statements.get(parse.name), prepared)
            prepared.batch = self.batch
            self.statements[parse.name] = prepared
        self.pending.append(_Step("parse", defines=defines))
        self.to_upstream.append(frame.raw)

    def _define_statement(self, name: str, prepared: _Prepared) -> None:
        """Record a name from SQL PREPARE. PostgreSQL may still reject or skip it (the name exists,
        an earlier statement of the string failed), keeping what it had: so an existing name only
        becomes stricter here, never looser. Masks cannot be merged that way: a redefinition with
        other masks forgets the name (EXECUTE is then refused). A FETCH is lowered at Bind only if
        every definition PostgreSQL may hold is that same FETCH. DEALLOCATE forgets a name first."""
        self._named = None
        if name in _RESERVED_STATEMENTS:
            return
        old = self.statements.get(name)
        if old is not None and old.allowance.mask != prepared.allowance.mask:
            self.statements.pop(name, None)
            return
        if old is not None and old.fetch != prepared.fetch:
            prepared = _Prepared(prepared.allowance, prepared.command, prepared.cursors, keys=prepared.keys)
        if old is not None and _stricter(old.allowance, prepared.allowance) is old.allowance:
            allowance = replace(old.allowance, redact=old.allowance.redact or prepared.allowance.redact)
            cursors = tuple({*old.cursors, *prepared.cursors})
            prepared = _Prepared(allowance, prepared.command, cursors, prepared.fetch, keys=prepared.keys)
        self.statements[name] = prepared

    def _answered(self, step: _Step, *, failed: bool | None) -> None:
        """A Parse was answered: done (``failed`` None), rejected (True) or skipped (False). On
        failure the name means again what it meant before; a failed Parse of the unnamed statement
        leaves none (PostgreSQL drops it before parsing). A Bind waiting for it goes on."""
        if step.defines is None:
            return
        name, previous, new = step.defines
        if failed is None:
            new.batch = None
        elif self.statements.get(name) is new:
            if name:
                self._named = None
            if previous is None or (failed and name == ""):
                self.statements.pop(name, None)
            else:
                self.statements[name] = previous
        if self.awaiting_parse:
            self.awaiting_parse = self.barrier = False
            self.release_held()

    def _define_cursor(self, name: str, cursor: _Cursor) -> None:
        """Record a portal or cursor. PostgreSQL refuses to redefine an open named one (42P03), so
        an existing named cursor keeps its budget; all are forgotten when the transaction ends.

        The existing record may be stale, though: a DECLARE recorded when its string was allowed
        never ran if an earlier statement of the string failed, and PostgreSQL then accepts the
        redefinition. So a redefinition with other masks forgets the name (a FETCH or Execute of
        it is then refused); otherwise the name keeps whichever budget has fewer rows left, and
        its errors are redacted if either definition reads masked PII."""
        if name:
            self._named = None
        old = self.cursors.get(name) if name else None
        if old is None:
            self.cursors[name] = cursor
        elif old.mask != cursor.mask:
            del self.cursors[name]
        else:
            old.redact = old.redact or cursor.redact
            old.holdable = old.holdable or cursor.holdable
            left, new_left = old.budget.remaining(), cursor.budget.remaining()
            if new_left is not None and (left is None or new_left < left):
                old.budget = cursor.budget

    def _bind(self, portal: str, statement: str, frame: Frame) -> None:
        prepared = self.statements.get(statement)
        if prepared is not None and prepared.batch is not None and prepared.batch < self.batch:
            # Its Parse went in an earlier batch and is not answered yet: if PostgreSQL rejects or
            # skips it, this Bind runs the statement PostgreSQL kept, with other masks and caps.
            # Wait for the answer (within one batch a failed Parse makes PostgreSQL skip the Bind).
            self.barrier = self.awaiting_parse = True
            self.held.appendleft(frame)
            return
        if portal:
            self._named = None
        if prepared is None:
            if not portal or portal not in self.cursors:
                self.cursors.pop(portal, None)
            self.pending.append(_Step("bind"))
            self.to_upstream.append(frame.raw)
            return
        allowance = prepared.allowance
        if self.admit is not None and (unaudited := self.admit(prepared.sql, prepared.analysis, allowance)):
            self._refuse(unaudited, parse_name=_REFUSAL_STATEMENT, sql=prepared.sql)
            self.discard_until_sync = True
            return
        claim = self._claim(allowance)
        if claim is Need.TOP_UP:
            self._wait_for_quota(frame)
            return
        if isinstance(claim, Deny):
            # Bind has no refusal of its own: fail it as PostgreSQL fails a Bind, then skip to Sync.
            self._refuse(claim, parse_name=_REFUSAL_STATEMENT, sql=prepared.sql)
            self.discard_until_sync = True
            return
        keys = prepared.keys
        if prepared.command == "fetch" and prepared.cursors:
            # A prepared FETCH outlives its cursor (see below): the keys are those of the cursor
            # it reads now.
            fetched = self.cursors.get(prepared.cursors[0])
            keys = None if fetched is None else fetched.keys
        stream = reader = None
        if (allowance.mask is not None and self.maskers is not None) or keys is not None:
            formats = m.Bind.decode(frame.body).result_formats
            if allowance.mask is not None and self.maskers is not None:
                stream = StreamMask(allowance.mask, self.maskers, formats, prepared.types)
            if keys is not None:
                reader = KeyReader(keys, formats)
        cursor = _Cursor(
            RowBudget.of(allowance, claim), prepared.command, prepared.cursors,
            sql=prepared.sql, analysis=prepared.analysis, decision=allowance,
            mask=allowance.mask, redact=allowance.redact, stream=stream,
            keys=keys, reader=reader,
        )  # fmt: skip
        self._define_cursor(portal, cursor)
        plan = prepared.fetch
        if plan is not None:
            # Lowered here, not at Parse: a prepared FETCH outlives its cursor (psycopg prepares a
            # statement after five runs and reuses it in later transactions, on a cursor declared
            # anew), so only the budgets at Bind bound it. From Bind to Execute the portal's budget
            # is fresh and the cursor's only shrink, so remaining + 1 now is at least remaining + 1
            # when the FETCH runs: the row past the budget still arrives and the cut falls where it
            # would have. (A cursor closed and declared anew between this Bind and its Execute
            # could get fewer rows than it may; never a row too many.)
            bounded = plan.bounded(Rows([cursor.budget, *self._fetched_cursors(cursor)]).remaining())
            if bounded is not None:
                self._bind_bounded(m.Bind.decode(frame.body), bounded, plan.param_types)
                return
        self.pending.append(_Step("bind"))
        self.to_upstream.append(frame.raw)

    def _bind_bounded(self, bind: m.Bind, sql: str, param_types: tuple[int, ...]) -> None:
        """Bind the client's portal to a bounded FETCH of Sekisho's own instead of its statement.

        Describe first, so that a Bind of a statement PostgreSQL does not hold fails as it would
        have. The private statement exists only between these messages, sent together, so no
        client message can use it; the portal keeps its plan after the Close. Every answer but
        the Bind's is Sekisho's; an error in their place is the one the client's Bind would get
        (or 42P05, should a client have taken the private name)."""
        self.pending += [
            _Step("describe", hidden=True),
            _Step("close", hidden=True),
            _Step("parse", hidden=True),
            _Step("bind"),
            _Step("close", hidden=True),
        ]
        self.to_upstream += [
            m.Describe("S", bind.statement).encode(),
            m.Close("S", _FETCH_STATEMENT).encode(),
            m.Parse(_FETCH_STATEMENT, sql, param_types).encode(),
            replace(bind, statement=_FETCH_STATEMENT).encode(),
            m.Close("S", _FETCH_STATEMENT).encode(),
        ]

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
        if cursor.declared and self.restricted:
            # Its rows would be drawn on no quota claim (a FETCH claims; a DECLAREd cursor has no
            # Bind to claim at). Drivers read SQL cursors with FETCH; nothing legitimate is lost.
            self._refuse(
                Deny("unanalyzable", UNANALYZABLE,
                     f'Sekisho reads the SQL cursor "{execute.portal}" only with FETCH, not with a '
                     "protocol Execute", hint=f"FETCH from {execute.portal} instead."),
                parse_name=_REFUSAL_STATEMENT,
            )  # fmt: skip
            self.discard_until_sync = True
            return
        rows = Rows([cursor.budget, *self._fetched_cursors(cursor)])
        outcome = Outcome(cursor.sql, cursor.decision, cursor.analysis)
        self.pending.append(
            _Step("execute", rows=rows, command=cursor.command, stream=cursor.stream, redact=cursor.redact,
                  outcome=outcome, reader=cursor.reader)
        )  # fmt: skip
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
        """Send one statement of a driven query. A FETCH asking for more than the budgets can still
        release is sent as a bounded one: budgets only shrink until it runs (the pipelined
        statements before it can only use some up), so remaining + 1 now still covers the row
        past the budget when it runs."""
        text, stmt = drive.statements[index]
        remaining = drive.rows.remaining()
        limit = 0 if not stmt.returns_rows or remaining is None else remaining + 1
        if stmt.command == "execute" and stmt.execute_params is not None and stmt.prepared_name and limit:
            # SQL EXECUTE runs its whole query before any row limit applies; a Bind of the same
            # prepared statement (SQL and protocol share one namespace) with the literals' text
            # gives the same parameters, and Execute's limit then stops PostgreSQL at the cap.
            params = tuple(None if p is None else p.encode() for p in stmt.execute_params)
            bind = m.Bind("", stmt.prepared_name, (), params, ())
            self.to_upstream += [bind.encode(), m.Describe("P", "").encode(), m.Execute("", limit).encode()]
        else:
            plan = _FetchPlan.of(stmt)
            bounded = None if plan is None else plan.bounded(remaining)
            self.to_upstream += [
                m.Parse("", text if bounded is None else bounded, ()).encode(),
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
                self._settle(drive.rows)
                if drive.outcome is not None:
                    self.finished.append(drive.outcome)
                self.to_client.append(frame.raw)
                if drive.stepwise:
                    self.barrier = False
                    self.release_held()
            elif kind == b"E" and drive.swallow_error:
                drive.swallow_error = False
            elif kind not in b"123n":
                self.to_client.append(
                    redact_error(frame.body) if kind == b"E" and drive.redact else frame.raw
                )
            return
        if kind in b"12n3":
            return
        if kind == b"D" or (kind == b"d" and drive.statements[drive.index][1].returns_rows):
            if drive.rows.admit():
                out = frame.raw if drive.shape is None else drive.shape.row(frame, drive.outcome)
                self.to_client.append(out)
                if drive.outcome is not None:
                    drive.outcome.rows += 1
                    drive.outcome.size += len(out)
            return
        if kind == b"E":
            sent = redact_error(frame.body) if drive.redact else frame.raw
            if drive.outcome is not None:
                drive.outcome.failed(sent[5:])
            self.to_client.append(sent)
            self._drive_finish(drive)
            return
        if kind in b"CsI":
            if drive.shape is not None:
                drive.shape.next_statement()
            if drive.rows.cut or kind == b"s":
                budget = drive.rows.limiting()
                if drive.outcome is not None:
                    drive.outcome.cut_at(budget)
                if budget.on_cap == "error":
                    self.to_client.append(self._cap_error(budget))
                    self.to_upstream.append(m.Parse("", SENTINEL, ()).encode())
                    drive.swallow_error = True
                    self._drive_finish(drive)
                    return
                if kind == b"C":
                    tag = m.CommandComplete.decode(frame.body).tag
                else:  # suspended at Execute's limit: no tag of PostgreSQL's
                    tag = "FETCH 0" if drive.statements[drive.index][1].command == "fetch" else "SELECT 0"
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
        if kind in b"TH" and drive.shape is not None:
            self.to_client.append(drive.shape.start(frame))
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
            kept = {k: c for k, c in self.cursors.items() if c.holdable}
            if any(k and k not in kept for k in self.cursors):
                self._named = None
            self.cursors = kept
        if kind in b"NSA" or not self.pending:
            if self.restricted and kind in b"Dd":
                raise ProtocolViolation("rows from the database that Sekisho was not expecting")
            if kind == b"N" and self.pending and self.pending[0].redact:
                self.to_client.append(redact_notice(frame.body))
                return
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
        outcome = cycle.outcome
        if kind == b"Z":
            self.pending.popleft()
            self._settle(cycle.rows)
            self.to_client.append(frame.raw)
            if outcome is not None:
                self.finished.append(outcome)
            return
        if cycle.refused is not None:
            if kind == b"E":
                self.to_client.append(self._error(cycle.refused))
            return
        rows, shape = cycle.rows, cycle.shape
        if rows is None and shape is None:
            if outcome is not None and kind in b"DdE":
                if kind != b"E":  # a row, or a COPY TO STDOUT row
                    outcome.rows += 1
                    outcome.size += len(frame.raw)
                else:
                    outcome.failed(redact_error(frame.body)[5:] if cycle.redact else frame.body)
            self.to_client.append(redact_error(frame.body) if kind == b"E" and cycle.redact else frame.raw)
            return
        if kind in b"Dd":
            if rows is None or rows.admit():
                out = frame.raw if shape is None else shape.row(frame, outcome)
                self.to_client.append(out)
                if outcome is not None:
                    outcome.rows += 1
                    outcome.size += len(out)
            return
        if kind == b"E" and outcome is not None:
            outcome.failed(redact_error(frame.body)[5:] if cycle.redact else frame.body)
        if kind in b"CI" and shape is not None:
            shape.next_statement()
        if kind == b"C" and rows is not None and rows.cut:
            if outcome is not None:
                outcome.cut_at(rows.limiting())
            self.to_client.append(self._cut_notice(rows.limiting()))
            tag = m.CommandComplete.decode(frame.body).tag
            self.to_client.append(m.CommandComplete(_retag(tag, rows.released)).encode())
            rows.next_statement()
            return
        if kind in b"CTE" and rows is not None:
            rows.next_statement()
        if kind in b"TH" and shape is not None:
            self.to_client.append(shape.start(frame))
        elif kind == b"E" and cycle.redact:
            self.to_client.append(redact_error(frame.body))
        else:
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
            if kind == b"1" and step.defines is not None:
                self._answered(step, failed=None)
        if step.hidden:
            return
        outcome = step.outcome
        if outcome is not None:
            if kind == b"D":
                outcome.rows += 1
                outcome.size += len(frame.raw)
                if step.reader is not None:
                    outcome.take_key(step.reader, frame)
            elif kind in b"CsI":
                self.finished.append(outcome)
        if kind == b"T" and step.reader is not None:
            step.reader.describe(frame.body)
        stream = step.stream
        if stream is not None and kind in b"TDHd":
            self.to_client.append(stream.describe(frame) if kind in b"TH" else stream.rows(frame))
            if kind == b"T" and step.describes is not None:
                step.describes.types = stream.types
        else:
            self.to_client.append(frame.raw)

    def _counted(self, step: _Step, rows: Rows, frame: Frame) -> bool:
        """Count and cut an Execute's rows; True when the frame was handled here."""
        kind = frame.type
        if kind in b"Dd":
            if rows.admit():
                out = frame.raw if step.stream is None else step.stream.rows(frame)
                self.to_client.append(out)
                if step.outcome is not None:
                    step.outcome.rows += 1
                    step.outcome.size += len(out)
                    if step.reader is not None and kind == b"D":
                        step.outcome.take_key(step.reader, frame)
            return True
        if kind not in b"Cs":
            return False
        self.pending.popleft()
        if step.outcome is not None:
            if rows.cut:
                step.outcome.cut_at(rows.limiting())
            self.finished.append(step.outcome)
        if kind == b"C":
            self._settle(rows)  # the portal ran to its end
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
        if step.outcome is not None:
            if step.refused is None:
                step.outcome.failed(redact_error(frame.body)[5:] if step.redact else frame.body)
            self.finished.append(step.outcome)
        if step.refused is not None:
            self.to_client.append(self._error(step.refused))
        elif not step.swallow_error:
            self.to_client.append(redact_error(frame.body) if step.redact else frame.raw)
        if step.kind == "sync":
            return  # an error at Sync (e.g. a failed implicit COMMIT): ReadyForQuery follows
        skipped: list[_Step] = []
        while self.pending and not (isinstance(self.pending[0], _Step) and self.pending[0].kind == "sync"):
            head = self.pending.popleft()
            if isinstance(head, _Step) and head is not step:
                skipped.append(head)
        for later in reversed(skipped):
            self._answered(later, failed=False)
        self._answered(step, failed=True)
        if self.barrier:
            self.barrier = False
            self.release_held()


def _within(analysis: Analysis, rows: Rows) -> bool:
    """Whether a capped string provably returns no more rows than its budgets still allow, so it
    can run as it came instead of being driven. Its rows are still counted and cut as they pass
    (a bound from a stale catalog could be wrong; then PostgreSQL produces rows in vain). Not with
    ``on_row_cap: error``, whose cut must fail the statement upstream, which only driving does."""
    bound = analysis.max_rows
    if bound is None:
        return False
    remaining = rows.remaining()
    if remaining is None or bound > remaining:
        return False
    return all(b.on_cap != "error" for b in rows.budgets if b.cap is not None)


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
