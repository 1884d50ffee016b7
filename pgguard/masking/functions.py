"""What the masking planner knows about the functions a statement calls: an allow-list.

Every function name the planner meets gets one :class:`Kind`:

* ``PURE``: its result is derived from its arguments only (``lineage = derive(args)``),
  reading at most the catalog, the session's settings or the clock, none of which holds
  masked data. Every IMMUTABLE builtin (:mod:`.immutable_builtins`) and the builtins
  reviewed below.
* ``CONFIG``: reads a setting (``current_setting``): derived from its arguments. A setting
  can only hold masked data if ``set_config()`` put it there, and that is a sink.
* ``CLEAN``: an aggregate whose result says nothing of the values (``count``).
* ``OPAQUE``: reads what the walk cannot trace (other sessions' query texts and locks,
  statistics that hold copies of values, server files, large objects, SQL given as text):
  the result is unproven, masked when rules exist.
* ``SINK``: stores or signals its arguments where a later statement or another session
  can read them (sequences, advisory locks, large objects, settings, notifications,
  replication slots and origins, statistics, signals to backends, timing, SQL given as
  text): called with masked data or data of unproven origin, the statement is refused.
  ``OPAQUE_SINK`` is both (``query_to_xml`` runs its SQL text and returns its rows).
* ``UNKNOWN``: anything else (user functions and aggregates, a name a user function may
  answer to, a function of another schema, a builtin not listed). It may store its
  arguments, so masked arguments are refused; its result is unproven.

The lists are checked against ``pg_proc`` by ``tests/e2e/test_masking_functions.py``: every
builtin that returns text, names, ``bytea``, JSON, XML, arrays, records or sets is
classified, so a new PostgreSQL version cannot add one silently.
"""

from __future__ import annotations

import enum
from collections.abc import Set
from typing import Protocol

from ..sql.nodes import names as _node_names
from ..sql.nodes import node as _node
from ..sql.parse import parse
from .catalog import Catalog
from .immutable_builtins import IMMUTABLE_BUILTINS
from .rules import RuleSet


class Kind(enum.Enum):
    PURE = "pure"
    CONFIG = "config"
    CLEAN = "clean"
    OPAQUE = "opaque"
    SINK = "sink"
    OPAQUE_SINK = "opaque sink"
    UNKNOWN = "unknown"


class Lineage(Protocol):
    """What a call's check reads of its arguments' lineage (:class:`~.plan.Lin`)."""

    @property
    def origins(self) -> Set[tuple[str, str, str]]: ...

    @property
    def opaque(self) -> str | None: ...


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Builtins that read what the walk cannot trace: their result is unproven.
OPAQUE_FUNCTIONS = _names("""
    query_to_xml query_to_xmlschema query_to_xml_and_xmlschema table_to_xml
    table_to_xmlschema table_to_xml_and_xmlschema cursor_to_xml cursor_to_xmlschema
    schema_to_xml schema_to_xmlschema schema_to_xml_and_xmlschema database_to_xml
    database_to_xmlschema database_to_xml_and_xmlschema ts_stat ts_rewrite xpath_table
    dblink dblink_get_result dblink_fetch
    pg_mcv_list_items pg_mcv_list_recv pg_mcv_list_send pg_get_sequence_data
    lo_get loread
    pg_logical_slot_get_changes pg_logical_slot_peek_changes
    pg_logical_slot_get_binary_changes pg_logical_slot_peek_binary_changes
    pg_settings_get_flags pg_cursor pg_prepared_statement pg_prepared_xact pg_lock_status
    pg_blocking_pids pg_safe_snapshot_blocking_pids pg_isolation_test_session_is_blocked
    pg_event_trigger_ddl_commands pg_event_trigger_dropped_objects
    pg_event_trigger_table_rewrite_oid pg_event_trigger_table_rewrite_reason
    pg_get_replication_slots pg_show_replication_origin_status
    pg_replication_origin_progress pg_replication_origin_session_progress
    pg_replication_origin_session_is_setup
    pg_read_file pg_read_file_old pg_read_binary_file pg_stat_file pg_current_logfile
    pg_ls_dir pg_ls_logdir pg_ls_waldir pg_ls_tmpdir pg_ls_archive_statusdir
    pg_ls_logicalmapdir pg_ls_logicalsnapdir pg_ls_replslotdir pg_ls_summariesdir
    pg_hba_file_rules pg_ident_file_mappings pg_show_all_file_settings
    pg_control_checkpoint pg_control_init pg_control_recovery pg_control_system
    pg_backup_stop pg_available_wal_summaries pg_wal_summary_contents
    pg_get_wal_summarizer_state pg_get_aios pg_get_backend_memory_contexts
    pg_get_loaded_modules pg_get_multixact_members pg_get_shmem_allocations
    pg_get_shmem_allocations_numa pg_get_wait_events
    pg_last_committed_xact pg_xact_commit_timestamp pg_xact_commit_timestamp_origin
    pg_xact_status txid_status
    fmgr_c_validator fmgr_internal_validator fmgr_sql_validator plpgsql_validator
    plpgsql_call_handler plpgsql_inline_handler amvalidate currtid2
    dsnowball_init dsnowball_lexize bernoulli system
    brinhandler bthandler ginhandler gisthandler hashhandler spghandler heap_tableam_handler
    RI_FKey_cascade_del RI_FKey_cascade_upd RI_FKey_check_ins RI_FKey_check_upd
    RI_FKey_noaction_del RI_FKey_noaction_upd RI_FKey_restrict_del RI_FKey_restrict_upd
    RI_FKey_setdefault_del RI_FKey_setdefault_upd RI_FKey_setnull_del RI_FKey_setnull_upd
    suppress_redundant_updates_trigger tsvector_update_trigger
    tsvector_update_trigger_column unique_key_recheck
    domain_in domain_recv
""") | frozenset(
    # Statistics and activity of every session: query texts, wait events, addresses.
    f"pg_stat_get_{n}" for n in """
    activity archiver backend_activity backend_activity_start backend_client_addr
    backend_client_port backend_dbid backend_idset backend_pid backend_start
    backend_subxact backend_userid backend_wait_event backend_wait_event_type
    backend_xact_start backend_io backend_wal io recovery_prefetch progress_info
    replication_slot slru subscription subscription_stats wal wal_receiver wal_senders
    snapshot_timestamp""".split()) | frozenset({"pg_stat_have_stats"})
