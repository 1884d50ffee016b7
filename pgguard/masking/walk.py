"""The table-driven part of the lineage walk: fields read by their role in
:data:`~.positions.POSITIONS`, row-count positions, unclassified fields, and the taint a
query level passes on to its output columns and the levels around it.
"""

from __future__ import annotations

from .plan import CLEAN, Ctes, Findings, Lin, Refused, Result, Scope, derive, tainted_by, union
from .positions import TYPED_FIELDS, Role, role, unclassified
from .rules import RuleSet

__all__ = ["PositionWalk"]


class PositionWalk:
    """Base of the planner: the walk of nodes by the position table.

    Subclasses provide :meth:`_expr` (the dedicated rules for column references,
    function calls, subqueries) and set ``rules``, ``found`` and ``_levels``.
    """

    rules: RuleSet
    found: Findings
    # Per query level (innermost last): data read in positions that carry values into
    # every output column of the level (see _taint).
    _levels: list[list[Lin]]

    def _expr(self, n: dict | list | None, scope: Scope, ctes: Ctes) -> Lin:
        raise NotImplementedError

    def _predicate(self, lin: Lin) -> None:
        self.found.pred |= lin.origins


    def _rowcount(self, lin: Lin, where: str) -> None:
        """*lin* shapes how many rows come back: masked data there is refused (the client
        counts the rows, masking values cannot hide them); unproven data too, unless an
        unknown relation first asks for a catalog refresh (:func:`~.plan.build_plan`)."""
        masked = self._masked(lin)
        if masked:
            raise Refused(f"masked column {masked} shapes the number of rows ({where}): "
                          f"the client would count them")
        if lin.opaque and self.found.rowcount_unproven is None:
            self.found.rowcount_unproven = f"{where}: {lin.opaque}"

    def _masked(self, lin: Lin) -> str | None:
        masked = sorted(o for o in lin.origins if self.rules.match(*o))
        return ".".join(masked[0]) if masked else None

    def _taint(self, lin: Lin) -> None:
        """Data read where it feeds every output column of the current query level."""
        if lin.origins or lin.opaque:
            self._levels[-1].append(lin)

    def _check(self, kind: str, body: dict, scope: Scope | None, ctes: Ctes) -> None:
        """Fail closed on the fields of *body* the position table does not classify."""
        for key in unclassified(kind, body):
            self._unclassified(kind, key, body[key], scope or Scope(), ctes)

    def _unclassified(self, kind: str, key: str, value: object, scope: Scope, ctes: Ctes
                      ) -> None:
        # It may shape the rows or feed any column: refused when it reads masked data,
        # otherwise what it reads taints the whole level.
        lin = self._walk(value, scope, ctes, kind, key)
        masked = self._masked(lin)
        if masked:
            raise Refused(f"masked column {masked} is used in {kind}.{key}, a position "
                          f"pgguard does not classify")
        self._taint(lin)

    def _walk(self, v: object, scope: Scope, ctes: Ctes, kind: str, key: str) -> Lin:
        """The lineage of the value of field *key* of a node of type *kind*."""
        if isinstance(v, list):
            return union(self._walk(x, scope, ctes, kind, key) for x in v)
        if not isinstance(v, dict) or not v:
            return CLEAN
        if len(v) == 1 and next(iter(v))[:1].isupper():
            return self._expr(v, scope, ctes)
        # An unwrapped node of the field's fixed type (or, unknown, every field of it
        # unclassified).
        return self._generic(TYPED_FIELDS.get((kind, key), f"{kind}.{key}"), v, scope, ctes)


    def _generic(self, kind: str, body: dict, scope: Scope, ctes: Ctes,
                 rows_are_values: bool = False) -> Lin:
        """The value of a node walked by the position table: value fields feed it,
        predicates and row-count positions are recorded (and refused when masked), and
        unclassified fields fail closed.

        Args:
            rows_are_values: the node is a row source whose columns are computed from its
                row-count positions too (XMLTABLE, JSON_TABLE).
        """
        lins = []
        for key, v in body.items():
            r = role(kind, key)
            if r is None:
                self._unclassified(kind, key, v, scope, ctes)
                continue
            if r is Role.IGNORE:
                continue
            lin = self._walk(v, scope, ctes, kind, key)
            if r is Role.PREDICATE:
                self._predicate(lin)
            elif r is Role.ROWCOUNT:
                self._rowcount(lin, f"{kind}.{key}")
                if rows_are_values:
                    lins.append(lin)
            else:
                lins.append(lin)
        return derive(lins)


    def _tainted(self, res: Result, taint: Lin) -> Result:
        if not taint.origins and taint.opaque is None:
            return res
        self._levels[-1].append(taint)
        return Result([(n, tainted_by(lin, taint)) for n, lin in res.cols], res.known)
