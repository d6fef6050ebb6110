"""Functions judged by what they run, not only by their name (policy.analysis.functions).

Someone with direct access to the database can rename ``pg_catalog.pg_read_file``, put a SQL or
PL/pgSQL function inside pg_catalog, or create a C function anywhere that calls a dangerous entry
point of the server. Each catalog here is built by hand from rows of PostgreSQL 15's pg_proc (real
OIDs, languages and ``prosrc``), changed the way such a person would change them; decisions are
reached through what the gateway runs, ``SessionGate(PolicyService(policy, catalog), user)``.
"""

from __future__ import annotations

import pytest

from gateway.gate import PolicyService, SessionGate
from policy.analysis import functions
from policy.analyze import analyze
from policy.catalog import TABLE, Catalog, Function, Relation
from policy.decision import POLICY_REFUSED, Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Access, FunctionClass
from policy.loader import load_policy

POLICY = load_policy(
    """\
version: 1
protected_tables:
  public.customers:
    pii: {name: full, email: email}
roles:
  relay: {restricted: false}
  maintenance: {restricted: true, max_rows: 100}
  developer: {restricted: true, max_rows: 100, allow: [user_functions]}
  reporter: {restricted: true, max_rows: 100, allow: [dynamic_sql]}
users:
  maint: {roles: [relay]}
  contractor: {roles: [maintenance]}
  dev: {roles: [developer]}
  reporter: {roles: [reporter]}
""",
    "test_function_symbols",
)

RELATIONS = [
    Relation("public", "customers", TABLE, ("id", "name", "email")),
    Relation("public", "notes", TABLE, ("id", "body")),
]


def pg15(schema: str, name: str, oid: int, language: str, symbol: str | None = None) -> Function:
    """A row as PostgreSQL 15's initdb made it (``prosrc`` only for 'internal' and 'c')."""
    return Function(schema, name, language, oid=oid, symbol=symbol)


# Built-ins psql's \d commands, DBAs and information_schema's views call, as in PostgreSQL 15.
BUILTINS = [
    pg15("pg_catalog", "lower", 870, "internal", "lower"),
    pg15("pg_catalog", "lower", 3848, "internal", "range_lower"),
    pg15("pg_catalog", "lower", 4235, "internal", "multirange_lower"),
    pg15("pg_catalog", "now", 1299, "internal", "now"),
    pg15("pg_catalog", "pg_get_userbyid", 1642, "internal", "pg_get_userbyid"),
    pg15("pg_catalog", "format_type", 1081, "internal", "format_type"),
    pg15("pg_catalog", "obj_description", 1215, "sql"),
    pg15("pg_catalog", "obj_description", 1348, "sql"),
    pg15("pg_catalog", "ts_rewrite", 3684, "internal", "tsquery_rewrite"),
    pg15("pg_catalog", "ts_rewrite", 3685, "internal", "tsquery_rewrite_query"),
    pg15("pg_catalog", "set_config", 2078, "internal", "set_config_by_name"),
    pg15("pg_catalog", "plpgsql_call_handler", 13560, "c", "plpgsql_call_handler"),
    pg15("information_schema", "_pg_expandarray", 13208, "sql"),
    pg15("information_schema", "_pg_truetypid", 13210, "sql"),
    pg15("information_schema", "_pg_char_max_length", 13212, "sql"),
]
PG_READ_FILE = [
    pg15("pg_catalog", "pg_read_file", 2624, "internal", "pg_read_file_off_len"),
    pg15("pg_catalog", "pg_read_file", 3293, "internal", "pg_read_file_v2"),
    pg15("pg_catalog", "pg_read_file", 3826, "internal", "pg_read_file_all"),
]


def catalog(*changed: Function) -> Catalog:
    return Catalog.of(RELATIONS, [*BUILTINS, *changed])


# ALTER FUNCTION pg_catalog.pg_read_file(text) RENAME TO harmless_read: same row, OID and entry point.
RENAMED = catalog(
    *PG_READ_FILE[:2], pg15("pg_catalog", "harmless_read", 3826, "internal", "pg_read_file_all")
)
# CREATE FUNCTION pg_catalog.innocent(text) ... LANGUAGE plpgsql (or sql): a later OID.
PLPGSQL_IN_PG_CATALOG = catalog(Function("pg_catalog", "innocent", "plpgsql", oid=16501))
SQL_IN_PG_CATALOG = catalog(Function("pg_catalog", "innocent", "sql", oid=16502))
SQL_IN_INFORMATION_SCHEMA = catalog(Function("information_schema", "innocent", "sql", oid=16503))
# CREATE FUNCTION public.fast_read(text) RETURNS text AS 'pg_read_file_all' LANGUAGE internal (or
# LANGUAGE c AS '<some library>', 'pg_read_file_all').
INTERNAL_IN_PUBLIC = catalog(
    Function("public", "fast_read", "internal", oid=16504, symbol="pg_read_file_all")
)
C_IN_PUBLIC = catalog(
    Function("public", "fast_read", "c", oid=16505, symbol="pg_read_file_all", library="$libdir/plpgsql")
)


