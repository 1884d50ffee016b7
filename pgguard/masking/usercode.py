"""User code the lineage planner meets with no function name in sight: user-defined
operators and casts (:func:`~.functions.hidden_user_code`) and row-level security
policies. Like a user function, it may store what it is given: masked data is refused,
anything else makes an unproven result.
"""

from __future__ import annotations

from .catalog import Catalog, Relation
from .functions import Kind, hidden_user_code, policy_expressions, refusal
from .plan import Ctes, Findings, Lin, Refused, Rte, Scope
from .rules import RuleSet

__all__ = ["UserCodeChecks"]


class UserCodeChecks:
    """Mixin of the planner: the checks of hidden user code.

    The planner provides :meth:`_expr` and sets ``rules``, ``found`` and ``catalog``.
    """

    rules: RuleSet
    found: Findings
    catalog: Catalog

    def _expr(self, n: dict | list | None, scope: Scope, ctes: Ctes) -> Lin:
        raise NotImplementedError

    def _user_code(self, code: str, lin: Lin) -> Lin:
        """The value of user code (*code*: ``operator ###``) given *lin*.

        Raises:
            Refused: *lin* may be masked (the code may store it).
        """
        refused = refusal(Kind.UNKNOWN, code, lin, self.rules)
        if refused:
            raise Refused(refused)
        self.found.opaque_calls = True
        return Lin(mixed=lin.origins, opaque=f"{code} runs user code")

    def _sort_operator(self, sortby: dict, lin: Lin) -> None:
        """``ORDER BY x USING <operator>``: a user operator is user code given *x* (*lin*)."""
        code = hidden_user_code("SortBy", sortby, self.catalog)
        if code is not None:
            self._user_code(code, lin)

    def _policies(self, rel: Relation) -> None:
        """Check *rel*'s row-level security policies, which run when it is read, like the
        same expressions in the statement (they are the owner's filters, not the user's
        predicates: ``deny_predicates`` does not see them).

        Raises:
            Refused: a policy gives masked data to user code or a sink, or cannot be read.
        """
        nodes = policy_expressions(rel.policies)
        if nodes is None:
            raise Refused(f"a row-level security policy of {rel.name} cannot be verified")
        own = Rte(rel.name, [(c, Lin(frozenset({(rel.schema, rel.name, c)})))
                             for c in rel.column_names()], None, rel)
        pred = set(self.found.pred)
        try:
            for node in nodes:
                self._expr(node, Scope(rtes=[own]), Ctes())
        finally:
            self.found.pred = pred
