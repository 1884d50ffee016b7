"""Masking on the wire: which plan each result belongs to, and the rewriting of results.

The domain decisions live in :mod:`pgguard.masking` (:class:`SessionMasking`); this module
follows one session's protocol conversation to apply them:

* the session's exchange (:mod:`pgguard.wire.exchange`) says which request each backend
  message answers, and which statements, portals and cursors PostgreSQL confirmed; the
  masker keeps its facts about them in their notes (key ``"masking"``): a Query's plans,
  a statement's plan and row layout, a portal's row layout and row rewriter;
* a simple Query's *k*-th result (counted by CommandComplete) belongs to the *k*-th plan;
  FETCH and EXECUTE take the plan of their cursor or prepared statement as PostgreSQL
  knows it when their answer arrives; a portal has its statement's plan, its row layout from its own Describe,
  from its statement's Describe (with the Bind's result formats), or from a Describe the
  masker adds before the Execute when the client described neither;
* DataRows of a result with nothing to mask are forwarded raw (the pumps' hot path);
  others go through ``RowMasker.mask_datarow``; CopyData of ``COPY … TO STDOUT`` through
  ``CopyMasker``; ErrorResponse and NoticeResponse through ``mask_error_fields``.

The catalog is loaded when the session logs in (before the client gets control), cached
per connection for a short time, and reloaded by the session after DDL (at the next
point where nothing is in flight; until then every result column is masked).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from ..errors import ConnectionFailure, PolicyDenied
from ..masking import (
    CATALOG_QUERY,
    Catalog,
    MaskPlan,
    Refusal,
    SessionMasking,
    SqlCatalog,
    rebind,
)
from ..masking.hub import CATALOG_TTL_S, MaskingHub, attach_masking, hub_for, masking_configured
from ..masking.rewrite import RowMasker, python_encoding
from ..masking.rules import Mask
from ..wire import codec, encodings
from ..wire.exchange import Effect, Exchange, Notes, Portal, Request
from ..wire.messages import (
    BIND,
    COMMAND_COMPLETE,
    COPY_DATA,
    COPY_DONE,
    COPY_OUT_RESPONSE,
    DATA_ROW,
    DESCRIBE,
    ERROR_RESPONSE,
    EXECUTE,
    FUNCTION_CALL,
    NO_DATA,
    NOTICE_RESPONSE,
    NOTIFICATION_RESPONSE,
    PARAMETER_STATUS,
    PARSE,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    SYNC,
    Bind,
    Close,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    Message,
    Parse,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
)
from .activity import label_strategies
from .backend import receive_message

if TYPE_CHECKING:
    from ..config import ConnectionConfig
    from ..wire.framer import Framer
    from .backend import BackendLink

__all__ = ["CATALOG_TTL_S", "FUNCTION_CALL_REFUSED", "MaskingHub", "ResultMasker",
           "attach_masking", "fetch_catalog", "hub_for", "masking_configured"]

log = logging.getLogger(__name__)

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_NULL = b"\xff\xff\xff\xff"

SYNC_WAIT_S = 30.0            # how long a catalog reload waits for in-flight results
CATALOG_QUERY_TIMEOUT_S = 15.0

FAIL_CLOSED = "unproven: catalog out of date"


def _decode_row(values: Sequence[bytes | None], encoding: str) -> tuple[str | None, ...]:
    return tuple(None if v is None else v.decode(encoding, "replace") for v in values)


async def fetch_catalog(link: BackendLink, encoding: str) -> SqlCatalog:
    """Run :data:`CATALOG_QUERY` on a freshly logged-in link (no pumps running yet).

    Raises:
        ConnectionFailure: the query failed or the database closed the connection.
    """
    await link.stream.send_all(codec.query(CATALOG_QUERY))
    rows = []
    error: str | None = None
    with trio.fail_after(CATALOG_QUERY_TIMEOUT_S):
        while not isinstance(msg := await receive_message(link.stream, link.framer),
                             ReadyForQuery):
            if isinstance(msg, DataRow):
                rows.append(_decode_row(msg.values, encoding))
            elif isinstance(msg, ErrorResponse):
                error = msg.sqlstate
    if error is not None:
        log.error("event=masking_catalog_failed sqlstate=%s", error)
        raise ConnectionFailure("pgguard: masking: cannot read the database catalog")
    return SqlCatalog.from_rows(rows)


# --- what masking notes on the exchange's requests and names -------------------------
#
# The exchange (wire/exchange.py) tracks which request each answer belongs to and which
# statements and portals PostgreSQL confirmed; masking keeps its own facts about them in
# the notes under the key "masking".

NOTE = "masking"


class _Stmt:
    """Masking's notes on a prepared statement (Parse or SQL PREPARE)."""

    __slots__ = ("plan", "fields", "described", "sql", "catalog")

    def __init__(self, plan: MaskPlan | None, sql: str | None = None,
                 catalog: Catalog | None = None):
        self.plan = plan
        self.sql = sql
        self.catalog = catalog                # the catalog the plan was made with
        self.fields: tuple | None = None     # from Describe S (formats all 0)
        self.described = False               # a Describe S was sent


