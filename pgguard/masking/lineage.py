"""Column lineage from the parse tree: which source columns feed each output column.

The planner walks pglast's JSON parse tree (``pglast.parser.parse_sql_json``, fast: the
tree is built in C and decoded by :mod:`json`) and computes, for every output column of a
statement, a :class:`Lin`: the base columns whose value it is exactly (``direct``), the
base columns that feed it through any transformation (``mixed``), and whether its origin
cannot be proven (``opaque``). Views and materialized views are expanded through their
definitions, so a view column carries the lineage of the base columns below it.

A :class:`Lin` becomes a :class:`~pgguard.masking.rules.Mask` through the rules: a column
that is exactly one masked column takes that rule's strategy; anything that mixes or
transforms masked data is redacted (or nulled when a ``null`` rule is involved); anything
unproven is redacted. Predicates (WHERE, JOIN ON, GROUP BY, ORDER BY, HAVING, DISTINCT,
FILTER, window clauses) are collected separately for ``deny_predicates``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from pglast import parser as pg_parser

from ..errors import PolicyDenied
from .catalog import SYSTEM_SCHEMAS, Catalog, Relation
from .rules import Mask, RuleSet

log = logging.getLogger(__name__)

Origin = tuple[str, str, str]
_EMPTY: frozenset[Origin] = frozenset()

# System relations whose columns hold copies of table values or other sessions' query
# texts: their every column is treated as unproven.
VALUE_CARRYING_SYSTEM_RELATIONS = frozenset({
    "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data",
    "pg_stat_activity", "pg_stat_statements", "pg_stat_statements_info", "pg_largeobject",
    "pg_prepared_xacts",
})
# Builtins that run SQL given as text, or read other sessions' data: their result cannot
# be traced to columns.
OPAQUE_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "table_to_xml",
    "table_to_xmlschema", "table_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
    "database_to_xmlschema", "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite",
    "pg_stat_get_activity", "pg_mcv_list_items", "dblink", "dblink_get_result",
    "dblink_fetch", "pg_read_file", "pg_read_binary_file", "lo_get", "loread",
    "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes", "pg_logical_slot_peek_binary_changes",
    "pg_settings_get_flags", "xpath_table",
})
# Builtins that return session configuration, not table data: their value is clear when
# their arguments are. A setting can only hold a masked value if set_config() put it there,
# and set_config() with a masked or untraceable argument is refused (SINK_FUNCTIONS,
# _funccall); ``SET`` takes literals only. (SHOW and pg_settings read the same values.)
CONFIG_FUNCTIONS = frozenset({"current_setting"})
# Functions that store or send their arguments somewhere a later statement (or another
# session) can read them back unmasked.
SINK_FUNCTIONS = frozenset({
    "pg_notify", "set_config", "pg_logical_emit_message", "dblink_exec", "dblink_send_query",
    "lo_from_bytea", "lo_put", "lowrite", "pg_file_write",
})
# Aggregates whose result says nothing of the values themselves.
CLEAN_AGGREGATES = frozenset({"count"})
# Set-returning builtins and the names of their output columns ("" = the function name
# or the alias, as PostgreSQL names a scalar function's column).
SRF_COLUMNS: dict[str, tuple[str, ...]] = {
    "jsonb_array_elements": ("value",), "json_array_elements": ("value",),
    "jsonb_array_elements_text": ("value",), "json_array_elements_text": ("value",),
    "jsonb_each": ("key", "value"), "json_each": ("key", "value"),
    "jsonb_each_text": ("key", "value"), "json_each_text": ("key", "value"),
    "jsonb_object_keys": ("",), "json_object_keys": ("",), "generate_series": ("",),
    "generate_subscripts": ("",), "regexp_matches": ("",), "regexp_split_to_table": ("",),
    "string_to_table": ("",), "jsonb_path_query": ("",), "unnest": ("",),
}
WRITE_KINDS = frozenset({"insert", "update", "delete", "merge", "call", "do", "unknown",
                         "copy_in", "create_table_as"})
DDL_NODES = frozenset({
    "CreateStmt", "AlterTableStmt", "DropStmt", "ViewStmt", "CreateTableAsStmt", "RenameStmt",
    "CreateFunctionStmt", "AlterFunctionStmt", "CreateSchemaStmt", "CreateExtensionStmt",
    "AlterExtensionStmt", "CreateForeignTableStmt", "ImportForeignSchemaStmt",
    "CompositeTypeStmt", "CreateDomainStmt", "AlterDomainStmt", "CreateEnumStmt",
    "AlterObjectSchemaStmt", "RefreshMatViewStmt", "CreateTrigStmt", "RuleStmt",
    "DropOwnedStmt", "ReassignOwnedStmt", "AlterOwnerStmt", "DefineStmt", "VariableSetStmt",
    "DiscardStmt", "SelectIntoStmt",
})
MAX_VIEW_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Lin:
    """Lineage of one value.

    Attributes:
        direct: base columns whose value this is, unchanged.
        mixed: base columns that feed it through a transformation.
        opaque: why its origin cannot be proven, or None.
    """

    direct: frozenset[Origin] = _EMPTY
    mixed: frozenset[Origin] = _EMPTY
    opaque: str | None = None

    def derived(self) -> Lin:
        """The lineage of a value computed from this one."""
        if not self.direct:
            return self
        return Lin(_EMPTY, self.direct | self.mixed, self.opaque)

    @property
    def origins(self) -> frozenset[Origin]:
        return self.direct | self.mixed


CLEAN = Lin()


def union(lins: Iterable[Lin]) -> Lin:
    """A value that is one of several values (UNION branches, USING columns)."""
    direct: set[Origin] = set()
    mixed: set[Origin] = set()
    opaque = None
    for lin in lins:
        direct |= lin.direct
        mixed |= lin.mixed
        opaque = opaque or lin.opaque
    if not direct and not mixed and opaque is None:
        return CLEAN
    return Lin(frozenset(direct), frozenset(mixed), opaque)


def derive(lins: Iterable[Lin]) -> Lin:
    """A value computed from several values."""
    return union(lins).derived()


def _opaque(reason: str) -> Lin:
    return Lin(opaque=reason)


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """Format of a ``COPY … TO STDOUT`` as written in the statement."""

    format: str = "text"          # text | csv | binary
    delimiter: str = "\t"
    quote: str = '"'
    escape: str = '"'
    null: str = "\\N"
    header: bool = False


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One output column of a plan: its name, its mask (None = clear) and the base
    columns it is exactly, for the cross-check with RowDescription."""

    name: str
    mask: Mask | None
    direct: frozenset[Origin] = _EMPTY


