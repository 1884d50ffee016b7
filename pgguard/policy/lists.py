"""The lists classification reads: functions, settings, statements. Documented in
docs/policy.md; change them here and nowhere else.

Function names are compared case-folded and without their schema, so
pg_catalog.nextval, "NEXTVAL" and myschema.dblink_exec all match: a false positive costs
a review, a false negative lets a write through.
"""

from __future__ import annotations

from ..config import CATEGORIES

__all__ = [
    "CATEGORY_SEVERITY", "DML_KINDS", "LOCK_STRENGTH", "OBJECT_NAMES", "PARSER_SETTINGS",
    "PRIVILEGED_FUNCTIONS", "PRIVILEGED_FUNCTION_PREFIXES", "PRIVILEGED_OBJECTS",
    "PRIVILEGED_SETTINGS", "SEVERITY", "SPECIFIC_REASONS", "STATIC_REASONS",
    "STATIC_STATEMENTS", "TXN_KINDS", "WRITING_FUNCTIONS", "WRITING_FUNCTION_PREFIXES",
    "function_class",
]

#: Functions that change data or shared state: calling one makes a statement ``write``.
WRITING_FUNCTIONS: frozenset[str] = frozenset({
    # sequences
    "nextval", "setval",
    # large objects that create, change or delete (lo_import/lo_export are privileged)
    "lo_creat", "lo_create", "lo_unlink", "lo_put", "lo_from_bytea", "lowrite",
    "lo_truncate", "lo_truncate64",
    # NOTIFY as a function: wakes other sessions (workers may act on it)
    "pg_notify",
    # writes a WAL record
    "pg_logical_emit_message",
})

#: Name prefixes of writing functions (advisory locks are shared state other sessions see).
WRITING_FUNCTION_PREFIXES: tuple[str, ...] = ("pg_advisory_", "pg_try_advisory_")

#: Functions that read or write server files, run SQL text pgguard cannot see, reach other
#: servers, signal backends or administer the server: calling one is ``privileged``.
PRIVILEGED_FUNCTIONS: frozenset[str] = frozenset({
    # server files
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_current_logfile",
    "lo_import", "lo_export",
    # run a SQL string given as an argument (or dump whole tables past column analysis)
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema",
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
    "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
    "ts_stat",
    # other sessions and the server itself
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_switch_wal", "pg_switch_xlog", "pg_create_restore_point", "pg_promote",
    "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
    "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_log_backend_memory_contexts",
    "pg_import_system_collations", "pg_sync_replication_slots",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "pg_replication_slot_advance",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
    "pg_stat_statements_reset",
})

#: Name prefixes of privileged functions.
PRIVILEGED_FUNCTION_PREFIXES: tuple[str, ...] = (
    "dblink",                 # dblink, dblink_exec, dblink_connect, dblink_send_query, ...
    "pg_ls_",                 # pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, ...
    "pg_read_",               # pg_read_file, pg_read_binary_file
    "pg_file_",               # adminpack: pg_file_write, pg_file_rename, pg_file_unlink, ...
    "pg_logdir_",             # adminpack
    "pg_stat_reset",          # pg_stat_reset, pg_stat_reset_shared, ...
    "pg_logical_slot_",       # consume or peek every change in the database
    "pg_replication_origin_",
    "pg_background_",         # pg_background_launch runs SQL text in another backend
)

#: Settings whose change by SET, RESET or set_config() is ``privileged``: they change who
#: the session is.
PRIVILEGED_SETTINGS: frozenset[str] = frozenset({"role", "session_authorization"})

#: Settings that change how PostgreSQL lexes the statements that follow; pgguard parses
#: with standard_conforming_strings on, so turning it off is ``privileged``.
PARSER_SETTINGS: frozenset[str] = frozenset({"standard_conforming_strings"})

#: Display order, mildest first. A statement's ``category`` and a classification's
#: ``category`` are the last of this order among the categories they touch.
CATEGORY_SEVERITY: tuple[str, ...] = ("read", "txn", "write", "ddl", "privileged", "unknown")
#: Category -> its rank in CATEGORY_SEVERITY (higher is more severe).
SEVERITY: dict[str, int] = {c: i for i, c in enumerate(CATEGORY_SEVERITY)}

