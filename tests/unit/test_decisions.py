"""Policy decisions as data: ``tests/fixtures/decisions.sql``, one test per case.

Each case is a client string and the decision Sekisho must reach for one person, reached through
exactly what the gateway runs: ``PolicyService(policy, catalog)`` and
``SessionGate(service, user).decide(sql, named)``. The policy is the YAML at the head of the
fixture file; the catalog is built here by hand (no database): ``public.customers`` (PII) and
``public.orders`` (protected), a view and a materialized view over customers, a view over orders,
a same-named ``archive.customers``, unprotected ``public.notes`` with a view, user functions, and
the pg_catalog and information_schema relations psql and DBAs query, with their real columns
(PostgreSQL 15, read from ``pg_attribute``).

File format (sqlglot's fixture style, STYLE.md item 9)::

    -- policy:                       the policy YAML, each line behind "-- ", up to "-- end policy"
    -- user: contractor             who runs the cases below (until the next "-- user:")
    -- earlier: PREPARE p AS ...    optional: a string the session ran before this case (repeatable)
    -- expect: allow cap=100        allow [cap=N | nocap] [on_cap=error|truncate]
    SELECT name FROM customers;     or deny RULE [sqlstate=XXXXX], RULE a key of RULE_CLASSES,
                                    "syntax", "pii_whole_row" or "pii_escape" (the SQLSTATE
                                    defaults to the one README documents);
                                    the case is every line up to the next blank line

Other comment lines between cases are prose. ``named`` is empty unless the case has ``earlier``
strings: those must be allowed, and the names they create are recorded as the relay records them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from gateway.gate import PolicyService, SessionGate
from policy.catalog import MATVIEW, TABLE, VIEW, Catalog, Function, Relation
from policy.decision import POLICY_REFUSED, SYNTAX_ERROR, UNANALYZABLE, Allow, Decision, Deny
from policy.engine import Named
from policy.facts import Analysis
from policy.loader import load_policy
from policy.model import RULE_CLASSES, Policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "decisions.sql"
MIN_CASES = 200

CUSTOMERS = ("id", "name", "address", "phone", "email", "card_number", "created_at")
ORDERS = ("id", "customer_id", "amount", "status", "created_at")

# Catalog relations with their columns (PostgreSQL 15): "name kind columns...", continued lines indented.
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
pg_available_extensions v name default_version installed_version comment
pg_class r oid relname relnamespace reltype reloftype relowner relam relfilenode reltablespace relpages
    reltuples relallvisible reltoastrelid relhasindex relisshared relpersistence relkind relnatts
    relchecks relhasrules relhastriggers relhassubclass relrowsecurity relforcerowsecurity
    relispopulated relreplident relispartition relrewrite relfrozenxid relminmxid relacl reloptions
    relpartbound
pg_collation r oid collname collnamespace collowner collprovider collisdeterministic collencoding
    collcollate collctype colliculocale collversion
pg_constraint r oid conname connamespace contype condeferrable condeferred convalidated conrelid
    contypid conindid conparentid confrelid confupdtype confdeltype confmatchtype conislocal coninhcount
    connoinherit conkey confkey conpfeqop conppeqop conffeqop confdelsetcols conexclop conbin
pg_cursors v name statement is_holdable is_binary is_scrollable creation_time
pg_database r oid datname datdba encoding datlocprovider datistemplate datallowconn datconnlimit
    datfrozenxid datminmxid dattablespace datcollate datctype daticulocale datcollversion datacl
pg_depend r classid objid objsubid refclassid refobjid refobjsubid deptype
pg_description r objoid classoid objsubid description
pg_extension r oid extname extowner extnamespace extrelocatable extversion extconfig extcondition
pg_file_settings v sourcefile sourceline seqno name setting applied error
pg_foreign_server r oid srvname srvowner srvfdw srvtype srvversion srvacl srvoptions
pg_hba_file_rules v line_number type database user_name address netmask auth_method options error
pg_index r indexrelid indrelid indnatts indnkeyatts indisunique indnullsnotdistinct indisprimary
    indisexclusion indimmediate indisclustered indisvalid indcheckxmin indisready indislive
    indisreplident indkey indcollation indclass indoption indexprs indpred
pg_indexes v schemaname tablename indexname tablespace indexdef
pg_inherits r inhrelid inhparent inhseqno inhdetachpending
pg_language r oid lanname lanowner lanispl lanpltrusted lanplcallfoid laninline lanvalidator lanacl
pg_largeobject r loid pageno data
pg_largeobject_metadata r oid lomowner lomacl
pg_locks v locktype database relation page tuple virtualxid transactionid classid objid objsubid
    virtualtransaction pid mode granted fastpath waitstart
pg_matviews v schemaname matviewname matviewowner tablespace hasindexes ispopulated definition
pg_namespace r oid nspname nspowner nspacl
pg_policy r oid polname polrelid polcmd polpermissive polroles polqual polwithcheck
pg_prepared_statements v name statement prepare_time parameter_types from_sql generic_plans custom_plans
pg_proc r oid proname pronamespace proowner prolang procost prorows provariadic prosupport prokind
    prosecdef proleakproof proisstrict proretset provolatile proparallel pronargs pronargdefaults
    prorettype proargtypes proallargtypes proargmodes proargnames proargdefaults protrftypes prosrc
    probin prosqlbody proconfig proacl
pg_publication r oid pubname pubowner puballtables pubinsert pubupdate pubdelete pubtruncate pubviaroot
pg_publication_namespace r oid pnpubid pnnspid
pg_publication_rel r oid prpubid prrelid prqual prattrs
pg_replication_slots v slot_name plugin slot_type datoid database temporary active active_pid xmin
    catalog_xmin restart_lsn confirmed_flush_lsn wal_status safe_wal_size two_phase
pg_rewrite r oid rulename ev_class ev_type ev_enabled is_instead ev_qual ev_action
pg_roles v rolname rolsuper rolinherit rolcreaterole rolcreatedb rolcanlogin rolreplication rolconnlimit
    rolpassword rolvaliduntil rolbypassrls rolconfig oid
pg_sequences v schemaname sequencename sequenceowner data_type start_value min_value max_value
    increment_by cycle cache_size last_value
pg_settings v name setting unit category short_desc extra_desc context vartype source min_val max_val
    enumvals boot_val reset_val sourcefile sourceline pending_restart
pg_shadow v usename usesysid usecreatedb usesuper userepl usebypassrls passwd valuntil useconfig
pg_stat_activity v datid datname pid leader_pid usesysid usename application_name client_addr
    client_hostname client_port backend_start xact_start query_start state_change wait_event_type
    wait_event state backend_xid backend_xmin query_id query backend_type
pg_stat_all_tables v relid schemaname relname seq_scan seq_tup_read idx_scan idx_tup_fetch n_tup_ins
    n_tup_upd n_tup_del n_tup_hot_upd n_live_tup n_dead_tup n_mod_since_analyze n_ins_since_vacuum
    last_vacuum last_autovacuum last_analyze last_autoanalyze vacuum_count autovacuum_count
    analyze_count autoanalyze_count
pg_stat_database v datid datname numbackends xact_commit xact_rollback blks_read blks_hit tup_returned
    tup_fetched tup_inserted tup_updated tup_deleted conflicts temp_files temp_bytes deadlocks
    checksum_failures checksum_last_failure blk_read_time blk_write_time session_time active_time
    idle_in_transaction_time sessions sessions_abandoned sessions_fatal sessions_killed stats_reset
pg_stat_user_tables v relid schemaname relname seq_scan seq_tup_read idx_scan idx_tup_fetch n_tup_ins
    n_tup_upd n_tup_del n_tup_hot_upd n_live_tup n_dead_tup n_mod_since_analyze n_ins_since_vacuum
    last_vacuum last_autovacuum last_analyze last_autoanalyze vacuum_count autovacuum_count
    analyze_count autoanalyze_count
pg_statistic r starelid staattnum stainherit stanullfrac stawidth stadistinct stakind1 stakind2 stakind3
    stakind4 stakind5 staop1 staop2 staop3 staop4 staop5 stacoll1 stacoll2 stacoll3 stacoll4 stacoll5
    stanumbers1 stanumbers2 stanumbers3 stanumbers4 stanumbers5 stavalues1 stavalues2 stavalues3
    stavalues4 stavalues5
pg_statistic_ext r oid stxrelid stxname stxnamespace stxowner stxstattarget stxkeys stxkind stxexprs
pg_statistic_ext_data r stxoid stxdinherit stxdndistinct stxddependencies stxdmcv stxdexpr
pg_stats v schemaname tablename attname inherited null_frac avg_width n_distinct most_common_vals
    most_common_freqs histogram_bounds correlation most_common_elems most_common_elem_freqs
    elem_count_histogram
pg_stats_ext v schemaname tablename statistics_schemaname statistics_name statistics_owner attnames exprs
    kinds inherited n_distinct dependencies most_common_vals most_common_val_nulls most_common_freqs
    most_common_base_freqs
pg_tables v schemaname tablename tableowner tablespace hasindexes hasrules hastriggers rowsecurity
pg_tablespace r oid spcname spcowner spcacl spcoptions
pg_trigger r oid tgrelid tgparentid tgname tgfoid tgtype tgenabled tgisinternal tgconstrrelid
    tgconstrindid tgconstraint tgdeferrable tginitdeferred tgnargs tgattr tgargs tgqual tgoldtable
    tgnewtable
pg_type r oid typname typnamespace typowner typlen typbyval typtype typcategory typispreferred
    typisdefined typdelim typrelid typsubscript typelem typarray typinput typoutput typreceive typsend
    typmodin typmodout typanalyze typalign typstorage typnotnull typbasetype typtypmod typndims
    typcollation typdefaultbin typdefault typacl
pg_user v usename usesysid usecreatedb usesuper userepl usebypassrls passwd valuntil useconfig
pg_user_mapping r oid umuser umserver umoptions
pg_views v schemaname viewname viewowner definition
"""
INFORMATION_SCHEMA = """
columns v table_catalog table_schema table_name column_name ordinal_position column_default is_nullable
    data_type character_maximum_length character_octet_length numeric_precision numeric_precision_radix
    numeric_scale datetime_precision interval_type interval_precision character_set_catalog
    character_set_schema character_set_name collation_catalog collation_schema collation_name
    domain_catalog domain_schema domain_name udt_catalog udt_schema udt_name scope_catalog scope_schema
    scope_name maximum_cardinality dtd_identifier is_self_referencing is_identity identity_generation
    identity_start identity_increment identity_maximum identity_minimum identity_cycle is_generated
    generation_expression is_updatable
tables v table_catalog table_schema table_name table_type self_referencing_column_name
    reference_generation user_defined_type_catalog user_defined_type_schema user_defined_type_name
    is_insertable_into is_typed commit_action
views v table_catalog table_schema table_name view_definition check_option is_updatable
    is_insertable_into is_trigger_updatable is_trigger_deletable is_trigger_insertable_into
"""
# What a few catalog views read (only relations that matter to a test need be listed).
_VIEW_READS = {
    ("pg_catalog", "pg_roles"): {("pg_catalog", "pg_authid")},
    ("pg_catalog", "pg_user"): {("pg_catalog", "pg_authid")},
    ("pg_catalog", "pg_shadow"): {("pg_catalog", "pg_authid")},
    ("pg_catalog", "pg_stats"): {("pg_catalog", "pg_statistic")},
    ("pg_catalog", "pg_tables"): {("pg_catalog", "pg_class"), ("pg_catalog", "pg_namespace")},
}