@dataclass(frozen=True, slots=True)
class MaskPlan:
    """What masking does to the results of one statement.

    Attributes:
        kind: statement kind (``select``, ``insert``/``update``/``delete``/``merge`` with
            RETURNING, ``copy_out``, ``declare``, ``fetch``, ``prepare``, ``execute``,
            ``explain``, ``show``, ``utility``, …).
        columns: output columns in order, or None when their number is not known.
        fallback: mask for any column not covered by *columns* (None = clear).
        tainted: the statement reads a masked column anywhere, calls a function whose
            effects cannot be seen, or writes (triggers): error and notice texts are then
            scrubbed of quoted values.
        opaque: the statement runs code whose messages cannot be traced (user functions,
            procedures, DO, triggers of writes): PL/pgSQL messages are withheld.
        copy: for ``COPY … TO STDOUT``, its format options.
        name: cursor or prepared statement name (DECLARE, FETCH, PREPARE, EXECUTE, CLOSE,
            DEALLOCATE); ``None`` with ``close``/``deallocate`` means ALL.
        refresh_catalog: the statement changes the catalog (DDL, search_path): reload it
            after it completes.
        unknown_relations: relation names not found in the catalog (a refresh may help).
    """

    kind: str
    columns: tuple[OutputColumn, ...] | None = ()
    fallback: Mask | None = None
    tainted: bool = False
    opaque: bool = False
    copy: CopyOptions | None = None
    name: str | None = None
    refresh_catalog: bool = False
    unknown_relations: tuple[str, ...] = ()

    @property
    def masks_nothing(self) -> bool:
        """True when no output column is masked (rows may still be scanned)."""
        return self.fallback is None and all(c.mask is None for c in self.columns or ())

    def mask_for(self, index: int, count: int) -> Mask | None:
        """The lineage mask of output column *index* of a result with *count* columns."""
        if self.columns is None or len(self.columns) != count:
            # A result whose shape we did not predict: every column gets the union mask.
            return self.fallback
        return self.columns[index].mask


@dataclass(frozen=True, slots=True)
class Refusal:
    """A statement masking refuses to let run (SQLSTATE 42501)."""

    reason: str
    sqlstate: str = "42501"

    def error(self) -> PolicyDenied:
        """The exception the session turns into an ErrorResponse."""
        return PolicyDenied(f"pgguard: masking: {self.reason}")


class _Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- scopes ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Rte:
    """A FROM item as seen by column references."""

    name: str | None
    cols: list[tuple[str, Lin]]
    any_col: Lin | None = None          # columns of unknown name resolve to this
    relation: Relation | None = None

    def lookup(self, col: str) -> Lin | None:
        found = [lin for name, lin in self.cols if name == col]
        if found:
            return union(found)
        return self.any_col

    def whole(self) -> Lin:
        lins = [lin for _, lin in self.cols]
        if self.any_col is not None:
            lins.append(self.any_col)
        return derive(lins)


@dataclass(slots=True)
class _Scope:
    rtes: list[_Rte] = field(default_factory=list)
    star: list[tuple[str, Lin]] | None = field(default_factory=list)
    merged: dict[str, Lin] = field(default_factory=dict)
    parent: _Scope | None = None


@dataclass(slots=True)
class _Result:
    cols: list[tuple[str, Lin]]
    known: bool = True

    def all(self) -> Lin:
        return union(lin for _, lin in self.cols)


class _Ctes:
    def __init__(self, parent: _Ctes | None = None):
        self.parent = parent
        self.defs: dict[str, _Result] = {}

    def get(self, name: str) -> _Result | None:
        c: _Ctes | None = self
        while c is not None:
            if name in c.defs:
                return c.defs[name]
            c = c.parent
        return None


def _node(n: dict) -> tuple[str, dict]:
    """(type, fields) of a JSON parse node ``{"Type": {...}}``."""
    (kind, body), = n.items()
    return kind, body


def _sval(n: dict) -> str:
    return n.get("String", {}).get("sval", "")


def _names(fields: list) -> list[str]:
    out = []
    for f in fields:
        if "A_Star" in f:
            out.append("*")
        else:
            out.append(_sval(f))
    return out


def _alias(a: dict | None) -> tuple[str | None, list[str]]:
    if not a:
        return None, []
    return a.get("aliasname"), [_sval(c) for c in a.get("colnames", [])]


def _rename(cols: list[tuple[str, Lin]], names: list[str]) -> list[tuple[str, Lin]]:
    return [(names[i] if i < len(names) else n, lin) for i, (n, lin) in enumerate(cols)]


def _colname(val: dict | None) -> str:
    """PostgreSQL's FigureColname, for the kinds of expressions that matter."""
    if not val:
        return "?column?"
    kind, body = _node(val)
    if kind == "ColumnRef":
        names = _names(body.get("fields", []))
        return names[-1] if names else "?column?"
    if kind == "FuncCall":
        return _names(body.get("funcname", []))[-1]
    if kind == "TypeCast":
        inner = _colname(body.get("arg"))
        if inner != "?column?":
            return inner
        names = _names(body.get("typeName", {}).get("names", []))
        return names[-1] if names else "?column?"
    if kind == "A_Indirection":
        ind = body.get("indirection", [])
        if ind and "String" in ind[-1]:
            return _sval(ind[-1])
        return _colname(body.get("arg"))
    if kind == "CollateClause":
        return _colname(body.get("arg"))
    if kind == "SubLink":
        t = body.get("subLinkType")
        if t == "EXISTS_SUBLINK":
            return "exists"
        if t == "ARRAY_SUBLINK":
            return "array"
        if t == "EXPR_SUBLINK":
            sel = body.get("subselect", {}).get("SelectStmt", {})
            tl = sel.get("targetList") or []
            if tl:
                rt = tl[0]["ResTarget"]
                return rt.get("name") or _colname(rt.get("val"))
        return "?column?"
    return {"CaseExpr": "case", "CoalesceExpr": "coalesce", "A_ArrayExpr": "array",
            "RowExpr": "row", "XmlExpr": "xmlelement", "XmlSerialize": "xmlserialize",
            }.get(kind, "?column?")