# Every category the classifier emits must be one config knows about.
assert set(CATEGORY_SEVERITY) == set(CATEGORIES)


_FUNCTION_CLASSES: dict[str, tuple[str, str] | None] = {}


def function_class(name: str) -> tuple[str, str] | None:
    """Return (category, why) for a function name on one of the lists, else None."""
    try:
        return _FUNCTION_CLASSES[name]
    except KeyError:
        pass
    result: tuple[str, str] | None = None
    if name in PRIVILEGED_FUNCTIONS or name.startswith(PRIVILEGED_FUNCTION_PREFIXES):
        result = ("privileged", f"calls privileged function {name}()")
    elif name in WRITING_FUNCTIONS or name.startswith(WRITING_FUNCTION_PREFIXES):
        result = ("write", f"calls writing function {name}()")
    if len(_FUNCTION_CLASSES) < 10000:
        _FUNCTION_CLASSES[name] = result
    return result


# Data-modifying statement nodes, and how the walk names them inside other statements.
DML_KINDS: dict[str, str] = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
                             "DeleteStmt": "DELETE", "MergeStmt": "MERGE"}
LOCK_STRENGTH: dict[str, str] = {
    "LCS_FORKEYSHARE": "FOR KEY SHARE", "LCS_FORSHARE": "FOR SHARE",
    "LCS_FORNOKEYUPDATE": "FOR NO KEY UPDATE", "LCS_FORUPDATE": "FOR UPDATE",
}

# Object types as statement kinds name them (OBJECT_MATVIEW -> MATERIALIZED VIEW), and
# the objects whose CREATE/ALTER/DROP is privileged.
OBJECT_NAMES: dict[str, str] = {
    "MATVIEW": "MATERIALIZED VIEW", "TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "TSDICTIONARY": "TEXT SEARCH DICTIONARY", "TSPARSER": "TEXT SEARCH PARSER",
    "TSTEMPLATE": "TEXT SEARCH TEMPLATE", "FDW": "FOREIGN DATA WRAPPER",
    "FOREIGN_SERVER": "SERVER", "OPCLASS": "OPERATOR CLASS", "OPFAMILY": "OPERATOR FAMILY",
    "EVENT_TRIGGER": "EVENT TRIGGER", "STATISTIC_EXT": "STATISTICS", "LARGEOBJECT": "LARGE OBJECT",
    "PUBLICATION_NAMESPACE": "PUBLICATION", "PUBLICATION_REL": "PUBLICATION",
    "TABCONSTRAINT": "TABLE", "DOMCONSTRAINT": "DOMAIN", "TABLESPACE": "TABLESPACE",
    "ACCESS_METHOD": "ACCESS METHOD", "USER_MAPPING": "USER MAPPING",
}
PRIVILEGED_OBJECTS: frozenset[str] = frozenset({
    "EXTENSION", "FOREIGN DATA WRAPPER", "SERVER", "USER MAPPING", "SUBSCRIPTION",
    "EVENT TRIGGER", "LANGUAGE", "TABLESPACE",
})