def _relations(schema: str, block: str) -> list[Relation]:
    out = []
    for line in block.strip().replace("\n    ", " ").splitlines():
        name, kind, *columns = line.split()
        reads = frozenset(_VIEW_READS.get((schema, name), ()))
        out.append(Relation(schema, name, kind, tuple(columns), reads))
    return out


CATALOG = Catalog.of(
    [
        Relation("public", "customers", TABLE, CUSTOMERS),
        Relation("public", "orders", TABLE, ORDERS),
        Relation("public", "customer_names", VIEW, ("id", "name"), frozenset({("public", "customers")})),
        Relation("public", "customer_stats", MATVIEW, ("n",), frozenset({("public", "customers")})),
        Relation("public", "order_totals", VIEW, ("customer_id", "total"), frozenset({("public", "orders")})),
        Relation("public", "notes", TABLE, ("id", "body", "created_at")),
        Relation("public", "recent_notes", VIEW, ("id", "body"), frozenset({("public", "notes")})),
        Relation("archive", "customers", TABLE, ("id", "name", "email")),
        *_relations("pg_catalog", PG_CATALOG),
        *_relations("information_schema", INFORMATION_SCHEMA),
    ],
    [
        Function("public", "my_func", "plpgsql"),
        Function("public", "order_total", "sql"),
        Function("public", "md5", "sql"),  # shadows a builtin's name: PostgreSQL may choose either
        Function("public", "dblink", "c"),
        Function("public", "dblink_connect", "c"),
    ],
)


