"""SQL-level prepared statements (PREPARE / EXECUTE / DEALLOCATE): what a session's map of
them holds, and how an ``EXECUTE`` takes the categories of the body it runs."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from .lists import SEVERITY
from .results import (
    UNKNOWN_EXECUTE_WITH_PARAMS,
    Classification,
    StatementInfo,
    make_classification,
)

__all__ = ["remember_prepared", "resolve_execute"]


def resolve_execute(cls: Classification, prepared: Mapping[str, Classification]
                    ) -> Classification:
    """*cls* with each ``EXECUTE`` of a name *prepared* holds given its body's categories.

    Args:
        cls: the classification of a query string that has an EXECUTE.
        prepared: the session's map, as ``remember_prepared`` keeps it.

    Returns:
        A new classification (*cls* itself is shared and left as is).
    """
    statements = []
    for st in cls.statements:
        body = prepared.get(st.executes) if st.executes is not None else None
        if body is None:
            statements.append(st)
            continue
        # The walker adds "unknown" for an EXECUTE only because the body was not known.
        categories = (st.categories - {"unknown"}) | body.categories
        category = max(categories, key=SEVERITY.__getitem__)
        reason = f"executes prepared statement {st.executes}"
        inner = [b.reason for b in body.statements if b.category == body.category]
        if inner:
            reason += f": {inner[0]}"
        pairs = tuple(p for p in st.reasons if p[0] != "unknown")
        for b in body.statements:
            pairs += tuple((c, f"executes prepared statement {st.executes}: {r}")
                           for c, r in b.reasons)
        # The body is known. A body from SQL PREPARE sets what it sets from literals
        # (refused at PREPARE otherwise); a body from Parse may take client_encoding from
        # a parameter (checked at Bind only): EXECUTE's arguments skip that check.
        lift = st.refusal == UNKNOWN_EXECUTE_WITH_PARAMS and \
            not any(b.encoding_params for b in body.statements)
        own = None if lift else st.refusal
        refusal = own or next((b.refusal for b in body.statements if b.refusal), None)
        statements.append(StatementInfo(
            category=category, kind=st.kind, reason=reason, text=st.text,
            categories=frozenset(categories), executes=st.executes, reasons=pairs,
            refusal=refusal))
    return make_classification(tuple(statements))


def remember_prepared(prepared: MutableMapping[str, Classification], cls: Classification,
                      completed: int | None = None) -> None:
    """Apply the PREPARE, DEALLOCATE and DISCARD ALL of a query string to a session's map.

    Two ways to call it:

    * after the server answered, with ``completed`` = the number of the text's statements
      that completed (CommandComplete messages seen): only those change the map;
    * before the server answered (``completed=None``): PREPAREs are recorded, but
      DEALLOCATE and DISCARD ALL forget nothing, since they may never run. Otherwise
      ``SELECT 1/0; DEALLOCATE p`` and then ``PREPARE p AS SELECT 1`` (refused by the
      server, which keeps the old ``p``) would make ``EXECUTE p`` look like a read.

    PREPARE of a name the map already holds keeps both bodies (the server refuses a
    duplicate name, so the old one may still be there): ``EXECUTE`` then needs every
    category of both, which errs towards refusing.

    Args:
        prepared: the session's map of SQL-level prepared statements, changed in place.
        cls: the classification of the query string.
        completed: how many of its statements completed; None when not known yet.
    """
    known = completed is not None
    statements = cls.statements if completed is None else cls.statements[:max(completed, 0)]
    for st in statements:
        if st.prepares is not None:
            old = prepared.get(st.prepares)
            previous = old.statements if old is not None else ()
            prepared[st.prepares] = make_classification(previous + (st,))
        elif not known:
            continue
        elif st.deallocates == "*":
            prepared.clear()
        elif st.deallocates is not None:
            prepared.pop(st.deallocates, None)