def decide(cat: Catalog, user: str, sql: str) -> Decision:
    return SessionGate(PolicyService(POLICY, cat), user).decide(sql, Named()).decision


def refused_by(decision: Decision) -> str | None:
    if isinstance(decision, Deny):
        assert decision.sqlstate == POLICY_REFUSED, decision
        return decision.rule
    return None


# --------------------------------------------------------------------------- the three disguises


def test_a_renamed_dangerous_builtin_keeps_its_class() -> None:
    assert functions.classes_of(RENAMED, "pg_catalog.harmless_read") == {FunctionClass.SERVER_FILES}
    for sql in ("SELECT harmless_read('postgresql.conf')", "SELECT pg_catalog.harmless_read('pg_hba.conf')"):
        assert refused_by(decide(RENAMED, "contractor", sql)) == "server_files"
    # Allowed user functions do not make it allowed: it is not one.
    assert refused_by(decide(RENAMED, "dev", "SELECT harmless_read('postgresql.conf')")) == "server_files"
    assert isinstance(decide(RENAMED, "maint", "SELECT harmless_read('postgresql.conf')"), Allow)


def test_the_original_name_is_still_refused_after_the_rename() -> None:
    assert refused_by(decide(RENAMED, "contractor", "SELECT pg_read_file('postgresql.conf', 0, 100)")) == (
        "server_files"
    )


@pytest.mark.parametrize(
    "cat",
    [PLPGSQL_IN_PG_CATALOG, SQL_IN_PG_CATALOG],
    ids=["plpgsql", "sql"],
)
def test_a_function_placed_in_pg_catalog_is_user_defined(cat: Catalog) -> None:
    assert functions.classes_of(cat, "pg_catalog.innocent") == {FunctionClass.USER_DEFINED}
    assert refused_by(decide(cat, "contractor", "SELECT innocent('x')")) == "user_functions"
    assert refused_by(decide(cat, "contractor", "SELECT pg_catalog.innocent('x')")) == "user_functions"
    assert isinstance(decide(cat, "maint", "SELECT innocent('x')"), Allow)


def test_a_function_placed_in_information_schema_is_user_defined() -> None:
    cat = SQL_IN_INFORMATION_SCHEMA
    assert functions.classes_of(cat, "information_schema.innocent") == {FunctionClass.USER_DEFINED}
    sql = "SELECT information_schema.innocent('x')"
    assert refused_by(decide(cat, "contractor", sql)) == "user_functions"


def test_a_language_initdb_never_uses_there_is_user_defined_without_an_oid() -> None:
    """Catalogs built by hand have no OIDs: PL/pgSQL in pg_catalog is still not a built-in."""
    cat = catalog(Function("pg_catalog", "innocent", "plpgsql"))
    assert functions.classes_of(cat, "pg_catalog.innocent") == {FunctionClass.USER_DEFINED}


def test_an_overload_placed_beside_a_builtin_makes_its_calls_user_defined() -> None:
    """PostgreSQL chooses among overloads by argument types, which analysis cannot see."""
    cat = catalog(Function("pg_catalog", "lower", "plpgsql", oid=16506))
    assert functions.classes_of(cat, "pg_catalog.lower") == {FunctionClass.USER_DEFINED}
    assert refused_by(decide(cat, "contractor", "SELECT lower(name) FROM notes")) == "user_functions"


@pytest.mark.parametrize("cat", [INTERNAL_IN_PUBLIC, C_IN_PUBLIC], ids=["internal", "c"])
def test_a_function_in_public_calling_a_dangerous_entry_point_has_its_class(cat: Catalog) -> None:
    assert functions.classes_of(cat, "public.fast_read") == {
        FunctionClass.SERVER_FILES,
        FunctionClass.USER_DEFINED,
    }
    assert refused_by(decide(cat, "contractor", "SELECT fast_read('postgresql.conf')")) == "server_files"
    # A role trusted with user functions is still refused what this one does.
    assert refused_by(decide(cat, "dev", "SELECT fast_read('postgresql.conf')")) == "server_files"
    assert isinstance(decide(cat, "maint", "SELECT fast_read('postgresql.conf')"), Allow)


def test_a_c_function_from_a_known_remote_library_reaches_out_whatever_its_entry_point() -> None:
    cat = catalog(
        Function("public", "sync", "c", oid=16507, symbol="dblink_record_v9", library="$libdir/dblink"),
        Function("public", "scribble", "c", oid=16508, symbol="whatever", library="/usr/lib/adminpack.so"),
    )
    assert FunctionClass.REMOTE in functions.classes_of(cat, "public.sync")
    assert FunctionClass.SERVER_FILES in functions.classes_of(cat, "public.scribble")
    assert refused_by(decide(cat, "dev", "SELECT sync('host=elsewhere')")) == "dynamic_sql"