# ---------------------------------------------------------------------- the fixture file


@dataclass(frozen=True, slots=True)
class Expectation:
    allow: bool
    checks_cap: bool = False  # allow: cap=N or nocap was stated
    cap: int | None = None  # allow: the row cap stated (None: nocap)
    on_cap: str | None = None  # allow: "truncate" or "error", when stated
    rule: str | None = None  # deny: a rule class, "syntax" or "unanalyzable"
    sqlstate: str | None = None  # deny

    @classmethod
    def parse(cls, text: str, where: str) -> Expectation:
        """``allow [cap=N | nocap] [on_cap=...]`` or ``deny RULE [sqlstate=XXXXX]``."""
        verb, *words = text.split() or [""]
        options = dict(w.split("=", 1) for w in words if "=" in w)
        flags = [w for w in words if "=" not in w]
        if verb == "allow":
            if (
                set(options) - {"cap", "on_cap"}
                or flags not in ([], ["nocap"])
                or (flags and "cap" in options)
            ):
                raise ValueError(f"{where}: expected allow [cap=N | nocap] [on_cap=...], got {text!r}")
            if options.get("on_cap", "truncate") not in ("truncate", "error"):
                raise ValueError(f"{where}: on_cap is truncate or error, got {text!r}")
            if "cap" in options and not options["cap"].isdigit():
                raise ValueError(f"{where}: cap=N takes a number, got {text!r}")
            cap = int(options["cap"]) if "cap" in options else None
            return cls(True, bool(flags) or "cap" in options, cap, options.get("on_cap"))
        if verb == "deny":
            if len(flags) != 1 or set(options) - {"sqlstate"}:
                raise ValueError(f"{where}: expected deny RULE [sqlstate=XXXXX], got {text!r}")
            rule = flags[0]
            fixed = ("syntax", "pii_whole_row", "pii_escape", "pii_hidden")
            if rule not in RULE_CLASSES and rule not in fixed:
                raise ValueError(f"{where}: {rule!r} is not a rule class (nor syntax)")
            documented = {"syntax": SYNTAX_ERROR, "unanalyzable": UNANALYZABLE}.get(rule, POLICY_REFUSED)
            return cls(False, rule=rule, sqlstate=options.get("sqlstate", documented))
        raise ValueError(f"{where}: an expectation is allow ... or deny ..., got {text!r}")

    def mismatch(self, decision: Decision) -> str | None:
        """What is wrong with ``decision``, or None when it is the one expected."""
        if not self.allow:
            got = (decision.rule, decision.sqlstate) if isinstance(decision, Deny) else None
            return (
                None if got == (self.rule, self.sqlstate) else f"expected deny {self.rule} ({self.sqlstate})"
            )
        if not isinstance(decision, Allow):
            return "expected allow"
        if self.checks_cap and decision.row_cap != self.cap:
            return f"expected cap {self.cap}"
        if self.on_cap is not None and decision.on_cap != self.on_cap:
            return f"expected on_cap {self.on_cap}"
        return None


