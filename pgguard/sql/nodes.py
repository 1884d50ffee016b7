"""Helpers over libpg_query's JSON parse nodes, written once for every walk.

A node is a one-key dict ``{"Type": {fields}}``; names are lists of ``String`` nodes
(``{"String": {"sval": "users"}}``), with ``A_Star`` for ``*``.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = [
    "NO_ARG", "LiteralValue", "alias", "def_boolean", "def_elems", "def_last", "def_repeated", "def_string",
    "def_values", "guc_boolean", "literal_reads", "name", "names", "node", "sval",
]


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


# ---------------------------------------------------------------------------------------
# DefElem option lists, read as PostgreSQL reads them
# ---------------------------------------------------------------------------------------
#
# PostgreSQL walks an option list (``EXPLAIN (…)``, ``COPY … WITH (…)``, ``VACUUM (…)``,
# ``BEGIN`` modes, ``CREATE FUNCTION`` attributes) from first to last and compares each
# ``defname`` with strcmp: names are case-sensitive (the grammar folds unquoted ones, a
# quoted ``"ANALYZE"`` is an unknown option). Where a command accepts a repeat, the last
# occurrence wins (EXPLAIN, BEGIN/SET TRANSACTION); where it does not (COPY, VACUUM,
# CREATE FUNCTION), the repeat is "conflicting or redundant options" and the statement
# never runs. Callers that cannot tell which applies read every occurrence.

#: A DefElem given with no value (``EXPLAIN (ANALYZE)``, ``COPY … (HEADER)``).
NO_ARG: Any = None


def def_elems(items: Any) -> list[tuple[str, Any]]:
    """(defname, arg node or :data:`NO_ARG`) of each ``DefElem`` of an option list, in order.

    Raises:
        ValueError: an item is not a ``DefElem`` (a tree shape the caller must not guess at).
    """
    out: list[tuple[str, Any]] = []
    for item in items or ():
        de = item.get("DefElem") if isinstance(item, dict) else None
        if not isinstance(de, dict):
            raise ValueError("option list holds a node that is not a DefElem")
        out.append((de.get("defname", ""), de.get("arg")))
    return out


def def_values(items: Any, defname: str) -> list[Any]:
    """Every arg given for *defname*, in order ([] when absent; NO_ARG for a bare name)."""
    return [arg for name, arg in def_elems(items) if name == defname]


def def_last(items: Any, defname: str) -> tuple[bool, Any]:
    """(given, arg) of the last occurrence of *defname*: the one PostgreSQL keeps where a
    command accepts repeats."""
    values = def_values(items, defname)
    return (True, values[-1]) if values else (False, NO_ARG)


def def_repeated(items: Any) -> frozenset[str]:
    """The defnames given more than once (an error for COPY, VACUUM, CREATE FUNCTION …)."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for name, _ in def_elems(items):
        (repeated if name in seen else seen).add(name)
    return frozenset(repeated)


def def_string(arg: Any) -> str | None:
    """The text of an option value as PostgreSQL's ``defGetString``: strings as they are,
    integers and floats as written, booleans as ``true``/``false``, ``*`` for ``A_Star``
    and a list of names joined by dots (``NameListToString``); None for no value and for
    any other node (type names: the caller decides)."""
    if not isinstance(arg, dict) or len(arg) != 1:
        return None
    (kind, body), = arg.items()
    if kind == "A_Star":
        return "*"
    if kind == "List":
        parts = [def_string(item) if "A_Star" in item else sval(item)
                 for item in body.get("items") or ()]
        return None if any(p is None for p in parts) else ".".join(parts)  # type: ignore[arg-type]
    if kind == "A_Const":  # a constant that went through the expression grammar
        (kind, body), = ((k, v) for k, v in body.items() if k != "location")
    if kind in ("String", "sval"):
        return body.get("sval", "")
    if kind in ("Integer", "ival"):
        return str(body.get("ival", 0))
    if kind in ("Float", "fval"):
        return body.get("fval", "0")
    if kind in ("Boolean", "boolval"):
        return "true" if body.get("boolval", False) else "false"
    return None


def def_boolean(arg: Any) -> bool | None:
    """An option value as PostgreSQL's ``defGetBoolean``: no value is true; the integers 0
    and 1; the strings ``true``/``false``/``on``/``off`` in any case. None for anything
    else, which PostgreSQL rejects (``yes``, ``2``, ``1.0``): the statement never runs."""
    if arg is NO_ARG:
        return True
    if isinstance(arg, dict) and ("Integer" in arg or _const_kind(arg) == "ival"):
        text = def_string(arg)
        return {"0": False, "1": True}.get(text or "")
    text = def_string(arg)
    if text is None:
        return None
    return {"true": True, "false": False, "on": True, "off": False}.get(text.lower())


def _const_kind(arg: dict[str, Any]) -> str | None:
    const = arg.get("A_Const")
    if not isinstance(const, dict):
        return None
    kinds = [k for k in const if k != "location"]
    return kinds[0] if len(kinds) == 1 else None


def guc_boolean(text: str) -> bool | None:
    """A setting's text as PostgreSQL's ``parse_bool`` reads a boolean GUC: ``on``/``off``,
    ``true``/``false``, ``yes``/``no``, ``1``/``0``, and unique prefixes of the words
    (``t``, ``tr``, ``f``, ``y``, ``n``; ``on`` and ``of`` need two letters), in any case;
    no whitespace. None for anything else (PostgreSQL rejects it)."""
    value = text.lower()
    if not value:
        return None
    if value == "1":
        return True
    if value == "0":
        return False
    for word, result in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if word.startswith(value):
            return result
    if len(value) >= 2:
        if "on".startswith(value):
            return True
        if "off".startswith(value):
            return False
    return None


# ---------------------------------------------------------------------------------------
# Reads of a constant's value
# ---------------------------------------------------------------------------------------
#
# An analysis cached for every text of one literal-blind key (pgguard.sql.literals) must
# not have read any constant's value. parse() wraps the value of every A_Const (the
# ``{"ival": 5}`` under ``"ival"``) in a LiteralValue; any look at its contents counts.
# The counter is an itertools.count (next() is atomic): a read by another thread only
# makes an analysis look dependent, never the other way round.

_READS = itertools.count()


def literal_reads() -> int:
    """A mark of the constant reads so far: an analysis read no constant's value when
    ``literal_reads()`` after it is exactly one more than before it."""
    return next(_READS)


class LiteralValue(dict):  # type: ignore[type-arg]
    """The value dict of an ``A_Const``; every access to its contents counts as a read."""

    __slots__ = ()

    def _read(self) -> None:
        next(_READS)

    def __getitem__(self, key: Any) -> Any:
        self._read()
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._read()
        return dict.get(self, key, default)

    def __contains__(self, key: Any) -> bool:
        self._read()
        return dict.__contains__(self, key)

    def __iter__(self) -> Any:
        self._read()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._read()
        return dict.__len__(self)

    def __eq__(self, other: Any) -> bool:
        self._read()
        return dict.__eq__(self, other)

    def __ne__(self, other: Any) -> bool:
        self._read()
        return dict.__ne__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._read()
        return dict.__repr__(self)

    def keys(self) -> Any:
        self._read()
        return dict.keys(self)

    def values(self) -> Any:
        self._read()
        return dict.values(self)

    def items(self) -> Any:
        self._read()
        return dict.items(self)

    def copy(self) -> dict[Any, Any]:
        self._read()
        return dict.copy(self)

    def __reduce__(self) -> Any:
        self._read()
        return (dict, (dict(dict.items(self)),))
