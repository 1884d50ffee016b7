"""Grants and decisions: ``Policy`` holds the grants of one connection and turns a
classification into ``allow``, ``review`` or ``deny`` for a user's groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ACTIONS, CATEGORIES, DEFAULT_ACTIONS, ConnectionConfig, GrantConfig
from .lists import SEVERITY
from .results import Classification, StatementInfo

__all__ = ["Decision", "Policy", "deny_message"]

_ACTION_RANK = {"deny": 0, "review": 1, "allow": 2}
_RANK_ACTION = {r: a for a, r in _ACTION_RANK.items()}


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
        for st in cls.statements:
            if st.refusal is not None:
                # No grant runs it: see StatementInfo.refusal.
                return Decision("deny", st.category, st.kind, st.refusal, st)
        best: tuple[int, str, StatementInfo] | None = None
        for st in cls.statements:
            for category in sorted(st.categories, key=lambda c: -SEVERITY[c]):
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
        ``pgguard: ddl statement ALTER TABLE requires approval``; for a statement no grant
        may run, ``pgguard: `` and its ``refusal``.
    """
    st = decision.statement
    if decision.action == "deny" and st is not None and st.refusal is not None:
        return f"pgguard: {st.refusal}"
    what = f"{decision.category} statement {decision.kind}".rstrip()
    if decision.action == "review":
        return f"pgguard: {what} requires approval"
    return f"pgguard: {what} is not allowed for your groups on {connection}"


# Every action and category config knows has a rank here.
assert set(DEFAULT_ACTIONS) == set(CATEGORIES)
assert set(_ACTION_RANK) == set(ACTIONS)