# pg_stat_get_<anything>: every session's counters (the list above names the text ones).
OPAQUE_PREFIXES = ("pg_stat_get_",)

# Builtins that return session configuration, not table data: their value is clear when
# their arguments are. A setting can only hold a masked value if set_config() put it there,
# and set_config() with a masked or untraceable argument is refused (SINK_FUNCTIONS);
# ``SET`` takes literals only. (SHOW and pg_settings read the same values.)
CONFIG_FUNCTIONS = frozenset({"current_setting"})

# Functions that store or send their arguments somewhere a later statement (or another
# session) can read them back unmasked, or run SQL given as text (which can do so unseen).
SINK_FUNCTIONS = _names("""
    pg_notify set_config setval nextval setseed
    pg_advisory_lock pg_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_shared
    pg_advisory_unlock_all pg_advisory_xact_lock pg_advisory_xact_lock_shared
    pg_try_advisory_lock pg_try_advisory_lock_shared pg_try_advisory_xact_lock
    pg_try_advisory_xact_lock_shared
    lo_from_bytea lo_put lowrite lo_create lo_creat lo_import lo_export
    lo_lseek lo_lseek64 lo_truncate lo_truncate64 lo_unlink
    pg_logical_emit_message pg_logical_slot_get_changes pg_logical_slot_get_binary_changes
    pg_logical_slot_peek_changes pg_logical_slot_peek_binary_changes
    pg_create_logical_replication_slot pg_create_physical_replication_slot
    pg_copy_logical_replication_slot pg_copy_physical_replication_slot
    pg_drop_replication_slot pg_replication_slot_advance pg_sync_replication_slots
    pg_replication_origin_create pg_replication_origin_drop pg_replication_origin_advance
    pg_replication_origin_session_setup pg_replication_origin_session_reset
    pg_replication_origin_xact_setup pg_replication_origin_xact_reset
    pg_create_restore_point pg_backup_start pg_start_backup pg_switch_wal pg_promote
    pg_wal_replay_pause pg_wal_replay_resume pg_log_standby_snapshot
    pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old pg_import_system_collations
    pg_cancel_backend pg_terminate_backend pg_log_backend_memory_contexts
    pg_sleep pg_sleep_for pg_sleep_until
    pg_stat_reset pg_stat_reset_shared pg_stat_reset_single_table_counters
    pg_stat_reset_single_function_counters pg_stat_reset_slru pg_stat_reset_replication_slot
    pg_stat_reset_subscription_stats pg_stat_reset_backend_stats pg_stat_clear_snapshot
    pg_stat_force_next_flush pg_stat_statements_reset
    pg_restore_relation_stats pg_restore_attribute_stats pg_clear_relation_stats
    pg_clear_attribute_stats pg_set_relation_stats pg_set_attribute_stats
    brin_summarize_range brin_summarize_new_values brin_desummarize_range
    gin_clean_pending_list pg_extension_config_dump pg_nextoid pg_stop_making_pinned_objects
    query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml
    cursor_to_xmlschema ts_stat ts_rewrite xpath_table
    dblink dblink_exec dblink_send_query dblink_open dblink_connect pg_file_write
""")
# binary_upgrade_<anything>: pg_upgrade's catalog writers.
SINK_PREFIXES = ("binary_upgrade_",)

