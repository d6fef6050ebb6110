"""Function calls: which function a name means, and what class of reach it has.

A function is judged by its name and by what it runs, because a name can be given to anything:
someone with direct access to the database can rename ``pg_catalog.pg_read_file`` to something
innocent, create a SQL or PL/pgSQL function inside pg_catalog, or create a C function in any schema
that calls one of the server's dangerous entry points. So the classes of a resolved ``schema.name``
are the union, over every function of that name in the catalog snapshot (analysis cannot tell
overloads apart), of

- the classes of the name (an extension such as dblink may live in any schema);
- the classes of the C entry point it calls (``pg_proc.prosrc`` of 'internal' and 'c' functions,
  ``SYMBOL_NAMES``), and for 'c' functions of the library it comes from;
- ``USER_DEFINED`` when its body is not analyzed: outside pg_catalog and information_schema, or
  inside them but not made by initdb. initdb gives its functions OIDs below FirstNormalObjectId and
  writes them in 'internal', 'c' or 'sql'; anything created later gets a larger OID. initdb's own
  SQL-language functions (``obj_description``, information_schema's ``_pg_expandarray``, ...) stay
  built-ins, so psql's and DBAs' catalog queries keep working.

A name the snapshot does not list keeps the classes of its name alone (``BUILTIN_FUNCTIONS`` still
finds it in pg_catalog). An unqualified name lists every schema of the search path that has a
function of that name, not only the first: PostgreSQL picks among same-named functions by argument
types, which analysis cannot see, so a user-defined overload later in the path must not hide behind
a builtin.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from policy.analysis.builtins import BUILTIN_FUNCTIONS, words
from policy.catalog import Catalog, Function
from policy.facts import FunctionClass

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})

SERVER_FILES = words(
    """
    pg_read_file pg_read_file_old pg_read_binary_file pg_ls_dir pg_stat_file pg_ls_logdir pg_ls_waldir
    pg_ls_tmpdir pg_ls_archive_statusdir pg_ls_logicalsnapdir pg_ls_logicalmapdir pg_ls_replslotdir
    pg_ls_summariesdir pg_current_logfile lo_import lo_export pg_file_write pg_file_rename
    pg_file_unlink pg_file_sync pg_file_read pg_file_length pg_logdir_ls pg_show_all_file_settings
    pg_hba_file_rules pg_ident_file_mappings
    """
)
LARGE_OBJECTS = words(
    """
    lo_get lo_put lo_open lo_close loread lowrite lo_lseek lo_lseek64 lo_tell lo_tell64 lo_truncate
    lo_truncate64 lo_creat lo_create lo_unlink lo_from_bytea lo_import lo_export lo_manage lo_oid
    """
)
# A statement hidden in a string (or a table named in one): its reads are invisible to the grammar.
DYNAMIC_SQL = words(
    """
    query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml cursor_to_xmlschema
    table_to_xml table_to_xmlschema table_to_xml_and_xmlschema schema_to_xml schema_to_xmlschema
    schema_to_xml_and_xmlschema database_to_xml database_to_xmlschema database_to_xml_and_xmlschema
    dblink dblink_exec dblink_open dblink_fetch dblink_send_query dblink_get_result ts_stat crosstab
    crosstab2 crosstab3 crosstab4 connectby
    """
)
REMOTE = frozenset(["postgres_fdw_get_connections", "postgres_fdw_disconnect", "postgres_fdw_disconnect_all"])
SESSION = frozenset({"set_config"})
# Functions that keep their arguments past the statement, where they are read back without any mask
# (SHOW, a sequence's last_value, pg_locks, random() after setseed, a listener's notification).
KEEPS_VALUES = words(
    """
    set_config setval setseed pg_notify pg_advisory_lock pg_advisory_lock_shared pg_advisory_xact_lock
    pg_advisory_xact_lock_shared pg_try_advisory_lock pg_try_advisory_lock_shared
    pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared
    """
)
ADMIN = words(
    """
    pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old
    pg_promote pg_switch_wal pg_switch_xlog pg_create_restore_point pg_start_backup pg_stop_backup
    pg_backup_start pg_backup_stop pg_log_backend_memory_contexts pg_wal_replay_pause
    pg_wal_replay_resume pg_create_physical_replication_slot pg_create_logical_replication_slot
    pg_drop_replication_slot pg_copy_physical_replication_slot pg_copy_logical_replication_slot
    pg_replication_slot_advance pg_logical_slot_get_changes pg_logical_slot_peek_changes
    pg_logical_slot_get_binary_changes pg_logical_slot_peek_binary_changes pg_logical_emit_message
    pg_replication_origin_create pg_replication_origin_drop pg_replication_origin_advance
    pg_replication_origin_session_setup pg_replication_origin_session_reset
    pg_replication_origin_xact_setup pg_stat_reset pg_stat_reset_shared
    pg_stat_reset_single_table_counters pg_stat_reset_single_function_counters pg_stat_reset_slru
    pg_stat_reset_replication_slot pg_stat_reset_subscription_stats pg_stat_reset_backend_stats
    pg_sync_replication_slots pg_import_system_collations pg_log_standby_snapshot
    pg_restore_relation_stats pg_restore_attribute_stats pg_clear_relation_stats
    pg_clear_attribute_stats pg_stat_get_activity pg_stat_get_backend_activity
    """
)

_BY_NAME: dict[str, frozenset[FunctionClass]] = {}
for _names, _class in (
    (SERVER_FILES, FunctionClass.SERVER_FILES),
    (LARGE_OBJECTS, FunctionClass.LARGE_OBJECTS),
    (DYNAMIC_SQL, FunctionClass.DYNAMIC_SQL),
    (REMOTE, FunctionClass.REMOTE),
    (SESSION, FunctionClass.SESSION),
    (ADMIN, FunctionClass.ADMIN),
):
    for _name in _names:
        _BY_NAME[_name] = _BY_NAME.get(_name, frozenset()) | {_class}


def _named(name: str) -> frozenset[FunctionClass]:
    found = _BY_NAME.get(name, frozenset())
    return found | {FunctionClass.REMOTE} if name.startswith("dblink") else found


# The C entry points of the functions named above, each under the name PostgreSQL gives it: a
# function that calls one does what that name does, whatever it is called and wherever it lives.
# From PostgreSQL 15's pg_proc (``SELECT proname, prosrc FROM pg_proc WHERE prolang IN (internal,
# c) AND proname = ANY(<every name above>)``), pg_proc.dat of the 18 development tree for later
# versions (the ``_missing`` readers, pg_ls_summariesdir, pg_log_standby_snapshot, ...), and the
# extension scripts of contrib modules (``AS 'MODULE_PATHNAME', 'symbol'``, or the function's own
# name when no symbol is given; adminpack 1.0 declares pg_file_read as the internal ``pg_read_file``,
# which 15 keeps as pg_read_file_old). No other function of PostgreSQL 15 calls any of them.
# ts_rewrite is left out: only its two-argument form runs a query (``tsquery_rewrite_query``, below).
# pg_stat_reset_backend_stats (18) is classified by name only: its entry point is not established.
SYMBOL_NAMES: dict[str, frozenset[str]] = {}
_ENTRY_POINTS = """
pg_read_file: pg_read_file_off_len pg_read_file_v2 pg_read_file_all pg_read_file_off_len_missing
    pg_read_file_all_missing
