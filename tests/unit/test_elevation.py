"""Elevation: the pure workflow and widening (policy.elevation), the store (SQLite and Redis), and
the gate merging grants into a person's permissions."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.elevation_store import (
    ElevationStore,
    RedisElevationStore,
    SQLiteElevationStore,
    UnknownRequest,
)
from gateway.gate import PolicyService, SessionGate
from gateway.pgcluster import free_port
from gateway.quota_store import StoreUnavailable
from policy.catalog import Catalog, Relation
from policy.decision import Allow, Deny
from policy.detect.tightening import Tightening
from policy.elevation import (
    REQUEST_TTL,
    ElevationRefused,
    Request,
    approve,
    deny,
    elevate,
    expire,
    grant_for,
    grants_in_force,
    parse_duration,
    request,
    revoke,
)
from policy.engine import Named
from policy.loader import load_policy
from policy.permissions import permissions_for

POLICY = load_policy(
    """
version: 1
protected_tables:
  public.customers:
    max_rows: 1000
    pii: {name: full, phone: phone, email: email}
  public.orders: {}
roles:
  maintenance:
    max_rows: 100
    hidden: [public.customers.email]
    pii_use: {where: equality, order_by: refuse}
  writer:
    max_rows: 500
    allow: [protected_writes]
    writable: [public.orders]
    clear: [public.customers.phone]
    pii_use: {where: allow, order_by: count}
  dba: {restricted: false}
  lead: {max_rows: 100}
users:
  maint: {roles: [maintenance]}
  lead: {roles: [lead]}
  root: {roles: [dba]}
elevations:
  bulk_export:
    grants: {allow: [copy_protected], max_rows: 10000}
    max_duration: 2h
    approvers: [lead]
  write_orders:
    grants: {roles: [writer]}
    max_duration: 1d
    approvers: [lead]
  break_glass:
    grants: {roles: [dba]}
    max_duration: 30m
    approvers: [lead]
