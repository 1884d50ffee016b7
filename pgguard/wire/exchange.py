"""The protocol state of one session: what PostgreSQL owes, and which names it knows.

No I/O, as in h11: the session feeds every frontend message it forwards upstream
(:meth:`Exchange.client_sent`) and the backend messages it relays
(:meth:`Exchange.server_sent`); the exchange says which request each answer belongs to.

* **Expected responses.** Every message that PostgreSQL answers (Query, Parse, Bind,
  Describe, Execute, Close, Sync, FunctionCall) becomes a :class:`Request` in a FIFO, in
  the order it is sent; PostgreSQL answers in that order, so the head tells what a
  backend message belongs to (pgbouncer keeps the same queue per server connection).
* **Skip to Sync.** After an error in an extended-protocol message PostgreSQL discards
  everything up to Sync: so does the FIFO, and messages sent meanwhile get no request.
* **Transaction status** from ReadyForQuery.
* **Names.** Prepared statements (Parse, SQL ``PREPARE``: one namespace in PostgreSQL) and
  portals (Bind, SQL ``DECLARE``: one namespace too) are bound *only on PostgreSQL's
  confirmation* (ParseComplete, BindComplete, the CommandComplete of the statement) and
  forgotten when PostgreSQL forgets them: CloseComplete, ``DEALLOCATE [ALL]``,
  ``CLOSE [ALL]``, ``DISCARD ALL``, and the end of the transaction for portals and
  cursors not declared ``WITH HOLD``. A refused redefinition (42P05, 42P03) leaves the old
  binding: nothing is believed before the server said so.

What a name stands for is up to the users: each request carries ``notes``, a dict in which
every user (policy, masking, recording) keeps its own entry under its own key; a bound
statement or portal keeps the notes of the request that defined it.

The SQL inside a Query is not parsed here (``wire`` imports only the stdlib): the caller
says, per statement, what it does to names (:class:`Effect`); the exchange applies an
effect when the statement's CommandComplete carries the matching tag. The tags
``DEALLOCATE ALL``, ``DISCARD ALL`` and ``CLOSE CURSOR ALL`` need no effect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .messages import (
    BIND,
    BIND_COMPLETE,
    CLOSE,
    CLOSE_COMPLETE,
    COMMAND_COMPLETE,
    DESCRIBE,
    EMPTY_QUERY_RESPONSE,
    ERROR_RESPONSE,
    EXECUTE,
    FUNCTION_CALL,
    NO_DATA,
    PARSE,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    SYNC,
    Bind,
    Close,
    CommandComplete,
    Describe,
    Execute,
    FunctionCall,
    Message,
    Parse,
    Query,
    ReadyForQuery,
    Sync,
)

# Opaque to the exchange: each user keeps its own entry under its own key.
Notes = dict[str, Any]

# The CommandComplete tag each effect needs before it is applied.
_EFFECT_TAGS = {
    "prepare": ("PREPARE",),
    "deallocate": ("DEALLOCATE", "DEALLOCATE ALL"),
    "declare": ("DECLARE CURSOR",),
    "close": ("CLOSE CURSOR", "CLOSE CURSOR ALL"),
}


@dataclass(frozen=True, slots=True)
class Effect:
    """What one SQL statement does to the names once it completes.

    Attributes:
        action: ``prepare``, ``deallocate``, ``declare`` or ``close``.
        name: the name; None for ``ALL``.
        notes: the users' notes for the statement or cursor it defines.
        holdable: ``DECLARE … WITH HOLD`` (survives the commit of its transaction).
    """

    action: str
    name: str | None
    notes: Notes = field(default_factory=dict, compare=False)
    holdable: bool = False


@dataclass(slots=True, eq=False)
class Statement:
    """A prepared statement PostgreSQL confirmed (Parse or SQL PREPARE)."""

    name: str
    notes: Notes
    effects: tuple[Effect | None, ...] = ()   # of its SQL, applied when a portal runs it
    sql: bool = False                         # defined by SQL PREPARE


@dataclass(slots=True, eq=False)
class Portal:
    """A portal PostgreSQL confirmed (Bind, or SQL DECLARE: a cursor)."""

    name: str
    notes: Notes
    statement: Statement | None = None        # the statement it was bound to (Bind)
    cursor: bool = False                      # declared in SQL
    holdable: bool = False
    txn: int = 0                              # the transaction that created it


class Request:
    """One message PostgreSQL will answer, waiting for that answer.

    ``kind`` is the frontend type byte; ``name`` the statement (Parse), portal (Bind,
    Execute) or target name (Describe, Close, with ``target`` 'S' or 'P'); ``source`` the
    statement a Bind binds. ``statement``/``portal`` are what the request refers to,
    resolved when it reaches the head of the queue (all earlier requests answered, so
    the tables are exact). For a Query, ``current`` is the number of the statement the
    last backend message belonged to and ``results`` how many completed.
    """

    __slots__ = ("kind", "name", "target", "source", "notes", "effects", "results",
                 "current", "statement", "portal", "failed", "resolved")

    def __init__(self, kind: int, name: str = "", notes: Notes | None = None,
                 effects: tuple[Effect | None, ...] = (), target: str = "",
                 source: str = ""):
        self.kind = kind
        self.name = name
        self.target = target
        self.source = source
        self.notes: Notes = notes if notes is not None else {}
        self.effects = effects
        self.results = 0
        self.current = 0
        self.statement: Statement | None = None
        self.portal: Portal | None = None
        self.failed = False
        self.resolved = False

    def __repr__(self) -> str:
        return f"Request({chr(self.kind)!r}, {self.name!r})"


def _defines(req: Request) -> list[tuple[int, str]]:
    """The (PARSE, name) statements and (BIND, name) portals *req* may define."""
    if req.kind == PARSE or req.kind == BIND:
        return [(req.kind, req.name)]
    if req.kind == QUERY and req.effects:
        out = []
        for e in req.effects:
            if e is not None and e.name is not None and e.action in ("prepare", "declare"):
                key = (PARSE if e.action == "prepare" else BIND, e.name)
                if key not in out:
                    out.append(key)
        return out
    return []


class Exchange:
    """The protocol state machine of one session (see the module docstring).

    Attributes:
        pending: the requests waiting for their answer, oldest first.
        skipping: PostgreSQL discards what is sent now, up to the next Sync.
        txn_status: the last ReadyForQuery's status ('I', 'T' or 'E').
        statements: the confirmed prepared statements by name.
        portals: the confirmed portals and cursors by name.
    """

    def __init__(self) -> None:
        self.pending: deque[Request] = deque()
        self.skipping = False
        self.txn_status = "I"
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        # The pending requests that define each (PARSE or BIND, name), oldest first.
        self._defs: dict[tuple[int, str], deque[Request]] = {}
        self._txn = 0                 # counts transactions, for cursors created in one
        self._txn_failed = False      # an error (or ROLLBACK) since the last idle point

    # --- frontend ------------------------------------------------------------------

    def client_sent(self, msg: Message, notes: Notes | None = None,
                    effects: tuple[Effect | None, ...] = ()) -> Request | None:
        """A frontend message is being forwarded upstream.

        Args:
            msg: the decoded message (Query, Parse, Bind, Describe, Execute, Close,
                Sync, FunctionCall; anything else gets no answer and is ignored).
            notes: the users' notes for what the request defines or runs.
            effects: Query: one per SQL statement in order (None: no effect on names);
                Parse: the effects of its SQL, applied when a portal of it completes.

        Returns:
            The request, or None when PostgreSQL will not answer the message (it is
            discarded while skipping to Sync, or it is not a request).
        """
        if isinstance(msg, Sync):
            self.skipping = False
            return self._push(Request(SYNC))
        if self.skipping:
            return None
        if isinstance(msg, Query):
            return self._push(Request(QUERY, notes=notes, effects=effects))
        if isinstance(msg, Parse):
            return self._push(Request(PARSE, msg.name, notes, effects))
        if isinstance(msg, Bind):
            return self._push(Request(BIND, msg.portal, notes, source=msg.statement))
        if isinstance(msg, Execute):
            return self._push(Request(EXECUTE, msg.portal, notes))
        if isinstance(msg, Describe):
            return self._push(Request(DESCRIBE, msg.name, notes, target=msg.target))
        if isinstance(msg, Close):
            return self._push(Request(CLOSE, msg.name, notes, target=msg.target))
        if isinstance(msg, FunctionCall):
            return self._push(Request(FUNCTION_CALL, notes=notes))
        return None

    def expect_failure(self) -> None:
        """The request just sent will fail (pgguard replaced a refused Parse with one that
        fails in PostgreSQL's parser): what follows up to Sync is discarded from now."""
        self.skipping = True

    def _push(self, req: Request) -> Request:
        self.pending.append(req)
        for key in _defines(req):
            self._defs.setdefault(key, deque()).append(req)
        if len(self.pending) == 1:
            self._resolve(req)
        return req

    # --- backend -------------------------------------------------------------------

    @property
    def head(self) -> Request | None:
        """The request the next backend message answers (None: nothing is owed)."""
        return self.pending[0] if self.pending else None

    def server_sent(self, kind: int, msg: Message | None = None) -> Request | None:
        """A backend message arrived (any but DataRow, CopyData, NoticeResponse,
        ParameterStatus and NotificationResponse, which change nothing here).

        Args:
            kind: the type byte.
            msg: the decoded message for ReadyForQuery and CommandComplete.

        Returns:
            The request the message answers (None: not an answer, e.g. an error that
            ends the connection).
        """
        q = self.pending
        if kind == READY_FOR_QUERY:
            status = msg.status if isinstance(msg, ReadyForQuery) else "I"
            req = q[0] if q and q[0].kind in (QUERY, SYNC, FUNCTION_CALL) else None
            if req is not None:
                self._pop()
            self._ready(status)
            return req
        if not q:
            return None
        req = q[0]
        req.current = req.results
        rk = req.kind
        if kind == ERROR_RESPONSE:
            self._error(req)
            return req
        if rk == QUERY:
            if kind == COMMAND_COMPLETE:
                self._completed(req, msg, req.effects)
            elif kind == EMPTY_QUERY_RESPONSE:
                req.results += 1
        elif rk == EXECUTE:
            if kind == COMMAND_COMPLETE:
                portal = req.portal
                stmt = portal.statement if portal is not None else None
                self._completed(req, msg, stmt.effects if stmt is not None else ())
                self._pop()
            elif kind == EMPTY_QUERY_RESPONSE or kind == PORTAL_SUSPENDED:
                req.results += 1
                self._pop()
        elif rk == PARSE:
            if kind == PARSE_COMPLETE:
                self.statements[req.name] = Statement(req.name, req.notes, req.effects)
                self._pop()
        elif rk == BIND:
            if kind == BIND_COMPLETE:
                self.portals[req.name] = Portal(req.name, req.notes, req.statement,
                                                txn=self._txn)
                self._pop()
        elif rk == DESCRIBE:
            if kind == ROW_DESCRIPTION or kind == NO_DATA:
                self._pop()
        elif rk == CLOSE:
            if kind == CLOSE_COMPLETE:
                table: dict = self.statements if req.target == "S" else self.portals
                table.pop(req.name, None)
                self._pop()
        return req

    def _drop_head(self) -> None:
        req = self.pending.popleft()
        for key in _defines(req):
            # Requests leave in the order they came: this one is the oldest for the name.
            defs = self._defs[key]
            defs.popleft()
            if not defs:
                del self._defs[key]

    def _pop(self) -> None:
        self._drop_head()
        if self.pending:
            self._resolve(self.pending[0])

    def _resolve(self, req: Request) -> None:
        """Bind *req* to what it refers to, now that everything before it is answered."""
        if req.resolved:
            return
        req.resolved = True
        k = req.kind
        if k == BIND:
            req.statement = self.statements.get(req.source)
        elif k == EXECUTE:
            req.portal = self.portals.get(req.name)
        elif k == DESCRIBE or k == CLOSE:
            if req.target == "S":
                req.statement = self.statements.get(req.name)
            else:
                req.portal = self.portals.get(req.name)

    def _error(self, req: Request) -> None:
        req.failed = True
        self._txn_failed = True
        k = req.kind
        if k == QUERY or k == SYNC or k == FUNCTION_CALL:
            return  # ReadyForQuery follows (a failed COMMIT at Sync, a fastpath call)
        if k == PARSE and req.name == "":
            # PostgreSQL drops the unnamed statement before parsing the new one.
            self.statements.pop("", None)
        # Extended protocol: PostgreSQL now skips everything up to Sync.
        q = self.pending
        while q and q[0].kind != SYNC:
            self._drop_head()
        if q:
            self._resolve(q[0])
        else:
            self.skipping = True

    def _completed(self, req: Request, msg: Message | None,
                   effects: tuple[Effect | None, ...]) -> None:
        i = req.results
        req.results += 1
        tag = msg.tag if isinstance(msg, CommandComplete) else ""
        if tag == "DISCARD ALL":
            self.statements.clear()
            self.portals.clear()
            return
        if tag == "ROLLBACK":
            self._txn_failed = True
        effect = effects[i] if i < len(effects) else None
        if tag == "DEALLOCATE ALL":
            self.statements.clear()
        elif tag == "CLOSE CURSOR ALL":
            self.portals.clear()
        elif effect is None or effect.name is None or tag not in _EFFECT_TAGS[effect.action]:
            return
        elif effect.action == "prepare":
            self.statements[effect.name] = Statement(effect.name, effect.notes, sql=True)
        elif effect.action == "deallocate":
            self.statements.pop(effect.name, None)
        elif effect.action == "declare":
            self.portals[effect.name] = Portal(effect.name, effect.notes, cursor=True,
                                               holdable=effect.holdable, txn=self._txn)
        elif effect.action == "close":
            self.portals.pop(effect.name, None)

    def _ready(self, status: str) -> None:
        self.txn_status = status
        if status != "I":
            return
        # The transaction ended: its portals and cursors go, except cursors WITH HOLD of
        # a transaction that committed.
        failed = self._txn_failed
        txn = self._txn
        for name in [n for n, p in self.portals.items()
                     if not p.holdable or (failed and p.txn == txn)]:
            del self.portals[name]
        self._txn += 1
        self._txn_failed = False
        for p in self.portals.values():
            p.txn = -1  # survived: no later rollback removes it

    # --- lookups for the frontend --------------------------------------------------

    def expected_statements(self, name: str) -> Iterator[Notes]:
        """The notes of every definition of statement *name* that a message sent now may
        run: definitions still awaiting PostgreSQL's answer (newest first), then the
        confirmed one. Which applies is known only when the answers come; a caller that
        must decide before (policy) considers them all."""
        yield from self._expected(name, PARSE, "prepare", self.statements)

    def expected_portals(self, name: str) -> Iterator[Notes]:
        """As :meth:`expected_statements`, for portals and cursors."""
        yield from self._expected(name, BIND, "declare", self.portals)

    def _expected(self, name: str, kind: int, action: str, table: dict) -> Iterator[Notes]:
        # Indexed by name: a pipeline of thousands of Bind/Execute pairs asks once each.
        for req in reversed(self._defs.get((kind, name), ())):
            if req.kind == kind:
                yield req.notes
            else:
                for e in reversed(req.effects):
                    if e is not None and e.action == action and e.name == name:
                        yield e.notes
        bound = table.get(name)
        if bound is not None:
            yield bound.notes

    @property
    def idle(self) -> bool:
        """Nothing is owed and nothing is being skipped."""
        return not self.pending and not self.skipping