@dataclass(frozen=True, slots=True)
class Case:
    line: int  # of the expect line
    user: str
    expect: Expectation
    sql: str
    earlier: tuple[str, ...] = ()  # strings the same session ran before, through Sekisho

    @property
    def id(self) -> str:
        return f"{FIXTURES.name}:{self.line}"


_DIRECTIVE = re.compile(r"^--\s*(user|earlier|expect):\s*(.*?)\s*$")


def parse_fixtures(text: str) -> tuple[str, list[Case]]:
    """The policy YAML (padded with empty lines, so that the loader's line numbers are the file's)
    and the cases, in file order. Raises ValueError, naming the line, for a malformed file."""
    lines = text.splitlines()
    policy_lines = [""] * len(lines)
    cases: list[Case] = []
    user: str | None = None
    earlier: list[str] = []
    in_policy = False
    i = 0
    while i < len(lines):
        line, where = lines[i], f"{FIXTURES.name}:{i + 1}"
        i += 1
        if in_policy:
            if line.strip() == "-- end policy":
                in_policy = False
            elif line == "--" or line.startswith("-- "):
                policy_lines[i - 1] = line[3:]
            else:
                raise ValueError(f"{where}: a policy line must start with '-- '")
            continue
        if line.strip() == "-- policy:":
            in_policy = True
            continue
        directive = _DIRECTIVE.match(line)
        if directive is None:
            continue  # prose between cases
        key, value = directive.groups()
        if key == "user":
            user = value
            continue
        if key == "earlier":
            earlier.append(value)
            continue
        if user is None:
            raise ValueError(f"{where}: an expectation before any '-- user:' line")
        expect, expect_line = Expectation.parse(value, where), i  # i: this line's 1-based number
        start = i  # the case's first line, 0-based
        while i < len(lines) and lines[i].strip():
            if _DIRECTIVE.match(lines[i]):
                raise ValueError(
                    f"{FIXTURES.name}:{i + 1}: a directive inside a case (end cases with a blank line)"
                )
            i += 1
        if i == start:
            raise ValueError(f"{where}: an expectation with no SQL under it")
        cases.append(Case(expect_line, user, expect, "\n".join(lines[start:i]), tuple(earlier)))
        earlier = []
    if in_policy:
        raise ValueError(f"{FIXTURES.name}: the policy has no '-- end policy' line")
    if earlier:
        raise ValueError(f"{FIXTURES.name}: '-- earlier:' lines with no case after them")
    return "\n".join(policy_lines), cases