# Aggregates whose result says nothing of the values themselves.
CLEAN_AGGREGATES = frozenset({"count"})

# Reviewed STABLE and VOLATILE builtins whose result derives from their arguments and, at
# most, from the catalog, the session's settings, the clock or server-wide counters that
# hold no table data. (``now()``, ``version()``, ``current_user``: no arguments, clean.)
REVIEWED_PURE = _names("""
    aclexplode aclitemin aclitemout anyarray_out anyarray_recv anyarray_send
    anycompatiblearray_out anycompatiblearray_recv anycompatiblearray_send
    anycompatiblemultirange_in anycompatiblemultirange_out anycompatiblerange_in
    anycompatiblerange_out anyenum_out anymultirange_in anymultirange_out anyrange_in
    anyrange_out anytextcat textanycat array_in array_out array_recv array_send
    array_to_json array_to_string array_typanalyze bpcharrecv bpcharsend
    brin_bloom_summary_recv brin_bloom_summary_send brin_minmax_multi_summary_recv
    brin_minmax_multi_summary_send cash_in cash_out money concat concat_ws convert
    convert_from convert_to cstring_recv cstring_send format format_type to_char to_date
    to_number to_json to_jsonb row_to_json json_build_array json_build_object
    jsonb_build_array jsonb_build_object json_populate_record json_populate_recordset
    json_to_record json_to_recordset jsonb_populate_record jsonb_populate_record_valid
    jsonb_populate_recordset jsonb_to_record jsonb_to_recordset jsonb_path_exists_tz
    jsonb_path_match_tz jsonb_path_query_array_tz jsonb_path_query_first_tz
    jsonb_path_query_tz
    json_agg json_agg_strict json_agg_strict_transfn json_agg_transfn json_object_agg
    json_object_agg_strict json_object_agg_strict_transfn json_object_agg_transfn
    json_object_agg_unique json_object_agg_unique_strict
    json_object_agg_unique_strict_transfn json_object_agg_unique_transfn jsonb_agg
    jsonb_agg_finalfn jsonb_agg_strict jsonb_agg_strict_transfn jsonb_agg_transfn
    jsonb_object_agg_finalfn jsonb_object_agg_strict_transfn jsonb_object_agg_transfn
    jsonb_object_agg_unique_strict_transfn jsonb_object_agg_unique_transfn
    date_cmp_timestamptz date_eq_timestamptz date_ge_timestamptz date_gt_timestamptz
    date_le_timestamptz date_lt_timestamptz date_ne_timestamptz date_in date_out
    interval_in interval_out interval_pl_timestamptz make_timestamptz time_in timetz_in
    timestamp_in timestamp_out timestamptz_in timestamptz_out timestamptz_mi_interval
    timestamptz_pl_interval timestamp_cmp_timestamptz timestamp_eq_timestamptz
    timestamp_ge_timestamptz timestamp_gt_timestamptz timestamp_le_timestamptz
    timestamp_lt_timestamptz timestamp_ne_timestamptz timestamptz_cmp_date
    timestamptz_cmp_timestamp timestamptz_eq_date timestamptz_eq_timestamp
    timestamptz_ge_date timestamptz_ge_timestamp timestamptz_gt_date timestamptz_gt_timestamp
    timestamptz_le_date timestamptz_le_timestamp timestamptz_lt_date timestamptz_lt_timestamp
    timestamptz_ne_date timestamptz_ne_timestamp
    age date date_add date_part date_subtract date_trunc extract generate_series in_range
    json_to_tsvector jsonb_to_tsvector length numeric overlaps phraseto_tsquery
    plainto_tsquery quote_literal quote_nullable time timestamp timestamptz timetz timezone
    to_timestamp to_tsquery to_tsvector ts_headline ts_parse ts_token_type
    websearch_to_tsquery get_current_ts_config ts_debug ts_match_tq ts_match_tt
    ts_typanalyze
    enum_first enum_in enum_last enum_out enum_range enum_recv enum_send
    multirange_in multirange_out multirange_recv multirange_send multirange_typanalyze
    range_in range_out range_recv range_send range_typanalyze
    record_in record_out record_recv record_send namerecv namesend textrecv textsend
    varcharrecv varcharsend xml xml_in xml_is_well_formed xml_recv xml_send
    pg_dependencies_recv pg_dependencies_send pg_ndistinct_recv pg_ndistinct_send
    pg_node_tree_recv pg_node_tree_send
    regclass regclassin regclassout regcollationin regcollationout regconfigin regconfigout
    regdictionaryin regdictionaryout regnamespacein regnamespaceout regoperatorin
    regoperatorout regoperin regoperout regprocedurein regprocedureout regprocin regprocout
    regrolein regroleout regtypein regtypeout to_regclass to_regcollation to_regnamespace
    to_regoper to_regoperator to_regproc to_regprocedure to_regrole to_regtype
    to_regtypemod
    areajoinsel areasel arraycontjoinsel arraycontsel contjoinsel contsel eqjoinsel eqsel
    iclikejoinsel iclikesel icnlikejoinsel icnlikesel icregexeqjoinsel icregexeqsel
    icregexnejoinsel icregexnesel likejoinsel likesel matchingjoinsel matchingsel
    multirangesel neqjoinsel neqsel networkjoinsel networksel nlikejoinsel nlikesel
    positionjoinsel positionsel prefixjoinsel prefixsel rangesel regexeqjoinsel regexeqsel
    regexnejoinsel regexnesel scalargejoinsel scalargesel scalargtjoinsel scalargtsel
    scalarlejoinsel scalarlesel scalarltjoinsel scalarltsel tsmatchjoinsel tsmatchsel
    has_any_column_privilege has_column_privilege has_database_privilege
    has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
    has_largeobject_privilege has_parameter_privilege has_schema_privilege
    has_sequence_privilege has_server_privilege has_table_privilege has_tablespace_privilege
    has_type_privilege pg_has_role row_security_active
    col_description obj_description shobj_description oidvectortypes pg_basetype
    pg_char_to_encoding pg_encoding_to_char pg_collation_for pg_collation_is_visible
    pg_conversion_is_visible pg_function_is_visible pg_opclass_is_visible
    pg_operator_is_visible pg_opfamily_is_visible pg_statistics_obj_is_visible
    pg_table_is_visible pg_ts_config_is_visible pg_ts_dict_is_visible
    pg_ts_parser_is_visible pg_ts_template_is_visible pg_type_is_visible pg_typeof
    pg_column_compression pg_column_size pg_column_toast_chunk_id pg_column_is_updatable
    pg_relation_is_updatable pg_relation_is_publishable pg_describe_object pg_filenode_relation
    pg_get_acl pg_get_catalog_foreign_keys pg_get_constraintdef pg_get_expr
    pg_get_function_arg_default pg_get_function_arguments pg_get_function_identity_arguments
    pg_get_function_result pg_get_function_sqlbody pg_get_functiondef pg_get_indexdef
    pg_get_keywords pg_get_object_address pg_get_partition_constraintdef pg_get_partkeydef
    pg_get_publication_tables pg_get_replica_identity_index pg_get_ruledef
    pg_get_serial_sequence pg_get_statisticsobjdef pg_get_statisticsobjdef_columns
    pg_get_statisticsobjdef_expressions pg_get_triggerdef pg_get_userbyid pg_get_viewdef
    pg_identify_object pg_identify_object_as_address pg_index_column_has_property
    pg_index_has_property pg_indexam_has_property pg_input_error_info pg_input_is_valid
    pg_options_to_table pg_relation_filenode pg_relation_filepath pg_replication_origin_oid
    pg_sequence_parameters pg_split_walfile_name pg_tablespace_databases
    pg_tablespace_location pg_partition_ancestors pg_partition_tree
    pg_database_size pg_indexes_size pg_relation_size pg_table_size pg_tablespace_size
    pg_total_relation_size pg_collation_actual_version pg_database_collation_actual_version
    pg_available_extension_versions pg_available_extensions pg_extension_update_paths
    pg_config pg_show_all_settings pg_timezone_abbrevs pg_timezone_abbrevs_abbrevs
    pg_timezone_abbrevs_zone pg_timezone_names pg_listening_channels
    pg_notification_queue_usage mxid_age
    current_database current_schema current_schemas current_user session_user system_user
    getpgusername getdatabaseencoding pg_client_encoding version current_query
    inet_client_addr inet_client_port inet_server_addr inet_server_port pg_backend_pid
    pg_conf_load_time pg_postmaster_start_time pg_my_temp_schema pg_is_other_temp_schema
    pg_trigger_depth pg_numa_available pg_jit_available pg_is_in_recovery
    pg_is_wal_replay_paused pg_get_wal_replay_pause_state pg_get_wal_resource_managers
    pg_current_wal_flush_lsn pg_current_wal_insert_lsn pg_current_wal_lsn
    pg_last_wal_receive_lsn pg_last_wal_replay_lsn pg_last_xact_replay_timestamp
    pg_current_snapshot pg_current_xact_id pg_current_xact_id_if_assigned pg_export_snapshot
    txid_current txid_current_if_assigned txid_current_snapshot
    now transaction_timestamp statement_timestamp clock_timestamp timeofday
    random random_normal array_sample array_shuffle gen_random_uuid uuidv4 uuidv7
    currval lastval pg_sequence_last_value lo_open lo_close lo_tell lo_tell64
""")

