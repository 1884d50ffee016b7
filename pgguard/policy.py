"""Statement control: classify SQL on PostgreSQL's own parse tree and apply grants.

``classify()`` parses the text with libpg_query (through ``pglast.parser.parse_sql_json``,
which is about twenty times cheaper than building pglast's Python AST) and walks the JSON
tree of every statement. Each statement gets the set of categories it touches (``read``,
``write``, ``ddl``, ``privileged``, ``txn``, ``unknown``), a kind (``"DROP TABLE"``) and a
reason. Results are cached by text in a bounded LRU.

``Policy`` holds the grants of one connection and turns a classification into a decision
(``allow``, ``review`` or ``deny``) for a user's groups.

The lists of writing and dangerous functions and the settings that matter live in this
module only (see "Function and setting lists" below) and are documented in docs/policy.md.
This module takes values and returns decisions: it never sees a socket.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from pglast import parser as _pg

try:  # optional: about 3 µs faster per cold classification than the stdlib decoder
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _loads

from .config import ACTIONS, CATEGORIES, DEFAULT_ACTIONS, ConnectionConfig, GrantConfig

__all__ = [
    "CATEGORY_SEVERITY",
    "Classification",
    "Decision",
    "Policy",
    "PRIVILEGED_FUNCTIONS",
    "PRIVILEGED_FUNCTION_PREFIXES",
    "PRIVILEGED_SETTINGS",
    "StatementInfo",
    "WRITING_FUNCTIONS",
    "WRITING_FUNCTION_PREFIXES",
    "cache_clear",
    "cache_info",
    "classify",
    "deny_message",
    "remember_prepared",
]

# ---------------------------------------------------------------------------------------
# Function and setting lists: the one place they live. Names are compared case-folded and
# without their schema, so pg_catalog.nextval, "NEXTVAL" and myschema.dblink_exec all
# match: a false positive costs a review, a false negative lets a write through.
# ---------------------------------------------------------------------------------------

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
_SEVERITY = {c: i for i, c in enumerate(CATEGORY_SEVERITY)}
_ACTION_RANK = {"deny": 0, "review": 1, "allow": 2}
_RANK_ACTION = {r: a for a, r in _ACTION_RANK.items()}

# Texts longer than this are classified but never cached (they would evict everything).
CACHE_MAX_TEXT = 64 * 1024
CACHE_MAX_ENTRIES = 4096
CACHE_MAX_CHARS = 16 * 1024 * 1024
_REASON_MAX = 200


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """One statement of a query string, classified.

    ``category`` is the most severe of ``categories`` (all the categories the statement
    touches: ``CREATE TABLE t AS SELECT nextval('s')`` is ``ddl`` and ``write``).
    ``Policy.decide`` applies the strictest action over all of ``categories``.
    ``executes`` names the SQL-level prepared statement an ``EXECUTE`` runs;
    ``prepares`` names the one a ``PREPARE`` defines (its body is this statement's
    classification). ``deallocates`` is the name a ``DEALLOCATE`` drops, ``"*"`` for
    ``DEALLOCATE ALL`` / ``DISCARD ALL``. ``reasons`` pairs each category with why.
    """

    category: str
    kind: str
    reason: str
    text: str
    categories: frozenset[str] = frozenset()
    executes: str | None = None
    prepares: str | None = None
    deallocates: str | None = None
    reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Classification:
    """Every statement of a query string, and the worst category among them."""

    statements: tuple[StatementInfo, ...]
    category: str
    categories: frozenset[str] = frozenset()
    has_execute: bool = False

    @property
    def kind(self) -> str:
        """The kind of the first statement of the worst category ("" when empty)."""
        for st in self.statements:
            if st.category == self.category:
                return st.kind
        return ""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a query string: ``allow``, ``review`` or ``deny``.

    ``category``, ``kind``, ``reason`` and ``statement`` describe the statement (and the
    category of it) that caused the action; ``statement`` is None for an empty query or
    when no grant matches.
    """

    action: str
    category: str
    kind: str
    reason: str
    statement: StatementInfo | None


def _make_classification(statements: tuple[StatementInfo, ...]) -> Classification:
    cats: set[str] = set()
    for st in statements:
        cats |= st.categories
    worst = max(cats, key=_SEVERITY.__getitem__) if cats else "txn"
    return Classification(
        statements=statements,
        category=worst,
        categories=frozenset(cats),
        has_execute=any(st.executes is not None for st in statements),
    )


# ---------------------------------------------------------------------------------------
# The walk over one statement's JSON tree
# ---------------------------------------------------------------------------------------