@cache
def fixtures() -> tuple[Policy, tuple[Case, ...]]:
    policy_text, cases = parse_fixtures(FIXTURES.read_text(encoding="utf-8"))
    return load_policy(policy_text, str(FIXTURES)), tuple(cases)


# ---------------------------------------------------------------------- running a case


def remember(named: Named, analysis: Analysis, decision: Decision) -> Named:
    """The session's names after an allowed string ran, recorded as the relay records them
    (``gateway.relay`` ``_record_names``): PREPARE and DECLARE with the string's allowance."""
    if not isinstance(decision, Allow):
        return named
    statements, cursors = dict(named.statements), dict(named.cursors)
    for stmt in analysis.statements:
        name = stmt.prepared_name
        if name is None:
            continue
        if stmt.command == "prepare":
            statements[name] = decision
        elif stmt.command == "declare":
            cursors[name] = Allow(decision.row_cap, decision.cap_rule, decision.on_cap)
        elif stmt.command == "deallocate":
            statements.pop(name, None)
        elif stmt.command == "close":
            cursors.pop(name, None)
    return Named(statements, cursors)


def run(gate: SessionGate, case: Case) -> tuple[Decision, str]:
    """The case's decision through ``gate``, and a description of it for failure messages."""
    named = Named()
    for sql in case.earlier:
        verdict = gate.decide(sql, named)
        assert isinstance(verdict.decision, Allow), f"{case.id}: earlier string refused: {verdict.decision}"
        named = remember(named, verdict.analysis, verdict.decision)
    verdict = gate.decide(case.sql, named)
    facts = "\n".join(
        f"  {s.command}: tables={[(t.relation, t.access.value, t.via_view) for t in s.tables]} "
        f"functions={list(s.functions)} settings={list(s.settings)} unanalyzable={s.unanalyzable}"
        for s in verdict.analysis.statements
    )
    shown = f"{case.id} as {case.user}:\n{case.sql}\n-> {verdict.decision}\n{facts or verdict.analysis.error}"
    return verdict.decision, shown


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", fixtures()[1], ids=lambda case: case.id)
def test_decision(case: Case) -> None:
    policy, _ = fixtures()
    decision, shown = run(SessionGate(PolicyService(policy, CATALOG), case.user), case)
    problem = case.expect.mismatch(decision)
    assert problem is None, f"{problem}\n{shown}"