class _Portal:
    """Masking's notes on a portal (Bind) or cursor (SQL DECLARE)."""

    __slots__ = ("plan", "formats", "fields", "described", "rows")

    def __init__(self, plan: MaskPlan | None, formats: tuple[int, ...]):
        self.plan = plan                     # a cursor's plan; a Bind's comes from its statement
        self.formats = formats
        self.fields: tuple | None = None     # from Describe P (real formats)
        self.described = False
        self.rows: RowMasker | _NullAll | None | bool = False   # False: not built yet


class _Request:
    """Masking's notes on one request: the plans of a Query, the COPY being rewritten,
    and for the masker's own requests, what they are for."""

    __slots__ = ("plans", "copy", "internal", "rows", "done", "portal")

    def __init__(self, plans: list[MaskPlan] | None = None, internal: str = ""):
        self.plans = plans
        self.copy = None
        self.internal = internal  # "catalog" (the reload query), "describe" (added), ""
        self.rows: list | None = None
        self.done: trio.Event | None = None
        self.portal: _Portal | None = None   # the added Describe: whose layout it asks


def _notes(req: Request | None) -> _Request | None:
    if req is None:
        return None
    n = req.notes.get(NOTE)
    return n if isinstance(n, _Request) else None


class RowRewriter(Protocol):
    """Rewrites the DataRows of one result (``masking.rewrite.RowMasker`` and the two
    below)."""

    passthrough: bool

    def mask_datarow(self, body: bytes) -> bytes: ...


class _NullAll:
    """Fail-closed rewriter for rows whose layout is unknown: every value becomes NULL."""

    passthrough = False

    def mask_datarow(self, body: bytes) -> bytes:
        (n,) = _I16.unpack_from(body, 0)
        return body[:2] + _NULL * n


class _Collect:
    """Takes the DataRows of the masker's own catalog query (never sent to the client)."""

    passthrough = False

    def __init__(self, note: _Request, encoding: str):
        self.note = note
        self.encoding = encoding

    def mask_datarow(self, body: bytes) -> bytes:
        pos = 2
        (n,) = _I16.unpack_from(body, 0)
        values = []
        for _ in range(n):
            (ln,) = _I32.unpack_from(body, pos)
            pos += 4
            if ln < 0:
                values.append(None)
            else:
                values.append(body[pos:pos + ln].decode(self.encoding, "replace"))
                pos += ln
        assert self.note.rows is not None
        self.note.rows.append(tuple(values))
        return b""


def _fields(msg: RowDescription) -> tuple[tuple[str, int, int, int, int], ...]:
    return tuple((f.name, f.table_oid, f.column, f.type_oid, f.format) for f in msg.fields)


def _with_formats(fields: tuple, formats: tuple[int, ...]) -> tuple:
    n = len(formats)
    return tuple((f[0], f[1], f[2], f[3], formats[i] if n > 1 else (formats[0] if n else 0))
                 for i, f in enumerate(fields))


def _fail_closed(plans: list[MaskPlan]) -> list[MaskPlan]:
    """The same statements with every result column masked as unproven."""
    mask = Mask("redact", reason=FAIL_CLOSED)
    return [MaskPlan(p.kind, None, mask, tainted=True, opaque=p.opaque, copy=p.copy,
                     name=p.name, refresh_catalog=p.refresh_catalog) for p in plans]