# Statement node -> (category, kind) for statements whose category is fixed.
STATIC_STATEMENTS: dict[str, tuple[str, str]] = {
    "SelectStmt": ("read", "SELECT"),
    "InsertStmt": ("write", "INSERT"),
    "UpdateStmt": ("write", "UPDATE"),
    "DeleteStmt": ("write", "DELETE"),
    "MergeStmt": ("write", "MERGE"),
    "LockStmt": ("write", "LOCK"),
    "NotifyStmt": ("write", "NOTIFY"),
    "ListenStmt": ("txn", "LISTEN"),
    "UnlistenStmt": ("txn", "UNLISTEN"),
    "VariableShowStmt": ("txn", "SHOW"),
    "ConstraintsSetStmt": ("txn", "SET CONSTRAINTS"),
    "ClosePortalStmt": ("txn", "CLOSE"),
    "DoStmt": ("privileged", "DO"),
    "CallStmt": ("privileged", "CALL"),
    "LoadStmt": ("privileged", "LOAD"),
    "CheckPointStmt": ("privileged", "CHECKPOINT"),
    "AlterSystemStmt": ("privileged", "ALTER SYSTEM"),
    "CreateExtensionStmt": ("privileged", "CREATE EXTENSION"),
    "AlterExtensionStmt": ("privileged", "ALTER EXTENSION"),
    "AlterExtensionContentsStmt": ("privileged", "ALTER EXTENSION"),
    "CreatePLangStmt": ("privileged", "CREATE LANGUAGE"),
    "CreateEventTrigStmt": ("privileged", "CREATE EVENT TRIGGER"),
    "AlterEventTrigStmt": ("privileged", "ALTER EVENT TRIGGER"),
    "CreateFdwStmt": ("privileged", "CREATE FOREIGN DATA WRAPPER"),
    "AlterFdwStmt": ("privileged", "ALTER FOREIGN DATA WRAPPER"),
    "CreateForeignServerStmt": ("privileged", "CREATE SERVER"),
    "AlterForeignServerStmt": ("privileged", "ALTER SERVER"),
    "CreateUserMappingStmt": ("privileged", "CREATE USER MAPPING"),
    "AlterUserMappingStmt": ("privileged", "ALTER USER MAPPING"),
    "DropUserMappingStmt": ("privileged", "DROP USER MAPPING"),
    "CreateSubscriptionStmt": ("privileged", "CREATE SUBSCRIPTION"),
    "AlterSubscriptionStmt": ("privileged", "ALTER SUBSCRIPTION"),
    "DropSubscriptionStmt": ("privileged", "DROP SUBSCRIPTION"),
    "CreateTableSpaceStmt": ("privileged", "CREATE TABLESPACE"),
    "AlterTableSpaceOptionsStmt": ("privileged", "ALTER TABLESPACE"),
    "DropTableSpaceStmt": ("privileged", "DROP TABLESPACE"),
    "AlterCollationStmt": ("ddl", "ALTER COLLATION"),
    "AlterDatabaseRefreshCollStmt": ("ddl", "ALTER DATABASE"),
    "AlterDatabaseSetStmt": ("ddl", "ALTER DATABASE"),
    "AlterDatabaseStmt": ("ddl", "ALTER DATABASE"),
    "AlterDefaultPrivilegesStmt": ("ddl", "ALTER DEFAULT PRIVILEGES"),
    "AlterDomainStmt": ("ddl", "ALTER DOMAIN"),
    "AlterEnumStmt": ("ddl", "ALTER TYPE"),
    "AlterFunctionStmt": ("ddl", "ALTER FUNCTION"),
    "AlterObjectDependsStmt": ("ddl", "ALTER ... DEPENDS ON EXTENSION"),
    "AlterOpFamilyStmt": ("ddl", "ALTER OPERATOR FAMILY"),
    "AlterOperatorStmt": ("ddl", "ALTER OPERATOR"),
    "AlterPolicyStmt": ("ddl", "ALTER POLICY"),
    "AlterPublicationStmt": ("ddl", "ALTER PUBLICATION"),
    "AlterRoleSetStmt": ("ddl", "ALTER ROLE"),
    "AlterRoleStmt": ("ddl", "ALTER ROLE"),
    "AlterSeqStmt": ("ddl", "ALTER SEQUENCE"),
    "AlterStatsStmt": ("ddl", "ALTER STATISTICS"),
    "AlterTSConfigurationStmt": ("ddl", "ALTER TEXT SEARCH CONFIGURATION"),
    "AlterTSDictionaryStmt": ("ddl", "ALTER TEXT SEARCH DICTIONARY"),
    "AlterTableMoveAllStmt": ("ddl", "ALTER TABLE ALL IN TABLESPACE"),
    "AlterTypeStmt": ("ddl", "ALTER TYPE"),
    "ClusterStmt": ("ddl", "CLUSTER"),
    "CompositeTypeStmt": ("ddl", "CREATE TYPE"),
    "CreateAmStmt": ("ddl", "CREATE ACCESS METHOD"),
    "CreateCastStmt": ("ddl", "CREATE CAST"),
    "CreateConversionStmt": ("ddl", "CREATE CONVERSION"),
    "CreateDomainStmt": ("ddl", "CREATE DOMAIN"),
    "CreateEnumStmt": ("ddl", "CREATE TYPE"),
    "CreateForeignTableStmt": ("ddl", "CREATE FOREIGN TABLE"),
    "CreateOpClassStmt": ("ddl", "CREATE OPERATOR CLASS"),
    "CreateOpFamilyStmt": ("ddl", "CREATE OPERATOR FAMILY"),
    "CreatePolicyStmt": ("ddl", "CREATE POLICY"),
    "CreatePublicationStmt": ("ddl", "CREATE PUBLICATION"),
    "CreateRangeStmt": ("ddl", "CREATE TYPE"),
    "CreateSchemaStmt": ("ddl", "CREATE SCHEMA"),
    "CreateStatsStmt": ("ddl", "CREATE STATISTICS"),
    "CreateTransformStmt": ("ddl", "CREATE TRANSFORM"),
    "CreatedbStmt": ("ddl", "CREATE DATABASE"),
    "DropOwnedStmt": ("ddl", "DROP OWNED"),
    "DropRoleStmt": ("ddl", "DROP ROLE"),
    "DropdbStmt": ("ddl", "DROP DATABASE"),
    "ImportForeignSchemaStmt": ("ddl", "IMPORT FOREIGN SCHEMA"),
    "IndexStmt": ("ddl", "CREATE INDEX"),
    "ReassignOwnedStmt": ("ddl", "REASSIGN OWNED"),
    "RefreshMatViewStmt": ("ddl", "REFRESH MATERIALIZED VIEW"),
    "ReindexStmt": ("ddl", "REINDEX"),
    "ReplicaIdentityStmt": ("ddl", "ALTER TABLE"),
    "RuleStmt": ("ddl", "CREATE RULE"),
    "SecLabelStmt": ("ddl", "SECURITY LABEL"),
    "TruncateStmt": ("ddl", "TRUNCATE"),
    "CommentStmt": ("ddl", "COMMENT"),
    "CreateTrigStmt": ("ddl", "CREATE TRIGGER"),
}

