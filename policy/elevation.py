"""Time-boxed elevation approved by a second person: the workflow and what a grant widens.

Theory of operation. A person asks for one of the policy's ``elevations`` for a duration (at most
its ``max_duration``) and gives a reason: a ``Request`` in state ``requested``. A member of one of
the elevation's approver roles, never the requester, approves it (the clock starts then:
``expires_at = approved_at + duration``) or denies it with a reason. The requester or an approver
may revoke it while it is requested or approved. A request nobody decides on lapses after
``REQUEST_TTL``; an approved one at ``expires_at``. Every transition is a pure function below that
returns the new request or raises ``ElevationRefused`` (with a SQLSTATE for the console); the
gateway's store applies them atomically, so two approvers cannot both decide one request.

    requested --approve--> approved --(expires_at)--> expired
        |  \\--deny--> denied      \\--revoke--> revoked
        |--revoke--> revoked
        \\--(requested_at + REQUEST_TTL)--> expired

``state_at`` is the state at a time: an open request past its end is expired whether or not
anyone has written that down yet, so a grant never outlives its end (fail closed on expiry).

What a grant does: ``elevate(permissions, grant)`` widens a person's merged permissions. Roles
merge with "deny wins, smallest cap wins" (``policy.permissions``); an elevation is the explicit
exception: the rule classes it allows are added, its ``max_rows`` raises the row caps to that
value, and the roles it grants merge the other way round (a class either side allows is allowed,
the larger cap wins, a column either side sees clear is clear). Quotas are the person's own, and a
suspension after an alarm still refuses everything (the gateway checks it before any decision).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policy.model import PII_USES, Policy, User, show_duration
from policy.permissions import Permissions, permissions_for

STATES = ("requested", "approved", "denied", "expired", "revoked")
OPEN_STATES = frozenset({"requested", "approved"})
REQUEST_TTL = timedelta(hours=24)  # a request nobody decided on lapses after this
MAX_REASON = 2000  # characters of a reason

# SQLSTATEs of refusals (the console sends them as ErrorResponse).
UNDEFINED_OBJECT = "42704"  # no such elevation or request
INVALID_VALUE = "22023"  # a duration that is not one, or too long; no reason
NOT_ALLOWED = "42501"  # not an approver; approving one's own request; not the person's request
WRONG_STATE = "55000"  # already decided, expired or revoked

_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")


class ElevationRefused(ValueError):
    """A request or decision that may not be made; ``code`` says why, ``sqlstate`` for clients."""

    def __init__(self, code: str, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class Request:
    """One elevation request and what became of it."""

    id: str
    person: str
    elevation: str
    duration: timedelta
    reason: str
    requested_at: datetime
    state: str = "requested"
    expires_at: datetime | None = None  # requested: when the request lapses; approved: the grant's end
    approver: str | None = None  # who approved or denied
    decided_at: datetime | None = None
    note: str | None = None  # why it was denied
    ended_by: str | None = None  # who revoked it
    ended_at: datetime | None = None  # when it was revoked or expired

    def state_at(self, now: datetime) -> str:
        """The state at ``now``: an open request past its end is expired, written down or not."""
        if self.state in OPEN_STATES and self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return self.state

    def in_force(self, now: datetime) -> bool:
        return self.state_at(now) == "approved"

    def to_dict(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id,
            "person": self.person,
            "elevation": self.elevation,
            "duration": self.duration.total_seconds(),
            "reason": self.reason,
            "requested_at": when(self.requested_at),
            "state": self.state,
            "expires_at": when(self.expires_at),
            "approver": self.approver,
            "decided_at": when(self.decided_at),
            "note": self.note,
            "ended_by": self.ended_by,
            "ended_at": when(self.ended_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(str(value))

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        requested = when("requested_at")
        if requested is None:
            raise ValueError("an elevation request without requested_at")
        return cls(
            id=str(data["id"]),
            person=str(data["person"]),
            elevation=str(data["elevation"]),
            duration=timedelta(seconds=float(data["duration"])),
            reason=str(data["reason"]),
            requested_at=requested,
            state=str(data["state"]),
            expires_at=when("expires_at"),
            approver=text("approver"),
            decided_at=when("decided_at"),
            note=text("note"),
            ended_by=text("ended_by"),
            ended_at=when("ended_at"),
        )


def parse_duration(text: str) -> timedelta | None:
    """``30m``, ``2h``, ``1d12h``, ``90s`` (the policy file's grammar); None if it is not one."""
    compact = text.strip().replace(" ", "").lower()
    match = _DURATION.fullmatch(compact) if compact else None
    if match is None:
        return None
    return timedelta(
        days=int(match["d"] or 0),
        hours=int(match["h"] or 0),
        minutes=int(match["m"] or 0),
        seconds=int(match["s"] or 0),
    )


def may_approve(policy: Policy, person: str, elevation: str) -> bool:
    """Whether ``person`` is a member of one of ``elevation``'s approver roles."""
    defined = policy.elevations.get(elevation)
    if defined is None:
        return False
    return any(role.name in defined.approvers for role in policy.roles_of(person))


# ---------------------------------------------------------------------- transitions


def request(  # noqa: PLR0917  # the request's own fields, in the order the console reads them
    policy: Policy, id: str, person: str, elevation: str, duration: timedelta, reason: str, now: datetime
) -> Request:
    """A new request by ``person``; raises ElevationRefused for an unknown elevation or person, a
    duration that is not more than zero or longer than the elevation allows, or no reason."""
    defined = policy.elevations.get(elevation)
    if defined is None:
        offered = ", ".join(sorted(policy.elevations)) or "none"
        raise ElevationRefused(
            "unknown_elevation", UNDEFINED_OBJECT,
            f"the policy defines no elevation {elevation!r} (it offers: {offered})",
        )  # fmt: skip
    if person not in policy.users:
        raise ElevationRefused(
            "unknown_person", NOT_ALLOWED, f"{person} is not named in the policy's users, so cannot ask"
        )
    if duration <= timedelta(0):
        raise ElevationRefused("bad_duration", INVALID_VALUE, "the duration must be longer than zero")
    if duration > defined.max_duration:
        raise ElevationRefused(
            "too_long", INVALID_VALUE,
            f"{show_duration(duration)} is longer than the {show_duration(defined.max_duration)} that "
            f"elevation {elevation!r} allows",
        )  # fmt: skip
    _check_reason(reason, "a request")
    return Request(id, person, elevation, duration, reason.strip(), now, expires_at=now + REQUEST_TTL)


def approve(policy: Policy, current: Request, by: str, now: datetime) -> Request:
    """``current`` approved by ``by``: the grant runs from now for the requested duration."""
    _check_decider(policy, current, by, now, "approve")
    return dataclasses.replace(
        current, state="approved", approver=by, decided_at=now, expires_at=now + current.duration
    )


def deny(policy: Policy, current: Request, by: str, reason: str, now: datetime) -> Request:
    """``current`` denied by ``by``, for ``reason``."""
    _check_decider(policy, current, by, now, "deny")
    _check_reason(reason, "a denial")
    return dataclasses.replace(current, state="denied", approver=by, decided_at=now, note=reason.strip())


def revoke(policy: Policy, current: Request, by: str, now: datetime) -> Request:
    """``current`` ended early by its requester or an approver of its elevation."""
    if by != current.person and not may_approve(policy, by, current.elevation):
        raise ElevationRefused(
            "not_allowed", NOT_ALLOWED,
            f"only {current.person} or an approver of {current.elevation!r} may revoke request {current.id}",
        )  # fmt: skip
    _check_open(current, now, "revoked")
    return dataclasses.replace(current, state="revoked", ended_by=by, ended_at=now)


def expire(current: Request, now: datetime) -> Request:
    """``current`` written down as expired; raises ElevationRefused unless it ended by ``now``."""
    if current.state not in OPEN_STATES or current.state_at(now) != "expired":
        raise ElevationRefused("not_due", WRONG_STATE, f"request {current.id} has not expired")
    return dataclasses.replace(current, state="expired", ended_at=current.expires_at)


def _check_decider(policy: Policy, current: Request, by: str, now: datetime, verb: str) -> None:
    if by == current.person:
        raise ElevationRefused(
            "self_approval", NOT_ALLOWED, f"{by} may not {verb} their own request {current.id}"
        )
    if not may_approve(policy, by, current.elevation):
        defined = policy.elevations.get(current.elevation)
        roles = " or ".join(defined.approvers) if defined is not None else "(no longer defined)"
        raise ElevationRefused(
            "not_approver", NOT_ALLOWED,
            f"{by} may not {verb} elevation {current.elevation!r}: its approvers are members of {roles}",
        )  # fmt: skip
    if current.state_at(now) != "requested":
        _check_open(current, now, "decided")  # raises: approved, denied, revoked or expired
        raise ElevationRefused(
            "already_decided", WRONG_STATE, f"request {current.id} was already approved by {current.approver}"
        )


def _check_open(current: Request, now: datetime, what: str) -> None:
    state = current.state_at(now)
    if state not in OPEN_STATES:
        raise ElevationRefused(
            "already_decided" if state in ("approved", "denied") else "ended", WRONG_STATE,
            f"request {current.id} cannot be {what}: it is {state}",
        )  # fmt: skip


def _check_reason(reason: str, what: str) -> None:
    if not reason.strip() or len(reason) > MAX_REASON:
        raise ElevationRefused(
            "no_reason", INVALID_VALUE, f"{what} needs a reason of at most {MAX_REASON} characters"
        )


# ---------------------------------------------------------------------- grants


@dataclass(frozen=True, slots=True)
class Grant:
    """An approved elevation in force, resolved against the policy: what it widens, until when."""

    id: str
    person: str
    elevation: str
    until: datetime
    allow: frozenset[str] = frozenset()  # rule classes allowed in addition to the person's
    max_rows: int | None = None  # row caps are raised to at least this
    roles: Permissions | None = None  # the granted roles merged as one person's (None: no roles)


def grant_for(policy: Policy, approved: Request) -> Grant | None:
    """What ``approved`` grants under ``policy``; None when the policy no longer defines it."""
    defined = policy.elevations.get(approved.elevation)
    if defined is None or approved.expires_at is None:
        return None
    roles: Permissions | None = None
    names = tuple(name for name in defined.grants_roles if name in policy.roles)
    if names:
        alone = dataclasses.replace(policy, users={approved.person: User(approved.person, names)})
        roles = permissions_for(alone, approved.person)
        if not roles.restricted:  # an unrestricted role sees every column clear, uses PII anywhere
            every = frozenset((*t.relation, column) for t in policy.tables.values() for column in t.pii)
            roles = dataclasses.replace(roles, clear=every, pii_use={}, hidden=frozenset())
    return Grant(
        approved.id,
        approved.person,
        approved.elevation,
        approved.expires_at,
        defined.grants_allow,
        defined.grants_max_rows,
        roles,
    )


def grants_in_force(
    policy: Policy, requests: Iterable[Request], now: datetime
) -> dict[str, tuple[Grant, ...]]:
    """Each person's grants in force at ``now``, in order of approval."""
    out: dict[str, list[Grant]] = {}
    approved = sorted((r for r in requests if r.in_force(now)), key=lambda r: (r.decided_at or now, r.id))
    for current in approved:
        grant = grant_for(policy, current)
        if grant is not None:
            out.setdefault(current.person, []).append(grant)
    return {person: tuple(grants) for person, grants in out.items()}


def elevate(permissions: Permissions, grant: Grant) -> Permissions:
    """``permissions`` widened by ``grant`` (see the module docstring). Unrestricted people are
    refused nothing already; ``restricted`` itself never changes, so the relay's protections for
    restricted sessions (masking, strict startup settings) stay in place."""
    if not permissions.restricted:
        return permissions
    widened = permissions if grant.roles is None else _widen(permissions, grant.roles)
    allowed = widened.allowed | grant.allow
    max_rows, table_caps = widened.max_rows, widened.table_max_rows
    if grant.max_rows is not None:
        max_rows = None if max_rows is None else max(max_rows, grant.max_rows)
        table_caps = {table: max(cap, grant.max_rows) for table, cap in table_caps.items()}
    return dataclasses.replace(widened, allowed=allowed, max_rows=max_rows, table_max_rows=table_caps)


def elevate_all(permissions: Permissions, grants: Sequence[Grant]) -> Permissions:
    for grant in grants:
        permissions = elevate(permissions, grant)
    return permissions


def _widen(mine: Permissions, theirs: Permissions) -> Permissions:
    """Two sets of permissions merged the other way round from roles: whatever either allows."""
    caps = (mine.max_rows, theirs.max_rows)
    table_caps = {
        table: max(cap, theirs.table_max_rows[table])
        for table, cap in mine.table_max_rows.items()
        if table in theirs.table_max_rows
    }  # a table only one side caps is not capped by the other
    writes = "protected_writes"
    if writes in mine.allowed and writes in theirs.allowed:
        writable = (
            None if mine.writable is None or theirs.writable is None else mine.writable | theirs.writable
        )
    else:
        writable = theirs.writable if writes in theirs.allowed else mine.writable
    hidden = mine.hidden & theirs.hidden
    pii_use = {
        channel: min(use, theirs.pii_use[channel], key=PII_USES.index)
        for channel, use in mine.pii_use.items()
        if channel in theirs.pii_use  # a channel the other side does not list is allowed there
    }
    return dataclasses.replace(
        mine,
        allowed=mine.allowed | theirs.allowed,
        max_rows=None if None in caps else max(c for c in caps if c is not None),
        table_max_rows=table_caps,
        writable=writable,
        clear=(mine.clear | theirs.clear) - hidden,
        hidden=hidden,
        pii_use={channel: use for channel, use in pii_use.items() if use != "allow"},
    )