# Reviewed VOLATILE builtins that take arguments and do not store them (every other
# volatile builtin with arguments is a sink; the test checks it against pg_proc).
VOLATILE_NOT_STORING = _names("""
    random random_normal array_sample array_shuffle uuidv7 currval pg_sequence_last_value
    lo_open lo_close lo_tell lo_tell64 lo_get loread pg_get_sequence_data
    pg_database_size pg_indexes_size pg_relation_size pg_table_size pg_tablespace_size
    pg_total_relation_size pg_partition_ancestors pg_partition_tree
    pg_collation_actual_version pg_database_collation_actual_version
    pg_read_file pg_read_file_old pg_read_binary_file pg_stat_file pg_ls_dir pg_ls_tmpdir
    pg_ls_replslotdir pg_current_logfile pg_wal_summary_contents pg_backup_stop
    pg_blocking_pids pg_safe_snapshot_blocking_pids pg_isolation_test_session_is_blocked
    pg_get_multixact_members pg_xact_commit_timestamp pg_xact_commit_timestamp_origin
    pg_xact_status txid_status pg_replication_origin_progress
    pg_replication_origin_session_progress pg_stat_have_stats pg_stat_get_backend_io
    pg_stat_get_backend_wal pg_stat_get_xact_blocks_fetched pg_stat_get_xact_blocks_hit
    pg_stat_get_xact_function_calls pg_stat_get_xact_function_self_time
    pg_stat_get_xact_function_total_time pg_stat_get_xact_numscans
    pg_stat_get_xact_tuples_deleted pg_stat_get_xact_tuples_fetched
    pg_stat_get_xact_tuples_hot_updated pg_stat_get_xact_tuples_inserted
    pg_stat_get_xact_tuples_newpage_updated pg_stat_get_xact_tuples_returned
    pg_stat_get_xact_tuples_updated
    amvalidate bernoulli system currtid2 dsnowball_init dsnowball_lexize plpgsql_validator
    plpgsql_inline_handler brinhandler bthandler ginhandler gisthandler hashhandler
    spghandler heap_tableam_handler
""")

