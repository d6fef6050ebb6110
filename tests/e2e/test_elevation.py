"""Time-boxed elevation approved by a second person, end to end through a real gateway.

contractor (restricted maintenance) is refused a bulk COPY of customers, asks for the policy's
``bulk_export`` in the ``sekisho`` console, cannot approve it himself, is approved by ``approver``
(role approvers), copies, and is refused again when the grant expires or is revoked; every step is
on the audit trail. Times here are generous: a grant of a few seconds is waited out by polling.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest

from tests.conftest import GatewayFactory
from tests.e2e.test_audit import _records, _wait_for, audit_dsn  # noqa: F401  # the fixture, reused
from tests.support import Gateway, eventually

EXPORT = "COPY customers TO STDOUT"


def _console(gw: Gateway, user: str) -> psycopg.Connection[tuple[Any, ...]]:
    info = gw.conninfo(user).replace(f"dbname={gw.database}", "dbname=sekisho")
    return psycopg.connect(info, autocommit=True)


def _copy(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Lines of the export (raises psycopg.Error when refused)."""
    with conn.cursor().copy(EXPORT) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    return data.count(b"\n")


def _refused(conn: psycopg.Connection[tuple[Any, ...]]) -> str | None:
    try:
        _copy(conn)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def _request(gw: Gateway, duration: str, reason: str) -> str:
    with _console(gw, "contractor") as console:
        notices: list[str] = []
        console.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        console.execute(f"REQUEST ELEVATION bulk_export FOR '{duration}' REASON '{reason}'")
        rows = console.execute("SHOW ELEVATIONS").fetchall()
    assert notices
    assert "requested" in notices[0]
    mine = [r for r in rows if r[9] == reason]
    assert len(mine) == 1
    assert mine[0][1:4] == ("contractor", "bulk_export", "requested")
    return str(mine[0][0])


