"""Statements proven *inert*: they run no user code and change no setting.

The session decodes non-ASCII statement text in the ``client_encoding`` PostgreSQL last
reported (``wire.clienttext``). Anything that runs between that report and the text can
change the encoding unseen: ``SET``, ``set_config()``, ``RESET``, ``ROLLBACK`` (which
reverts a ``SET``), and any user code — a function, an operator, a trigger, a domain
check, a row-level-security policy, a view. So a pipeline with no Sync since something
ran cannot have its non-ASCII text decoded, except when everything that ran since is
inert. This is an allow-list of shapes that cannot run user code whatever the catalog
holds (no relation, no function, no operator, no cast, no type name), nothing else:

* ``BEGIN`` / ``START TRANSACTION`` (with transaction modes), ``SAVEPOINT``,
  ``RELEASE``: psycopg opens every pipeline of a non-autocommit connection with ``BEGIN``;
* ``SELECT`` (or ``VALUES``) whose every item is a constant or a parameter, with no other
  clause: ``SELECT 1``, ``SELECT $1``. A parameter's type comes from the Parse; the
  session counts the statement inert only when every declared type is a built-in one
  (:data:`FIRST_USER_OID`: a domain's check is user code).

A statement that raises an error is harmless too: PostgreSQL then discards everything up
to the Sync unread, and reports the settings before its ReadyForQuery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIRST_USER_OID", "builtin_types", "is_inert"]

#: PostgreSQL's FirstNormalObjectId: every object a user creates has an OID from here on.
FIRST_USER_OID = 16384

_TXN_KINDS = frozenset({"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_SAVEPOINT",
                        "TRANS_STMT_RELEASE"})
#: SelectStmt fields an inert SELECT may have (anything else set: not inert).
_SELECT_FIELDS = frozenset({"targetList", "valuesLists", "op", "limitOption", "all"})
_ITEMS = frozenset({"A_Const", "ParamRef"})


def _item(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and next(iter(node)) in _ITEMS


def _select(node: dict[str, Any]) -> bool:
    if node.get("op", "SETOP_NONE") != "SETOP_NONE":
        return False
    if any(v not in (None, [], False) and k not in _SELECT_FIELDS for k, v in node.items()):
        return False
    if node.get("limitOption", "LIMIT_OPTION_DEFAULT") != "LIMIT_OPTION_DEFAULT":
        return False
    for target in node.get("targetList") or ():
        res = target.get("ResTarget") if isinstance(target, dict) else None
        if not isinstance(res, dict) or res.get("indirection") or not _item(res.get("val")):
            return False
    for row in node.get("valuesLists") or ():
        items = row.get("List", {}).get("items") if isinstance(row, dict) else None
        if not isinstance(items, list) or not all(_item(i) for i in items):
            return False
    return bool(node.get("targetList") or node.get("valuesLists"))


def _transaction(node: dict[str, Any]) -> bool:
    if node.get("kind") not in _TXN_KINDS:
        return False
    for opt in node.get("options") or ():
        elem = opt.get("DefElem") if isinstance(opt, dict) else None
        if not isinstance(elem, dict) or (elem.get("arg") is not None
                                          and not _item(elem["arg"])):
            return False
    return True


def is_inert(node_type: str, node: dict[str, Any]) -> bool:
    """True when the statement (a pglast JSON node) is one of the inert shapes above;
    False for anything else, and for a tree shape it does not expect."""
    try:
        if node_type == "TransactionStmt":
            return _transaction(node)
        if node_type == "SelectStmt":
            return _select(node)
    except (AttributeError, TypeError):
        return False
    return False


def builtin_types(oids: tuple[int, ...] | list[int]) -> bool:
    """Every declared parameter type is a built-in one (0, unspecified, is inferred: for
    an inert statement, a bare parameter is ``text``)."""
    return all(0 <= oid < FIRST_USER_OID for oid in oids)