pg_read_binary_file: pg_read_binary_file pg_read_binary_file_off_len pg_read_binary_file_all
    pg_read_binary_file_off_len_missing pg_read_binary_file_all_missing
pg_ls_dir: pg_ls_dir pg_ls_dir_1arg
pg_stat_file: pg_stat_file pg_stat_file_1arg
pg_ls_tmpdir: pg_ls_tmpdir_noargs pg_ls_tmpdir_1arg
pg_ls_logdir: pg_ls_logdir
pg_ls_waldir: pg_ls_waldir
pg_ls_archive_statusdir: pg_ls_archive_statusdir
pg_ls_logicalsnapdir: pg_ls_logicalsnapdir
pg_ls_logicalmapdir: pg_ls_logicalmapdir
pg_ls_replslotdir: pg_ls_replslotdir
pg_ls_summariesdir: pg_ls_summariesdir
pg_current_logfile: pg_current_logfile pg_current_logfile_1arg
pg_show_all_file_settings: show_all_file_settings
pg_hba_file_rules: pg_hba_file_rules
pg_ident_file_mappings: pg_ident_file_mappings
lo_import: be_lo_import be_lo_import_with_oid
lo_export: be_lo_export
pg_read_file_old: pg_read_file
pg_file_read: pg_read_file
pg_file_write: pg_file_write pg_file_write_v1_1
pg_file_rename: pg_file_rename pg_file_rename_v1_1
pg_file_unlink: pg_file_unlink pg_file_unlink_v1_1
pg_file_sync: pg_file_sync
pg_logdir_ls: pg_logdir_ls pg_logdir_ls_v1_1
lo_open: be_lo_open
lo_close: be_lo_close
loread: be_loread
lowrite: be_lowrite
lo_lseek: be_lo_lseek
lo_lseek64: be_lo_lseek64
lo_tell: be_lo_tell
lo_tell64: be_lo_tell64
lo_truncate: be_lo_truncate
lo_truncate64: be_lo_truncate64
lo_creat: be_lo_creat
lo_create: be_lo_create
lo_unlink: be_lo_unlink
lo_from_bytea: be_lo_from_bytea
lo_get: be_lo_get be_lo_get_fragment
lo_put: be_lo_put
lo_manage: lo_manage
query_to_xml: query_to_xml
query_to_xmlschema: query_to_xmlschema
query_to_xml_and_xmlschema: query_to_xml_and_xmlschema
cursor_to_xml: cursor_to_xml
cursor_to_xmlschema: cursor_to_xmlschema
table_to_xml: table_to_xml
table_to_xmlschema: table_to_xmlschema
table_to_xml_and_xmlschema: table_to_xml_and_xmlschema
schema_to_xml: schema_to_xml
schema_to_xmlschema: schema_to_xmlschema
schema_to_xml_and_xmlschema: schema_to_xml_and_xmlschema
database_to_xml: database_to_xml
database_to_xmlschema: database_to_xmlschema
database_to_xml_and_xmlschema: database_to_xml_and_xmlschema
ts_stat: ts_stat1 ts_stat2
crosstab: crosstab crosstab_hash
crosstab2: crosstab
crosstab3: crosstab
crosstab4: crosstab
connectby: connectby_text connectby_text_serial
dblink: dblink_record
dblink_exec: dblink_exec
dblink_open: dblink_open
dblink_fetch: dblink_fetch
dblink_send_query: dblink_send_query
dblink_get_result: dblink_get_result
dblink_connect: dblink_connect
dblink_connect_u: dblink_connect
dblink_disconnect: dblink_disconnect
dblink_close: dblink_close
dblink_get_pkey: dblink_get_pkey
dblink_build_sql_insert: dblink_build_sql_insert
dblink_build_sql_delete: dblink_build_sql_delete
dblink_build_sql_update: dblink_build_sql_update
dblink_current_query: dblink_current_query
dblink_is_busy: dblink_is_busy
dblink_get_connections: dblink_get_connections
dblink_cancel_query: dblink_cancel_query
dblink_error_message: dblink_error_message
dblink_get_notify: dblink_get_notify
postgres_fdw_get_connections: postgres_fdw_get_connections
postgres_fdw_disconnect: postgres_fdw_disconnect
postgres_fdw_disconnect_all: postgres_fdw_disconnect_all
set_config: set_config_by_name
pg_terminate_backend: pg_terminate_backend
pg_cancel_backend: pg_cancel_backend
pg_reload_conf: pg_reload_conf
pg_rotate_logfile: pg_rotate_logfile_v2 pg_rotate_logfile
pg_rotate_logfile_old: pg_rotate_logfile
pg_promote: pg_promote
pg_switch_wal: pg_switch_wal
pg_create_restore_point: pg_create_restore_point
pg_backup_start: pg_backup_start
pg_backup_stop: pg_backup_stop
pg_log_backend_memory_contexts: pg_log_backend_memory_contexts
pg_log_standby_snapshot: pg_log_standby_snapshot
pg_wal_replay_pause: pg_wal_replay_pause
pg_wal_replay_resume: pg_wal_replay_resume
pg_create_physical_replication_slot: pg_create_physical_replication_slot
pg_create_logical_replication_slot: pg_create_logical_replication_slot
pg_drop_replication_slot: pg_drop_replication_slot
pg_copy_physical_replication_slot: pg_copy_physical_replication_slot_a
    pg_copy_physical_replication_slot_b