def _error(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> tuple[str | None, str]:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    return caught.value.sqlstate, str(caught.value)


def test_request_approve_use_expire_and_revoke_on_the_audit_trail(
    gateway_factory: GatewayFactory,
    audit_dsn: str,  # noqa: F811  # the imported fixture
) -> None:
    gw = gateway_factory(audit={"database": audit_dsn})
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as work:
        assert _refused(work) == "42501"

        # Misuse is refused with its own SQLSTATE, and nothing is granted.
        with _console(gw, "contractor") as console:
            assert _error(console, "REQUEST ELEVATION no_such FOR '1h' REASON 'x'")[0] == "42704"
            state, message = _error(console, "REQUEST ELEVATION bulk_export FOR '3h' REASON 'x'")
            assert state == "22023"
            assert "2h" in message
            assert _error(console, "REQUEST ELEVATION bulk_export FOR 'soon' REASON 'x'")[0] == "22023"
            assert _error(console, "REQUEST ELEVATION bulk_export FOR '1h' REASON ''")[0] == "22023"
            assert _error(console, "APPROVE ELEVATION 0000")[0] == "42704"

        first = _request(gw, "8s", "ticket 4711")
        with _console(gw, "contractor") as console:
            state, message = _error(console, f"APPROVE ELEVATION {first}")
            assert state == "42501"
            assert "own request" in message
        with _console(gw, "strict") as console:  # not a member of the approver roles
            assert _error(console, f"APPROVE ELEVATION {first}")[0] == "42501"
        assert _refused(work) == "42501"

        with _console(gw, "approver") as console:
            assert first in {row[0] for row in console.execute("SHOW ELEVATIONS").fetchall()}
            console.execute(f"APPROVE ELEVATION {first}")
            assert _error(console, f"APPROVE ELEVATION {first}")[0] == "55000"  # already decided
        # Approval applies to the session already open, at its next statement; masked as before.
        lines = _copy(work)
        assert lines == 2000
        with work.cursor().copy("COPY (SELECT phone FROM customers WHERE id = 5) TO STDOUT") as copy:
            phone = b"".join(bytes(chunk) for chunk in copy)
        assert b"****" in phone
        # ... and stops at expiry, without anyone doing anything.
        eventually(lambda: _refused(work) == "42501", timeout=40, what="the grant to expire")

        second = _request(gw, "2h", "ticket 4712")
        with _console(gw, "approver") as console:
            console.execute(f"APPROVE ELEVATION {second}")
        assert _copy(work) == 2000
        with _console(gw, "contractor") as console:
            console.execute(f"REVOKE ELEVATION {second}")
            assert _error(console, f"REVOKE ELEVATION {second}")[0] == "55000"
            states = {row[0]: row[3] for row in console.execute("SHOW ELEVATIONS").fetchall()}
        assert states == {first: "expired", second: "revoked"}
        eventually(lambda: _refused(work) == "42501", timeout=5, what="the revocation to apply")

        third = _request(gw, "1h", "ticket 4713")
        with _console(gw, "approver") as console:
            console.execute(f"DENY ELEVATION {third} REASON 'use the masked report'")
        assert _refused(work) == "42501"

    def events() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in _records(audit_dsn, "elevation"):
            found.setdefault(record["id"], []).append(record["event"])
        return found

    eventually(lambda: len(events().get(first, ())) == 4 and events().get(third), what="elevation records")
    seen = events()
    assert seen[first] == ["requested", "approved", "used", "expired"]
    assert seen[second] == ["requested", "approved", "used", "revoked"]
    assert seen[third] == ["requested", "denied"]
    records = _records(audit_dsn, "elevation")
    approved = next(r for r in records if r["id"] == first and r["event"] == "approved")
    assert (approved["person"], approved["by"], approved["elevation"]) == (
        "contractor",
        "approver",
        "bulk_export",
    )
    assert approved["request"]["reason"] == "ticket 4711"
    exports = eventually(
        lambda: [r for r in _records(audit_dsn, "statement") if r.get("sql") == EXPORT], what="statements"
    )
    allowed = [r for r in exports if r["decision"] == "allowed"]
    assert list(dict.fromkeys(r["elevation"] for r in allowed)) == [first, second]
    assert all("elevation" not in r for r in exports if r["decision"] == "refused")


def test_approval_through_the_admin_api(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    admin_port = _admin_port(gw)
    request_id = _request(gw, "1h", "ticket 4714")

    def post(user: str, verdict: str) -> tuple[int, dict[str, Any] | str]:
        token = base64.b64encode(f"{user}:{user}".encode()).decode()
        call = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/elevations/{request_id}/{verdict}",
            data=b"{}", method="POST", headers={"Authorization": f"Basic {token}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(call, timeout=10) as response:  # noqa: S310  # http on loopback
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:  # closes its connection (an unclosed one warns, and warnings are errors)
                return exc.code, exc.read().decode()

    assert post("contractor", "approve")[0] == 403
    assert post("approver", "deny")[0] == 400  # a denial needs a reason
    status, body = post("approver", "approve")
    assert status == 200
    assert isinstance(body, dict)
    assert body["state"] == "approved"
    assert post("approver", "approve")[0] == 409
    with psycopg.connect(gw.conninfo("contractor"), autocommit=True) as work:
        assert _copy(work) == 2000
        # A statement prepared under the grant (its cap raised to 10,000) ends with the grant.
        everyone = "SELECT id FROM customers"
        assert len(work.execute(everyone, prepare=True).fetchall()) == 2000
        assert post("contractor", "revoke")[0] == 200
        with pytest.raises(psycopg.Error) as ended:
            work.execute(everyone, prepare=True)  # psycopg binds the statement it prepared
        assert ended.value.sqlstate == "42501"
        assert "has ended" in str(ended.value)
        assert len(work.execute(everyone + " WHERE true").fetchall()) == 100  # own cap again


def _admin_port(gw: Gateway) -> int:
    import yaml  # noqa: PLC0415  # only this test reads the configuration

    config = yaml.safe_load((gw.directory / "sekisho.yaml").read_text())
    return int(config["admin"]["port"])


def test_a_grant_approved_through_one_gateway_applies_on_another_sharing_redis(
    gateway_factory: GatewayFactory, redis_url: str
) -> None:
    """Two gateway processes sharing one store (as ``--workers N`` or several hosts do): a grant
    approved on one applies to a session already open on the other within a couple of seconds,
    and so does its revocation."""
    first, second = (gateway_factory(quotas={"store": redis_url}) for _ in range(2))
    with psycopg.connect(second.conninfo("contractor"), autocommit=True) as work:
        assert _refused(work) == "42501"
        request_id = _request(first, "1h", "ticket 4715")
        with _console(first, "approver") as console:
            console.execute(f"APPROVE ELEVATION {request_id}")
        eventually(lambda: _refused(work) is None, timeout=15, what="the grant to reach the other gateway")
        with _console(second, "approver") as console:
            rows = console.execute("SHOW ELEVATIONS").fetchall()
            assert [(r[0], r[3]) for r in rows] == [(request_id, "approved")]
            console.execute(f"REVOKE ELEVATION {request_id}")
        assert _refused(work) == "42501"  # revoked through the session's own gateway: at once