class _Facts:
    """Categories and reasons collected while walking one statement."""

    __slots__ = ("found", "executes", "prepares", "deallocates")

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}
        self.executes: str | None = None
        self.prepares: str | None = None
        self.deallocates: str | None = None

    def add(self, category: str, reason: str) -> None:
        reasons = self.found.setdefault(category, [])
        if reason not in reasons:
            reasons.append(reason)


_FUNC_CLASS_CACHE: dict[str, tuple[str, str] | None] = {}


def _function_class(name: str) -> tuple[str, str] | None:
    """Return (category, why) for a function name on one of the lists, else None."""
    try:
        return _FUNC_CLASS_CACHE[name]
    except KeyError:
        pass
    result: tuple[str, str] | None = None
    if name in PRIVILEGED_FUNCTIONS or name.startswith(PRIVILEGED_FUNCTION_PREFIXES):
        result = ("privileged", f"calls privileged function {name}()")
    elif name in WRITING_FUNCTIONS or name.startswith(WRITING_FUNCTION_PREFIXES):
        result = ("write", f"calls writing function {name}()")
    if len(_FUNC_CLASS_CACHE) < 10000:
        _FUNC_CLASS_CACHE[name] = result
    return result


def _sval(node: Any) -> str | None:
    """The text of a String node or a string A_Const, else None."""
    if not isinstance(node, dict):
        return None
    if "String" in node:
        return node["String"].get("sval", "")
    const = node.get("A_Const")
    if isinstance(const, dict) and "sval" in const:
        return const["sval"].get("sval", "")
    return None


def _setting_value(node: Any) -> str | None:
    """A constant setting value as text (strings, integers, booleans), else None."""
    text = _sval(node)
    if text is not None:
        return text
    if isinstance(node, dict):
        const = node.get("A_Const")
        if isinstance(const, dict):
            if "ival" in const:
                return str(const["ival"].get("ival", 0))
            if "boolval" in const:
                return "true" if const["boolval"].get("boolval") else "false"
    return None


_TRUE_WORDS = frozenset({"on", "true", "yes", "1", "t", "y"})


def _setting_change(name: str, value: str | None, how: str, facts: _Facts) -> bool:
    """Record a change of a listed setting; return True when it was one."""
    name = name.lower()
    if name in PRIVILEGED_SETTINGS:
        facts.add("privileged", f"{how} changes {name}")
        return True
    if name in PARSER_SETTINGS and (value is None or value.lower() not in _TRUE_WORDS):
        facts.add("privileged", f"{how} may turn off {name}, which changes how statements parse")
        return True
    return False


def _check_funccall(fc: dict[str, Any], facts: _Facts) -> None:
    names = fc.get("funcname") or ()
    if not names:
        return
    name = _sval(names[-1])
    if name is None:
        return
    name = name.lower()
    found = _function_class(name)
    if found is not None:
        facts.add(*found)
        return
    args = fc.get("args") or ()
    if name == "set_config":
        setting = _sval(args[0]) if args else None
        if setting is None:
            facts.add("privileged", "calls set_config() with a setting name pgguard cannot read")
        else:
            value = _setting_value(args[1]) if len(args) > 1 else None
            _setting_change(setting, value, "set_config()", facts)
    elif name == "ts_rewrite" and len(args) == 2:
        facts.add("privileged", "calls ts_rewrite() with a SQL query text")


_DML_KINDS = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE",
              "MergeStmt": "MERGE"}
_LOCK_STRENGTH = {"LCS_FORKEYSHARE": "FOR KEY SHARE", "LCS_FORSHARE": "FOR SHARE",
                  "LCS_FORNOKEYUPDATE": "FOR NO KEY UPDATE", "LCS_FORUPDATE": "FOR UPDATE"}


_T_SKIP, _T_FUNC, _T_COLREF, _T_SET, _T_DML, _T_LOCK, _T_SELECT = range(7)
# Keys of the nodes the walk reacts to; every other node is only descended into.
# Constants, names and relation references hold no expressions: not descended into.
_TRIGGERS: dict[str, int] = {
    "A_Const": _T_SKIP, "String": _T_SKIP, "RangeVar": _T_SKIP,
    "FuncCall": _T_FUNC, "ColumnRef": _T_COLREF,
    "VariableSetStmt": _T_SET, "setstmt": _T_SET,
    "InsertStmt": _T_DML, "UpdateStmt": _T_DML, "DeleteStmt": _T_DML, "MergeStmt": _T_DML,
    "LockingClause": _T_LOCK, "SelectStmt": _T_SELECT,
}


