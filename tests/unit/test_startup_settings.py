"""The startup allowlist for restricted people and PostgreSQL's own splitting of ``options``."""

from __future__ import annotations

import pytest

from gateway.startup_settings import encoding_is_safe, parse_options, refusal


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("-c search_path=public", [("search_path", "public")]),
        ("-csearch_path=a,b -c DateStyle=German", [("search_path", "a,b"), ("datestyle", "German")]),
        ("--statement-timeout=5s", [("statement_timeout", "5s")]),
        (r"-c application_name=two\ words", [("application_name", "two words")]),
        ("  -c  role=postgres  ", [("role", "postgres")]),
        ("-D /tmp", [("?", "-D"), ("?", "/tmp")]),
        ("-c novalue", [("?", "novalue")]),
    ],
)
def test_options_are_split_as_postgresql_splits_them(options: str, expected: list[tuple[str, str]]) -> None:
    assert parse_options(options) == expected


@pytest.mark.parametrize(
    "params",
    [
        [("options", "-c role=postgres")],
        [("options", "-c session_authorization=postgres")],
        [("options", "--role=postgres")],
        [("options", "-c session_preload_libraries=evil")],
        [("options", r"-c search_path=public\ -c\ role=postgres -c role=x")],
        [("session_preload_libraries", "evil")],
        [("client_encoding", "SJIS")],
        [("client_encoding", "LATIN1")],
        [("options", "-c client_encoding=BIG5")],
        [("options", "-c standard_conforming_strings=off")],
        [("options", "-D /tmp")],
    ],
)
def test_restricted_people_cannot_set_these_at_connection_time(params: list[tuple[str, str]]) -> None:
    assert refusal(params) is not None


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("application_name", "psql"), ("client_encoding", "UTF8")],
        [("client_encoding", "SQL_ASCII")],
        [("client_encoding", "unicode")],
        [("options", "-c search_path=pg_catalog,public -c DateStyle=German -c extra_float_digits=3")],
        [("DateStyle", "ISO"), ("TimeZone", "Asia/Tokyo"), ("extra_float_digits", "2")],
    ],
)
def test_ordinary_client_settings_are_allowed(params: list[tuple[str, str]]) -> None:
    assert refusal(params) is None


def test_encoding_names_are_compared_as_postgresql_does() -> None:
    assert encoding_is_safe("UTF8")
    assert encoding_is_safe("utf-8")
    assert encoding_is_safe("'utf-8'")  # as asyncpg sends it
    assert not encoding_is_safe("SJIS")
    assert not encoding_is_safe("EUC_JP")
