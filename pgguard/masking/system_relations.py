"""What the masking planner knows about the relations of ``pg_catalog`` and
``information_schema``: an allow-list.

A system relation's columns are clean only when the relation is listed in
:data:`CLEAN_SYSTEM_RELATIONS`: it holds catalog definitions, this session's settings,
static server facts or activity counters, none of which is a table value or another
session's text. Everything else (other sessions' query texts, addresses, certificate
names, application names and locks, replication slot and origin names, prepared
transaction ids, large objects, statistics that hold copies of values,
server files, stored passwords and connection strings, and any relation a newer
PostgreSQL adds) is unproven: masked when rules exist. ``tests/e2e/test_masking_functions.py``
checks the lists against ``pg_class``.
"""

from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Relations that hold values the walk cannot trace (reviewed; the rest of the system
# relations not in CLEAN_SYSTEM_RELATIONS are unproven too).
VALUE_CARRYING = _names("""
    pg_stat_activity pg_stat_replication pg_stat_wal_receiver pg_stat_ssl pg_stat_gssapi
    pg_stat_subscription pg_stat_subscription_stats pg_stat_replication_slots
    pg_stat_recovery_prefetch pg_stat_progress_analyze pg_stat_progress_basebackup
    pg_stat_progress_cluster pg_stat_progress_copy pg_stat_progress_create_index
    pg_stat_progress_vacuum pg_stat_statements pg_stat_statements_info
    pg_locks pg_prepared_xacts pg_prepared_statements pg_cursors pg_replication_slots
    pg_replication_origin pg_replication_origin_status pg_largeobject
    pg_largeobject_metadata pg_stats pg_stats_ext pg_stats_ext_exprs pg_statistic
    pg_statistic_ext_data pg_file_settings pg_hba_file_rules pg_ident_file_mappings
    pg_backend_memory_contexts pg_shmem_allocations pg_shmem_allocations_numa pg_aios
    pg_authid pg_shadow pg_user_mapping pg_user_mappings pg_subscription
    pg_subscription_rel user_mappings user_mapping_options _pg_user_mappings
""")

# Catalog definitions, this session's settings, static facts and counters (sequence values
# are counters: setval() with masked data is refused, like every sink).
CLEAN_SYSTEM_RELATIONS = _names("""
    pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_auth_members
    pg_available_extension_versions pg_available_extensions pg_cast pg_class pg_collation
    pg_config pg_constraint pg_conversion pg_database pg_db_role_setting pg_default_acl
    pg_depend pg_description pg_enum pg_event_trigger pg_extension pg_foreign_data_wrapper
    pg_foreign_server pg_foreign_table pg_group pg_index pg_indexes pg_inherits
    pg_init_privs pg_language pg_matviews pg_namespace pg_opclass pg_operator pg_opfamily
    pg_parameter_acl pg_partitioned_table pg_policies pg_policy pg_proc pg_publication
    pg_publication_namespace pg_publication_rel pg_publication_tables pg_range pg_rewrite
    pg_roles pg_rules pg_seclabel pg_seclabels pg_sequence pg_sequences pg_settings pg_shdepend
    pg_shdescription pg_shseclabel pg_statistic_ext pg_tables pg_tablespace
    pg_timezone_abbrevs pg_timezone_names pg_transform pg_trigger pg_ts_config
    pg_ts_config_map pg_ts_dict pg_ts_parser pg_ts_template pg_type pg_user pg_views
    pg_wait_events
    pg_stat_all_indexes pg_stat_all_tables pg_stat_archiver pg_stat_bgwriter
    pg_stat_checkpointer pg_stat_database pg_stat_database_conflicts pg_stat_io
    pg_stat_slru pg_stat_sys_indexes pg_stat_sys_tables pg_stat_user_functions
    pg_stat_user_indexes pg_stat_user_tables pg_stat_wal pg_stat_xact_all_tables
    pg_stat_xact_sys_tables pg_stat_xact_user_functions pg_stat_xact_user_tables
    pg_statio_all_indexes pg_statio_all_sequences pg_statio_all_tables
    pg_statio_sys_indexes pg_statio_sys_sequences pg_statio_sys_tables
    pg_statio_user_indexes pg_statio_user_sequences pg_statio_user_tables
    _pg_foreign_data_wrappers _pg_foreign_servers _pg_foreign_table_columns
    _pg_foreign_tables administrable_role_authorizations applicable_roles attributes
    character_sets check_constraint_routine_usage check_constraints
    collation_character_set_applicability collations column_column_usage
    column_domain_usage column_options column_privileges column_udt_usage columns
    constraint_column_usage constraint_table_usage data_type_privileges
    domain_constraints domain_udt_usage domains element_types enabled_roles
    foreign_data_wrapper_options foreign_data_wrappers foreign_server_options
    foreign_servers foreign_table_options foreign_tables information_schema_catalog_name
    key_column_usage parameters referential_constraints role_column_grants
    role_routine_grants role_table_grants role_udt_grants role_usage_grants
    routine_column_usage routine_privileges routine_routine_usage routine_sequence_usage
    routine_table_usage routines schemata sequences sql_features sql_implementation_info
    sql_parts sql_sizing table_constraints table_privileges tables transforms
    triggered_update_columns triggers udt_privileges usage_privileges user_defined_types
    view_column_usage view_routine_usage view_table_usage views
""") - VALUE_CARRYING


def holds_untraced_values(name: str) -> bool:
    """True unless the system relation *name* is known to hold no table value and no
    other session's data."""
    return name not in CLEAN_SYSTEM_RELATIONS