PURE_FUNCTIONS = (IMMUTABLE_BUILTINS | REVIEWED_PURE) - OPAQUE_FUNCTIONS - SINK_FUNCTIONS


def builtin_kind(name: str) -> Kind:
    """The kind of the ``pg_catalog`` function *name* (no user function shadows it)."""
    opaque = name in OPAQUE_FUNCTIONS or name.startswith(OPAQUE_PREFIXES)
    if name in SINK_FUNCTIONS or name.startswith(SINK_PREFIXES):
        return Kind.OPAQUE_SINK if opaque else Kind.SINK
    if opaque:
        return Kind.OPAQUE
    if name in CONFIG_FUNCTIONS:
        return Kind.CONFIG
    if name in CLEAN_AGGREGATES:
        return Kind.CLEAN
    if name in PURE_FUNCTIONS:
        return Kind.PURE
    return Kind.UNKNOWN


def kind_of(name: str, schema: str | None, user_code: bool) -> Kind:
    """The kind of a call of *name* (qualified by *schema*, if written).

    Args:
        name: the function name as written.
        schema: the schema as written, or None.
        user_code: a user-defined function (or aggregate) may answer to this name.
    """
    if user_code or schema not in (None, "pg_catalog"):
        return Kind.UNKNOWN
    return builtin_kind(name)