pg_copy_logical_replication_slot: pg_copy_logical_replication_slot_a
    pg_copy_logical_replication_slot_b pg_copy_logical_replication_slot_c
pg_replication_slot_advance: pg_replication_slot_advance
pg_sync_replication_slots: pg_sync_replication_slots
pg_logical_slot_get_changes: pg_logical_slot_get_changes
pg_logical_slot_peek_changes: pg_logical_slot_peek_changes
pg_logical_slot_get_binary_changes: pg_logical_slot_get_binary_changes
pg_logical_slot_peek_binary_changes: pg_logical_slot_peek_binary_changes
pg_logical_emit_message: pg_logical_emit_message_text pg_logical_emit_message_bytea
pg_replication_origin_create: pg_replication_origin_create
pg_replication_origin_drop: pg_replication_origin_drop
pg_replication_origin_advance: pg_replication_origin_advance
pg_replication_origin_session_setup: pg_replication_origin_session_setup
pg_replication_origin_session_reset: pg_replication_origin_session_reset
pg_replication_origin_xact_setup: pg_replication_origin_xact_setup
pg_stat_reset: pg_stat_reset
pg_stat_reset_shared: pg_stat_reset_shared
pg_stat_reset_single_table_counters: pg_stat_reset_single_table_counters
pg_stat_reset_single_function_counters: pg_stat_reset_single_function_counters
pg_stat_reset_slru: pg_stat_reset_slru
pg_stat_reset_replication_slot: pg_stat_reset_replication_slot
pg_stat_reset_subscription_stats: pg_stat_reset_subscription_stats
pg_import_system_collations: pg_import_system_collations
pg_restore_relation_stats: pg_restore_relation_stats
pg_restore_attribute_stats: pg_restore_attribute_stats
pg_clear_relation_stats: pg_clear_relation_stats
pg_clear_attribute_stats: pg_clear_attribute_stats
pg_stat_get_activity: pg_stat_get_activity
pg_stat_get_backend_activity: pg_stat_get_backend_activity
"""
_name = ""
for _word in _ENTRY_POINTS.split():
    if _word.endswith(":"):
        _name = _word[:-1]
    else:
        SYMBOL_NAMES[_word] = SYMBOL_NAMES.get(_word, frozenset()) | {_name}
SYMBOL_NAMES["tsquery_rewrite_query"] = frozenset({"ts_rewrite"})

_BY_SYMBOL: dict[str, frozenset[FunctionClass]] = {
    symbol: frozenset().union(*(_named(name) for name in names)) for symbol, names in SYMBOL_NAMES.items()
}
_BY_SYMBOL["tsquery_rewrite_query"] = frozenset({FunctionClass.DYNAMIC_SQL})  # ts_rewrite(q, 'SELECT ...')

# Shared libraries of contrib modules every function of which reaches out (their extension scripts):
# a C function loaded from one has its class even at an entry point a later version adds.
_BY_LIBRARY: dict[str, frozenset[FunctionClass]] = {
    "dblink": frozenset({FunctionClass.REMOTE}),
    "postgres_fdw": frozenset({FunctionClass.REMOTE}),
    "adminpack": frozenset({FunctionClass.SERVER_FILES}),
}

# initdb writes its functions in these languages, with OIDs below FirstNormalObjectId
# (access/transam.h); a normal server gives every later object a larger one.
_INITDB_LANGUAGES = frozenset({"internal", "c", "sql"})
FIRST_NORMAL_OBJECT_ID = 16384


def _symbol(f: Function) -> str | None:
    """The C entry point a function calls (None in a language with a body)."""
    return f.symbol if f.language in ("internal", "c") else None


def _library(probin: str) -> str:
    """``$libdir/dblink`` or ``/usr/lib/postgresql/15/lib/dblink.so`` -> ``dblink``."""
    name = PurePosixPath(probin).name
    for suffix in (".so", ".dll", ".dylib"):
        name = name.removesuffix(suffix)
    return name


def built_in(f: Function) -> bool:
    """Whether initdb made it (a hand-built catalog's OID 0 counts as initdb's)."""
    return f.language in _INITDB_LANGUAGES and f.oid < FIRST_NORMAL_OBJECT_ID


def classes_of(catalog: Catalog, qualified: str, nargs: int = 0) -> frozenset[FunctionClass]:
    """The classes of a resolved ``schema.name``: those of its name, of what every catalog function
    of that name runs, and ``USER_DEFINED`` unless all of them are PostgreSQL's own."""
    schema, _, name = qualified.partition(".")
    found = _named(name)
    if name == "ts_rewrite" and nargs == 2:  # ts_rewrite(query, 'SELECT ...') runs the string
        found |= {FunctionClass.DYNAMIC_SQL}
    system = schema in SYSTEM_SCHEMAS
    if not system:
        found |= {FunctionClass.USER_DEFINED}
    for f in catalog.functions.get((schema, name), ()):
        symbol = _symbol(f)
        # Under a name PostgreSQL gives its entry point, the name's classes (with ts_rewrite's
        # arity) already say what it does.
        if symbol is not None and name not in SYMBOL_NAMES.get(symbol, ()):
            found |= _BY_SYMBOL.get(symbol, frozenset())
        if f.language == "c" and f.library:
            found |= _BY_LIBRARY.get(_library(f.library), frozenset())
        if system and not built_in(f):
            found |= {FunctionClass.USER_DEFINED}
    return found


