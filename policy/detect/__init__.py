"""Detection: rules over the stream of connection, statement and quota events that raise alarms.

Pure, like the rest of ``policy``: no I/O, no clock (time comes from the events), no gateway
imports, so a recorded month replays exactly as it ran live. The gateway feeds a ``Detector`` the
events it emits (``policy.events``) and hands the alarms to its sinks (``gateway.alarms``).

One module per rule family, each holding its per-person memory, run in ``detector.RULES`` order:

=================  =========================================================================
module             alarms (``Alarm.rule``)
=================  =========================================================================
quota              quota_threshold: a quota window at 80% / 100% of its budget
probing            probing: many refusals in a short time
dump               dump_tool (pg_dump by name), dump_pattern (snapshot, catalog, whole tables)
paging             paging (keyset or OFFSET loops), cursor_paging (FETCH loops)
coverage           coverage: share of a table's distinct rows seen (HyperLogLog, ``hll``)
volume             volume_baseline: a day far above the person's learned daily volume
first_access       first_access: first read of a protected table
hours              outside_allowed_hours, unusual_hours (learned)
addresses          new_address: a network not used before (learned)
repeated           repeated: alarms of the named rules on several days within a window
=================  =========================================================================

``tightening`` turns active alarms into tighter limits, per the policy's ``on_alarm``, and keeps
the holds that last until a second person clears them (``Holds``, ``Clearance``).
"""

from __future__ import annotations

from policy.detect.alarm import Alarm, Finding, Plain, severity_rank
from policy.detect.detector import RULES, Detector
from policy.detect.hll import HyperLogLog
from policy.detect.tightening import (
    Clearance,
    ClearanceRefused,
    Holds,
    Tightening,
    tighten,
    tightening_for,
)
from policy.events import ConnectionEvent, QuotaUsage, StatementEvent

__all__ = [
    "RULES",
    "Alarm",
    "Clearance",
    "ClearanceRefused",
    "ConnectionEvent",
    "Detector",
    "Finding",
    "Holds",
    "HyperLogLog",
    "Plain",
    "QuotaUsage",
    "StatementEvent",
    "Tightening",
    "severity_rank",
    "tighten",
    "tightening_for",
]