def test_a_shared_service_decides_every_case_as_a_fresh_one() -> None:
    """The service caches analyses by normalized text (literals replaced by $n) and each gate its
    decisions: running every case, twice, through one service and one gate per person must not
    let one case's cached analysis or decision stand for another's."""
    policy, cases = fixtures()
    service = PolicyService(policy, CATALOG)
    gates: dict[str, SessionGate] = {}
    for _ in range(2):
        for case in cases:
            gate = gates.setdefault(case.user, SessionGate(service, case.user))
            decision, shown = run(gate, case)
            problem = case.expect.mismatch(decision)
            assert problem is None, f"{problem} (shared caches)\n{shown}"


def test_the_file_has_enough_cases_and_refuses_every_rule_class() -> None:
    policy, cases = fixtures()
    assert len(cases) >= MIN_CASES
    denied = {case.expect.rule for case in cases if not case.expect.allow}
    assert set(RULE_CLASSES) | {"syntax"} <= denied, set(RULE_CLASSES) - denied
    assert {case.user for case in cases} <= set(policy.users)


def test_every_rule_class_is_also_allowed_to_someone() -> None:
    """Each class is used, and allowed (so only audited), by some case of a person whose roles
    allow it: the rules fire for what the policy lets through, not only for what it refuses."""
    policy, cases = fixtures()
    used: set[str] = set()
    for case in cases:
        if case.expect.allow:
            decision, _ = run(SessionGate(PolicyService(policy, CATALOG), case.user), case)
            assert isinstance(decision, Allow)
            used.update(decision.audited)
    assert set(RULE_CLASSES) <= used, set(RULE_CLASSES) - used


def test_a_string_with_no_statement_is_allowed() -> None:
    policy, _ = fixtures()
    gate = SessionGate(PolicyService(policy, CATALOG), "contractor")
    for sql in ("", "   \n\t", "--", ";"):
        assert gate.decide(sql, Named()).decision == Allow(), repr(sql)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "permit",
        "allow maybe",
        "allow cap=",
        "allow cap=x",
        "allow cap=5 nocap",
        "allow on_cap=never",
        "allow size=3",
        "deny",
        "deny no_such_rule",
        "deny copy_protected copy_server",
        "deny syntax code=1",
    ],
)
def test_malformed_expectations_are_reported_with_their_line(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^{FIXTURES.name}:7: "):
        Expectation.parse(text, f"{FIXTURES.name}:7")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("-- expect: allow\nSELECT 1;\n", 1),  # before any user
        ("-- user: contractor\n-- expect: allow\n\nSELECT 1;\n", 2),  # no SQL under it
        ("-- user: contractor\n-- expect: allow\nSELECT 1;\n-- expect: allow\nSELECT 2;\n", 4),
        ("-- policy:\nversion: 1\n", 2),  # a policy line without "-- "
    ],
)
def test_malformed_files_are_reported_with_their_line(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf"^{FIXTURES.name}:{line}: "):
        parse_fixtures(text)
