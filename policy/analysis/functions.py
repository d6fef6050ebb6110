"""Function calls: which function a name means, and what class of reach it has.

Classes come from the name (an extension such as dblink may live in any schema), and a function
outside pg_catalog and information_schema is also ``USER_DEFINED``: its body is not analyzed.
An unqualified name lists every schema of the search path that has a function of that name, not
only the first: PostgreSQL picks among same-named functions by argument types, which analysis
cannot see, so a user-defined overload later in the path must not hide behind a builtin.
"""

from __future__ import annotations

from policy.analysis.builtins import BUILTIN_FUNCTIONS, words
from policy.catalog import Catalog
from policy.facts import FunctionClass

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})

SERVER_FILES = words(
    """
    pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file pg_ls_logdir pg_ls_waldir pg_ls_tmpdir
    pg_ls_archive_statusdir pg_ls_logicalsnapdir pg_ls_logicalmapdir pg_ls_replslotdir
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
    pg_clear_attribute_stats
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


def classes_of(qualified: str, nargs: int = 0) -> frozenset[FunctionClass]:
    """The classes of a resolved ``schema.name``."""
    schema, _, name = qualified.partition(".")
    found = _BY_NAME.get(name, frozenset())
    if name.startswith("dblink"):
        found |= {FunctionClass.REMOTE}
    if name == "ts_rewrite" and nargs == 2:  # ts_rewrite(query, 'SELECT ...') runs the string
        found |= {FunctionClass.DYNAMIC_SQL}
    if schema not in SYSTEM_SCHEMAS:
        found |= {FunctionClass.USER_DEFINED}
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
