"""Planning data-modifying statements: what INSERT, UPDATE, DELETE and MERGE write
(checked by :func:`~.plan.check_write`) and what their RETURNING returns.
"""

from __future__ import annotations

from ..sql.nodes import node as _node
from .catalog import Catalog
from .plan import CLEAN, Ctes, Lin, Result, Rte, Scope, check_write, union
from .walk import PositionWalk

__all__ = ["WritePlanning"]


class WritePlanning(PositionWalk):
    """The planner's rules for writes; the query rules come from the subclass."""

    catalog: Catalog

    def _with(self, body: dict, ctes: Ctes, outer: Scope | None) -> Ctes:
        raise NotImplementedError

    def _query(self, n: dict, outer: Scope | None, ctes: Ctes) -> Result:
        raise NotImplementedError

    def _from(self, items: list, outer: Scope | None, ctes: Ctes) -> Scope:
        raise NotImplementedError

    def _range_var(self, body: dict, ctes: Ctes) -> Rte:
        raise NotImplementedError

    def _targets(self, targets: list, scope: Scope, ctes: Ctes) -> Result:
        raise NotImplementedError

    def _dml(self, kind: str, body: dict, outer: Scope | None, ctes: Ctes) -> Result:
        """A data-modifying statement: one query level (see :meth:`_select`)."""
        self._levels.append([])
        try:
            res = self._dml_level(kind, body, outer, ctes)
        finally:
            taint = union(self._levels.pop())
        return self._tainted(res, taint)

    def _assigned(self, rt: dict, scope: Scope, ctes: Ctes) -> Lin:
        """The value a SET / ON CONFLICT / MERGE target assigns (with what its subscripts
        read: the position written depends on them)."""
        self._check("ResTarget", rt, scope, ctes)
        val = rt.get("val") or {}
        if "MultiAssignRef" in val:
            lin = self._multi_assign(val["MultiAssignRef"], scope, ctes)
        else:
            lin = self._expr(val, scope, ctes)
        return union([lin, self._expr(rt.get("indirection"), scope, ctes).derived()])

    def _multi_assign(self, body: dict, scope: Scope, ctes: Ctes) -> Lin:
        """Column *colno* of ``SET (a, b, …) = (SELECT …)`` or ``= ROW(…)``."""
        self._check("MultiAssignRef", body, scope, ctes)
        i = body.get("colno", 0) - 1
        skind, sbody = _node(body["source"])
        if skind == "SubLink" and sbody.get("subLinkType") in ("EXPR_SUBLINK",
                                                               "MULTIEXPR_SUBLINK"):
            self._check(skind, sbody, scope, ctes)
            res = self._query(sbody["subselect"], scope, ctes)
            if res.known and 0 <= i < len(res.cols):
                return res.cols[i][1]
            return res.all().derived()
        if skind == "RowExpr":
            self._check(skind, sbody, scope, ctes)
            args = sbody.get("args", [])
            if 0 <= i < len(args):
                return self._expr(args[i], scope, ctes)
        return self._expr(body["source"], scope, ctes).derived()

    def _dml_level(self, kind: str, body: dict, outer: Scope | None, ctes: Ctes) -> Result:
        self._check(kind, body, outer, ctes)
        ctes = self._with(body, ctes, outer)
        target = self._range_var(body["relation"], Ctes())
        rel = target.relation
        scope = Scope(rtes=[target], star=list(target.cols), parent=outer)

        def check(col: str | None, lin: Lin) -> None:
            check_write(self.rules, self.catalog, rel, body["relation"], col, lin)

        if kind == "InsertStmt":
            cols = [t["ResTarget"] for t in body.get("cols", [])]
            names = [c["name"] for c in cols] or [n for n, _ in target.cols]
            # INSERT INTO t (arr[i]) …: the subscript decides where the value lands.
            subscripts = [union([self._expr(c.get("indirection"), Scope(parent=outer), ctes)])
                          for c in cols]
            for c in cols:
                self._check("ResTarget", c, scope, ctes)
            if body.get("selectStmt"):
                src = self._query(body["selectStmt"], outer, ctes)
                for i, (_, lin) in enumerate(src.cols):
                    extra = subscripts[i].derived() if i < len(subscripts) else CLEAN
                    check(names[i] if i < len(names) else "?column?",
                          union([lin if src.known else src.all(), extra]))
            oc = body.get("onConflictClause") or {}
            excluded = Rte("excluded", list(target.cols))
            cscope = Scope(rtes=[target, excluded], parent=outer)
            if oc:
                self._check("OnConflictClause", oc, cscope, ctes)
                if oc.get("infer"):
                    self._predicate(self._generic("InferClause", oc["infer"], cscope, ctes))
            for t in oc.get("targetList", []):
                rt = t["ResTarget"]
                check(rt.get("name"), self._assigned(rt, cscope, ctes))
            if oc.get("whereClause"):
                self._predicate(self._expr(oc["whereClause"], cscope, ctes))
        elif kind == "UpdateStmt":
            fscope = self._from(body.get("fromClause", []), outer, ctes)
            scope.rtes.extend(fscope.rtes)
            scope.merged.update(fscope.merged)
            for t in body.get("targetList", []):
                rt = t["ResTarget"]
                check(rt.get("name"), self._assigned(rt, scope, ctes))
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
                self._check("MergeWhenClause", wc, scope, ctes)
                if wc.get("condition"):
                    self._predicate(self._expr(wc["condition"], scope, ctes))
                tl = wc.get("targetList", [])
                vals = wc.get("values", [])
                if vals:
                    names = [t["ResTarget"]["name"] for t in tl] or [n for n, _ in target.cols]
                    for i, v in enumerate(vals):
                        check(names[i] if i < len(names) else "?column?",
                              self._expr(v, scope, ctes))
                    for t in tl:
                        self._check("ResTarget", t["ResTarget"], scope, ctes)
                else:
                    for t in tl:
                        rt = t["ResTarget"]
                        check(rt.get("name"), self._assigned(rt, scope, ctes))
        rc = body.get("returningClause") or {}
        if rc:
            self._check("ReturningClause", rc, scope, ctes)
        returning = rc.get("exprs") or body.get("returningList") or []
        if not returning:
            return Result([])
        # PostgreSQL 18 names the old and new row versions in RETURNING (``old``/``new``,
        # or the names of ``RETURNING WITH (OLD AS o, NEW AS n)``).
        names = {"old", "new"} | {_node(o)[1].get("value") for o in rc.get("options", [])}
        scope.rtes.extend(Rte(n, list(target.cols), target.any_col) for n in sorted(names - {None}))
        if target.any_col is not None:
            scope.star = None
        return self._targets(returning, scope, ctes)
