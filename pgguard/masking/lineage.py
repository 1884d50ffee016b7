"""Column lineage from the parse tree: which source columns feed each output column.

The :class:`Planner` walks the JSON tree of each statement (the shared parse of
:func:`pgguard.sql.parse.parse`, which policy classification already made of the same
text) and computes, for every output column, a :class:`~.plan.Lin`; views and materialized
views are expanded through their definitions, so a view column carries the lineage of the
base columns below it. Lineages become masks through the rules (:func:`~.plan.mask_of`);
predicates (WHERE, JOIN ON, GROUP BY, ORDER BY, HAVING, DISTINCT, FILTER, window clauses)
are collected separately for ``deny_predicates``. Results are :class:`~.plan.MaskPlan`.
"""

from __future__ import annotations

import logging

# Aliased: node, name, names and alias are the natural local variable names here.
from ..sql.nodes import alias as _alias
from ..sql.nodes import name as _name
from ..sql.nodes import names as _names
from ..sql.nodes import node as _node
from ..sql.parse import parse
from .catalog import SYSTEM_SCHEMAS, Catalog, Relation
from .functions import Kind, hidden_user_code, is_traced, kind_of, refusal
from .plan import (
    CLEAN,
    DDL_NODES,
    MAX_VIEW_DEPTH,
    SET_RETURNING_FUNCTIONS,
    SRF_COLUMNS,
    CopyOptions,
    Ctes,
    Findings,
    Lin,
    MaskPlan,
    OutputColumn,
    Refusal,
    Refused,
    Result,
    Rte,
    Scope,
    build_plan,
    check_into,
    check_no_masked,
    colname,
    copy_options,
    derive,
    explain_analyze,
    mask_of,
    rename,
    union,
    unproven,
)
from .rules import Mask, RuleSet
from .system_relations import holds_untraced_values
from .usercode import UserCodeChecks
from .writes import WritePlanning

# Re-exported for the importers of pgguard.masking.lineage.
__all__ = ["CopyOptions", "Lin", "MaskPlan", "OutputColumn", "Planner", "Refusal"]

log = logging.getLogger(__name__)