def _walk(root: Any, facts: _Facts, dml: bool = True) -> None:
    """Look at every node under *root* for function calls and data-modifying parts.

    With ``dml`` false (the query of a plain EXPLAIN, which is planned and not run),
    nested INSERT/UPDATE/DELETE/MERGE, row locks and SELECT INTO do not count; function
    calls always do, because the planner may evaluate some of them.
    """
    stack = [root]
    pop = stack.pop
    push = stack.append
    triggers = _TRIGGERS
    while stack:
        node = pop()
        if type(node) is list:
            stack.extend(node)
            continue
        if type(node) is not dict:
            continue
        for key, value in node.items():
            vt = type(value)
            if vt is list:
                push(value)
            elif vt is dict:
                what = triggers.get(key)
                if what is None:
                    push(value)
                elif what == _T_SKIP:
                    continue
                elif what == _T_FUNC:
                    _check_funccall(value, facts)
                    push(value)
                elif what == _T_COLREF:
                    # t.nextval is functional notation for nextval(t) when t is a row.
                    fields = value.get("fields") or ()
                    if len(fields) > 1:
                        last = _sval(fields[-1])
                        if last is not None:
                            found = _function_class(last.lower())
                            if found is not None:
                                facts.add(found[0], found[1] + " (attribute notation)")
                elif what == _T_SET:
                    # CREATE FUNCTION ... SET role = x, ALTER ROLE/DATABASE ... SET ...
                    name = value.get("name")
                    if name:
                        args = value.get("args") or ()
                        _setting_change(name, _setting_value(args[0]) if args else None,
                                        "a SET clause", facts)
                    push(value)
                else:
                    if dml:
                        if what == _T_DML:
                            facts.add("write", f"{_DML_KINDS[key]} modifies data")
                        elif what == _T_LOCK:
                            strength = _LOCK_STRENGTH.get(value.get("strength", ""),
                                                          "FOR UPDATE")
                            facts.add("write", f"locks rows ({strength})")
                        elif "intoClause" in value:  # _T_SELECT
                            facts.add("ddl", "SELECT INTO creates a table")
                    push(value)


# ---------------------------------------------------------------------------------------
# Top-level statements
# ---------------------------------------------------------------------------------------

_OBJECT_NAMES = {
    "MATVIEW": "MATERIALIZED VIEW", "TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "TSDICTIONARY": "TEXT SEARCH DICTIONARY", "TSPARSER": "TEXT SEARCH PARSER",
    "TSTEMPLATE": "TEXT SEARCH TEMPLATE", "FDW": "FOREIGN DATA WRAPPER",
    "FOREIGN_SERVER": "SERVER", "OPCLASS": "OPERATOR CLASS", "OPFAMILY": "OPERATOR FAMILY",
    "EVENT_TRIGGER": "EVENT TRIGGER", "STATISTIC_EXT": "STATISTICS", "LARGEOBJECT": "LARGE OBJECT",
    "PUBLICATION_NAMESPACE": "PUBLICATION", "PUBLICATION_REL": "PUBLICATION",
    "TABCONSTRAINT": "TABLE", "DOMCONSTRAINT": "DOMAIN", "TABLESPACE": "TABLESPACE",
    "ACCESS_METHOD": "ACCESS METHOD", "USER_MAPPING": "USER MAPPING",
}
_PRIVILEGED_OBJECTS = frozenset({"EXTENSION", "FOREIGN DATA WRAPPER", "SERVER", "USER MAPPING",
                                 "SUBSCRIPTION", "EVENT TRIGGER", "LANGUAGE", "TABLESPACE"})


def _object(objtype: str | None) -> str:
    """``OBJECT_MATVIEW`` -> ``MATERIALIZED VIEW``."""
    if not objtype:
        return "OBJECT"
    name = objtype.removeprefix("OBJECT_")
    return _OBJECT_NAMES.get(name, name.replace("_", " "))