def parse(sql: str) -> list[dict]:
    """Parse *sql* into JSON statement nodes (``{"SelectStmt": {...}}`` each).

    Raises:
        pglast.parser.ParseError: the text is not valid SQL.
    """
    return [s["stmt"] for s in json.loads(pg_parser.parse_sql_json(sql)).get("stmts", [])]


class Planner:
    """Computes lineage and masking plans for statements against one catalog.

    Args:
        catalog: the database catalog.
        rules: the masking rules.
        deny_predicates: refuse statements that filter, group or sort on masked columns.
        on_unproven: ``mask`` (an output whose origin cannot be proven is redacted) or
            ``refuse`` (the statement is refused).
    """

    def __init__(self, catalog: Catalog, rules: RuleSet, deny_predicates: bool = False,
                 on_unproven: str = "mask"):
        self.catalog = catalog
        self.rules = rules
        self.deny_predicates = deny_predicates
        self.on_unproven = on_unproven
        self._view_cache: dict[int, list[tuple[str, Lin]]] = {}
        self._expanding: set[int] = set()
        self._reset()

    def _reset(self) -> None:
        self.pred: set[Origin] = set()
        self.seen: set[Origin] = set()
        self.opaque_calls = False
        self.unknown: set[str] = set()

    # -- entry points --------------------------------------------------------------

    def plan_sql(self, sql: str) -> list[MaskPlan] | Refusal:
        """Plan every statement of *sql* (one simple Query or one Parse).

        Args:
            sql: the statement text.

        Returns:
            One plan per statement, in order, or a Refusal for the whole text.
        """
        try:
            stmts = parse(sql)
        except Exception:
            # PostgreSQL will reject it too; should it not, nothing is proven.
            return [MaskPlan("unknown", columns=None,
                             fallback=Mask("redact", reason="unproven: statement not parsed"),
                             tainted=True)]
        plans = []
        for stmt in stmts:
            plan = self.plan_stmt(stmt)
            if isinstance(plan, Refusal):
                return plan
            plans.append(plan)
        return plans

    def plan_stmt(self, stmt: dict) -> MaskPlan | Refusal:
        """Plan one parsed statement (a node from :func:`parse`)."""
        self._reset()
        try:
            return self._plan(stmt)
        except _Refused as exc:
            return Refusal(exc.reason)
        except RecursionError:
            return Refusal("statement too deeply nested to verify")
        except Exception as exc:  # a parse-tree shape the planner does not know
            log.warning("masking.plan_failed error=%s", type(exc).__name__)
            return Refusal("statement could not be verified for masking")

    # -- statements ----------------------------------------------------------------

    def _plan(self, stmt: dict) -> MaskPlan | Refusal:
        kind, body = _node(stmt)
        copy = None
        name = None
        result: _Result | None = None
        skind = "utility"
        if kind == "SelectStmt":
            result = self._select(body, None, _Ctes())
            skind = "select"
            if body.get("intoClause"):
                self._check_into(body["intoClause"], result)
                skind = "create_table_as"
                result = None
        elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            result = self._dml(kind, body, None, _Ctes())
            skind = kind[:-4].lower()
        elif kind == "DeclareCursorStmt":
            result = self._query(body["query"], None, _Ctes())
            skind, name = "declare", body.get("portalname")
        elif kind == "PrepareStmt":
            result = self._query(body["query"], None, _Ctes())
            skind, name = "prepare", body.get("name")
        elif kind == "ExplainStmt":
            inner = self._plan(body["query"])
            if isinstance(inner, Refusal):
                return inner
            result = _Result([("QUERY PLAN", CLEAN)])
            skind = "explain"
        elif kind == "CopyStmt":
            if body.get("is_from"):
                skind = "copy_in"
            else:
                if body.get("query"):
                    result = self._query(body["query"], None, _Ctes())
                else:
                    result = self._copy_table(body)
                if body.get("filename") is not None or body.get("is_program"):
                    # Written to the server's disk: a later read would be clear text.
                    self._check_no_masked(result.all(), "COPY to a file or program")
                    result = None
                    skind = "copy_file"
                else:
                    copy = _copy_options(body.get("options", []))
                    skind = "copy_out"
        elif kind == "CreateTableAsStmt":
            res = self._query(body["query"], None, _Ctes())
            if body.get("objtype") != "OBJECT_MATVIEW":
                # Materialized views are expanded through their definition on read; a
                # table would hold clear copies.
                self._check_into(body["into"], res)
            skind = "create_table_as"
        elif kind == "ViewStmt":
            self._query(body["query"], None, _Ctes())
        elif kind == "FetchStmt":
            skind, name = ("fetch" if not body.get("ismove") else "move"), body.get("portalname")
        elif kind == "ExecuteStmt":
            skind, name = "execute", body.get("name")
            for p in body.get("params", []):
                self._expr(p, _Scope(), _Ctes())
        elif kind == "ClosePortalStmt":
            skind, name = "close", body.get("portalname")
        elif kind == "DeallocateStmt":
            skind, name = "deallocate", (None if body.get("isall") else body.get("name"))
        elif kind == "VariableShowStmt":
            result = _Result([(body.get("name", "?column?"), CLEAN)])
            skind = "show"
        elif kind == "CallStmt":
            self._expr(body["funccall"], _Scope(), _Ctes())
            result = _Result([("?column?", _opaque("procedure output"))], known=False)
            skind = "call"
        elif kind == "DoStmt":
            skind = "do"
        elif kind in ("TransactionStmt", "VariableSetStmt", "ListenStmt", "UnlistenStmt",
                      "DiscardStmt", "CheckPointStmt", "LockStmt"):
            skind = "utility"
        elif kind == "NotifyStmt":
            skind = "utility"
        else:
            skind = "unknown" if kind not in DDL_NODES else "ddl"
        return self._finish(skind, result, copy, name,
                            refresh=kind in DDL_NODES or kind == "CreateTableAsStmt"
                            or (kind == "SelectStmt" and bool(body.get("intoClause"))))

    def _finish(self, kind: str, result: _Result | None, copy: CopyOptions | None,
                name: str | None, refresh: bool) -> MaskPlan | Refusal:
        masked_pred = sorted(f"{s}.{t}.{c}" for s, t, c in self.pred if self.rules.match(s, t, c))
        if self.deny_predicates and masked_pred:
            return Refusal(f"statement filters, groups or sorts on masked column "
                           f"{masked_pred[0]} (masking.deny_predicates)")
        if result is not None:
            self.seen |= result.all().origins
        tainted = (kind in WRITE_KINDS or self.opaque_calls or bool(masked_pred)
                   or any(self.rules.match(*o) for o in self.seen))
        columns: tuple[OutputColumn, ...] | None = ()
        fallback = None
        if result is not None:
            if self.on_unproven == "refuse":
                for cname, lin in result.cols:
                    if lin.opaque:
                        return Refusal(f"cannot prove the origin of column {cname!r}: "
                                       f"{lin.opaque}")
            columns = tuple(OutputColumn(n, self.mask_of(lin), lin.direct)
                            for n, lin in result.cols)
            fallback = self.mask_of(result.all().derived() if len(result.cols) > 1
                                    else result.all())
            if not result.known:
                columns = None
                if fallback is None and any(lin.opaque for _, lin in result.cols):
                    fallback = Mask("redact", reason="unproven: result shape unknown")
        return MaskPlan(kind, columns, fallback, tainted=tainted,
                        opaque=self.opaque_calls or kind in WRITE_KINDS, copy=copy, name=name,
                        refresh_catalog=refresh, unknown_relations=tuple(sorted(self.unknown)))

    def mask_of(self, lin: Lin) -> Mask | None:
        """The mask a value of lineage *lin* gets under the rules (None = clear)."""
        if lin.opaque:
            return Mask("redact", reason=f"unproven: {lin.opaque}")
        mixed = [m for o in lin.mixed if (m := self.rules.match(*o))]
        direct = [m for o in lin.direct if (m := self.rules.match(*o))]
        if not mixed and not direct:
            return None
        if not mixed and len(set(direct)) == 1:
            return direct[0]
        masks = mixed + direct
        names = ", ".join(sorted({m.reason.removeprefix("rule ") for m in masks}))
        strategy = "null" if any(m.strategy == "null" for m in masks) else "redact"
        return Mask(strategy, reason=f"derived from {names}")

    # -- queries -------------------------------------------------------------------

    def _query(self, n: dict, outer: _Scope | None, ctes: _Ctes) -> _Result:
        kind, body = _node(n)
        if kind == "SelectStmt":
            return self._select(body, outer, ctes)
        if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            return self._dml(kind, body, outer, ctes)
        return _Result([("?column?", _opaque(f"{kind} in a query"))], known=False)

    def _with(self, body: dict, ctes: _Ctes, outer: _Scope | None) -> _Ctes:
        wc = body.get("withClause")
        if not wc:
            return ctes
        ctes = _Ctes(ctes)
        for c in wc.get("ctes", []):
            cte = c["CommonTableExpr"]
            name = cte["ctename"]
            colnames = [_sval(x) for x in cte.get("aliascolnames", [])]
            q = cte["ctequery"]
            qkind, qbody = _node(q)
            if wc.get("recursive") and qkind == "SelectStmt" and qbody.get("op", "SETOP_NONE") \
                    != "SETOP_NONE":
                ctes.defs[name] = self._recursive_cte(name, qbody, colnames, ctes, outer)
            else:
                res = self._query(q, outer, ctes)
                ctes.defs[name] = _Result(_rename(res.cols, colnames), res.known)
        return ctes

    def _recursive_cte(self, name: str, body: dict, colnames: list[str], ctes: _Ctes,
                       outer: _Scope | None) -> _Result:
        # The non-recursive term seeds the columns; the recursive term is re-planned
        # with the growing lineage until it stops growing (a fixpoint: lineage sets only
        # grow and are bounded by the columns of the statement).
        seed = self._select(body["larg"], outer, ctes)
        current = _Result(_rename(seed.cols, colnames), seed.known)
        for _ in range(8):
            ctes.defs[name] = current
            full = self._select(body, outer, ctes)
            nxt = _Result(_rename(full.cols, colnames), full.known and current.known)
            if [lin for _, lin in nxt.cols] == [lin for _, lin in current.cols]:
                return nxt
            current = nxt
        return _Result([(n, _opaque("recursive query did not settle")) for n, _ in current.cols],
                       current.known)

    def _select(self, body: dict, outer: _Scope | None, ctes: _Ctes) -> _Result:
        ctes = self._with(body, ctes, outer)
        op = body.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self._select(body["larg"], outer, ctes)
            right = self._select(body["rarg"], outer, ctes)
            known = left.known and right.known and len(left.cols) == len(right.cols)
            if op == "SETOP_UNION":
                cols = [(n, union([lin, right.cols[i][1]]) if i < len(right.cols) else lin)
                        for i, (n, lin) in enumerate(left.cols)]
            else:
                # INTERSECT/EXCEPT return left rows, filtered by the right: the right side
                # is a predicate.
                for _, lin in right.cols:
                    self._predicate(lin)
                cols = list(left.cols)
            if not known:
                allv = union([left.all(), right.all()])
                cols = [(n, allv) for n, _ in cols] or [("?column?", allv)]
            res = _Result(cols, known)
            self._order(body, res, None, ctes)
            return res
        if body.get("valuesLists"):
            scope = _Scope(parent=outer)
            rows = [[self._expr(v, scope, ctes) for v in row["List"]["items"]]
                    for row in body["valuesLists"]]
            width = max(len(r) for r in rows)
            cols = [(f"column{i + 1}", union(r[i] for r in rows if i < len(r)))
                    for i in range(width)]
            res = _Result(cols)
            self._order(body, res, scope, ctes)
            return res
        scope = self._from(body.get("fromClause", []), outer, ctes)
        res = self._targets(body.get("targetList", []), scope, ctes)
        for key in ("whereClause", "havingClause"):
            if body.get(key):
                self._predicate(self._expr(body[key], scope, ctes))
        for g in body.get("groupClause", []):
            self._predicate(self._sortref(g, res, scope, ctes))
        distinct = body.get("distinctClause")
        if distinct:
            if distinct == [{}]:
                for _, lin in res.cols:
                    self._predicate(lin)
            else:
                for d in distinct:
                    self._predicate(self._sortref(d, res, scope, ctes))
        for w in body.get("windowClause", []):
            self._predicate(self._expr(w, scope, ctes))
        self._order(body, res, scope, ctes)
        return res

    def _order(self, body: dict, res: _Result, scope: _Scope | None, ctes: _Ctes) -> None:
        for s in body.get("sortClause", []):
            node = s["SortBy"]["node"]
            self._predicate(self._sortref(node, res, scope or _Scope(), ctes))
        for key in ("limitCount", "limitOffset"):
            if body.get(key):
                self._expr(body[key], scope or _Scope(), ctes)

    def _sortref(self, node: dict, res: _Result, scope: _Scope, ctes: _Ctes) -> Lin:
        """GROUP BY / ORDER BY item: an ordinal or output name refers to the targets."""
        kind, body = _node(node)
        if kind == "A_Const" and "ival" in body:
            i = body["ival"].get("ival", 0) - 1
            if 0 <= i < len(res.cols):
                return res.cols[i][1]
            return res.all()
        lins = []
        if kind == "ColumnRef":
            names = _names(body.get("fields", []))
            if len(names) == 1:
                lins += [lin for n, lin in res.cols if n == names[0]]
        try:
            lins.append(self._expr(node, scope, ctes))
        except _Refused:
            raise
        return union(lins)

    def _targets(self, targets: list, scope: _Scope, ctes: _Ctes) -> _Result:
        cols: list[tuple[str, Lin]] = []
        known = True
        for t in targets:
            rt = t["ResTarget"]
            val = rt.get("val")
            star = self._star_target(val, scope)
            if star is not None:
                expanded, ok = star
                cols.extend(expanded)
                known = known and ok
                continue
            lin = self._expr(val, scope, ctes) if val else CLEAN
            cols.append((rt.get("name") or _colname(val), lin))
        return _Result(cols, known)

    def _star_target(self, val: dict | None, scope: _Scope
                     ) -> tuple[list[tuple[str, Lin]], bool] | None:
        if not val:
            return None
        kind, body = _node(val)
        if kind == "ColumnRef":
            names = _names(body.get("fields", []))
            if not names or names[-1] != "*":
                return None
            if len(names) == 1:
                if scope.star is None:
                    allv = union([lin for r in scope.rtes for lin in
                                  ([r.whole()] if r.cols or r.any_col else [])])
                    return [("?column?", allv)], False
                return [(n, lin) for n, lin in scope.star], True
            rte = self._find_rte(names[-2], scope)
            if rte is None:
                return [("?column?", _opaque(f"unknown relation {names[-2]}"))], False
            if rte.any_col is not None:
                return [(n, lin) for n, lin in rte.cols] or [("?column?", rte.whole())], False
            return list(rte.cols), True
        if kind == "A_Indirection":
            ind = body.get("indirection", [])
            if not ind or "A_Star" not in ind[-1]:
                return None
            arg = body.get("arg", {})
            if len(ind) == 1 and "ColumnRef" in arg:
                names = _names(arg["ColumnRef"].get("fields", []))
                if len(names) == 1:
                    rte = self._find_rte(names[0], scope)
                    if rte is not None and not self._is_column(names[0], scope):
                        if rte.any_col is None:
                            return list(rte.cols), True
            lin = self._expr(arg, scope, _Ctes()).derived()
            return [("?column?", lin)], False
        return None

    # -- FROM ----------------------------------------------------------------------

    def _from(self, items: list, outer: _Scope | None, ctes: _Ctes) -> _Scope:
        scope = _Scope(parent=outer)
        for item in items:
            rtes, star, merged = self._from_item(item, scope, outer, ctes)
            scope.rtes.extend(rtes)
            scope.merged.update(merged)
            if scope.star is not None and star is not None:
                scope.star.extend(star)
            else:
                scope.star = None
        return scope

    def _from_item(self, item: dict, left: _Scope, outer: _Scope | None, ctes: _Ctes
                   ) -> tuple[list[_Rte], list[tuple[str, Lin]] | None, dict[str, Lin]]:
        kind, body = _node(item)
        if kind == "RangeVar":
            rte = self._range_var(body, ctes)
            return [rte], (None if rte.any_col is not None else list(rte.cols)), {}
        if kind == "RangeTableSample":
            return self._from_item(body["relation"], left, outer, ctes)
        if kind == "RangeSubselect":
            # LATERAL sees the items to its left; otherwise only the outer query levels.
            sub_outer = left if body.get("lateral") else outer
            res = self._query(body["subquery"], sub_outer, ctes)
            alias, colnames = _alias(body.get("alias"))
            cols = _rename(res.cols, colnames)
            rte = _Rte(alias, cols, None if res.known else res.all())
            return [rte], (cols if res.known else None), {}
        if kind == "RangeFunction":
            rte, known = self._range_function(body, left, ctes)
            return [rte], (list(rte.cols) if known else None), {}
        if kind == "JoinExpr":
            return self._join(body, left, outer, ctes)
        if kind in ("RangeTableFunc", "JsonTable"):
            lin = self._generic(body, left, ctes, skip=("columns", "alias"))
            names = []
            for c in body.get("columns", []):
                ck, cb = _node(c)
                names.append(cb.get("colname") or cb.get("name") or "?column?")
            alias, colnames = _alias(body.get("alias"))
            cols = _rename([(n, lin) for n in names], colnames)
            known = bool(names) and not any(
                _node(c)[1].get("coltype") == "JTC_NESTED" for c in body.get("columns", []))
            rte = _Rte(alias, cols, None if known else lin)
            return [rte], (cols if known else None), {}
        lin = _opaque(f"FROM item {kind}")
        return [_Rte(None, [], lin)], None, {}

    def _range_var(self, body: dict, ctes: _Ctes) -> _Rte:
        relname = body["relname"]
        schema = body.get("schemaname")
        alias, colnames = _alias(body.get("alias"))
        if schema is None:
            cte = ctes.get(relname)
            if cte is not None:
                cols = _rename(cte.cols, colnames)
                return _Rte(alias or relname, cols, None if cte.known else cte.all())
        rels = self.catalog.resolve_relation(relname, schema)
        if not rels:
            self.unknown.add(f"{schema}.{relname}" if schema else relname)
            return _Rte(alias or relname, [], _opaque(f"unknown relation {relname}"))
        primary = rels[0]
        cols = []
        for cname in primary.column_names():
            cols.append((cname, union(self._relation_column(r, cname) for r in rels
                                      if cname in r.column_names())))
        return _Rte(alias or relname, _rename(cols, colnames), None, primary)

    def _relation_column(self, rel: Relation, cname: str) -> Lin:
        if rel.schema in SYSTEM_SCHEMAS:
            if rel.name in VALUE_CARRYING_SYSTEM_RELATIONS:
                return _opaque(f"{rel.schema}.{rel.name} holds copies of values")
            return CLEAN
        own = Lin(frozenset({(rel.schema, rel.name, cname)}))
        if not rel.is_view:
            return own
        view = self._view_columns(rel)
        for name, lin in view:
            if name == cname:
                return union([own, lin])
        return union([own, _opaque(f"view column {rel.name}.{cname} not traced")])

    def _view_columns(self, rel: Relation) -> list[tuple[str, Lin]]:
        cached = self._view_cache.get(rel.oid)
        if cached is not None:
            return cached
        names = rel.column_names()
        if rel.oid in self._expanding or len(self._expanding) >= MAX_VIEW_DEPTH \
                or not rel.definition:
            return [(n, _opaque(f"view {rel.name} cannot be expanded")) for n in names]
        # The view's own filters are not the user's predicates: expand with a separate
        # planner state and keep only the column lineage.
        saved = (self.pred, self.seen, self.opaque_calls, self.unknown)
        self._expanding.add(rel.oid)
        try:
            self._reset()
            try:
                stmts = parse(rel.definition)
                res = self._query(stmts[0], None, _Ctes())
                lins = [lin for _, lin in res.cols]
                if not res.known or len(lins) != len(names):
                    allv = res.all().derived()
                    lins = [allv] * len(names)
                cols = list(zip(names, lins, strict=True))
            except _Refused:
                cols = [(n, _opaque(f"view {rel.name} cannot be expanded")) for n in names]
            except Exception:
                cols = [(n, _opaque(f"view {rel.name} cannot be parsed")) for n in names]
        finally:
            self._expanding.discard(rel.oid)
            self.pred, self.seen, self.opaque_calls, self.unknown = saved
        self._view_cache[rel.oid] = cols
        return cols

    def _range_function(self, body: dict, left: _Scope, ctes: _Ctes) -> tuple[_Rte, bool]:
        alias, colnames = _alias(body.get("alias"))
        cols: list[tuple[str, Lin]] = []
        known = True
        lins = []
        fname = ""
        for f in body.get("functions", []):
            items = f["List"]["items"]
            call = items[0]
            coldef = items[1] if len(items) > 1 else {}
            lin = self._expr(call, left, ctes)
            lins.append(lin)
            fkind, fbody = _node(call)
            fname = _names(fbody.get("funcname", []))[-1] if fkind == "FuncCall" else ""
            defs = coldef.get("List", {}).get("items", []) if coldef else []
            if not defs:
                defs = body.get("coldeflist", []) if len(body.get("functions", [])) == 1 else []
            if defs:
                cols.extend((_node(d)[1].get("colname", "?column?"), lin) for d in defs)
            elif fname in SRF_COLUMNS:
                nargs = len(fbody.get("args", [])) if fname == "unnest" else 1
                for c in SRF_COLUMNS[fname] * nargs:
                    cols.append((c or (alias if alias and not body.get("is_rowsfrom")
                                       else fname), lin))
            else:
                known = False
        if body.get("ordinality"):
            cols.append(("ordinality", CLEAN))
        cols = _rename(cols, colnames)
        any_col = None if known else derive(lins)
        return _Rte(alias or (fname if len(lins) == 1 else None), cols, any_col), known

    def _join(self, body: dict, left_scope: _Scope, outer: _Scope | None, ctes: _Ctes
              ) -> tuple[list[_Rte], list[tuple[str, Lin]] | None, dict[str, Lin]]:
        lrtes, lstar, lmerged = self._from_item(body["larg"], left_scope, outer, ctes)
        inner = _Scope(rtes=left_scope.rtes + lrtes, star=None,
                       merged={**left_scope.merged, **lmerged}, parent=outer)
        rrtes, rstar, rmerged = self._from_item(body["rarg"], inner, outer, ctes)
        both = _Scope(rtes=lrtes + rrtes, star=None, merged={**lmerged, **rmerged},
                      parent=outer)
        using = [_sval(u) for u in body.get("usingClause", [])]
        if body.get("isNatural") and lstar is not None and rstar is not None:
            rnames = {n for n, _ in rstar}
            using = [n for n, _ in lstar if n in rnames]
        merged: dict[str, Lin] = {**lmerged, **rmerged}
        star: list[tuple[str, Lin]] | None = None
        if using:
            for u in using:
                lins = [lin for n, lin in (lstar or []) if n == u]
                lins += [lin for n, lin in (rstar or []) if n == u]
                if lstar is None or rstar is None:
                    lins += [r.lookup(u) or CLEAN for r in lrtes + rrtes]
                merged[u] = union(lins)
                self._predicate(merged[u])
            if lstar is not None and rstar is not None:
                star = [(u, merged[u]) for u in using]
                star += [(n, lin) for n, lin in lstar if n not in using]
                star += [(n, lin) for n, lin in rstar if n not in using]
        elif lstar is not None and rstar is not None:
            star = lstar + rstar
        if body.get("quals"):
            self._predicate(self._expr(body["quals"], both, ctes))
        alias, colnames = _alias(body.get("alias"))
        if alias:
            cols = _rename(star or [], colnames)
            rte = _Rte(alias, cols, None if star is not None
                       else union(r.whole() for r in lrtes + rrtes))
            return [rte], star and cols, {}
        rtes = lrtes + rrtes
        ua, _ = _alias(body.get("join_using_alias"))
        if ua:
            rtes.append(_Rte(ua, [(u, merged[u]) for u in using]))
        return rtes, star, merged

    # -- expressions ---------------------------------------------------------------

    def _predicate(self, lin: Lin) -> None:
        self.pred |= lin.origins

    def _find_rte(self, name: str, scope: _Scope | None) -> _Rte | None:
        s = scope
        while s is not None:
            for rte in reversed(s.rtes):
                if rte.name == name:
                    return rte
            s = s.parent
        return None

    def _is_column(self, name: str, scope: _Scope) -> bool:
        return any(n == name for r in scope.rtes for n, _ in r.cols)

    def _column(self, names: list[str], scope: _Scope) -> Lin:
        lin = self._resolve_column(names, scope)
        self.seen |= lin.origins
        return lin

    def _resolve_column(self, names: list[str], scope: _Scope) -> Lin:
        if len(names) == 1:
            col = names[0]
            s: _Scope | None = scope
            while s is not None:
                if col in s.merged:
                    return s.merged[col]
                found = [lin for r in s.rtes if (lin := r.lookup(col)) is not None]
                if found:
                    return union(found)
                for rte in reversed(s.rtes):
                    if rte.name == col:
                        return rte.whole()     # whole-row reference: SELECT u FROM users u
                s = s.parent
            return _opaque(f"unknown column {col}")
        if names[-1] == "*":
            rte = self._find_rte(names[-2], scope)
            return rte.whole() if rte else _opaque(f"unknown relation {names[-2]}")
        rel, col = names[-2], names[-1]
        rte = self._find_rte(rel, scope)
        if rte is not None:
            lin = rte.lookup(col)
            if lin is not None:
                return lin
            return _opaque(f"unknown column {rel}.{col}")
        if len(names) == 2:
            # (composite_column).field written without parentheses is not valid SQL,
            # but a column of a composite type named like a relation might be.
            base = self._column([rel], scope)
            return base.derived() if not base.opaque else _opaque(f"unknown relation {rel}")
        return _opaque(f"unknown relation {rel}")

    def _expr(self, n: dict | list | None, scope: _Scope, ctes: _Ctes) -> Lin:
        if not n:
            return CLEAN
        if isinstance(n, list):
            return union(self._expr(x, scope, ctes) for x in n)
        kind, body = _node(n)
        if kind in ("A_Const", "ParamRef", "SQLValueFunction", "String", "Integer", "Float",
                    "Boolean", "TypeName", "SetToDefault"):
            return CLEAN
        if kind == "ColumnRef":
            return self._column(_names(body.get("fields", [])), scope)
        if kind == "CollateClause":
            return self._expr(body.get("arg"), scope, ctes)
        if kind == "FuncCall":
            return self._funccall(body, scope, ctes)
        if kind == "SubLink":
            return self._sublink(body, scope, ctes)
        if kind == "A_Indirection":
            arg = body.get("arg", {})
            ind = body.get("indirection", [])
            if len(ind) == 1 and "String" in ind[0] and "ColumnRef" in arg:
                names = _names(arg["ColumnRef"].get("fields", []))
                if len(names) == 1 and not self._is_column(names[0], scope):
                    rte = self._find_rte(names[0], scope)
                    if rte is not None:
                        lin = rte.lookup(_sval(ind[0]))
                        if lin is not None:
                            return lin         # (u).email is u.email
            return derive([self._expr(arg, scope, ctes), self._expr(ind, scope, ctes)])
        if kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"):
            return self._query(n, scope, ctes).all().derived()
        if kind == "ResTarget":
            return self._expr(body.get("val"), scope, ctes)
        return self._generic(body, scope, ctes)

    def _generic(self, body: dict, scope: _Scope, ctes: _Ctes, skip: tuple[str, ...] = ()
                 ) -> Lin:
        lins = []
        for key, v in body.items():
            if key in skip or key == "location":
                continue
            if isinstance(v, dict):
                if len(v) == 1 and next(iter(v))[:1].isupper():
                    lins.append(self._expr(v, scope, ctes))
                elif v:
                    lins.append(self._generic(v, scope, ctes))
            elif isinstance(v, list):
                for x in v:
                    if isinstance(x, dict) and len(x) == 1 and next(iter(x))[:1].isupper():
                        lins.append(self._expr(x, scope, ctes))
        return derive(lins)

    def _funccall(self, body: dict, scope: _Scope, ctes: _Ctes) -> Lin:
        names = _names(body.get("funcname", []))
        fname = names[-1]
        schema = names[-2] if len(names) > 1 else None
        args = self._expr(body.get("args", []), scope, ctes)
        for key in ("agg_filter", "agg_order"):
            if body.get(key):
                self._predicate(self._expr(body[key], scope, ctes))
        if body.get("over"):
            self._predicate(self._generic(body["over"], scope, ctes))
        builtin = schema in (None, "pg_catalog")
        if fname in SINK_FUNCTIONS and builtin and (
                any(self.rules.match(*o) for o in args.origins)
                # a setting is read back in clear by current_setting(): an argument of
                # unknown origin may be masked data
                or (fname == "set_config" and args.opaque and self.rules)):
            raise _Refused(f"{fname}() would carry masked data out of the result")
        if self.catalog.is_user_function(fname, schema) or (
                fname in OPAQUE_FUNCTIONS and builtin):
            self.opaque_calls = True
            return Lin(_EMPTY, args.origins, f"function {fname} cannot be traced")
        if fname in CONFIG_FUNCTIONS and builtin and len(body.get("args", [])) in (1, 2):
            # derived from the arguments only: clear for literal names, masked like the
            # arguments otherwise
            return args.derived()
        if fname in CLEAN_AGGREGATES and schema in (None, "pg_catalog"):
            return CLEAN
        return args.derived()

    def _sublink(self, body: dict, scope: _Scope, ctes: _Ctes) -> Lin:
        res = self._query(body["subselect"], scope, ctes)
        t = body.get("subLinkType")
        if t == "EXISTS_SUBLINK":
            # Only the existence of rows: a predicate channel (deny_predicates).
            self._predicate(res.all())
            return CLEAN
        first = res.cols[0][1] if res.cols else CLEAN
        if not res.known:
            first = res.all()
        if t == "EXPR_SUBLINK":
            return first
        test = self._expr(body.get("testexpr"), scope, ctes)
        return derive([first, test])

    # -- writes --------------------------------------------------------------------

    def _dml(self, kind: str, body: dict, outer: _Scope | None, ctes: _Ctes) -> _Result:
        ctes = self._with(body, ctes, outer)
        target = self._range_var(body["relation"], _Ctes())
        rel = target.relation
        scope = _Scope(rtes=[target], star=list(target.cols), parent=outer)
        if kind == "InsertStmt":
            names = [t["ResTarget"]["name"] for t in body.get("cols", [])] or \
                [n for n, _ in target.cols]
            if body.get("selectStmt"):
                src = self._query(body["selectStmt"], outer, ctes)
                for i, (_, lin) in enumerate(src.cols):
                    self._check_write(rel, body["relation"], names[i] if i < len(names)
                                      else "?column?", lin if src.known else src.all())
            oc = body.get("onConflictClause") or {}
            excluded = _Rte("excluded", list(target.cols))
            cscope = _Scope(rtes=[target, excluded], parent=outer)
            for t in oc.get("targetList", []):
                rt = t["ResTarget"]
                self._check_write(rel, body["relation"], rt.get("name"),
                                  self._expr(rt.get("val"), cscope, ctes))
            if oc.get("whereClause"):
                self._predicate(self._expr(oc["whereClause"], cscope, ctes))
        elif kind == "UpdateStmt":
            fscope = self._from(body.get("fromClause", []), outer, ctes)
            scope.rtes.extend(fscope.rtes)
            scope.merged.update(fscope.merged)
            for t in body.get("targetList", []):
                rt = t["ResTarget"]
                self._check_write(rel, body["relation"], rt.get("name"),
                                  self._expr(rt.get("val"), scope, ctes))
            if body.get("whereClause"):
                self._predicate(self._expr(body["whereClause"], scope, ctes))
        elif kind == "DeleteStmt":
            fscope = self._from(body.get("usingClause", []), outer, ctes)
            scope.rtes.extend(fscope.rtes)
            scope.merged.update(fscope.merged)
            if body.get("whereClause"):
                self._predicate(self._expr(body["whereClause"], scope, ctes))
        elif kind == "MergeStmt":
            src = self._from([body["sourceRelation"]], outer, ctes)
            scope.rtes.extend(src.rtes)
            self._predicate(self._expr(body.get("joinCondition"), scope, ctes))
            for w in body.get("mergeWhenClauses", []):
                wc = w["MergeWhenClause"]
                if wc.get("condition"):
                    self._predicate(self._expr(wc["condition"], scope, ctes))
                tl = wc.get("targetList", [])
                vals = wc.get("values", [])
                if vals:
                    names = [t["ResTarget"]["name"] for t in tl] or [n for n, _ in target.cols]
                    for i, v in enumerate(vals):
                        self._check_write(rel, body["relation"],
                                          names[i] if i < len(names) else "?column?",
                                          self._expr(v, scope, ctes))
                else:
                    for t in tl:
                        rt = t["ResTarget"]
                        self._check_write(rel, body["relation"], rt.get("name"),
                                          self._expr(rt.get("val"), scope, ctes))
        returning = (body.get("returningClause") or {}).get("exprs") or \
            body.get("returningList") or []
        if not returning:
            return _Result([])
        # PostgreSQL 18 names the old and new row versions in RETURNING.
        scope.rtes.extend([_Rte("old", list(target.cols), target.any_col),
                           _Rte("new", list(target.cols), target.any_col)])
        if target.any_col is not None:
            scope.star = None
        return self._targets(returning, scope, ctes)

    def _check_write(self, rel: Relation | None, rv: dict, col: str | None, lin: Lin) -> None:
        masked = [o for o in lin.origins if self.rules.match(*o)]
        if not masked:
            return
        source = self.mask_of(lin)
        if rel is not None and col is not None:
            dest = self.rules.match(rel.schema, rel.name, col)
        else:
            schema = rv.get("schemaname") or next(
                (s for s in getattr(self.catalog, "search_path", ("public",))
                 if s not in SYSTEM_SCHEMAS), "public")
            dest = self.rules.match(schema, rv["relname"], col or "?column?")
        if dest is not None and (dest == source or dest.strategy == "null"
                                 or (dest.strategy == "redact" and source is not None
                                     and source.strategy != "null")):
            return
        s, t, c = sorted(masked)[0]
        raise _Refused(f"statement would copy masked column {s}.{t}.{c} into "
                       f"{rv.get('relname')}.{col} where it is not masked alike")

    def _check_into(self, into: dict, res: _Result) -> None:
        rv = into["rel"]
        colnames = [_sval(c) for c in into.get("colNames", [])]
        cols = _rename(res.cols, colnames)
        for name, lin in cols:
            self._check_write(None, rv, name, lin if res.known else res.all())

    def _check_no_masked(self, lin: Lin, what: str) -> None:
        masked = sorted(o for o in lin.origins if self.rules.match(*o))
        if masked or (lin.opaque and self.rules):
            name = ".".join(masked[0]) if masked else "(unproven)"
            raise _Refused(f"{what} would write masked column {name} in clear")

    def _copy_table(self, body: dict) -> _Result:
        rte = self._range_var(body["relation"], _Ctes())
        att = [_sval(a) for a in body.get("attlist", [])]
        if rte.any_col is not None:
            return _Result([(a, rte.any_col) for a in att] or [("?column?", rte.any_col)],
                           known=bool(att))
        if att:
            return _Result([(a, rte.lookup(a) or _opaque(f"unknown column {a}")) for a in att])
        return _Result(list(rte.cols))