def _is_fail_closed(plan: MaskPlan) -> bool:
    return plan.columns is None and plan.fallback is not None \
        and plan.fallback.reason == FAIL_CLOSED


def name_effects(plans: Sequence[MaskPlan] | None) -> list[Effect | None]:
    """What each planned statement does to cursor and prepared statement names, with the
    plan masking keeps for the name (applied by the exchange on CommandComplete)."""
    out: list[Effect | None] = []
    for p in plans or ():
        if p.kind == "declare" and p.name is not None:
            # Kept until CLOSE or a rollback, as if WITH HOLD: a forgotten cursor only
            # masks more, and a later DECLARE of the name replaces it on confirmation.
            out.append(Effect("declare", p.name, {NOTE: _Portal(p, ())}, holdable=True))
        elif p.kind == "prepare" and p.name is not None:
            out.append(Effect("prepare", p.name, {NOTE: _Stmt(p)}))
        elif p.kind == "close":
            out.append(Effect("close", p.name))
        elif p.kind == "deallocate":
            out.append(Effect("deallocate", p.name))
        else:
            out.append(None)
    return out


class ResultMasker:
    """The masking side of one session: plans statements and rewrites what comes back.

    Args:
        masking: the session's :class:`SessionMasking` (not exempt, active).
        hub: the gateway's :class:`MaskingHub`.
        conn: the connection configuration (catalog cache key).
        exchange: the session's protocol state (which request each answer belongs to).
        send_upstream: sends bytes to PostgreSQL (the catalog reload query).
        session_id: for the log.
    """

    def __init__(self, masking: SessionMasking, hub: MaskingHub, conn: ConnectionConfig,
                 exchange: Exchange, send_upstream: Callable[[bytes], Awaitable[None]],
                 session_id: str = ""):
        self.m = masking
        self.hub = hub
        self.conn = conn
        self.exchange = exchange
        self._send_upstream = send_upstream
        self.session_id = session_id
        self.encoding = "utf-8"
        self.server_encoding: str | None = None
        self.cache_key: tuple = (conn.name,)
        self.generation = 0
        self.stale = False        # DDL was sent: plans are unsafe until the next reload
        self.tried_unknown: set[str] = set()
        self._next_plans: list[MaskPlan] | None = None
        self._rows: RowRewriter | None = None   # the current result's, None = raw bytes
        self._head: Request | None = None
        self._idle: trio.Event | None = None
        self.on_masked: Callable[[RowRewriter], None] | None = None

    # --- start -------------------------------------------------------------------

    async def start(self, link: BackendLink, params: dict[str, str]) -> None:
        """Load the catalog on the new upstream link, from the gateway cache if fresh."""
        self.server_encoding = link.parameters.get("server_encoding")
        self._follow_encoding(link.parameters.get("client_encoding", "UTF8"))
        self.cache_key = (self.conn.name, params.get("search_path"), params.get("options"))
        self.generation = self.hub.generation.get(self.conn.name, 0)
        catalog = self.hub.cached(self.cache_key)
        if catalog is None:
            catalog = await fetch_catalog(link, self.encoding)
            self.hub.store(self.cache_key, catalog)
        self.m.set_catalog(catalog)

    def _follow_encoding(self, client_encoding: str) -> None:
        """Values are decoded as the session decodes statements (``wire.encodings``): in
        the client_encoding PostgreSQL reports, SQL_ASCII being the server's bytes."""
        self.encoding = python_encoding(client_encoding, self.server_encoding)
        if encodings.normalize(client_encoding) == "SQL_ASCII" and self.server_encoding:
            client_encoding = self.server_encoding
        self.m.set_client_encoding(client_encoding)

    # --- planning (frontend task) ---------------------------------------------------

    def plan_statement(self, sql: str) -> Refusal | None:
        """Plan a Query or Parse before it is sent; keep the plans for :meth:`sent`.

        Returns:
            The refusal when masking refuses the statement, else None.
        """
        plans = self.m.plan(sql)
        if isinstance(plans, Refusal):
            self._next_plans = None
            return plans
        if self.stale:
            plans = _fail_closed(plans)
        else:
            for i, p in enumerate(plans):
                if p.refresh_catalog and i + 1 < len(plans):
                    # Later statements of the same Query run after this DDL: the catalog
                    # they were planned with may already be wrong.
                    plans = plans[:i + 1] + _fail_closed(plans[i + 1:])
                    break
        self._next_plans = plans
        return None

    def wants_catalog(self, msg: Message) -> bool:
        """Should the catalog be reloaded before *msg* is planned? (DDL was sent, another
        session's DDL went through this gateway, or the statement names relations the
        catalog does not know.)"""
        if self.stale:
            return True
        if self.hub.generation.get(self.conn.name, 0) != self.generation:
            return True
        if not isinstance(msg, Query | Parse):
            return False
        plans = self.m.peek(msg.sql)
        if isinstance(plans, Refusal):
            return False
        unknown = {n for p in plans for n in p.unknown_relations} - self.tried_unknown
        if unknown:
            self.tried_unknown |= unknown
            return True
        return False

    async def reload_catalog(self) -> bool:
        """Reload the catalog at a point where nothing is in flight.

        Returns:
            True when the catalog was reloaded; False when no such point could be reached
            (a pipeline without Sync, an aborted transaction, a timeout): the stale flag
            stays and results are masked as unproven.
        """
        ex = self.exchange
        if ex.pending:
            last = ex.pending[-1]
            if ex.skipping or last.kind not in (SYNC, QUERY, FUNCTION_CALL):
                return False
            with trio.move_on_after(SYNC_WAIT_S):
                while ex.pending:
                    self._idle = trio.Event()
                    await self._idle.wait()
            if ex.pending:
                return False
        if ex.txn_status == "E":
            return False
        generation = self.hub.generation.get(self.conn.name, 0)
        note = _Request(internal="catalog")
        note.rows = []
        note.done = trio.Event()
        req = ex.client_sent(Query(CATALOG_QUERY), {NOTE: note})
        self._head_changed()
        await self._send_upstream(codec.query(CATALOG_QUERY))
        with trio.move_on_after(CATALOG_QUERY_TIMEOUT_S):
            await note.done.wait()
        if not note.done.is_set() or req is None or req.failed:
            log.warning("event=masking_catalog_reload_failed session=%s", self.session_id)
            return False
        catalog = SqlCatalog.from_rows(note.rows or ())
        self.m.set_catalog(catalog)
        # SQL PREPAREd statements were planned with the old catalog and PostgreSQL
        # re-plans them after DDL: their results are unproven from now on.
        for st in ex.statements.values():
            stmt = st.notes.get(NOTE)
            if st.sql and isinstance(stmt, _Stmt) and stmt.plan is not None:
                stmt.plan = _fail_closed([stmt.plan])[0]
        self.hub.store(self.cache_key, catalog)
        self.generation = generation
        self.stale = False
        log.info("event=masking_catalog_reloaded session=%s relations=%d",
                 self.session_id, len(catalog.relations))
        return True

    # --- frontend messages ----------------------------------------------------------

    def sent(self, msg: Message, refused: bool, notes: Notes) -> list[Effect | None]:
        """A Query, Parse or FunctionCall is about to go upstream (or its refusal marker):
        note its plans on the request.

        Returns:
            What its statements do to cursor and prepared statement names.
        """
        plans = None if refused else self._next_plans
        self._next_plans = None
        if plans is not None and any(p.refresh_catalog for p in plans):
            # DDL or search_path change: plans made with this catalog are unsafe from now.
            self.stale = True
            self.hub.invalidate(self.conn.name)
            self.generation = self.hub.generation[self.conn.name]
        if isinstance(msg, Query):
            notes[NOTE] = _Request(plans)
        elif isinstance(msg, Parse):
            plan = plans[0] if plans is not None and len(plans) == 1 else None
            notes[NOTE] = _Stmt(plan, msg.sql, self.m.catalog)
        else:
            notes[NOTE] = _Request()
        return name_effects(plans)

    def on_frontend(self, msg: Message, notes: Notes, raw: bytes) -> bytes | None:
        """Note Bind, Describe and Execute before they go upstream; may add a Describe
        before an Execute whose row layout nobody asked for (returns the replacement
        bytes, *raw* being the Execute's own)."""
        ex = self.exchange
        if isinstance(msg, Bind):
            notes[NOTE] = _Portal(None, msg.result_formats)
        elif isinstance(msg, Describe):
            if msg.target == "S":
                stmt = _expected(ex.expected_statements(msg.name), _Stmt)
                if stmt is not None:
                    stmt.described = True
            else:
                portal = _expected(ex.expected_portals(msg.name), _Portal)
                if portal is not None:
                    portal.described = True
        elif isinstance(msg, Execute):
            portal = _expected(ex.expected_portals(msg.portal), _Portal)
            stmt = self._bound_statement(msg.portal)
            if (portal is None or not portal.described) and not (
                    stmt is not None and stmt.described):
                # Nobody described this portal: ask for its RowDescription ourselves (the
                # answer is not forwarded) so the rows can be masked by column.
                if portal is not None:
                    portal.described = True
                describe = Describe("P", msg.portal)
                ex.client_sent(describe, {NOTE: _Request(internal="describe")})
                notes[NOTE] = _Request()
                # The portal name as the client sent it (its bytes, in its encoding).
                return codec.message(b"D", b"P" + raw[5:raw.index(0, 5) + 1]) + raw
            notes[NOTE] = _Request()
        elif isinstance(msg, Sync | Close):
            notes[NOTE] = _Request()
        return None

    def _bound_statement(self, portal_name: str) -> _Stmt | None:
        """The statement a portal will run, as far as is known before the answers."""
        ex = self.exchange
        for req in reversed(ex.pending):
            if req.kind == BIND and req.name == portal_name:
                return _expected(ex.expected_statements(req.source), _Stmt)
        bound = ex.portals.get(portal_name)
        if bound is not None and bound.statement is not None:
            stmt = bound.statement.notes.get(NOTE)
            return stmt if isinstance(stmt, _Stmt) else None
        return None

    # --- backend messages (backend task) --------------------------------------------

    def _head_changed(self, head: Request | None = None) -> None:
        """Follow the request whose answers arrive now (*head*, else the exchange's head):
        the row rewriter of its result."""
        if head is None:
            head = self.exchange.head
        if head is self._head:
            return
        self._head = head
        if head is None:
            self._rows = None
            if self._idle is not None:
                self._idle.set()
            return
        note = _notes(head)
        if head.kind == EXECUTE:
            self._rows = self._portal_rows(head.portal)
        elif note is not None and note.internal == "catalog":
            self._rows = _Collect(note, self.encoding)
        else:
            self._rows = None

    def _rebound(self, plan: MaskPlan | None) -> MaskPlan | None:
        """FETCH, MOVE and EXECUTE show the plan of their cursor or prepared statement, as
        PostgreSQL knows it now (the answer is arriving: every earlier one is in)."""
        if plan is None or plan.kind not in ("fetch", "move", "execute") \
                or _is_fail_closed(plan):
            return plan
        ex = self.exchange
        if plan.kind == "execute":
            st = ex.statements.get(plan.name or "")
            src = st.notes.get(NOTE) if st is not None else None
        else:
            p = ex.portals.get(plan.name or "")
            src = p.notes.get(NOTE) if p is not None else None
            if isinstance(src, _Portal) and p is not None and p.statement is not None:
                src = p.statement.notes.get(NOTE)
        return rebind(plan, src.plan if isinstance(src, _Stmt | _Portal) else None)

    def _request_plan(self, req: Request | None) -> MaskPlan | None:
        if req is None:
            return None
        if req.kind == QUERY:
            note = _notes(req)
            plans = note.plans if note is not None else None
            k = req.current
            return self._rebound(plans[k]) if plans is not None and k < len(plans) else None
        if req.portal is not None:
            return self._portal_plan(req.portal)
        if req.statement is not None:
            stmt = req.statement.notes.get(NOTE)
            return stmt.plan if isinstance(stmt, _Stmt) else None
        if req.kind == PARSE:
            stmt = req.notes.get(NOTE)
            return stmt.plan if isinstance(stmt, _Stmt) else None
        return None

    def _portal_plan(self, portal: Portal) -> MaskPlan | None:
        """The portal's plan, checked against DDL sent since its statement was planned."""
        mp = portal.notes.get(NOTE)
        st = portal.statement
        stmt = st.notes.get(NOTE) if st is not None else None
        if isinstance(stmt, _Stmt):
            plan = stmt.plan
        else:
            plan = self._rebound(mp.plan) if isinstance(mp, _Portal) else None
            stmt = None
        if self.stale:
            return _fail_closed([plan])[0] if plan is not None else None
        if stmt is not None and stmt.sql is not None and stmt.catalog is not self.m.catalog:
            # Parsed before a catalog reload: PostgreSQL re-analyzes it, so do we.
            fresh = self.m.plan(stmt.sql)
            plan = fresh[0] if isinstance(fresh, list) and len(fresh) == 1 else None
            stmt.plan, stmt.catalog = plan, self.m.catalog
        return plan

    def _portal_rows(self, portal: Portal | None) -> RowRewriter | None:
        if portal is None:
            return _NullAll()
        mp = portal.notes.get(NOTE)
        if not isinstance(mp, _Portal):
            mp = portal.notes[NOTE] = _Portal(None, ())
        if mp.rows is False:
            fields = mp.fields
            st = portal.statement
            stmt = st.notes.get(NOTE) if st is not None else None
            if fields is None and isinstance(stmt, _Stmt) and stmt.fields is not None:
                fields = _with_formats(stmt.fields, mp.formats)
            if fields is None:
                mp.rows = _NullAll()
            else:
                plan = self._portal_plan(portal)
                rm = self.m.row_masker(plan, fields)
                mp.rows = None if rm.passthrough else label_strategies(rm, plan)
        return mp.rows

    def on_backend(self, kind: bytes, framer: Framer, start: int, end: int,
                   replacement: bytes | None, req: Request | None) -> bytes | None:
        """Rewrite one upstream message for the client.

        Args:
            req: the request the message answers, as the exchange said when it was fed
                (DataRow and the messages that answer nothing are not fed: None).

        Returns:
            Replacement bytes, ``b""`` to drop the message, or *replacement* as given
            (None: forward the original bytes).
        """
        k = kind[0]
        if k == DATA_ROW:
            if self.exchange.head is not self._head:
                # The frontend task queued a request on an empty queue (an Execute): its
                # rows are these.
                self._head_changed()
            rows = self._rows
            if rows is None:
                return replacement
            body = bytes(framer.buf[start + 5:end])
            new = rows.mask_datarow(body)
            if new is body:
                return replacement
            if self.on_masked is not None:
                self.on_masked(rows)  # metrics: masked values by strategy and detector
            if not new:
                return b""
            return b"D" + _I32.pack(len(new) + 4) + new
        # The request this answers may have reached the head without this masker seeing it
        # (queued on an empty queue by the frontend task).
        self._head_changed(req)
        try:
            return self._other(k, kind, framer, start, end, replacement, req)
        finally:
            self._head_changed()

    def _other(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
               replacement: bytes | None, req: Request | None) -> bytes | None:
        head = self.exchange.head
        if k == NOTICE_RESPONSE:
            note = _notes(head)
            if note is not None and note.internal == "catalog":
                return b""
            return self._scrub(kind, framer, start, end, head)
        if k == PARAMETER_STATUS:  # not an answer to anything
            msg = framer.decode(kind, start, end)
            if msg.name == "client_encoding":
                self._follow_encoding(msg.value)
            return replacement
        if k == NOTIFICATION_RESPONSE:  # the payload is any text
            return self._notification(framer, start, end)
        if k == COPY_DATA:
            req = head  # not fed to the exchange (part of the result in progress)
        if req is None:
            if k == ERROR_RESPONSE:
                return replacement if replacement is not None else \
                    self._scrub(kind, framer, start, end, None)
            return replacement
        note = _notes(req)
        internal = note.internal if note is not None else ""
        rk = req.kind
        if k == ERROR_RESPONSE:
            if internal == "catalog":
                return b""  # req.failed is set: the reload is abandoned
            # An added Describe's error stands for the client's Execute (which PostgreSQL
            # now skips): it is forwarded like any other.
            out = replacement if replacement is not None else \
                self._scrub(kind, framer, start, end, req)
            if rk == QUERY and note is not None:
                note.copy = None
                self._rows = None
            return out
        if internal == "catalog":
            if k == READY_FOR_QUERY:
                note.rows = note.rows or []
                assert note.done is not None
                note.done.set()
            return b""
        if rk == QUERY:
            return self._query_message(k, kind, framer, start, end, req, note, replacement)
        if rk == EXECUTE:
            if k == COPY_OUT_RESPONSE or k == COPY_DATA or k == COPY_DONE:
                return self._copy(k, kind, framer, start, end, req, note, replacement)
            return replacement
        if rk == DESCRIBE:
            if k == ROW_DESCRIPTION or k == NO_DATA:
                fields = _fields(framer.decode(kind, start, end)) if k == ROW_DESCRIPTION \
                    else ()
                if req.target == "S":
                    stmt = req.statement.notes.get(NOTE) if req.statement else None
                    if isinstance(stmt, _Stmt):
                        stmt.fields = fields
                elif req.portal is not None:
                    mp = req.portal.notes.get(NOTE)
                    if not isinstance(mp, _Portal):
                        mp = req.portal.notes[NOTE] = _Portal(None, ())
                    mp.fields = fields
                    mp.rows = False
                return b"" if internal == "describe" else replacement
            return b"" if internal == "describe" else replacement
        return replacement

    def _query_message(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
                       req: Request, note: _Request | None,
                       replacement: bytes | None) -> bytes | None:
        if k == ROW_DESCRIPTION:
            plan = self._request_plan(req)
            rm = self.m.row_masker(plan, _fields(framer.decode(kind, start, end)))
            self._rows = None if rm.passthrough else label_strategies(rm, plan)
        elif k == COMMAND_COMPLETE:
            if note is not None:
                note.copy = None
            self._rows = None
        elif k == COPY_OUT_RESPONSE or k == COPY_DATA or k == COPY_DONE:
            return self._copy(k, kind, framer, start, end, req, note, replacement)
        return replacement

    def _copy(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
              req: Request, note: _Request | None,
              replacement: bytes | None) -> bytes | None:
        if note is None:
            note = req.notes[NOTE] = _Request()
        buf = framer.buf
        if k == COPY_OUT_RESPONSE:
            ncols = _I16.unpack_from(buf, start + 6)[0]
            plan = self._request_plan(req)
            cm = self.m.copy_masker(plan, ncols, binary=buf[start + 5] == 1)
            note.copy = None if cm.passthrough else cm
            return replacement
        cm = note.copy
        if cm is None:
            return replacement
        if k == COPY_DATA:
            out = cm.feed(bytes(buf[start + 5:end]))
            return codec.message(b"d", out) if out else b""
        # CopyDone: whatever incomplete row is left, masked, then CopyDone.
        note.copy = None
        tail = cm.finish()
        raw = bytes(buf[start:end])
        return (codec.message(b"d", tail) + raw) if tail else replacement

    def _scrub(self, kind: bytes, framer: Framer, start: int, end: int,
               req: Request | None) -> bytes | None:
        fields = framer.decode(kind, start, end).fields
        plan = self._request_plan(req)
        new = self.m.mask_error_fields(fields, plan)
        if new == fields:
            return None
        return codec.encode_fields(kind, new, framer.encoding)

    def _notification(self, framer: Framer, start: int, end: int) -> bytes | None:
        buf = framer.buf
        pid = _I32.unpack_from(buf, start + 5)[0]
        nul = buf.index(0, start + 9)
        channel = bytes(buf[start + 9:nul])
        payload = bytes(buf[nul + 1:end - 1]).decode(self.encoding, "replace")
        # A payload may carry a masked value (a trigger's pg_notify in another session):
        # with rules it is withheld, else scanned by the detectors.
        new = "***" if self.m.rules else self.m.scan_text(payload)
        if new == payload:
            return None
        return codec.message(b"A", _I32.pack(pid) + channel + b"\0"
                             + new.encode(self.encoding, "replace") + b"\0")


def _expected(candidates, cls):
    """The newest of the candidate notes (see Exchange.expected_statements) of type *cls*."""
    for notes in candidates:
        n = notes.get(NOTE)
        if isinstance(n, cls):
            return n
    return None


FUNCTION_CALL_REFUSED = PolicyDenied(
    "pgguard: masking: fastpath function calls are not allowed while masking is on",
    hint="call the function in a SELECT")