# Statement node -> (category, kind) for statements whose category is fixed.
_STATIC: dict[str, tuple[str, str]] = {
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

_STATIC_REASONS = {
    "read": "reads data",
    "write": "modifies data",
    "ddl": "changes the schema or database objects",
    "privileged": "needs privileges beyond data and schema changes",
    "txn": "controls the session or transaction",
}
_SPECIFIC_REASONS = {
    "DoStmt": "runs an anonymous code block (DO), which can execute any SQL",
    "CallStmt": "calls a procedure, which can execute any SQL and commit",
    "LockStmt": "takes a table lock",
    "NotifyStmt": "sends a notification to other sessions",
    "LoadStmt": "loads a shared library into the server",
    "CreateExtensionStmt": "installs an extension, which runs its scripts",
    "AlterExtensionStmt": "updates an extension, which runs its scripts",
    "TruncateStmt": "removes all rows of a table",
}

_TXN_KINDS = {
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


def _explain_analyzes(options: list[Any]) -> bool:
    for opt in options or ():
        de = opt.get("DefElem") if isinstance(opt, dict) else None
        if de and de.get("defname", "").lower() == "analyze":
            value = _setting_value(de.get("arg")) if "arg" in de else None
            # ANALYZE with no value, or any value other than a clear "off", executes.
            return value is None or value.lower() not in ("false", "off", "0", "no", "n", "f")
    return False


def _relpersistence_prefix(rel: Any) -> str:
    if isinstance(rel, dict):
        p = rel.get("relpersistence")
        if p == "t":
            return "TEMP "
        if p == "u":
            return "UNLOGGED "
    return ""


def _sql_function_body(node: dict[str, Any]) -> str | None:
    """The body of a LANGUAGE sql function given as a string, else None."""
    language = None
    body = None
    for opt in node.get("options") or ():
        de = opt.get("DefElem") if isinstance(opt, dict) else None
        if not de:
            continue
        if de.get("defname") == "language":
            language = (_sval(de.get("arg")) or "").lower()
        elif de.get("defname") == "as":
            arg = de.get("arg")
            items = arg.get("List", {}).get("items") if isinstance(arg, dict) else None
            if items:
                body = _sval(items[0])
    return body if language == "sql" else None


def _statement(node_type: str, node: dict[str, Any], facts: _Facts) -> str:
    """Classify one top-level statement node into *facts*; return its kind."""
    static = _STATIC.get(node_type)
    if static is not None:
        category, kind = static
        if node_type not in _DML_KINDS:  # the walk names INSERT/UPDATE/DELETE/MERGE itself
            facts.add(category, _SPECIFIC_REASONS.get(node_type) or _STATIC_REASONS[category])
        _walk({node_type: node}, facts)  # wrapped, so the walk sees the node's own type
        return kind

    if node_type == "DropStmt":
        kind = "DROP " + _object(node.get("removeType"))
        facts.add("privileged" if kind[5:] in _PRIVILEGED_OBJECTS else "ddl",
                  "drops database objects")
        return kind
    if node_type in ("AlterTableStmt", "RenameStmt", "AlterOwnerStmt", "AlterObjectSchemaStmt"):
        obj = _object(node.get("objtype") or node.get("renameType") or node.get("objectType"))
        suffix = {"RenameStmt": " RENAME", "AlterOwnerStmt": " OWNER",
                  "AlterObjectSchemaStmt": " SET SCHEMA"}.get(node_type, "")
        kind = f"ALTER {obj}{suffix}"
        facts.add("privileged" if obj in _PRIVILEGED_OBJECTS else "ddl",
                  "changes database objects")
        _walk(node, facts)  # ADD COLUMN ... DEFAULT nextval() runs for every row
        return kind
    if node_type == "CreateStmt":
        kind = f"CREATE {_relpersistence_prefix(node.get('relation'))}TABLE"
        facts.add("ddl", "creates a table")
        _walk(node, facts)
        return kind
    if node_type == "CreateSeqStmt":
        kind = f"CREATE {_relpersistence_prefix(node.get('sequence'))}SEQUENCE"
        facts.add("ddl", "creates a sequence")
        return kind
    if node_type == "ViewStmt":
        kind = f"CREATE {_relpersistence_prefix(node.get('view'))}VIEW"
        facts.add("ddl", "creates a view")
        _walk(node, facts)  # a view that calls nextval() writes whenever it is read
        return kind
    if node_type == "CreateTableAsStmt":
        into = node.get("into") or {}
        if node.get("objtype") == "OBJECT_MATVIEW":
            kind = "CREATE MATERIALIZED VIEW"
        else:
            kind = f"CREATE {_relpersistence_prefix(into.get('rel'))}TABLE AS"
        facts.add("ddl", "creates a table from a query")
        query = node.get("query") or {}
        if "ExecuteStmt" in query:
            facts.executes = query["ExecuteStmt"].get("name")
        _walk(query, facts)
        return kind
    if node_type == "CreateFunctionStmt":
        kind = "CREATE PROCEDURE" if node.get("is_procedure") else "CREATE FUNCTION"
        facts.add("ddl", "creates a routine")
        _walk(node, facts)  # BEGIN ATOMIC bodies are parsed into the tree
        body = _sql_function_body(node)
        if body:
            try:
                parsed = _loads(_pg.parse_sql_json(body))
            except Exception:  # noqa: BLE001 - the server will reject it; nothing to add
                parsed = None
            if parsed:
                _walk(parsed.get("stmts"), facts)
        return kind
    if node_type == "DefineStmt":
        facts.add("ddl", "creates a database object")
        return "CREATE " + _object(node.get("kind"))
    if node_type == "CreateRoleStmt":
        facts.add("ddl", "creates a role")
        return "CREATE " + node.get("stmt_type", "ROLESTMT_ROLE").removeprefix("ROLESTMT_")
    if node_type == "GrantStmt":
        facts.add("ddl", "changes privileges")
        return "GRANT" if node.get("is_grant") else "REVOKE"
    if node_type == "GrantRoleStmt":
        facts.add("ddl", "changes role membership")
        return "GRANT" if node.get("is_grant") else "REVOKE"
    if node_type == "VacuumStmt":
        facts.add("ddl", "runs maintenance on tables")
        return "VACUUM" if node.get("is_vacuumcmd") else "ANALYZE"
    if node_type == "CopyStmt":
        return _copy(node, facts)
    if node_type == "ExplainStmt":
        query = node.get("query") or {}
        analyze = _explain_analyzes(node.get("options"))
        facts.add("read", "shows a query plan")
        if analyze and len(query) == 1:
            # EXPLAIN ANALYZE runs the statement: it is whatever that statement is.
            inner_type, inner = next(iter(query.items()))
            inner_kind = _statement(inner_type, inner, facts)
            if inner_type != "SelectStmt":
                facts.add(max(facts.found, key=_SEVERITY.__getitem__),
                          f"EXPLAIN ANALYZE executes the {inner_kind}")
            return "EXPLAIN ANALYZE"
        _walk(query, facts, dml=False)
        return "EXPLAIN"
    if node_type == "PrepareStmt":
        facts.prepares = node.get("name")
        facts.add("read", "prepares a query")
        _walk(node.get("query"), facts)
        return "PREPARE"
    if node_type == "ExecuteStmt":
        facts.executes = node.get("name")
        _walk(node.get("params"), facts)
        return "EXECUTE"
    if node_type == "DeclareCursorStmt":
        facts.add("read", "declares a cursor")
        _walk(node.get("query"), facts)
        return "DECLARE CURSOR"
    if node_type == "FetchStmt":
        if node.get("ismove"):
            facts.add("txn", "moves a cursor")
            return "MOVE"
        facts.add("read", "fetches rows from a cursor")
        return "FETCH"
    if node_type == "TransactionStmt":
        category, kind = _TXN_KINDS.get(node.get("kind", ""), ("unknown", "TRANSACTION"))
        facts.add(category, "two-phase commit outlives the session" if category == "privileged"
                  else _STATIC_REASONS.get(category, "unrecognised transaction statement"))
        return kind
    if node_type == "VariableSetStmt":
        return _variable_set(node, facts)
    if node_type == "DiscardStmt":
        target = node.get("target", "DISCARD_ALL")
        if target == "DISCARD_ALL":
            facts.deallocates = "*"
        facts.add("txn", "resets session state")
        return target.replace("_", " ")
    if node_type == "DeallocateStmt":
        facts.deallocates = "*" if node.get("isall") else node.get("name")
        facts.add("txn", "drops a prepared statement")
        return "DEALLOCATE"

    facts.add("unknown", f"pgguard cannot classify {node_type} statements")
    return node_type


def _copy(node: dict[str, Any], facts: _Facts) -> str:
    is_from = bool(node.get("is_from"))
    direction = "FROM" if is_from else "TO"
    if node.get("is_program"):
        facts.add("privileged", f"COPY {direction} PROGRAM runs a shell command on the server")
        kind = f"COPY {direction} PROGRAM"
    elif node.get("filename") is not None:
        facts.add("privileged", f"COPY {direction} a server file")
        kind = f"COPY {direction} FILE"
    elif is_from:
        facts.add("write", "COPY FROM STDIN loads rows into a table")
        kind = "COPY FROM STDIN"
    else:
        facts.add("read", "COPY TO STDOUT reads data")
        kind = "COPY TO STDOUT"
    _walk(node, facts)  # COPY (DELETE ... RETURNING *) TO STDOUT deletes
    return kind


def _variable_set(node: dict[str, Any], facts: _Facts) -> str:
    how = node.get("kind", "")
    name = node.get("name") or ""
    lname = name.lower()
    reset = how in ("VAR_RESET", "VAR_RESET_ALL")
    verb = "RESET" if reset else "SET"
    if how == "VAR_RESET_ALL":
        facts.add("txn", "resets session settings")
        return "RESET ALL"
    if how == "VAR_SET_MULTI":
        # SET TRANSACTION / SESSION CHARACTERISTICS / TRANSACTION SNAPSHOT: READ WRITE is
        # no bypass, since every statement that then writes is classified on its own.
        facts.add("txn", "sets transaction characteristics")
        return f"SET {name.upper()}" if name else "SET TRANSACTION"
    args = node.get("args") or ()
    value = _setting_value(args[0]) if (how == "VAR_SET_VALUE" and args) else None
    if _setting_change(lname, value, verb, facts):
        if lname in PRIVILEGED_SETTINGS:
            return f"{verb} {lname.replace('_', ' ').upper()}"
        return f"{verb} {lname}"
    facts.add("txn", "changes a session setting")
    return verb


# ---------------------------------------------------------------------------------------
# classify()
# ---------------------------------------------------------------------------------------


def _finish(facts: _Facts, kind: str, text: str) -> StatementInfo:
    if not facts.found and facts.executes is None:
        facts.add("unknown", f"pgguard cannot classify {kind} statements")
    categories = set(facts.found)
    if facts.executes is not None:
        categories.add("unknown")
        facts.add("unknown", f"executes prepared statement {facts.executes}, "
                             "whose text pgguard does not know")
    category = max(categories, key=_SEVERITY.__getitem__)
    ordered = sorted(facts.found.items(), key=lambda kv: -_SEVERITY[kv[0]])
    reasons: list[str] = []
    for cat, rs in ordered:
        # "reads data" adds nothing next to "calls writing function nextval()".
        if reasons and cat in ("read", "txn"):
            break
        reasons.extend(rs)
    reason = "; ".join(reasons[:3])
    pairs = tuple((cat, r) for cat, rs in ordered for r in rs)
    return StatementInfo(category=category, kind=kind, reason=reason, text=text,
                         categories=frozenset(categories), executes=facts.executes,
                         prepares=facts.prepares, deallocates=facts.deallocates,
                         reasons=pairs)


def _unparseable(sql: str, message: str) -> Classification:
    message = " ".join(message.split())
    if len(message) > _REASON_MAX:
        message = message[:_REASON_MAX] + "..."
    st = StatementInfo(category="unknown", kind="UNPARSEABLE", reason=f"cannot parse: {message}",
                       text=sql, categories=frozenset({"unknown"}),
                       reasons=(("unknown", f"cannot parse: {message}"),))
    return _make_classification((st,))


def _classify_uncached(sql: str) -> Classification:
    if "\x00" in sql:
        # libpg_query stops at a NUL; the server would see something else (or refuse).
        return _unparseable(sql, "the text contains a NUL character")
    try:
        tree = _loads(_pg.parse_sql_json(sql))
    except Exception as exc:  # noqa: BLE001 - ParseError, encoding and recursion errors alike
        message = getattr(exc, "args", None) and exc.args[0]
        if not isinstance(message, str):
            message = type(exc).__name__
        return _unparseable(sql, message)
    stmts = tree.get("stmts") or ()
    infos = []
    ascii_text = sql.isascii()
    raw = None if ascii_text else sql.encode("utf-8")
    for raw_stmt in stmts:
        start = raw_stmt.get("stmt_location", 0)
        length = raw_stmt.get("stmt_len", 0)
        # Offsets are in bytes of the UTF-8 text; a length of 0 means "to the end".
        if ascii_text:
            text = sql[start:start + length] if length else sql[start:]
        else:
            assert raw is not None
            piece = raw[start:start + length] if length else raw[start:]
            text = piece.decode("utf-8", "replace")
        stmt = raw_stmt.get("stmt") or {}
        facts = _Facts()
        try:
            node_type, node = next(iter(stmt.items()))
            kind = _statement(node_type, node, facts)
        except Exception as exc:  # noqa: BLE001 - a tree shape we did not expect
            facts = _Facts()
            facts.add("unknown", f"pgguard cannot classify this statement ({type(exc).__name__})")
            kind = "UNKNOWN"
        infos.append(_finish(facts, kind, text.strip()))
    return _make_classification(tuple(infos))


class _Cache:
    """A bounded LRU of classifications keyed by statement text."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._data: OrderedDict[str, Classification] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Classification | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: Classification) -> None:
        # Statement texts are slices of the key: count the key twice.
        cost = 2 * len(key)
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._chars += cost
            while len(self._data) > self.max_entries or self._chars > self.max_chars:
                old, _ = self._data.popitem(last=False)
                self._chars -= 2 * len(old)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._data), "chars": self._chars, "hits": self.hits,
                    "misses": self.misses}


_CACHE = _Cache(CACHE_MAX_ENTRIES, CACHE_MAX_CHARS)


def cache_clear() -> None:
    """Empty the classification cache (tests and benchmarks)."""
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    """Entries, cached characters, hits and misses of the classification cache."""
    return _CACHE.info()


def classify(sql: str, prepared: Mapping[str, Classification] | None = None, *,
             standard_strings: bool = True) -> Classification:
    """Classify every statement of a query string.

    Never raises: text that cannot be parsed gives one ``unknown`` statement whose reason
    is ``cannot parse: <parser message>``. An empty string (or only comments and
    semicolons) gives a classification with no statements.

    Args:
        sql: the query string, as the client sent it (decoded from the client encoding).
        prepared: the session's SQL-level prepared statements by name (as kept by
            ``remember_prepared``). ``EXECUTE name`` takes the categories of the body
            found here; without it (or when the name is missing) it is ``unknown``.
        standard_strings: the backend's ``standard_conforming_strings``. pgguard parses
            as if it were on; when it is off and the text holds a backslash, the server
            could read string literals differently, so the text is ``unknown``.

    Returns:
        The classification (shared, immutable: cached results are returned as is).
    """
    if not standard_strings and "\\" in sql:
        return _unparseable(sql, "standard_conforming_strings is off and the text holds a "
                                 "backslash")
    if len(sql) > CACHE_MAX_TEXT:
        result = _classify_uncached(sql)
    else:
        result = _CACHE.get(sql)
        if result is None:
            result = _classify_uncached(sql)
            _CACHE.put(sql, result)
    if prepared is None or not result.has_execute:
        return result
    return _resolve_execute(result, prepared)


def _resolve_execute(cls: Classification, prepared: Mapping[str, Classification]
                     ) -> Classification:
    statements = []
    for st in cls.statements:
        body = prepared.get(st.executes) if st.executes is not None else None
        if body is None:
            statements.append(st)
            continue
        # The walker adds "unknown" for an EXECUTE only because the body was not known.
        categories = (st.categories - {"unknown"}) | body.categories
        category = max(categories, key=_SEVERITY.__getitem__)
        reason = f"executes prepared statement {st.executes}"
        inner = [b.reason for b in body.statements if b.category == body.category]
        if inner:
            reason += f": {inner[0]}"
        pairs = tuple(p for p in st.reasons if p[0] != "unknown")
        for b in body.statements:
            pairs += tuple((c, f"executes prepared statement {st.executes}: {r}")
                           for c, r in b.reasons)
        statements.append(StatementInfo(
            category=category, kind=st.kind, reason=reason, text=st.text,
            categories=frozenset(categories), executes=st.executes, reasons=pairs))
    return _make_classification(tuple(statements))


def remember_prepared(prepared: MutableMapping[str, Classification], cls: Classification,
                      completed: int | None = None) -> None:
    """Apply the PREPARE, DEALLOCATE and DISCARD ALL of a query string to a session's map.

    Two ways to call it:

    * after the server answered, with ``completed`` = the number of the text's statements
      that completed (CommandComplete messages seen): only those change the map;
    * before the server answered (``completed=None``): PREPAREs are recorded, but
      DEALLOCATE and DISCARD ALL forget nothing, since they may never run. Otherwise
      ``SELECT 1/0; DEALLOCATE p`` and then ``PREPARE p AS SELECT 1`` (refused by the
      server, which keeps the old ``p``) would make ``EXECUTE p`` look like a read.

    PREPARE of a name the map already holds keeps both bodies (the server refuses a
    duplicate name, so the old one may still be there): ``EXECUTE`` then needs every
    category of both, which errs towards refusing.

    Args:
        prepared: the session's map of SQL-level prepared statements, changed in place.
        cls: the classification of the query string.
        completed: how many of its statements completed; None when not known yet.
    """
    known = completed is not None
    statements = cls.statements if completed is None else cls.statements[:max(completed, 0)]
    for st in statements:
        if st.prepares is not None:
            old = prepared.get(st.prepares)
            previous = old.statements if old is not None else ()
            prepared[st.prepares] = _make_classification(previous + (st,))
        elif not known:
            continue
        elif st.deallocates == "*":
            prepared.clear()
        elif st.deallocates is not None:
            prepared.pop(st.deallocates, None)


# ---------------------------------------------------------------------------------------
# Grants and decisions
# ---------------------------------------------------------------------------------------

# Order used to pick the most permissive grant for vault_role_for(): what the database
# credential must be able to do matters most for the categories that change most.
_PERMISSIVE_ORDER = ("privileged", "ddl", "write", "read", "txn", "unknown")


class Policy:
    """The grants of one connection, applied to classifications.

    Args:
        connection: the connection's configuration (its ``grants`` are used).
    """

    def __init__(self, connection: ConnectionConfig) -> None:
        self.connection = connection
        self.grants: tuple[GrantConfig, ...] = tuple(connection.grants)
        self._memo: dict[frozenset[str], tuple[tuple[GrantConfig, ...], dict[str, str]]] = {}

    def grants_for(self, groups: Iterable[str]) -> list[GrantConfig]:
        """The grants matching any of *groups*, in configuration order.

        A grant whose ``groups`` holds ``"*"`` matches everyone. An empty list means the
        user may not connect.
        """
        return list(self._match(groups)[0])

    def _match(self, groups: Iterable[str]) -> tuple[tuple[GrantConfig, ...], dict[str, str]]:
        key = frozenset(groups)
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        matched = tuple(g for g in self.grants
                        if "*" in g.groups or not key.isdisjoint(g.groups))
        actions: dict[str, str] = {}
        for category in CATEGORIES:
            if matched:
                # The union of what the grants allow: the most permissive action wins.
                actions[category] = max((g.action(category) for g in matched),
                                        key=_ACTION_RANK.__getitem__)
            else:
                actions[category] = "deny"
        if len(self._memo) < 1024:
            self._memo[key] = (matched, actions)
        return matched, actions

    def actions_for(self, groups: Iterable[str]) -> dict[str, str]:
        """The effective action per category for *groups* (all ``deny`` with no grant)."""
        return dict(self._match(groups)[1])

    def decide(self, groups: Iterable[str], cls: Classification) -> Decision:
        """Decide what to do with a whole query string.

        The action of a statement is the strictest over the categories it touches; the
        action of the query string is the strictest over its statements (deny > review >
        allow). The decision names the first statement (and category) that set it.

        Args:
            groups: the user's groups (from the token).
            cls: the classification of the query string.

        Returns:
            The decision; ``allow`` for an empty query string, ``deny`` for everything
            when no grant matches.
        """
        matched, actions = self._match(groups)
        if not matched:
            st = cls.statements[0] if cls.statements else None
            return Decision("deny", cls.category, st.kind if st else "",
                            f"no grant on {self.connection.name} matches your groups", st)
        if not cls.statements:
            return Decision("allow", cls.category, "", "empty query", None)
        best: tuple[int, str, StatementInfo] | None = None
        for st in cls.statements:
            for category in sorted(st.categories, key=lambda c: -_SEVERITY[c]):
                rank = _ACTION_RANK[actions[category]]
                if best is None or rank < best[0]:
                    best = (rank, category, st)
            if best is not None and best[0] == 0:
                break
        assert best is not None
        rank, category, st = best
        action = _RANK_ACTION[rank]
        reason = st.reason
        if category != st.category:
            reason = "; ".join(r for c, r in st.reasons if c == category) or reason
        return Decision(action, category, st.kind, reason, st)

    def vault_role_for(self, groups: Iterable[str]) -> str | None:
        """The Vault role for a user's session.

        Rule: among the matching grants that name a ``vault_role``, take the most
        permissive one, comparing the actions (allow > review > deny) of ``privileged``,
        then ``ddl``, ``write``, ``read``, ``txn``, ``unknown`` in that order; on a tie
        the first in configuration order wins. None when no matching grant names a role
        (static credentials) or no grant matches.
        """
        best: tuple[tuple[int, ...], GrantConfig] | None = None
        for g in self._match(groups)[0]:
            if g.vault_role is None:
                continue
            score = tuple(_ACTION_RANK[g.action(c)] for c in _PERMISSIVE_ORDER)
            if best is None or score > best[0]:
                best = (score, g)
        return best[1].vault_role if best else None


def deny_message(decision: Decision, connection: str) -> str:
    """The client-facing ErrorResponse message for a ``deny`` or ``review`` decision.

    Put ``decision.reason`` in the ErrorResponse DETAIL field.

    Args:
        decision: the decision (``deny``, or ``review`` while approvals do not exist).
        connection: the connection name the client used.

    Returns:
        ``pgguard: ddl statement DROP TABLE is not allowed for your groups on appdb`` or
        ``pgguard: ddl statement ALTER TABLE requires approval``.
    """
    what = f"{decision.category} statement {decision.kind}".rstrip()
    if decision.action == "review":
        return f"pgguard: {what} requires approval"
    return f"pgguard: {what} is not allowed for your groups on {connection}"


# Every category the classifier emits must be one config knows about.
assert set(CATEGORY_SEVERITY) == set(CATEGORIES)
assert set(DEFAULT_ACTIONS) == set(CATEGORIES)
assert set(_ACTION_RANK) == set(ACTIONS)
