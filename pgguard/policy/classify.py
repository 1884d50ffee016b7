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

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..sql.nodes import sval
from ..sql.parse import MAX_CACHED_TEXT
from ..sql.parse import cache_clear as _parse_cache_clear
from ..sql.parse import cache_info as _parse_cache_info
from ..sql.parse import parse as _parse
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
from .results import Classification, StatementInfo, make_classification

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
        setting = sval(args[0]) if args else None
        if setting is None:
            facts.add("privileged", "calls set_config() with a setting name pgguard cannot read")
        else:
            value = _setting_value(args[1]) if len(args) > 1 else None
            _setting_change(setting, value, "set_config()", facts)
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
                        args = value.get("args") or ()
                        _setting_change(name, _setting_value(args[0]) if args else None,
                                        "a SET clause", facts)
                    push(value)
                else:
                    if dml:
                        if what == _T_DML:
                            facts.add("write", f"{DML_KINDS[key]} modifies data")
                        elif what == _T_LOCK:
                            strength = LOCK_STRENGTH.get(value.get("strength", ""),
                                                          "FOR UPDATE")
                            facts.add("write", f"locks rows ({strength})")
                        elif "intoClause" in value:  # _T_SELECT
                            facts.add("ddl", "SELECT INTO creates a table")
                    push(value)


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
            language = (sval(de.get("arg")) or "").lower()
        elif de.get("defname") == "as":
            arg = de.get("arg")
            items = arg.get("List", {}).get("items") if isinstance(arg, dict) else None
            if items:
                body = sval(items[0])
    return body if language == "sql" else None


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
        _walk(query, facts)
        return kind
    if node_type == "CreateFunctionStmt":
        kind = "CREATE PROCEDURE" if node.get("is_procedure") else "CREATE FUNCTION"
        facts.add("ddl", "creates a routine")
        _walk(node, facts)  # BEGIN ATOMIC bodies are parsed into the tree
        body = _sql_function_body(node)
        if body:
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
                         reasons=pairs)


def _unparseable(sql: str, message: str) -> Classification:
    message = " ".join(message.split())
    if len(message) > _REASON_MAX:
        message = message[:_REASON_MAX] + "..."
    st = StatementInfo(category="unknown", kind="UNPARSEABLE", reason=f"cannot parse: {message}",
                       text=sql, categories=frozenset({"unknown"}),
                       reasons=(("unknown", f"cannot parse: {message}"),))
    return make_classification((st,))


def _classify_uncached(sql: str) -> Classification:
    if "\x00" in sql:
        # libpg_query stops at a NUL; the server would see something else (or refuse).
        return _unparseable(sql, "the text contains a NUL character")
    parsed = _parse(sql)
    if parsed.error is not None:
        return _unparseable(sql, parsed.error)
    infos = []
    for stmt in parsed.statements:
        facts = _Facts()
        try:
            node_type, node = next(iter(stmt.node.items()))
            kind = _statement(node_type, node, facts)
        except Exception as exc:  # noqa: BLE001 - a tree shape we did not expect
            facts = _Facts()
            facts.add("unknown", f"pgguard cannot classify this statement ({type(exc).__name__})")
            kind = "UNKNOWN"
        infos.append(_finish(facts, kind, stmt.text))
    return make_classification(tuple(infos))


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
    """Empty the classification cache and the shared parse cache (tests and benchmarks)."""
    _CACHE.clear()
    _parse_cache_clear()


def cache_info() -> dict[str, int]:
    """Entries, cached characters, hits and misses of the classification cache, and the
    same of the shared parse cache as ``parse_entries``, ``parse_hits``, ``parse_misses``,
    with ``parses``: the parser calls so far."""
    info = _CACHE.info()
    for key, value in _parse_cache_info().items():
        info[key if key == "parses" else f"parse_{key}"] = value
    return info


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
    return resolve_execute(result, prepared)
