"""Helpers over libpg_query's JSON parse nodes, written once for every walk.

A node is a one-key dict ``{"Type": {fields}}``; names are lists of ``String`` nodes
(``{"String": {"sval": "users"}}``), with ``A_Star`` for ``*``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["alias", "name", "names", "node", "sval"]


def node(n: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(type, fields) of a parse node ``{"Type": {...}}``.

    Raises:
        ValueError: *n* is not a one-key dict.
    """
    (kind, body), = n.items()
    return kind, body


def sval(n: Any) -> str | None:
    """The text of a ``String`` node or of a string ``A_Const``, else None (any input)."""
    if not isinstance(n, dict):
        return None
    if "String" in n:
        return n["String"].get("sval", "")
    const = n.get("A_Const")
    if isinstance(const, dict) and "sval" in const:
        return const["sval"].get("sval", "")
    return None


def name(n: dict[str, Any]) -> str:
    """The text of a ``String`` name node ("" for any other node)."""
    return n.get("String", {}).get("sval", "")


def names(fields: list[dict[str, Any]]) -> list[str]:
    """The parts of a dotted name (ColumnRef fields, funcname): ``*`` for ``A_Star``."""
    return ["*" if "A_Star" in f else name(f) for f in fields]


def alias(a: dict[str, Any] | None) -> tuple[str | None, list[str]]:
    """(alias name, column aliases) of an ``Alias`` body, (None, []) without one."""
    if not a:
        return None, []
    return a.get("aliasname"), [name(c) for c in a.get("colnames", [])]