def _copy_options(options: list) -> CopyOptions:
    opts: dict[str, object] = {}
    for o in options:
        d = o["DefElem"]
        name = d["defname"]
        arg = d.get("arg")
        if arg is None:
            value: object = True
        else:
            akind, abody = _node(arg)
            if akind == "String":
                value = abody.get("sval", "")
            elif akind == "Boolean":
                value = abody.get("boolval", False)
            elif akind == "Integer":
                value = abody.get("ival", 0)
            else:
                value = True
        opts[name] = value
    fmt = str(opts.get("format", "text")).lower()
    if opts.get("binary") is True:
        fmt = "binary"
    if opts.get("csv") is True:
        fmt = "csv"
    if fmt == "csv":
        quote = str(opts.get("quote", '"'))
        return CopyOptions("csv", str(opts.get("delimiter", ",")), quote,
                           str(opts.get("escape", quote)), str(opts.get("null", "")),
                           _truthy(opts.get("header", False)))
    return CopyOptions(fmt, str(opts.get("delimiter", "\t")), '"', '"',
                       str(opts.get("null", "\\N")), _truthy(opts.get("header", False)))


def _truthy(v: object) -> bool:
    if isinstance(v, str):
        return v.lower() in ("true", "on", "1", "yes", "match")
    return bool(v)