""",
    "test",
)
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CUSTOMERS = ("public", "customers")


def _approved(elevation: str = "bulk_export", id: str = "r1", hours: float = 0.5) -> Request:
    asked = request(POLICY, id, "maint", elevation, timedelta(hours=hours), "ticket 4711", NOW)
    return approve(POLICY, asked, "lead", NOW + timedelta(minutes=5))


# ---------------------------------------------------------------------- workflow


def test_a_request_is_approved_by_a_second_person_and_runs_from_approval() -> None:
    asked = request(POLICY, "r1", "maint", "bulk_export", timedelta(hours=2), "ticket 4711", NOW)
    assert (asked.state, asked.expires_at) == ("requested", NOW + REQUEST_TTL)
    later = NOW + timedelta(hours=3)
    approved = approve(POLICY, asked, "lead", later)
    assert (approved.state, approved.approver, approved.decided_at) == ("approved", "lead", later)
    assert approved.expires_at == later + timedelta(hours=2)
    assert approved.in_force(later + timedelta(hours=1, minutes=59))
    assert approved.state_at(later + timedelta(hours=2)) == "expired"
    written = expire(approved, later + timedelta(hours=2))
    assert (written.state, written.ended_at) == ("expired", later + timedelta(hours=2))
    assert Request.from_dict(written.to_dict()) == written


@pytest.mark.parametrize(
    ("elevation", "person", "duration", "reason", "code", "sqlstate"),
    [
        ("nope", "maint", timedelta(hours=1), "x", "unknown_elevation", "42704"),
        ("bulk_export", "stranger", timedelta(hours=1), "x", "unknown_person", "42501"),
        ("bulk_export", "maint", timedelta(hours=2, seconds=1), "x", "too_long", "22023"),
        ("bulk_export", "maint", timedelta(0), "x", "bad_duration", "22023"),
        ("bulk_export", "maint", timedelta(hours=1), "  ", "no_reason", "22023"),
    ],
)
def test_requests_that_may_not_be_made(  # noqa: PLR0917  # one parameter per column above
    elevation: str, person: str, duration: timedelta, reason: str, code: str, sqlstate: str
) -> None:
    with pytest.raises(ElevationRefused) as refused:
        request(POLICY, "r1", person, elevation, duration, reason, NOW)
    assert (refused.value.code, refused.value.sqlstate) == (code, sqlstate)


def test_only_an_approver_other_than_the_requester_decides_once() -> None:
    asked = request(POLICY, "r1", "lead", "bulk_export", timedelta(hours=1), "audit sample", NOW)
    for by, code in (("lead", "self_approval"), ("maint", "not_approver"), ("root", "not_approver")):
        with pytest.raises(ElevationRefused) as refused:
            approve(POLICY, asked, by, NOW)
        assert refused.value.code == code
        assert refused.value.sqlstate == "42501"
    mine = _approved()
    for decide in (lambda: approve(POLICY, mine, "lead", NOW), lambda: deny(POLICY, mine, "lead", "no", NOW)):
        with pytest.raises(ElevationRefused) as refused:
            decide()
        assert (refused.value.code, refused.value.sqlstate) == ("already_decided", "55000")
    lapsed = request(POLICY, "r2", "maint", "bulk_export", timedelta(hours=1), "x", NOW)
    with pytest.raises(ElevationRefused) as refused:
        approve(POLICY, lapsed, "lead", NOW + REQUEST_TTL)
    assert refused.value.code == "ended"
    denied = deny(POLICY, lapsed, "lead", "use the report", NOW)
    assert (denied.state, denied.note) == ("denied", "use the report")
    with pytest.raises(ElevationRefused):
        deny(POLICY, lapsed, "lead", "", NOW)


def test_revocation_by_the_requester_or_an_approver_only_while_open() -> None:
    grant = _approved()
    with pytest.raises(ElevationRefused) as refused:
        revoke(POLICY, grant, "root", NOW)
    assert refused.value.code == "not_allowed"
    for by in ("maint", "lead"):
        revoked = revoke(POLICY, grant, by, NOW + timedelta(minutes=10))
        assert (revoked.state, revoked.ended_by) == ("revoked", by)
        assert not revoked.in_force(NOW + timedelta(minutes=11))
    with pytest.raises(ElevationRefused):
        revoke(POLICY, grant, "maint", NOW + timedelta(hours=2))  # expired already
    with pytest.raises(ElevationRefused):
        expire(grant, NOW + timedelta(minutes=30))  # not due


def test_durations_read_like_the_policy_file() -> None:
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration(" 2s ") == timedelta(seconds=2)
    assert parse_duration("90M") == timedelta(minutes=90)
    assert parse_duration("soon") is None
    assert parse_duration("") is None


# ---------------------------------------------------------------------- widening


def test_a_grant_adds_its_classes_and_raises_the_caps() -> None:
    own = permissions_for(POLICY, "maint")
    grant = grant_for(POLICY, _approved())
    assert grant is not None
    elevated = elevate(own, grant)
    assert own.refuses("copy_protected")
    assert not elevated.refuses("copy_protected")
    assert (own.max_rows, elevated.max_rows) == (100, 10000)
    assert (own.table_max_rows[CUSTOMERS], elevated.table_max_rows[CUSTOMERS]) == (1000, 10000)
    # Everything else is the person's own: masks, hidden columns, quotas, channels.
    assert (elevated.clear, elevated.hidden, elevated.quotas) == (own.clear, own.hidden, own.quotas)
    assert elevated.pii_use == own.pii_use
    assert elevated.restricted


def test_granted_roles_widen_where_roles_would_narrow() -> None:
    own = permissions_for(POLICY, "maint")
    grant = grant_for(POLICY, _approved("write_orders"))
    assert grant is not None
    assert grant.roles is not None
    elevated = elevate(own, grant)
    assert not elevated.refuses("protected_writes")
    assert elevated.writable == frozenset({("public", "orders")})
    assert elevated.max_rows == 500  # the larger cap wins
    assert elevated.table_max_rows[CUSTOMERS] == 1000  # both sides cap the table
    assert ("public", "customers", "phone") in elevated.clear
    assert elevated.hidden == frozenset()  # writer does not hide email: what either side allows wins
    # Per channel, the less strict use; a channel writer leaves at its default stays as it was.
    assert "where" not in elevated.pii_use  # writer allows it
    assert elevated.pii_use == {**{c: u for c, u in own.pii_use.items() if c != "where"}, "order_by": "count"}


def test_an_unrestricted_granted_role_sees_clear_but_stays_a_restricted_session() -> None:
    own = permissions_for(POLICY, "maint")
    grant = grant_for(POLICY, _approved("break_glass"))
    assert grant is not None
    elevated = elevate(own, grant)
    assert elevated.restricted  # the relay's protections for the session stay
    assert elevated.max_rows is None
    assert elevated.table_max_rows == {}
    assert {c for *_, c in elevated.clear} == {"name", "phone", "email"}
    assert elevated.pii_use == {}
    assert not elevated.refuses("admin_functions")
    unrestricted = permissions_for(POLICY, "root")
    assert elevate(unrestricted, grant) is unrestricted


def test_grants_in_force_skip_open_requests_ended_ones_and_vanished_elevations() -> None:
    asked = request(POLICY, "r0", "maint", "bulk_export", timedelta(hours=1), "x", NOW)
    first, second = _approved(id="r1"), _approved("write_orders", id="r2")
    policy = load_policy(
        "version: 1\nprotected_tables: {}\nroles: {lead: {}, maintenance: {}}\n"
        "users: {maint: {roles: [maintenance]}, lead: {roles: [lead]}}\n"
        "elevations: {bulk_export: {grants: {max_rows: 5}, approvers: [lead]}}\n",
        "test",
    )
    at = NOW + timedelta(minutes=30)
    assert [g.id for g in grants_in_force(POLICY, [asked, second, first], at)["maint"]] == ["r1", "r2"]
    assert [g.id for g in grants_in_force(policy, [asked, second, first], at)["maint"]] == ["r1"]
    assert grants_in_force(POLICY, [first], NOW + timedelta(hours=2)) == {}


# ---------------------------------------------------------------------- the gate


def test_the_gate_applies_grants_attributes_decisions_and_drops_them_at_the_end() -> None:
    columns = ("id", "name", "phone")  # maintenance may not read email at all (hidden)
    service = PolicyService(POLICY, Catalog.of([Relation("public", "customers", "r", columns)]))
    gate = SessionGate(service, "maint")
    export = "COPY customers TO STDOUT"
    assert isinstance(gate.decide(export, Named()).decision, Deny)
    grant = grant_for(POLICY, _approved())
    assert grant is not None
    now = datetime.now(UTC)
    live = dataclasses.replace(grant, until=now + timedelta(hours=1))
    service.grant({"maint": (live,)})
    verdict = gate.decide(export, Named())
    assert isinstance(verdict.decision, Allow)
    assert verdict.elevation == "r1"
    assert gate.in_force("r1")
    plain = gate.decide("SELECT 1", Named())
    assert isinstance(plain.decision, Allow)
    assert plain.elevation is None
    # A suspension after an alarm still wins over the grant.
    service.restrict("maint", Tightening(None, True, now + timedelta(hours=1), ("a1",)))
    assert gate.decide(export, Named()).decision.rule == "suspended"  # type: ignore[union-attr]
    service.lift("maint")
    assert gate.decide(export, Named()).elevation == "r1"
    # As last read from a store now out of reach: the grant ends by its own time all the same.
    service.grant({"maint": (dataclasses.replace(live, until=datetime.now(UTC)),)})
    assert isinstance(gate.decide(export, Named()).decision, Deny)
    assert not gate.in_force("r1")


# ---------------------------------------------------------------------- the store


async def _exercise(store: ElevationStore) -> None:
    asked = request(POLICY, "r1", "maint", "bulk_export", timedelta(hours=1), "ticket 4711", NOW)
    other = request(
        POLICY, "r2", "lead", "bulk_export", timedelta(hours=1), "sample", NOW + timedelta(seconds=1)
    )
    await store.add(asked)
    await store.add(other)
    assert {r.id for r in await store.open()} == {"r1", "r2"}
    approved = await store.change("r1", lambda r: approve(POLICY, r, "lead", NOW))
    assert approved.state == "approved"
    with pytest.raises(ElevationRefused):  # the change sees what is stored: decided already
        await store.change("r1", lambda r: approve(POLICY, r, "lead", NOW))
    with pytest.raises(UnknownRequest):
        await store.change("nope", lambda r: r)
    await store.change("r2", lambda r: revoke(POLICY, r, "lead", NOW))
    assert [r.id for r in await store.open()] == ["r1"]
    assert [r.id for r in await store.recent(None)] == ["r2", "r1"]
    assert [r.id for r in await store.recent("maint")] == ["r1"]
    # Two processes noticing one expiry: exactly one writes it down.
    later = NOW + timedelta(hours=2)
    outcomes = await asyncio.gather(
        *(store.change("r1", lambda r: expire(r, later)) for _ in range(4)), return_exceptions=True
    )
    assert sum(isinstance(o, Request) for o in outcomes) == 1
    assert all(isinstance(o, (Request, ElevationRefused)) for o in outcomes)
    assert await store.open() == []
    await store.close()


def test_sqlite_store_keeps_requests_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "quotas.sqlite"
    asyncio.run(_exercise(SQLiteElevationStore(path)))

    async def reopen() -> list[Request]:
        again = SQLiteElevationStore(path)
        try:
            return await again.recent(None)
        finally:
            await again.close()

    assert [(r.id, r.state) for r in asyncio.run(reopen())] == [("r2", "revoked"), ("r1", "expired")]


def test_redis_store(redis_url: str) -> None:
    asyncio.run(_exercise(RedisElevationStore(redis_url)))


def test_an_unreachable_store_says_so() -> None:
    async def attempt() -> None:
        store = RedisElevationStore(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(StoreUnavailable):
                await store.open()
            with pytest.raises(StoreUnavailable):
                await store.add(request(POLICY, "r1", "maint", "bulk_export", timedelta(hours=1), "x", NOW))
        finally:
            await store.close()

    asyncio.run(attempt())
