"""The first thing a DBA does: connect with psycopg and read rows, identical to a direct connection."""

from __future__ import annotations

import psycopg

from tests.support import Gateway, Upstream


def test_select_through_gateway_matches_direct(gateway: Gateway, upstream: Upstream) -> None:
    query = "SELECT id, name, phone FROM customers ORDER BY id LIMIT 50"
    with psycopg.connect(upstream.conninfo()) as direct:
        expected = direct.execute(query).fetchall()
    with psycopg.connect(gateway.conninfo("maint")) as conn:
        assert conn.execute(query).fetchall() == expected
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)