STATIC_REASONS: dict[str, str] = {
    "read": "reads data",
    "write": "modifies data",
    "ddl": "changes the schema or database objects",
    "privileged": "needs privileges beyond data and schema changes",
    "txn": "controls the session or transaction",
}
SPECIFIC_REASONS: dict[str, str] = {
    "DoStmt": "runs an anonymous code block (DO), which can execute any SQL",
    "CallStmt": "calls a procedure, which can execute any SQL and commit",
    "LockStmt": "takes a table lock",
    "NotifyStmt": "sends a notification to other sessions",
    "LoadStmt": "loads a shared library into the server",
    "CreateExtensionStmt": "installs an extension, which runs its scripts",
    "AlterExtensionStmt": "updates an extension, which runs its scripts",
    "TruncateStmt": "removes all rows of a table",
}

TXN_KINDS: dict[str, tuple[str, str]] = {
    "TRANS_STMT_BEGIN": ("txn", "BEGIN"),
    "TRANS_STMT_START": ("txn", "START TRANSACTION"),
    "TRANS_STMT_COMMIT": ("txn", "COMMIT"),
    "TRANS_STMT_ROLLBACK": ("txn", "ROLLBACK"),
    "TRANS_STMT_SAVEPOINT": ("txn", "SAVEPOINT"),
    "TRANS_STMT_RELEASE": ("txn", "RELEASE"),
    "TRANS_STMT_ROLLBACK_TO": ("txn", "ROLLBACK TO SAVEPOINT"),
    # Two-phase commit outlives the session and can finish other sessions' work.
    "TRANS_STMT_PREPARE": ("privileged", "PREPARE TRANSACTION"),
    "TRANS_STMT_COMMIT_PREPARED": ("privileged", "COMMIT PREPARED"),
    "TRANS_STMT_ROLLBACK_PREPARED": ("privileged", "ROLLBACK PREPARED"),
}
