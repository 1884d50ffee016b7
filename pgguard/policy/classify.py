"""Classification: what each statement of a query string does, on PostgreSQL's parse tree.

``classify()`` takes the parse of the text from :func:`pgguard.sql.parse.parse` (shared
with the masking planner: one parser call per text) and walks the JSON tree of every
statement. Each statement gets the set of categories it touches (``read``, ``write``,
``ddl``, ``privileged``, ``txn``, ``unknown``), a kind (``"DROP TABLE"``) and a reason.
Classifications are cached by text in a bounded LRU of their own, so a repeated text costs
a dictionary lookup, not a walk.

The lists the walk reads are in :mod:`.lists`. This module takes values and returns
classifications: it never sees a socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..sql.literals import LiteralKey, literal_key, shift_offset
from ..sql.lru import BoundedLRU
from ..sql.nodes import (
    NO_ARG,
    def_boolean,
    def_elems,
    def_string,
    def_values,
    guc_boolean,
    literal_reads,
    sval,
)
from ..sql.parse import MAX_CACHED_TEXT, literals_covered
from ..sql.parse import cache_clear as _parse_cache_clear
from ..sql.parse import cache_info as _parse_cache_info
from ..sql.parse import parse as _parse
from ..wire.encodings import refusal as _encoding_refusal
from .inert import is_inert
from .lists import (
    DML_KINDS,
    LOCK_STRENGTH,
    OBJECT_NAMES,
    PARSER_SETTINGS,
    PRIVILEGED_OBJECTS,
    PRIVILEGED_SETTINGS,
    SEVERITY,
    SPECIFIC_REASONS,
    STATIC_REASONS,
    STATIC_STATEMENTS,
    TXN_KINDS,
    function_class,
)
from .prepared import resolve_execute
from .results import (
    ANY_SETTING,
    GUARDED_SETTINGS,
    UNKNOWN_EXECUTE_WITH_PARAMS,
    Classification,
    StatementInfo,
    make_classification,
)

__all__ = ["CACHE_MAX_TEXT", "cache_clear", "cache_info", "classify"]

# Texts longer than this are classified but never cached (they would evict everything);
# the same bound as the parse cache, so a text is cached in both or in neither.
CACHE_MAX_TEXT = MAX_CACHED_TEXT
CACHE_MAX_ENTRIES = 4096
CACHE_MAX_CHARS = 16 * 1024 * 1024
_REASON_MAX = 200


# ---------------------------------------------------------------------------------------
# The walk over one statement's JSON tree
# ---------------------------------------------------------------------------------------


class _Facts:
    """Categories and reasons collected while walking one statement."""

    __slots__ = ("found", "executes", "prepares", "deallocates", "refusal", "encoding_params",
                 "settings", "cursor")

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}
        self.executes: str | None = None
        self.prepares: str | None = None
        self.deallocates: str | None = None
        self.refusal: str | None = None
        self.encoding_params: set[int] = set()
        # Changes of the settings guardrails hold (policy/guardrails.py judges them).
        self.settings: list[tuple[str, tuple[str | None, ...] | None]] = []
        self.cursor: str | None = None   # a DECLARE's or a FETCH's (result limits)

    def add(self, category: str, reason: str) -> None:
        reasons = self.found.setdefault(category, [])
        if reason not in reasons:
            reasons.append(reason)

    def refuse(self, reason: str) -> None:
        """No grant may run the statement (the first reason is kept)."""
        if self.refusal is None:
            self.refusal = reason


def _setting_value(node: Any) -> str | None:
    """A constant setting value as text (strings, integers, booleans), else None."""
    text = sval(node)
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


#: ``values`` of a change that restores the setting's reset value (``SET … TO DEFAULT``,
#: ``RESET``, ``SET … FROM CURRENT``, a NULL value to set_config()).
RESTORES = None


def _setting_change(name: str, values: list[str | None] | None, how: str,
                    facts: _Facts) -> bool:
    """Record a change of a listed setting; return True when it was one.

    Args:
        name: the setting, as written (PostgreSQL looks settings up case-insensitively).
        values: the new value's parts as text, None for a part pgguard cannot read;
            :data:`RESTORES` for a change back to the reset value.
        how: the statement form, for the reason (``SET``, ``set_config()``).
    """
    name = name.lower()
    if name in GUARDED_SETTINGS:
        facts.settings.append((name, None if values is RESTORES else tuple(values)))
    if name == "client_encoding":
        _encoding_change(values, how, facts)
        return False
    if name in PRIVILEGED_SETTINGS:
        facts.add("privileged", f"{how} changes {name}")
        return True
    if name in PARSER_SETTINGS:
        # On only when PostgreSQL's parse_bool reads the one value as true; a reset may
        # restore a server default that is off.
        if values is RESTORES or len(values) != 1 or values[0] is None \
                or guc_boolean(values[0]) is not True:
            facts.add("privileged",
                      f"{how} may turn off {name}, which changes how statements parse")
            return True
    return False


def _transaction_modes(options: Any, setting: str, facts: _Facts) -> None:
    """Note READ WRITE / READ ONLY of BEGIN, START TRANSACTION, SET TRANSACTION and SET
    SESSION CHARACTERISTICS as a change of *setting* (what PostgreSQL sets from them)."""
    for arg in def_values(options, "transaction_read_only"):
        facts.settings.append((setting, (None if arg is NO_ARG else _setting_value(arg),)))


def _encoding_change(values: list[str | None] | None, how: str, facts: _Facts) -> None:
    """Refuse a client_encoding pgguard cannot read statements in.

    A change back to the reset value is allowed: that value is the one the session
    started with (the startup packet's, or the role's or database's default), which the
    gateway checked before the session began (see docs/policy.md).
    """
    if values is RESTORES:
        return
    for value in values or [None]:
        if value is None:
            facts.refuse(f"{how} sets client_encoding to a value pgguard cannot read; "
                         "only an ASCII-safe encoding such as UTF8 may be set")
            return
        why = _encoding_refusal(value)
        if why is not None:
            facts.refuse(f"{how}: {why}")
            return


#: set_config(setting_name text, new_value text, is_local boolean): its parameter names,
#: for calls in named notation.
_SET_CONFIG_PARAMS = ("setting_name", "new_value", "is_local")


def _call_args(args: Any, params: tuple[str, ...]) -> dict[str, Any] | None:
    """A call's arguments by parameter name, positional and named notation alike (None
    when a name is not one of *params* or is given twice: PostgreSQL finds no function)."""
    out: dict[str, Any] = {}
    for i, arg in enumerate(args or ()):
        named = arg.get("NamedArgExpr") if isinstance(arg, dict) else None
        if named is not None:
            key = (named.get("name") or "").lower()
            arg = named.get("arg")
        elif i < len(params):
            key = params[i]
        else:
            return None
        if key not in params or key in out:
            return None
        out[key] = arg
    return out


def _is_null(n: Any) -> bool:
    const = n.get("A_Const") if isinstance(n, dict) else None
    return isinstance(const, dict) and bool(const.get("isnull"))


def _set_values(stmt: dict[str, Any]) -> list[str | None] | None:
    """The values a ``VariableSetStmt`` sets, or RESTORES (DEFAULT, RESET, FROM CURRENT)."""
    if stmt.get("kind") != "VAR_SET_VALUE":
        return RESTORES
    return [_setting_value(a) for a in stmt.get("args") or ()]


def _check_funccall(fc: dict[str, Any], facts: _Facts) -> None:
    names = fc.get("funcname") or ()
    if not names:
        return
    name = sval(names[-1])
    if name is None:
        return
    name = name.lower()
    found = function_class(name)
    if found is not None:
        facts.add(*found)
        return
    args = fc.get("args") or ()
    if name == "set_config":
        byname = _call_args(args, _SET_CONFIG_PARAMS) or {}
        setting = sval(byname.get("setting_name"))
        if setting is None:
            facts.add("privileged", "calls set_config() with a setting name pgguard cannot read")
            # It may name client_encoding.
            facts.refuse("set_config() with a setting name pgguard cannot read may change "
                         "client_encoding")
            facts.settings.append((ANY_SETTING, (None,)))
        else:
            value = byname.get("new_value")
            param = value.get("ParamRef") if isinstance(value, dict) else None
            if setting.lower() == "client_encoding" and param is not None \
                    and isinstance(param.get("number"), int):
                # psycopg's set_client_encoding(): the value comes with Bind, where the
                # session checks it (StatementInfo.encoding_params).
                facts.encoding_params.add(param["number"])
                return
            if _is_null(value):
                values = RESTORES  # a NULL value resets the setting
            else:
                values = [_setting_value(value)]
            _setting_change(setting, values, "set_config()", facts)
    elif name == "ts_rewrite" and len(args) == 2:
        facts.add("privileged", "calls ts_rewrite() with a SQL query text")


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
                        last = sval(fields[-1])
                        if last is not None:
                            found = function_class(last.lower())
                            if found is not None:
                                facts.add(found[0], found[1] + " (attribute notation)")
                elif what == _T_SET:
                    # CREATE FUNCTION ... SET role = x, ALTER ROLE/DATABASE ... SET ...
                    name = value.get("name")
                    if name:
                        _setting_change(name, _set_values(value), "a SET clause", facts)
                    push(value)
                else:
                    if dml:
                        if what == _T_DML:
                            facts.add("write", f"{DML_KINDS[key]} modifies data")
                            _check_settings_view(key, value, facts)
                        elif what == _T_LOCK:
                            strength = LOCK_STRENGTH.get(value.get("strength", ""),
                                                          "FOR UPDATE")
                            facts.add("write", f"locks rows ({strength})")
                        elif "intoClause" in value:  # _T_SELECT
                            facts.add("ddl", "SELECT INTO creates a table")
                    push(value)


def _check_settings_view(key: str, stmt: dict[str, Any], facts: _Facts) -> None:
    """``UPDATE pg_settings SET setting = … WHERE name = …`` calls set_config() (a rule
    of the view) for every row it updates: any setting, client_encoding and role among
    them. Matched on the relation name alone, in any schema and case: fail closed."""
    if key not in ("UpdateStmt", "MergeStmt"):
        return
    rel = stmt.get("relation") or {}
    if (rel.get("relname") or "").lower() == "pg_settings":
        facts.add("privileged", f"{DML_KINDS[key]} of pg_settings changes settings")
        facts.refuse(f"{DML_KINDS[key]} of pg_settings changes settings (client_encoding, "
                     "role …) in ways pgguard cannot check; use SET")


# ---------------------------------------------------------------------------------------
# Top-level statements
# ---------------------------------------------------------------------------------------


def _object(objtype: str | None) -> str:
    """``OBJECT_MATVIEW`` -> ``MATERIALIZED VIEW``."""
    if not objtype:
        return "OBJECT"
    name = objtype.removeprefix("OBJECT_")
    return OBJECT_NAMES.get(name, name.replace("_", " "))


def _explain_analyzes(options: list[Any]) -> bool:
    """Whether EXPLAIN runs its statement, as ``ExplainQuery`` decides: every option is
    read in order and the last ``analyze`` wins (``EXPLAIN (ANALYZE false, ANALYZE true)``
    runs it), with ``defGetBoolean``'s values. A value PostgreSQL rejects stops the
    statement; it counts as running anyway. The name is compared case-folded, which only
    adds ``"ANALYZE"`` (an error to PostgreSQL)."""
    values = [arg for name, arg in def_elems(options) if name.lower() == "analyze"]
    if not values:
        return False
    return any(def_boolean(v) is None for v in values) or def_boolean(values[-1]) is True


def _relpersistence_prefix(rel: Any) -> str:
    if isinstance(rel, dict):
        p = rel.get("relpersistence")
        if p == "t":
            return "TEMP "
        if p == "u":
            return "UNLOGGED "
    return ""


def _sql_function_bodies(node: dict[str, Any]) -> list[str]:
    """The string bodies of a function that may be LANGUAGE sql, else [].

    PostgreSQL rejects a repeated LANGUAGE or AS; read every one anyway, and take the
    function for SQL when any LANGUAGE names sql in any case (PostgreSQL matches the
    name exactly) or none is given (an error unless the body is BEGIN ATOMIC).
    """
    options = node.get("options") or ()
    languages = [(def_string(a) or "").lower() for a in def_values(options, "language")]
    if languages and "sql" not in languages:
        return []
    bodies: list[str] = []
    for arg in def_values(options, "as"):
        items = arg.get("List", {}).get("items") if isinstance(arg, dict) else None
        for item in items or ():
            text = sval(item)
            if text is not None:
                bodies.append(text)
    return bodies


def _statement(node_type: str, node: dict[str, Any], facts: _Facts) -> str:
    """Classify one top-level statement node into *facts*; return its kind."""
    static = STATIC_STATEMENTS.get(node_type)
    if static is not None:
        category, kind = static
        if node_type not in DML_KINDS:  # the walk names INSERT/UPDATE/DELETE/MERGE itself
            facts.add(category, SPECIFIC_REASONS.get(node_type) or STATIC_REASONS[category])
        _walk({node_type: node}, facts)  # wrapped, so the walk sees the node's own type
        return kind

    if node_type == "DropStmt":
        kind = "DROP " + _object(node.get("removeType"))
        facts.add("privileged" if kind[5:] in PRIVILEGED_OBJECTS else "ddl",
                  "drops database objects")
        return kind
    if node_type in ("AlterTableStmt", "RenameStmt", "AlterOwnerStmt", "AlterObjectSchemaStmt"):
        obj = _object(node.get("objtype") or node.get("renameType") or node.get("objectType"))
        suffix = {"RenameStmt": " RENAME", "AlterOwnerStmt": " OWNER",
                  "AlterObjectSchemaStmt": " SET SCHEMA"}.get(node_type, "")
        kind = f"ALTER {obj}{suffix}"
        facts.add("privileged" if obj in PRIVILEGED_OBJECTS else "ddl",
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
            if query["ExecuteStmt"].get("params"):
                facts.refuse(UNKNOWN_EXECUTE_WITH_PARAMS)  # as for EXECUTE itself
        _walk(query, facts)
        return kind
    if node_type == "CreateFunctionStmt":
        kind = "CREATE PROCEDURE" if node.get("is_procedure") else "CREATE FUNCTION"
        facts.add("ddl", "creates a routine")
        _walk(node, facts)  # BEGIN ATOMIC bodies are parsed into the tree
        for body in _sql_function_bodies(node):
            # A body that does not parse adds nothing: the server will reject it.
            _walk([st.node for st in _parse(body).statements], facts)
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
                facts.add(max(facts.found, key=SEVERITY.__getitem__),
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
        if node.get("params"):
            # A statement prepared with Parse (not in the session's map) may be
            # set_config('client_encoding', $1, ...): its parameters come from here, where
            # the session does not look. resolve_execute() lifts this for a known body.
            facts.refuse(UNKNOWN_EXECUTE_WITH_PARAMS)
        return "EXECUTE"
    if node_type == "DeclareCursorStmt":
        facts.add("read", "declares a cursor")
        facts.cursor = node.get("portalname")
        _walk(node.get("query"), facts)
        return "DECLARE CURSOR"
    if node_type == "FetchStmt":
        if node.get("ismove"):
            facts.add("txn", "moves a cursor")
            return "MOVE"
        facts.add("read", "fetches rows from a cursor")
        facts.cursor = node.get("portalname")
        return "FETCH"
    if node_type == "TransactionStmt":
        _transaction_modes(node.get("options"), "transaction_read_only", facts)
        category, kind = TXN_KINDS.get(node.get("kind", ""), ("unknown", "TRANSACTION"))
        facts.add(category, "two-phase commit outlives the session" if category == "privileged"
                  else STATIC_REASONS.get(category, "unrecognised transaction statement"))
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
    # COPY … ENCODING converts the data to that encoding: one that is not ASCII-safe lets
    # a multibyte character hide a delimiter or a backslash from the gateway (masking
    # splits COPY rows on bytes). PostgreSQL rejects a repeated option; read all.
    for arg in def_values(node.get("options"), "encoding"):
        text = def_string(arg) if arg is not NO_ARG else None
        why = _encoding_refusal(text) if text is not None else "a value pgguard cannot read"
        if why is not None:
            facts.refuse(f"COPY ENCODING: {why.replace('client_encoding ', '', 1)}")
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
        # no bypass of policy, since every statement that then writes is classified on its
        # own; the read_only guardrail still sees it (a backstop for the classifier).
        _transaction_modes(node.get("args"), "default_transaction_read_only"
                           if lname == "session characteristics" else "transaction_read_only",
                           facts)
        facts.add("txn", "sets transaction characteristics")
        return f"SET {name.upper()}" if name else "SET TRANSACTION"
    if _setting_change(lname, _set_values(node), verb, facts):
        if lname in PRIVILEGED_SETTINGS:
            return f"{verb} {lname.replace('_', ' ').upper()}"
        return f"{verb} {lname}"
    facts.add("txn", "changes a session setting")
    return verb


# ---------------------------------------------------------------------------------------
# classify()
# ---------------------------------------------------------------------------------------


#: Statements whose parameters come with the Bind of the same execution, so the session
#: can check a client_encoding given as one (anywhere else, a function's or a PREPARE's
#: parameter, it cannot).
_BOUND_PARAMS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt",
                           "MergeStmt"})


def _finish(facts: _Facts, kind: str, text: str, node_type: str = "") -> StatementInfo:
    if facts.encoding_params and node_type not in _BOUND_PARAMS:
        facts.refuse("set_config() sets client_encoding from a parameter pgguard cannot "
                     "check here; set a literal ASCII-safe encoding such as UTF8")
        facts.encoding_params.clear()
    if not facts.found and facts.executes is None:
        facts.add("unknown", f"pgguard cannot classify {kind} statements")
    categories = set(facts.found)
    if facts.executes is not None:
        categories.add("unknown")
        facts.add("unknown", f"executes prepared statement {facts.executes}, "
                             "whose text pgguard does not know")
    category = max(categories, key=SEVERITY.__getitem__)
    ordered = sorted(facts.found.items(), key=lambda kv: -SEVERITY[kv[0]])
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
                         reasons=pairs, refusal=facts.refusal,
                         encoding_params=tuple(sorted(facts.encoding_params)),
                         settings=tuple(facts.settings), cursor=facts.cursor)


def _unparseable(sql: str, message: str) -> Classification:
    message = " ".join(message.split())
    if len(message) > _REASON_MAX:
        message = message[:_REASON_MAX] + "..."
    st = StatementInfo(category="unknown", kind="UNPARSEABLE", reason=f"cannot parse: {message}",
                       text=sql, categories=frozenset({"unknown"}),
                       reasons=(("unknown", f"cannot parse: {message}"),))
    return make_classification((st,))


def _classify_uncached(sql: str, lk: LiteralKey | None = None
                       ) -> tuple[Classification, tuple[int, ...] | None]:
    """The classification of *sql*, and when *lk* is given and the walk read no
    constant's value, the character offsets of its statements (for :func:`_rebase`)."""
    if "\x00" in sql:
        # libpg_query stops at a NUL; the server would see something else (or refuse).
        return _unparseable(sql, "the text contains a NUL character"), None
    parsed = _parse(sql)
    if parsed.error is not None:
        return _unparseable(sql, parsed.error), None
    mark = literal_reads()
    infos = []
    for stmt in parsed.statements:
        facts = _Facts()
        node_type = ""
        try:
            node_type, node = next(iter(stmt.node.items()))
            kind = _statement(node_type, node, facts)
        except Exception as exc:  # noqa: BLE001 - a tree shape we did not expect
            facts = _Facts()
            facts.add("unknown", f"pgguard cannot classify this statement ({type(exc).__name__})")
            kind = "UNKNOWN"
        info = _finish(facts, kind, stmt.text, node_type)
        if node_type and is_inert(node_type, node):
            info = replace(info, inert=True)
        infos.append(info)
    result = make_classification(tuple(infos))
    if lk is None or literal_reads() != mark + 1 or not literals_covered(sql, parsed, lk):
        return result, None
    return result, tuple(st.start for st in parsed.statements)