class Planner(WritePlanning, UserCodeChecks):
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
        self.found = Findings()
        # Per query level (innermost last): data read in positions that carry values
        # into every output column of the level (see _taint).
        self._levels: list[list[Lin]] = [[]]

    # -- entry points --------------------------------------------------------------

    def plan_sql(self, sql: str) -> list[MaskPlan] | Refusal:
        """Plan every statement of *sql* (one simple Query or one Parse).

        Args:
            sql: the statement text.

        Returns:
            One plan per statement, in order, or a Refusal for the whole text.
        """
        parsed = parse(sql)
        if parsed.error is not None:
            # PostgreSQL will reject it too; should it not, nothing is proven.
            return [MaskPlan("unknown", columns=None,
                             fallback=Mask("redact", reason="unproven: statement not parsed"),
                             tainted=True)]
        plans = []
        for stmt in parsed.statements:
            plan = self.plan_stmt(stmt.node)
            if isinstance(plan, Refusal):
                return plan
            plans.append(plan)
        return plans

    def plan_stmt(self, stmt: dict) -> MaskPlan | Refusal:
        """Plan one parsed statement (``Statement.node`` of :func:`pgguard.sql.parse.parse`)."""
        self._reset()
        try:
            return self._plan(stmt)
        except Refused as exc:
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
        result: Result | None = None
        skind = "utility"
        if kind == "SelectStmt":
            result = self._select(body, None, Ctes())
            skind = "select"
            if body.get("intoClause"):
                check_into(self.rules, self.catalog, body["intoClause"], result)
                skind = "create_table_as"
                result = None
        elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            result = self._dml(kind, body, None, Ctes())
            skind = kind[:-4].lower()
        elif kind == "DeclareCursorStmt":
            result = self._query(body["query"], None, Ctes())
            skind, name = "declare", body.get("portalname")
        elif kind == "PrepareStmt":
            result = self._query(body["query"], None, Ctes())
            skind, name = "prepare", body.get("name")
        elif kind == "ExplainStmt":
            inner = self._plan(body["query"])
            if isinstance(inner, Refusal):
                return inner
            self._explain(body, inner)
            result = Result([("QUERY PLAN", CLEAN)])
            skind = "explain"
        elif kind == "CopyStmt":
            if body.get("is_from"):
                skind = "copy_in"
            else:
                if body.get("query"):
                    result = self._query(body["query"], None, Ctes())
                else:
                    result = self._copy_table(body)
                if body.get("filename") is not None or body.get("is_program"):
                    # Written to the server's disk: a later read would be clear text.
                    check_no_masked(self.rules, result.all(), "COPY to a file or program")
                    result = None
                    skind = "copy_file"
                else:
                    copy = copy_options(body.get("options", []))
                    skind = "copy_out"
        elif kind == "CreateTableAsStmt":
            res = self._query(body["query"], None, Ctes())
            if body.get("objtype") != "OBJECT_MATVIEW":
                # Materialized views are expanded through their definition on read; a
                # table would hold clear copies.
                check_into(self.rules, self.catalog, body["into"], res)
            skind = "create_table_as"
        elif kind == "ViewStmt":
            self._query(body["query"], None, Ctes())
        elif kind == "FetchStmt":
            skind, name = ("fetch" if not body.get("ismove") else "move"), body.get("portalname")
        elif kind == "ExecuteStmt":
            skind, name = "execute", body.get("name")
            for p in body.get("params", []):
                # An argument may land in any position of the prepared statement (its
                # output, LIMIT, a set-returning function), which this plan cannot see.
                # (PostgreSQL takes no subquery here, but a user function may read data.)
                lin = self._expr(p, Scope(), Ctes())
                masked = self._masked(lin)
                if masked or (lin.opaque and self.rules):
                    raise Refused(f"EXECUTE with an argument read from masked column "
                                  f"{masked or '(unproven)'}")
        elif kind == "ClosePortalStmt":
            skind, name = "close", body.get("portalname")
        elif kind == "DeallocateStmt":
            skind, name = "deallocate", (None if body.get("isall") else body.get("name"))
        elif kind == "VariableShowStmt":
            result = Result([(body.get("name", "?column?"), CLEAN)])
            skind = "show"
        elif kind == "CallStmt":
            self._expr(body["funccall"], Scope(), Ctes())
            result = Result([("?column?", unproven("procedure output"))], known=False)
            skind = "call"
        elif kind == "DoStmt":
            skind = "do"
        elif kind in ("TransactionStmt", "VariableSetStmt", "ListenStmt", "UnlistenStmt",
                      "DiscardStmt", "CheckPointStmt", "LockStmt", "NotifyStmt"):
            skind = "utility"
        else:
            skind = "unknown" if kind not in DDL_NODES else "ddl"
        refresh = kind in DDL_NODES or kind == "CreateTableAsStmt" or (
            kind == "SelectStmt" and bool(body.get("intoClause")))
        return build_plan(self.rules, self.found, skind, result, copy, name, refresh,
                          deny_predicates=self.deny_predicates, on_unproven=self.on_unproven)

    def _explain(self, body: dict, inner: MaskPlan) -> None:
        """EXPLAIN ANALYZE runs the statement and prints its row counts: refused when the
        statement reads masked data. Plain EXPLAIN runs nothing, but its estimates come
        from the statistics of the columns it reads: those count as predicates."""
        masked = sorted(o for o in self.found.seen | self.found.pred if self.rules.match(*o))
        if explain_analyze(body.get("options", [])):
            if inner.kind == "execute" and self.rules:
                # The prepared statement's plan is the session's, not visible here.
                raise Refused("EXPLAIN ANALYZE EXECUTE: the prepared statement may read "
                              "masked data and its row counts would carry it")
            if masked:
                raise Refused(f"EXPLAIN ANALYZE of a statement that reads masked column "
                              f"{'.'.join(masked[0])}: its row counts would carry it")
            if not inner.masks_nothing and not self.found.unknown:
                raise Refused("EXPLAIN ANALYZE of a statement whose output would be masked "
                              "(unproven origin): its row counts would carry it")
        self.found.pred |= set(masked)

    def mask_of(self, lin: Lin) -> Mask | None:
        """The mask a value of lineage *lin* gets under the rules (None = clear)."""
        return mask_of(self.rules, lin)

    # -- queries -------------------------------------------------------------------

    def _query(self, n: dict, outer: Scope | None, ctes: Ctes) -> Result:
        kind, body = _node(n)
        if kind == "SelectStmt":
            return self._select(body, outer, ctes)
        if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            return self._dml(kind, body, outer, ctes)
        self._check(kind, body, outer, ctes)
        return Result([("?column?", unproven(f"{kind} in a query"))], known=False)

    def _with(self, body: dict, ctes: Ctes, outer: Scope | None) -> Ctes:
        wc = body.get("withClause")
        if not wc:
            return ctes
        self._check("WithClause", wc, outer, ctes)
        ctes = Ctes(ctes)
        for c in wc.get("ctes", []):
            cte = c["CommonTableExpr"]
            self._check("CommonTableExpr", cte, outer, ctes)
            name = cte["ctename"]
            colnames = [_name(x) for x in cte.get("aliascolnames", [])]
            q = cte["ctequery"]
            qkind, qbody = _node(q)
            if wc.get("recursive") and qkind == "SelectStmt" and qbody.get("op", "SETOP_NONE") \
                    != "SETOP_NONE":
                ctes.defs[name] = self._recursive_cte(name, qbody, colnames, ctes, outer)
            else:
                res = self._query(q, outer, ctes)
                ctes.defs[name] = Result(rename(res.cols, colnames), res.known)
            ctes.defs[name] = self._search_cycle(cte, ctes.defs[name], outer, ctes)
        return ctes

    def _search_cycle(self, cte: dict, res: Result, outer: Scope | None, ctes: Ctes
                      ) -> Result:
        """SEARCH adds a sequence column and CYCLE a mark and a path column, computed
        from the columns they list (the path holds their values)."""
        cols = list(res.cols)
        for key, kind, listed, added in (
                ("search_clause", "CTESearchClause", "search_col_list", ("search_seq_column",)),
                ("cycle_clause", "CTECycleClause", "cycle_col_list",
                 ("cycle_mark_column", "cycle_path_column"))):
            clause = cte.get(key)
            if not clause:
                continue
            self._check(kind, clause, outer, ctes)
            wanted = {_name(x) for x in clause.get(listed, [])}
            lins = [lin for n, lin in res.cols if n in wanted] + [
                self._expr(clause.get(k), Scope(parent=outer), ctes)
                for k in ("cycle_mark_value", "cycle_mark_default")]
            if not res.known or len(wanted) > len([n for n, _ in res.cols if n in wanted]):
                lins.append(res.all())
            cols.extend((clause.get(a) or "?column?", derive(lins)) for a in added)
        return Result(cols, res.known) if len(cols) != len(res.cols) else res

    def _recursive_cte(self, name: str, body: dict, colnames: list[str], ctes: Ctes,
                       outer: Scope | None) -> Result:
        # The non-recursive term seeds the columns; the recursive term is re-planned
        # with the growing lineage until it stops growing (a fixpoint: lineage sets only
        # grow and are bounded by the columns of the statement).
        seed = self._select(body["larg"], outer, ctes)
        current = Result(rename(seed.cols, colnames), seed.known)
        for _ in range(8):
            ctes.defs[name] = current
            full = self._select(body, outer, ctes)
            nxt = Result(rename(full.cols, colnames), full.known and current.known)
            if [lin for _, lin in nxt.cols] == [lin for _, lin in current.cols]:
                return nxt
            current = nxt
        return Result([(n, unproven("recursive query did not settle")) for n, _ in current.cols],
                       current.known)

    def _select(self, body: dict, outer: Scope | None, ctes: Ctes) -> Result:
        """One query level: its result, fed by what the level read in positions that
        carry values into every output column (and passing that on to the levels
        around it)."""
        self._levels.append([])
        try:
            res = self._select_level(body, outer, ctes)
        finally:
            taint = union(self._levels.pop())
        return self._tainted(res, taint)

    def _select_level(self, body: dict, outer: Scope | None, ctes: Ctes) -> Result:
        self._check("SelectStmt", body, outer, ctes)
        ctes = self._with(body, ctes, outer)
        op = body.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self._select(body["larg"], outer, ctes)
            right = self._select(body["rarg"], outer, ctes)
            known = left.known and right.known and len(left.cols) == len(right.cols)
            if op == "SETOP_UNION":
                cols = [(n, union([lin, right.cols[i][1]]) if i < len(right.cols) else lin)
                        for i, (n, lin) in enumerate(left.cols)]
                if not body.get("all"):
                    # UNION removes duplicates: like DISTINCT, a predicate on every column.
                    for _, lin in cols:
                        self._predicate(lin)
            else:
                # INTERSECT/EXCEPT return left rows, filtered by the right: the right side
                # is a predicate.
                for _, lin in right.cols:
                    self._predicate(lin)
                cols = list(left.cols)
            if not known:
                allv = union([left.all(), right.all()])
                cols = [(n, allv) for n, _ in cols] or [("?column?", allv)]
            res = Result(cols, known)
            self._order(body, res, None, ctes)
            return res
        if body.get("valuesLists"):
            scope = Scope(parent=outer)
            rows = [[self._expr(v, scope, ctes) for v in row["List"]["items"]]
                    for row in body["valuesLists"]]
            width = max(len(r) for r in rows)
            cols = [(f"column{i + 1}", union(r[i] for r in rows if i < len(r)))
                    for i in range(width)]
            res = Result(cols)
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
            # PARTITION BY / ORDER BY are predicates (recorded by the walk); frame
            # offsets feed the window functions of the level.
            self._taint(self._expr(w, scope, ctes))
        self._order(body, res, scope, ctes)
        return res

    def _order(self, body: dict, res: Result, scope: Scope | None, ctes: Ctes) -> None:
        for s in body.get("sortClause", []):
            node = s["SortBy"]["node"]
            lin = self._sortref(node, res, scope or Scope(), ctes)
            self._predicate(lin)
            self._sort_operator(s["SortBy"], lin)
        for key, what in (("limitCount", "LIMIT/FETCH"), ("limitOffset", "OFFSET")):
            if body.get(key):
                self._rowcount(self._expr(body[key], scope or Scope(), ctes), what)

    def _sortref(self, node: dict, res: Result, scope: Scope, ctes: Ctes) -> Lin:
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
        except Refused:
            raise
        return union(lins)

    def _targets(self, targets: list, scope: Scope, ctes: Ctes) -> Result:
        cols: list[tuple[str, Lin]] = []
        known = True
        for t in targets:
            rt = t["ResTarget"]
            self._check("ResTarget", rt, scope, ctes)
            val = rt.get("val")
            star = self._star_target(val, scope)
            if star is not None:
                expanded, ok = star
                cols.extend(expanded)
                known = known and ok
                continue
            lin = self._expr(val, scope, ctes) if val else CLEAN
            if rt.get("indirection"):
                lin = union([lin, self._expr(rt["indirection"], scope, ctes).derived()])
            cols.append((rt.get("name") or colname(val), lin))
        return Result(cols, known)

    def _star_target(self, val: dict | None, scope: Scope
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
            rte = scope.find_rte(names[-2])
            if rte is None:
                return [("?column?", unproven(f"unknown relation {names[-2]}"))], False
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
                    rte = scope.find_rte(names[0])
                    if rte is not None and not scope.has_column(names[0]):
                        if rte.any_col is None:
                            return list(rte.cols), True
            lin = self._expr(arg, scope, Ctes()).derived()
            return [("?column?", lin)], False
        return None

    # -- FROM ----------------------------------------------------------------------

    def _from(self, items: list, outer: Scope | None, ctes: Ctes) -> Scope:
        scope = Scope(parent=outer)
        for item in items:
            rtes, star, merged = self._from_item(item, scope, outer, ctes)
            scope.rtes.extend(rtes)
            scope.merged.update(merged)
            if scope.star is not None and star is not None:
                scope.star.extend(star)
            else:
                scope.star = None
        return scope

    def _from_item(self, item: dict, left: Scope, outer: Scope | None, ctes: Ctes
                   ) -> tuple[list[Rte], list[tuple[str, Lin]] | None, dict[str, Lin]]:
        kind, body = _node(item)
        if kind in ("RangeVar", "RangeTableSample", "RangeSubselect", "RangeFunction",
                    "JoinExpr", "RangeTableFunc", "JsonTable"):
            self._check(kind, body, left, ctes)
        if kind == "RangeVar":
            rte = self._range_var(body, ctes)
            return [rte], (None if rte.any_col is not None else list(rte.cols)), {}
        if kind == "RangeTableSample":
            # The sampling arguments decide how many rows come back.
            for key in ("args", "repeatable"):
                self._rowcount(self._expr(body.get(key), left, ctes), "TABLESAMPLE")
            return self._from_item(body["relation"], left, outer, ctes)
        if kind == "RangeSubselect":
            # LATERAL sees the items to its left; otherwise only the outer query levels.
            sub_outer = left if body.get("lateral") else outer
            res = self._query(body["subquery"], sub_outer, ctes)
            alias, colnames = _alias(body.get("alias"))
            cols = rename(res.cols, colnames)
            rte = Rte(alias, cols, None if res.known else res.all())
            return [rte], (cols if res.known else None), {}
        if kind == "RangeFunction":
            rte, known = self._range_function(body, left, ctes)
            return [rte], (list(rte.cols) if known else None), {}
        if kind == "JoinExpr":
            return self._join(body, left, outer, ctes)
        if kind in ("RangeTableFunc", "JsonTable"):
            # Every clause (document, row and column paths, defaults, PASSING) shapes the
            # rows: masked data there is refused; the columns carry the rest.
            lin = self._generic(kind, body, left, ctes, rows_are_values=True)
            names = []
            for c in body.get("columns", []):
                ck, cb = _node(c)
                names.append(cb.get("colname") or cb.get("name") or "?column?")
            alias, colnames = _alias(body.get("alias"))
            cols = rename([(n, lin) for n in names], colnames)
            known = bool(names) and not any(
                _node(c)[1].get("coltype") == "JTC_NESTED" for c in body.get("columns", []))
            rte = Rte(alias, cols, None if known else lin)
            return [rte], (cols if known else None), {}
        # A FROM item of a kind the walk does not know: every field unclassified.
        self._check(kind, body, left, ctes)
        lin = unproven(f"FROM item {kind}")
        return [Rte(None, [], lin)], None, {}

    def _range_var(self, body: dict, ctes: Ctes) -> Rte:
        self._check("RangeVar", body, None, ctes)
        relname = body["relname"]
        schema = body.get("schemaname")
        alias, colnames = _alias(body.get("alias"))
        if schema is None:
            cte = ctes.get(relname)
            if cte is not None:
                cols = rename(cte.cols, colnames)
                return Rte(alias or relname, cols, None if cte.known else cte.all())
        rels = self.catalog.resolve_relation(relname, schema)
        if not rels:
            self.found.unknown.add(f"{schema}.{relname}" if schema else relname)
            return Rte(alias or relname, [], unproven(f"unknown relation {relname}"))
        primary = rels[0]
        cols = []
        for cname in primary.column_names():
            cols.append((cname, union(self._relation_column(r, cname) for r in rels
                                      if cname in r.column_names())))
        for r in rels:
            self._policies(r)
        return Rte(alias or relname, rename(cols, colnames), None, primary)

    def _relation_column(self, rel: Relation, cname: str) -> Lin:
        if rel.schema in SYSTEM_SCHEMAS:
            if holds_untraced_values(rel.name):
                return unproven(f"{rel.schema}.{rel.name} holds values that cannot be traced")
            return CLEAN
        own = Lin(frozenset({(rel.schema, rel.name, cname)}))
        if not rel.is_view:
            return own
        view = self._view_columns(rel)
        for name, lin in view:
            if name == cname:
                return union([own, lin])
        return union([own, unproven(f"view column {rel.name}.{cname} not traced")])

    def _view_columns(self, rel: Relation) -> list[tuple[str, Lin]]:
        cached = self._view_cache.get(rel.oid)
        if cached is not None:
            return cached
        names = rel.column_names()
        if rel.oid in self._expanding or len(self._expanding) >= MAX_VIEW_DEPTH \
                or not rel.definition:
            return [(n, unproven(f"view {rel.name} cannot be expanded")) for n in names]
        # The view's own filters are not the user's predicates: expand with a separate
        # planner state and keep only the column lineage.
        saved, saved_levels = self.found, self._levels
        self._expanding.add(rel.oid)
        try:
            self._reset()
            try:
                # No statement (the definition did not parse) raises IndexError here.
                stmts = parse(rel.definition).statements
                res = self._query(stmts[0].node, None, Ctes())
                lins = [lin for _, lin in res.cols]
                if not res.known or len(lins) != len(names):
                    allv = res.all().derived()
                    lins = [allv] * len(names)
                cols = list(zip(names, lins, strict=True))
            except Refused as exc:
                # The view's code runs when it is read (a sink, user code given masked data).
                raise Refused(f"view {rel.name}: {exc.reason}") from None
            except Exception:
                cols = [(n, unproven(f"view {rel.name} cannot be parsed")) for n in names]
        finally:
            self._expanding.discard(rel.oid)
            self.found, self._levels = saved, saved_levels
        self._view_cache[rel.oid] = cols
        return cols

    def _range_function(self, body: dict, left: Scope, ctes: Ctes) -> tuple[Rte, bool]:
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
        cols = rename(cols, colnames)
        any_col = None if known else derive(lins)
        return Rte(alias or (fname if len(lins) == 1 else None), cols, any_col), known

    def _join(self, body: dict, left_scope: Scope, outer: Scope | None, ctes: Ctes
              ) -> tuple[list[Rte], list[tuple[str, Lin]] | None, dict[str, Lin]]:
        lrtes, lstar, lmerged = self._from_item(body["larg"], left_scope, outer, ctes)
        inner = Scope(rtes=left_scope.rtes + lrtes, star=None,
                       merged={**left_scope.merged, **lmerged}, parent=outer)
        rrtes, rstar, rmerged = self._from_item(body["rarg"], inner, outer, ctes)
        both = Scope(rtes=lrtes + rrtes, star=None, merged={**lmerged, **rmerged},
                      parent=outer)
        using = [_name(u) for u in body.get("usingClause", [])]
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
            cols = rename(star or [], colnames)
            rte = Rte(alias, cols, None if star is not None
                       else union(r.whole() for r in lrtes + rrtes))
            return [rte], star and cols, {}
        rtes = lrtes + rrtes
        ua, _ = _alias(body.get("join_using_alias"))
        if ua:
            rtes.append(Rte(ua, [(u, merged[u]) for u in using]))
        return rtes, star, merged

    # -- expressions ---------------------------------------------------------------

    def _column(self, names: list[str], scope: Scope) -> Lin:
        lin = scope.resolve(names)
        if lin is None:
            # (composite_column).field written without parentheses is not valid SQL,
            # but a column of a composite type named like a relation might be.
            base = self._column(names[:1], scope)
            lin = base.derived() if not base.opaque else unproven(f"unknown relation {names[0]}")
        self.found.seen |= lin.origins
        return lin

    def _expr(self, n: dict | list | None, scope: Scope, ctes: Ctes) -> Lin:
        if not n:
            return CLEAN
        if isinstance(n, list):
            return union(self._expr(x, scope, ctes) for x in n)
        kind, body = _node(n)
        if kind == "A_Const":
            return CLEAN
        if kind == "ColumnRef":
            self._check(kind, body, scope, ctes)
            return self._column(_names(body.get("fields", [])), scope)
        code = hidden_user_code(kind, body, self.catalog)
        if code is not None:  # an operator or a cast of the user's
            return self._user_code(code, self._sublink(body, scope, ctes) if kind == "SubLink"
                                   else self._generic(kind, body, scope, ctes))
        if kind == "CollateClause":
            self._check(kind, body, scope, ctes)
            return self._expr(body.get("arg"), scope, ctes)
        if kind == "FuncCall":
            return self._funccall(body, scope, ctes)
        if kind == "SubLink":
            return self._sublink(body, scope, ctes)
        if kind == "A_Indirection":
            self._check(kind, body, scope, ctes)
            arg = body.get("arg", {})
            ind = body.get("indirection", [])
            if len(ind) == 1 and "String" in ind[0] and "ColumnRef" in arg:
                names = _names(arg["ColumnRef"].get("fields", []))
                if len(names) == 1 and not scope.has_column(names[0]):
                    rte = scope.find_rte(names[0])
                    if rte is not None:
                        lin = rte.lookup(_name(ind[0]))
                        if lin is not None:
                            return lin         # (u).email is u.email
            return derive([self._expr(arg, scope, ctes), self._expr(ind, scope, ctes)])
        if kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            return self._query(n, scope, ctes).all().derived()
        if kind == "ResTarget":
            self._check(kind, body, scope, ctes)
            return union([self._expr(body.get("val"), scope, ctes),
                          self._expr(body.get("indirection"), scope, ctes).derived()])
        return self._generic(kind, body, scope, ctes)

    def _funccall(self, body: dict, scope: Scope, ctes: Ctes) -> Lin:
        self._check("FuncCall", body, scope, ctes)
        names = _names(body.get("funcname", []))
        fname = names[-1]
        schema = names[-2] if len(names) > 1 else None
        args = self._expr(body.get("args", []), scope, ctes)
        order = self._expr(body.get("agg_order"), scope, ctes)
        if body.get("agg_within_group"):
            # Ordered-set and hypothetical-set aggregates (mode(), percentile_disc(),
            # rank(…) WITHIN GROUP): the sorted values are what they return or rank.
            args = union([args, order.derived()])
        else:
            self._predicate(order)
        self._predicate(self._expr(body.get("agg_filter"), scope, ctes))
        # PARTITION BY / ORDER BY are predicates (recorded by the walk); frame offsets
        # (ROWS BETWEEN n PRECEDING) feed the function's value.
        window = self._generic("WindowDef", body["over"], scope, ctes) if body.get("over") \
            else CLEAN
        if self._may_return_set(fname, schema):
            self._rowcount(args, f"arguments of the set-returning function {fname}()")
        args = union([args, window])
        kind = kind_of(fname, schema, self.catalog.is_user_function(fname, schema))
        refused = refusal(kind, f"{fname}()", args, self.rules)
        if refused:
            raise Refused(refused)
        if not is_traced(kind):
            self.found.opaque_calls = True
            return Lin(mixed=args.origins, opaque=f"function {fname} cannot be traced")
        if kind is Kind.CLEAN:
            # count(x) counts the rows where x is not null: a predicate on x.
            self._predicate(args)
            return window.derived()
        return args.derived()

    def _may_return_set(self, fname: str, schema: str | None) -> bool:
        """True when the function may return a set (its arguments then shape the rows)."""
        if self.catalog.is_user_function(fname, schema):
            # A catalog that cannot tell: a user function may return a set.
            may = getattr(self.catalog, "may_return_set", None)
            return True if may is None else bool(may(fname, schema))
        if schema == "information_schema":
            return True
        return fname in SET_RETURNING_FUNCTIONS

    def _sublink(self, body: dict, scope: Scope, ctes: Ctes) -> Lin:
        self._check("SubLink", body, scope, ctes)
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

    def _copy_table(self, body: dict) -> Result:
        rte = self._range_var(body["relation"], Ctes())
        att = [_name(a) for a in body.get("attlist", [])]
        if rte.any_col is not None:
            return Result([(a, rte.any_col) for a in att] or [("?column?", rte.any_col)],
                           known=bool(att))
        if att:
            return Result([(a, rte.lookup(a) or unproven(f"unknown column {a}")) for a in att])
        return Result(list(rte.cols))