# --------------------------------------------------------------------------- what a renamed builtin does


def test_a_renamed_set_config_still_switches_the_role() -> None:
    cat = catalog(pg15("pg_catalog", "tweak", 2078, "internal", "set_config_by_name"))
    assert functions.runs_as(cat, "pg_catalog.tweak") == {"set_config"}
    for who in ("contractor", "dev"):
        assert refused_by(decide(cat, who, "SELECT tweak('role', 'postgres', false)")) == "role_switch"
    # The same analysis as set_config itself: other settings are ordinary.
    assert isinstance(decide(cat, "contractor", "SELECT tweak('work_mem', '64MB', false)"), Allow)


def test_a_renamed_query_to_xml_runs_its_string_as_query_to_xml_does() -> None:
    cat = catalog(pg15("pg_catalog", "report", 2924, "internal", "query_to_xml"))
    sql = "SELECT report('SELECT name, email FROM customers', true, false, '')"
    assert refused_by(decide(cat, "contractor", sql)) == "dynamic_sql"
    # A role allowed dynamic SQL is still seen reading the protected table inside the string.
    (stmt,) = analyze(sql, cat, ("public",)).statements
    assert any(t.relation == ("public", "customers") and t.access == Access.READ for t in stmt.tables)
    allowed = decide(cat, "reporter", sql)
    assert isinstance(allowed, Allow)
    assert ("public", "customers") in allowed.protected


def test_a_renamed_harmless_builtin_stays_harmless() -> None:
    cat = catalog(pg15("pg_catalog", "small", 870, "internal", "lower"))
    assert functions.classes_of(cat, "pg_catalog.small") == frozenset()
    assert isinstance(decide(cat, "contractor", "SELECT small(body) FROM notes"), Allow)


# --------------------------------------------------------------------------- ordinary work is unchanged


@pytest.mark.parametrize(
    "qualified",
    [
        "pg_catalog.lower",
        "pg_catalog.now",
        "pg_catalog.pg_get_userbyid",
        "pg_catalog.format_type",
        "pg_catalog.obj_description",
        "pg_catalog.set_config",  # SESSION by name, as before: the setting decides
        "pg_catalog.plpgsql_call_handler",
        "information_schema._pg_expandarray",
        "information_schema._pg_truetypid",
        "information_schema._pg_char_max_length",
    ],
)
def test_builtins_keep_the_classes_of_their_names(qualified: str) -> None:
    assert functions.classes_of(catalog(), qualified) == functions.classes_of(Catalog.of([]), qualified)
    assert FunctionClass.USER_DEFINED not in functions.classes_of(catalog(), qualified)


def test_builtins_psql_and_dbas_call_are_allowed() -> None:
    cat = catalog()
    for sql in (
        "SELECT lower(body), now(), pg_get_userbyid(10), pg_catalog.format_type(23, NULL) FROM notes",
        "SELECT pg_catalog.obj_description(1259, 'pg_class')",
        "SELECT information_schema._pg_expandarray(ARRAY[1, 2])",
        "SELECT information_schema._pg_char_max_length(information_schema._pg_truetypid(NULL, NULL), 1)",
        "SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)",
    ):
        assert isinstance(decide(cat, "contractor", sql), Allow), sql


def test_ts_rewrite_with_a_query_string_is_still_dynamic_sql() -> None:
    assert functions.classes_of(catalog(), "pg_catalog.ts_rewrite", 2) == {FunctionClass.DYNAMIC_SQL}
    assert functions.classes_of(catalog(), "pg_catalog.ts_rewrite", 3) == frozenset()


def test_names_the_snapshot_does_not_list_keep_the_classes_of_their_names() -> None:
    empty = Catalog.of(RELATIONS)
    assert functions.classes_of(empty, "pg_catalog.pg_read_file") == {FunctionClass.SERVER_FILES}
    assert functions.classes_of(empty, "pg_catalog.lower") == frozenset()
    assert refused_by(decide(empty, "contractor", "SELECT pg_read_file('x')")) == "server_files"


# --------------------------------------------------------------------------- the entry-point table


@pytest.mark.parametrize("symbol", sorted(functions.SYMBOL_NAMES))
def test_every_listed_entry_point_carries_the_classes_of_its_names(symbol: str) -> None:
    """Whatever it is called, a function that calls the entry point does at least what the
    function PostgreSQL (or its contrib module) gives it does."""
    cat = catalog(Function("pg_catalog", "disguised", "internal", oid=100, symbol=symbol))
    got = functions.classes_of(cat, "pg_catalog.disguised")
    for name in functions.SYMBOL_NAMES[symbol]:
        nargs = 2 if name == "ts_rewrite" else 0  # only ts_rewrite(query, 'SELECT ...') runs a query
        expected = functions.classes_of(Catalog.of([]), f"pg_catalog.{name}", nargs)
        assert expected, f"{name} is listed for {symbol} but has no class"
        assert expected <= got, (symbol, name)