def runs_as(catalog: Catalog, qualified: str) -> frozenset[str]:
    """The names PostgreSQL gives to the known entry points that a resolved ``schema.name`` calls:
    a renamed set_config still sets a setting, a renamed query_to_xml still runs its string."""
    schema, _, name = qualified.partition(".")
    found: frozenset[str] = frozenset()
    for f in catalog.functions.get((schema, name), ()):
        symbol = _symbol(f)
        if symbol is not None:
            found |= SYMBOL_NAMES.get(symbol, frozenset())
    return found


def resolve(catalog: Catalog, search_path: tuple[str, ...], schema: str | None, name: str) -> list[str]:
    """Every ``schema.name`` a function name may call, in search order (``unknown.name`` if none).

    pg_catalog is searched first unless the path lists it, as PostgreSQL does; a name the catalog
    snapshot lacks is still found in pg_catalog when PostgreSQL ships it (``BUILTIN_FUNCTIONS``).
    """
    if schema is not None:
        return [f"{schema}.{name}"]
    path = search_path if "pg_catalog" in search_path else ("pg_catalog", *search_path)
    found: list[str] = []
    for candidate in path:
        if (candidate, name) in catalog.functions or (
            candidate == "pg_catalog" and name in BUILTIN_FUNCTIONS
        ):
            found.append(f"{candidate}.{name}")
    return found or [f"unknown.{name}"]
