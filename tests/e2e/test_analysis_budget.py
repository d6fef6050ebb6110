"""The analysis budget: no statement can stall the gateway, and what cannot be analyzed in budget
is refused for restricted people (SK003) and passed, audited, for unrestricted ones.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.conftest import GatewayFactory
from tests.support import Gateway


def _in_list(n: int) -> str:
    return "SELECT count(*) FROM customers WHERE id IN (" + ",".join(map(str, range(n))) + ")"


def _connect(gateway: Gateway, user: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(gateway.conninfo(user), autocommit=True)


def test_a_statement_over_the_size_limit_is_refused_for_restricted_and_passed_for_unrestricted(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory(limits={"max_statement_bytes": 65536})
    big = _in_list(20_000)  # about 110 kB
    with _connect(gw, "contractor") as conn:
        conn.autocommit = False
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(big)
        assert caught.value.sqlstate == "SK003"
        assert "limits.max_statement_bytes" in str(caught.value)
        # Inside the transaction block, exactly what PostgreSQL would give: the block failed.
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        # Extended protocol (Parse) the same way; the session stays usable.
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(big + " AND id > %s", (0,))
        assert caught.value.sqlstate == "SK003"
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM orders WHERE id < 10").fetchone() == (9,)
    with _connect(gw, "maint") as conn:
        assert conn.execute(big).fetchone() == (2000,)  # every seeded id is below 20,000


def test_a_statement_over_the_time_budget_is_refused_for_restricted_people(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory(limits={"analysis_seconds": 0.02})
    slow = _in_list(150_000)  # about 1 MB: parsing alone takes longer than 20 ms
    with _connect(gw, "contractor") as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(slow)
        assert caught.value.sqlstate == "SK003"
        assert "limits.analysis_seconds" in str(caught.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_long_analysis_does_not_hold_up_other_sessions(gateway_factory: GatewayFactory) -> None:
    """A costly statement is analyzed off the event loop: another person's queries are answered
    while it is still being analyzed. With the analysis on the loop they would queue behind it and
    be answered only after the refusal (the string ends with a refused COPY, so once analyzed it
    is answered at once)."""
    gw = gateway_factory(limits={"max_statement_bytes": 8 << 20, "analysis_seconds": 60})
    heavy = ";".join(_in_list(2000) for _ in range(300)) + ";COPY customers TO STDOUT"  # ~3 MB
    events: list[str] = []
    sending = threading.Event()

    def run_heavy() -> None:
        with _connect(gw, "contractor") as conn:
            sending.set()
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(heavy)
            assert caught.value.sqlstate == "42501"
            events.append("heavy refused")

    with _connect(gw, "strict") as other:
        thread = threading.Thread(target=run_heavy)
        thread.start()
        assert sending.wait(10)
        time.sleep(0.3)  # let the gateway receive the heavy string and start on it
        for _ in range(5):
            assert other.execute("SELECT 1").fetchone() == (1,)
        events.append("others served")
        thread.join(120)
    assert events == ["others served", "heavy refused"]