def is_traced(kind: Kind) -> bool:
    """False for calls whose effects and messages the planner cannot see."""
    return kind not in (Kind.OPAQUE, Kind.OPAQUE_SINK, Kind.UNKNOWN)


def refusal(kind: Kind, name: str, args: Lineage, rules: RuleSet) -> str | None:
    """Why a call of *name* (``f()``, ``operator ###``) of kind *kind* with arguments of
    lineage *args* is refused.

    A sink, or a function that may be one (``UNKNOWN``), must not receive masked data; an
    argument of unproven origin may be masked data (or another session's), so it is
    refused too when rules exist.

    Returns:
        The reason (it names the masked column), or None when the call may run.
    """
    if kind not in (Kind.SINK, Kind.OPAQUE_SINK, Kind.UNKNOWN):
        return None
    verb = "may store" if kind is Kind.UNKNOWN else "would store or signal"
    masked = sorted(o for o in args.origins if rules.match(*o))
    if masked:
        return (f"{name} {verb} masked column {'.'.join(masked[0])} where it is "
                f"read in clear")
    if args.opaque and rules:
        return (f"{name} {verb} data of unproven origin ({args.opaque}) where it "
                f"is read in clear")
    return None


# A_Expr kinds whose operators are >= and <= (the node names BETWEEN).
_BETWEEN = frozenset({"AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN", "AEXPR_BETWEEN_SYM",
                      "AEXPR_NOT_BETWEEN_SYM"})


def _qualified(parts: list[str]) -> tuple[str | None, str]:
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def hidden_user_code(kind: str, body: dict, catalog: Catalog) -> str | None:
    """The user code an expression node runs with no function name in sight, or None.

    An operator (``a ### b``, ``x IN (…)``, ``BETWEEN``, ``CASE x WHEN``, ``= ANY (…)``,
    ``ORDER BY x USING ###`` where the walk passes the SortBy here) may
    be a user-defined one when an operator of that name exists outside ``pg_catalog``;
    a cast may run user code when its target is a user-defined type or domain (domain
    checks, input functions) or a type a user function casts to. The catalog, not the
    text, says which names users defined.

    Args:
        kind: the node type (``A_Expr``, ``TypeCast``, ``CaseExpr``, ``SubLink``, …).
        body: the node's fields.
        catalog: the database catalog.

    Returns:
        What runs (``operator ###``, ``cast to mydomain``), for messages, or None.
    """
    ops: list[tuple[str | None, str]] = []
    if kind == "A_Expr":
        schema, op = _qualified(_node_names(body.get("name", [])) or ["?"])
        if body.get("kind") in _BETWEEN:
            ops = [(schema, ">="), (schema, "<=")]
        else:
            ops = [(schema, op)]
    elif kind == "SubLink" and body.get("operName"):
        ops = [_qualified(_node_names(body["operName"]))]
    elif kind == "CaseExpr" and body.get("arg"):
        ops = [(None, "=")]
    elif kind == "SortBy" and body.get("useOp"):
        ops = [_qualified(_node_names(body["useOp"]))]
    elif kind == "TypeCast":
        parts = _node_names((body.get("typeName") or {}).get("names", []))
        if parts:
            schema, tname = _qualified(parts)
            if catalog.is_user_type(tname, schema):
                return f"cast to {tname}"
    for schema, op in ops:
        if catalog.is_user_operator(op, schema):
            return f"operator {op}"
    return None


def policy_expressions(texts: tuple[str, ...]) -> list[dict] | None:
    """The parse nodes of row-level security policy expressions (``pg_get_expr`` text).

    Returns:
        One expression node per text, or None when one does not parse as one expression.
    """
    nodes = []
    for text in texts:
        stmts = parse(f"SELECT ({text})").statements
        if len(stmts) != 1:
            return None
        targets = _node(stmts[0].node)[1].get("targetList") or []
        if len(targets) != 1:
            return None
        nodes.append(targets[0]["ResTarget"]["val"])
    return nodes