def _rebase(entry: _KeyEntry, sql: str, lk: LiteralKey) -> Classification:
    """The cached classification of another text of *sql*'s key, with *sql*'s statement
    texts: the texts differ only inside the constants, so each statement's offset moves
    by the change in length of the constants before it."""
    result, old_spans, starts = entry
    new_spans = lk.spans
    infos = []
    for st, start in zip(result.statements, starts, strict=True):
        end = start + len(st.text)
        infos.append(replace(st, text=sql[shift_offset(start, old_spans, new_spans):
                                          shift_offset(end, old_spans, new_spans)]))
    return replace(result, statements=tuple(infos))


#: A literal-independent classification: (it, the constants' spans in its text, the
#: character offset of each statement's text).
_KeyEntry = tuple[Classification, tuple[tuple[int, int], ...], tuple[int, ...]]


_CACHE = BoundedLRU(CACHE_MAX_ENTRIES, CACHE_MAX_CHARS, cost_name="chars")
# Literal-independent classifications by literal-blind key (pgguard.sql.literals).
_KEY_CACHE = BoundedLRU(CACHE_MAX_ENTRIES, CACHE_MAX_CHARS, cost_name="chars")


def _text_cost(key: str) -> int:
    # The cached statement texts are slices as long as the key: count the key twice.
    return 2 * len(key)


