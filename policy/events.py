"""What happened, as plain data: the events that quotas, detection rules and the audit trail read.

The gateway emits one ``ConnectionEvent`` per connection attempt and one ``StatementEvent`` per
client string (simple protocol) or per Execute (extended protocol), refusals included. Detection
rules (``policy.detect``) are pure functions of these events and their own state, so they can be
replayed over a recorded month of work (bench/insider.py) exactly as they run live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    at: datetime  # UTC
    user: str
    address: str  # client IP address
    application_name: str
    accepted: bool
    reason: str | None = None  # why it was refused (wrong password, outside hours, ...)


@dataclass(frozen=True, slots=True)
class StatementEvent:
    at: datetime  # UTC, when the statement was received
    user: str
    session: str  # Sekisho's session id
    address: str
    application_name: str
    sql: str  # the client's text (truncated for very long statements)
    fingerprint: str  # PostgreSQL's normalized text (literals as $n), or the text when it has none
    command: str  # select, fetch, copy, execute, ...
    tables: tuple[str, ...] = ()  # protected tables read or written, schema.table
    pii_columns: tuple[str, ...] = ()  # masked PII columns in the result, schema.table.column
    allowed: bool = True
    rule: str | None = None  # the refusing rule, or the rule that cut the result
    sqlstate: str | None = None  # Sekisho's or PostgreSQL's error, if any
    rows: int = 0  # rows that reached the client
    protected_rows: int = 0  # of those, rows of statements that read protected tables
    bytes: int = 0  # bytes of rows that reached the client
    cut: bool = False  # a row cap or quota cut the result
    duration: float = 0.0  # seconds from receipt to completion
    # For paging detection: the cursor a FETCH drew on, and key values a paging query started from.
    cursor: str | None = None
    keys: tuple[str, ...] = field(default=())  # primary key values of protected rows sent (sampled)


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """A person's use of one volume quota window, as the quota store reports it after a charge.

    The quota side feeds these to ``policy.detect.Detector.observe_quota``, which raises an alarm
    when the share used crosses a level of the policy (80% and 100% by default).
    """

    at: datetime  # UTC, when the charge was made
    user: str
    window: int  # seconds: the quota's rolling window
    metric: str  # "rows" or "bytes"
    used: int  # in the window, this charge included
    budget: int  # what the window allows
    table: str | None = None  # schema.table of a per-table quota; None for the person's total