def cache_clear() -> None:
    """Empty the classification caches and the shared parse cache (tests and benchmarks)."""
    _CACHE.clear()
    _KEY_CACHE.clear()
    _parse_cache_clear()


def cache_info() -> dict[str, int]:
    """Entries, cached characters, hits and misses of the classification cache, and the
    same of the shared parse cache as ``parse_entries``, ``parse_hits``, ``parse_misses``,
    with ``parses``: the parser calls so far; ``key_entries``, ``key_hits`` and
    ``key_misses`` of the cache by literal-blind key."""
    info = _CACHE.info()
    for key, value in _KEY_CACHE.info().items():
        info[f"key_{key}"] = value
    for key, value in _parse_cache_info().items():
        info[key if key == "parses" else f"parse_{key}"] = value
    return info


def _classify_keyed(sql: str, standard_strings: bool) -> Classification:
    """Classify a text the exact-text cache does not hold: from the entry of its
    literal-blind key when there is one, else by walking its parse (and keeping the
    result by key when the walk read no constant's value)."""
    lk = literal_key(sql, standard_strings)
    if lk is None or not lk.spans:
        result, _ = _classify_uncached(sql)
        _CACHE.put(sql, result, _text_cost(sql))
        return result
    entry = _KEY_CACHE.get(lk.key)
    if entry is not None:
        # Not put in the exact-text cache: a new constant every statement would evict
        # everything there.
        return _rebase(entry, sql, lk)
    result, starts = _classify_uncached(sql, lk)
    _CACHE.put(sql, result, _text_cost(sql))
    if starts is not None:
        _KEY_CACHE.put(lk.key, (result, lk.spans, starts), _text_cost(lk.key))
    return result


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
        result, _ = _classify_uncached(sql)
    else:
        result = _CACHE.get(sql)
        if result is None:
            result = _classify_keyed(sql, standard_strings)
    if prepared is None or not result.has_execute:
        return result
    return resolve_execute(result, prepared)
