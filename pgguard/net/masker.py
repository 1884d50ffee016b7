"""Masking on the wire: which plan each result belongs to, and the rewriting of results.

The domain decisions live in :mod:`pgguard.masking` (:class:`SessionMasking`); this module
follows one session's protocol conversation to apply them:

* every frontend message that gets answered (Query, Parse, Bind, Describe, Execute, Close,
  Sync, FunctionCall) becomes an :class:`_Entry` in a FIFO, in the order it is sent
  upstream; PostgreSQL answers in that order, so the head entry tells what a backend
  message belongs to. After an error in an extended-protocol message PostgreSQL skips
  everything up to Sync, and so does the FIFO;
* a simple Query's *k*-th result (counted by CommandComplete) belongs to the *k*-th plan;
  a portal gets its statement's plan at Bind, and its row layout from its own Describe,
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
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..config import MaskingConfig
from ..errors import ConfigError, ConnectionFailure, PolicyDenied
from ..masking import CATALOG_QUERY, MaskPlan, Refusal, SessionMasking, SqlCatalog
from ..masking.rewrite import RowMasker, python_encoding
from ..masking.rules import Mask, load_hash_key
from ..wire import codec
from ..wire.messages import (
    BIND_COMPLETE,
    CLOSE_COMPLETE,
    COMMAND_COMPLETE,
    COPY_DATA,
    COPY_DONE,
    COPY_OUT_RESPONSE,
    DATA_ROW,
    EMPTY_QUERY_RESPONSE,
    ERROR_RESPONSE,
    NO_DATA,
    NOTICE_RESPONSE,
    NOTIFICATION_RESPONSE,
    PARAMETER_STATUS,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    SYNC,
    Bind,
    Close,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    Parse,
    Query,
    ReadyForQuery,
)
from .backend import receive_message

if TYPE_CHECKING:
    from ..config import ConnectionConfig
    from ..wire.framer import Framer
    from .backend import BackendLink

log = logging.getLogger(__name__)

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_NULL = b"\xff\xff\xff\xff"

CATALOG_TTL_S = 30.0          # a new session reuses a catalog loaded this recently
SYNC_WAIT_S = 30.0            # how long a catalog reload waits for in-flight results
CATALOG_QUERY_TIMEOUT_S = 15.0

FAIL_CLOSED = "unproven: catalog out of date"


def masking_configured(cfg: MaskingConfig) -> bool:
    """True when the configuration asks for masking: rules, or a ``[masking]`` section
    with detectors (all six unless ``detectors`` says otherwise).

    Without a ``[masking]`` section the default detector list stays off, so gateways
    that mask nothing keep the raw byte path.
    """
    return bool(cfg.rules) or (cfg.present and bool(cfg.detectors))


class MaskingHub:
    """What all sessions of a gateway share for masking: the HMAC key and the catalogs.

    Args:
        cfg: the ``[masking]`` configuration.

    Raises:
        ConfigError: ``masking.hash_key_file`` cannot be read or is empty.
    """

    def __init__(self, cfg: MaskingConfig):
        self.cfg = cfg
        self.active = masking_configured(cfg)
        self.key = b""
        if self.active:
            try:
                self.key = load_hash_key(cfg)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError("masking.hash_key_file",
                                  f"cannot read the key {cfg.hash_key_file}: {reason}") from None
        self._catalogs: dict[tuple, tuple[float, int, SqlCatalog]] = {}
        self.generation: dict[str, int] = {}

    def session(self, groups: Sequence[str]) -> SessionMasking | None:
        """A :class:`SessionMasking` for a user, or None when nothing is masked for them."""
        if not self.active:
            return None
        m = SessionMasking(self.cfg, groups, hash_key=self.key)
        return m if m.active else None

    def cached(self, key: tuple) -> SqlCatalog | None:
        """A catalog loaded for *key* less than :data:`CATALOG_TTL_S` ago and not since
        invalidated by DDL through this gateway."""
        hit = self._catalogs.get(key)
        if hit is None:
            return None
        loaded, gen, catalog = hit
        if time.monotonic() - loaded > CATALOG_TTL_S or gen != self.generation.get(key[0], 0):
            return None
        return catalog

    def store(self, key: tuple, catalog: SqlCatalog) -> None:
        self._catalogs[key] = (time.monotonic(), self.generation.get(key[0], 0), catalog)

    def invalidate(self, conn_name: str) -> None:
        """DDL ran on *conn_name*: catalogs cached for it are out of date."""
        self.generation[conn_name] = self.generation.get(conn_name, 0) + 1


def attach_masking(gateway: Any) -> MaskingHub:
    """Create the gateway's :class:`MaskingHub` (reads the hash key: call at start).

    Raises:
        ConfigError: the hash key file cannot be read.
    """
    hub = MaskingHub(gateway.cfg.masking)
    gateway.masking = hub
    return hub


def hub_for(gateway: Any) -> MaskingHub:
    """The gateway's hub, created on first use when start-up did not attach one."""
    hub = getattr(gateway, "masking", None)
    if hub is None or hub.cfg is not gateway.cfg.masking:
        try:
            hub = attach_masking(gateway)
        except ConfigError as exc:
            # Never run a session unmasked because the key is missing.
            log.error("event=masking_unavailable error=%s", exc)
            raise ConnectionFailure("pgguard: masking is misconfigured") from None
    return hub


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


# --- protocol state ----------------------------------------------------------------


class _Stmt:
    """A named (or the unnamed) prepared statement of the extended protocol."""

    __slots__ = ("plan", "fields", "described", "sql", "catalog")

    def __init__(self, plan: MaskPlan | None, sql: str | None = None, catalog: Any = None):
        self.plan = plan
        self.sql = sql
        self.catalog = catalog                # the catalog the plan was made with
        self.fields: tuple | None = None     # from Describe S (formats all 0)
        self.described = False               # a Describe S was sent


class _Portal:
    __slots__ = ("plan", "stmt", "formats", "fields", "described", "rows")

    def __init__(self, plan: MaskPlan | None, stmt: _Stmt | None, formats: tuple[int, ...]):
        self.plan = plan
        self.stmt = stmt
        self.formats = formats
        self.fields: tuple | None = None     # from Describe P (real formats)
        self.described = False
        self.rows: RowMasker | _NullAll | None | bool = False   # False: not built yet


class _Entry:
    """One frontend message waiting for its answer."""

    __slots__ = ("kind", "plans", "k", "portal", "stmt", "copy", "rows", "done", "failed")

    def __init__(self, kind: str, plans: list[MaskPlan] | None = None,
                 portal: _Portal | None = None, stmt: _Stmt | None = None):
        self.kind = kind          # Q P B DS DP E C S F, X (internal query), XD (internal)
        self.plans = plans
        self.k = 0
        self.portal = portal
        self.stmt = stmt
        self.copy = None
        self.rows: list | None = None
        self.done: trio.Event | None = None
        self.failed = False

    def plan(self) -> MaskPlan | None:
        if self.kind == "Q":
            plans = self.plans
            return plans[self.k] if plans is not None and self.k < len(plans) else None
        if self.portal is not None:
            return self.portal.plan
        if self.stmt is not None:
            return self.stmt.plan
        return None


class _NullAll:
    """Fail-closed rewriter for rows whose layout is unknown: every value becomes NULL."""

    passthrough = False

    def mask_datarow(self, body: bytes) -> bytes:
        (n,) = _I16.unpack_from(body, 0)
        return body[:2] + _NULL * n


class _Collect:
    """Takes the DataRows of the masker's own catalog query (never sent to the client)."""

    passthrough = False

    def __init__(self, entry: _Entry, encoding: str):
        self.entry = entry
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
        assert self.entry.rows is not None
        self.entry.rows.append(tuple(values))
        return b""


def _fields(msg) -> tuple[tuple[str, int, int, int, int], ...]:
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


class ResultMasker:
    """The masking side of one session: plans statements and rewrites what comes back.

    Args:
        masking: the session's :class:`SessionMasking` (not exempt, active).
        hub: the gateway's :class:`MaskingHub`.
        conn: the connection configuration (catalog cache key).
        session: the client session (for sending upstream and its transaction status).
    """

    def __init__(self, masking: SessionMasking, hub: MaskingHub, conn: ConnectionConfig,
                 session: Any):
        self.m = masking
        self.hub = hub
        self.conn = conn
        self.session = session
        self.encoding = "utf-8"
        self.cache_key: tuple = (conn.name,)
        self.generation = 0
        self.queue: deque[_Entry] = deque()
        self.skipping = False     # PostgreSQL is skipping to Sync after an error
        self.stale = False        # DDL was sent: plans are unsafe until the next reload
        self.tried_unknown: set[str] = set()
        self.statements: dict[str, _Stmt] = {}
        self.portals: dict[str, _Portal] = {}
        self._next_plans: list[MaskPlan] | None = None
        self._rows: Any = None    # the current result's RowMasker, None = raw bytes
        self._idle: trio.Event | None = None

    # --- start -------------------------------------------------------------------

    async def start(self, link: BackendLink, params: dict[str, str]) -> None:
        """Load the catalog on the new upstream link, from the gateway cache if fresh."""
        enc = link.parameters.get("client_encoding", "UTF8")
        self.encoding = python_encoding(enc)
        self.m.set_client_encoding(enc)
        self.cache_key = (self.conn.name, params.get("search_path"), params.get("options"))
        self.generation = self.hub.generation.get(self.conn.name, 0)
        catalog = self.hub.cached(self.cache_key)
        if catalog is None:
            catalog = await fetch_catalog(link, self.encoding)
            self.hub.store(self.cache_key, catalog)
        self.m.set_catalog(catalog)

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

    def wants_catalog(self, msg: Any) -> bool:
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
            then stays and results are masked as unproven.
        """
        if self.queue:
            last = self.queue[-1]
            if self.skipping or last.kind not in ("S", "Q", "F", "X"):
                return False
            with trio.move_on_after(SYNC_WAIT_S):
                while self.queue:
                    self._idle = trio.Event()
                    await self._idle.wait()
            if self.queue:
                return False
        if self.session.txn_status == "E":
            return False
        generation = self.hub.generation.get(self.conn.name, 0)
        entry = _Entry("X")
        entry.rows = []
        entry.done = trio.Event()
        self._push(entry)
        await self.session._send_upstream(codec.query(CATALOG_QUERY))
        with trio.move_on_after(CATALOG_QUERY_TIMEOUT_S):
            await entry.done.wait()
        if not entry.done.is_set() or entry.failed:
            log.warning("event=masking_catalog_reload_failed session=%s",
                        self.session.session_id)
            return False
        catalog = SqlCatalog.from_rows(entry.rows or ())
        self.m.set_catalog(catalog)
        # SQL PREPAREd statements were planned with the old catalog and PostgreSQL
        # re-plans them after DDL: their results are unproven from now on.
        prepared = self.m._prepared
        for name, old in list(prepared.items()):
            prepared[name] = _fail_closed([old])[0]
        self.hub.store(self.cache_key, catalog)
        self.generation = generation
        self.stale = False
        log.info("event=masking_catalog_reloaded session=%s relations=%d",
                 self.session.session_id, len(catalog.relations))
        return True

    # --- frontend messages ----------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        if self.skipping:
            if entry.kind != "S":
                return  # PostgreSQL discards it: no answer will come
            self.skipping = False
        self.queue.append(entry)
        if len(self.queue) == 1:
            self._head_changed()

    def sent(self, msg: Any, refused: bool) -> None:
        """A Query, Parse or FunctionCall is about to go upstream (or its refusal marker)."""
        plans = None if refused else self._next_plans
        self._next_plans = None
        if plans is not None and any(p.refresh_catalog for p in plans):
            # DDL or search_path change: plans made with this catalog are unsafe from now.
            self.stale = True
            self.hub.invalidate(self.conn.name)
            self.generation = self.hub.generation[self.conn.name]
        if isinstance(msg, Query):
            self._push(_Entry("Q", plans))
        elif isinstance(msg, Parse):
            plan = plans[0] if plans is not None and len(plans) == 1 else None
            stmt = _Stmt(plan, msg.sql, self.m.catalog)
            self.statements[msg.name] = stmt
            self._push(_Entry("P", stmt=stmt))
        else:
            self._push(_Entry("F"))

    def on_frontend(self, kind: bytes, framer: Framer, start: int, end: int) -> bytes | None:
        """Track Bind, Describe, Execute, Close and Sync; may add a Describe before an
        Execute whose row layout nobody asked for (returns the replacement bytes)."""
        k = kind[0]
        if k == SYNC:
            self._push(_Entry("S"))
            return None
        msg = framer.decode(kind, start, end)
        if isinstance(msg, Bind):
            stmt = self.statements.get(msg.statement)
            if stmt is None:
                # A statement from SQL PREPARE can be bound too; its plan was tracked by
                # SessionMasking. Anything else is unknown: fail closed.
                sql_prepared = self.m._prepared.get(msg.statement)
                plan = sql_prepared if sql_prepared is not None else None
            else:
                plan = stmt.plan
            portal = _Portal(plan, stmt, msg.result_formats)
            self.portals[msg.portal] = portal
            self._push(_Entry("B", portal=portal, stmt=stmt))
        elif isinstance(msg, Describe):
            if msg.target == "S":
                stmt = self.statements.get(msg.name)
                if stmt is None:
                    stmt = self.statements[msg.name] = _Stmt(None)
                stmt.described = True
                self._push(_Entry("DS", stmt=stmt))
            else:
                portal = self.portals.get(msg.name)
                if portal is None:
                    portal = self.portals[msg.name] = _Portal(None, None, ())
                portal.described = True
                self._push(_Entry("DP", portal=portal))
        elif isinstance(msg, Execute):
            portal = self.portals.get(msg.portal)
            if portal is None:
                portal = self.portals[msg.portal] = _Portal(None, None, ())
            extra = None
            if not portal.described and not (portal.stmt is not None
                                             and portal.stmt.described):
                # Nobody described this portal: ask for its RowDescription ourselves (the
                # answer is not forwarded) so the rows can be masked by column.
                portal.described = True
                self._push(_Entry("XD", portal=portal))
                extra = codec.describe("P", msg.portal)
            self._push(_Entry("E", portal=portal))
            if extra is not None:
                return extra + bytes(framer.buf[start:end])
        elif isinstance(msg, Close):
            if msg.target == "S":
                self.statements.pop(msg.name, None)
            else:
                self.portals.pop(msg.name, None)
            self._push(_Entry("C"))
        return None

    # --- backend messages (backend task) --------------------------------------------

    def _head_changed(self) -> None:
        q = self.queue
        if not q:
            self._rows = None
            if self._idle is not None:
                self._idle.set()
            return
        head = q[0]
        if head.kind == "E":
            self._rows = self._portal_rows(head.portal)
        elif head.kind == "X":
            self._rows = _Collect(head, self.encoding)
        else:
            self._rows = None

    def _pop(self) -> None:
        if self.queue:
            self.queue.popleft()
        self._head_changed()

    def _portal_plan(self, portal: _Portal) -> MaskPlan | None:
        """The portal's plan, checked against DDL sent since its statement was planned."""
        plan = portal.plan
        stmt = portal.stmt
        if self.stale:
            return _fail_closed([plan])[0] if plan is not None else None
        if stmt is not None and stmt.sql is not None and stmt.catalog is not self.m.catalog:
            # Parsed before a catalog reload: PostgreSQL re-analyzes it, so do we.
            fresh = self.m.plan(stmt.sql)
            plan = fresh[0] if isinstance(fresh, list) and len(fresh) == 1 else None
            stmt.plan, stmt.catalog = plan, self.m.catalog
            portal.plan = plan
        return plan

    def _portal_rows(self, portal: _Portal | None) -> Any:
        if portal is None:
            return _NullAll()
        if portal.rows is False:
            fields = portal.fields
            if fields is None and portal.stmt is not None and portal.stmt.fields is not None:
                fields = _with_formats(portal.stmt.fields, portal.formats)
            if fields is None:
                portal.rows = _NullAll()
            else:
                rm = self.m.row_masker(self._portal_plan(portal), fields)
                portal.rows = None if rm.passthrough else rm
        return portal.rows

    def on_backend(self, kind: bytes, framer: Framer, start: int, end: int,
                   replacement: bytes | None) -> bytes | None:
        """Rewrite one upstream message for the client.

        Returns:
            Replacement bytes, ``b""`` to drop the message, or *replacement* as given
            (None: forward the original bytes).
        """
        if kind[0] == DATA_ROW:
            rows = self._rows
            if rows is None:
                return replacement
            body = bytes(framer.buf[start + 5:end])
            new = rows.mask_datarow(body)
            if new is body:
                return replacement
            if not new:
                return b""
            return b"D" + _I32.pack(len(new) + 4) + new
        return self._other(kind[0], kind, framer, start, end, replacement)

    def _other(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
               replacement: bytes | None) -> bytes | None:
        q = self.queue
        head = q[0] if q else None
        internal = head is not None and head.kind == "X"
        if k == NOTICE_RESPONSE:
            if internal:
                return b""
            return self._scrub(kind, framer, start, end, head)
        if k == PARAMETER_STATUS:  # not an answer to anything
            msg = framer.decode(kind, start, end)
            if msg.name == "client_encoding":
                self.encoding = python_encoding(msg.value)
                self.m.set_client_encoding(msg.value)
            return replacement
        if k == NOTIFICATION_RESPONSE:  # the payload is any text
            return self._notification(framer, start, end)
        if head is None:
            if k == ERROR_RESPONSE:
                return replacement if replacement is not None else \
                    self._scrub(kind, framer, start, end, None)
            return replacement
        hk = head.kind
        if k == ERROR_RESPONSE:
            out = replacement if replacement is not None else (
                b"" if internal else self._scrub(kind, framer, start, end, head))
            if internal:
                head.failed = True
            elif hk == "Q":
                head.copy = None
                self._rows = None
            elif hk in ("S", "F"):
                pass   # a failed COMMIT at Sync, or FunctionCall: ReadyForQuery follows
            else:
                # Extended protocol: PostgreSQL now skips everything up to Sync.
                while q and q[0].kind != "S":
                    q.popleft()
                if not q:
                    self.skipping = True
                self._head_changed()
            return out
        if hk == "Q":
            return self._query_message(k, kind, framer, start, end, head, replacement)
        if hk == "X":
            if k == READY_FOR_QUERY:
                self._pop()
                head.rows = head.rows or []
                assert head.done is not None
                head.done.set()
            return b""
        if hk == "E":
            if k == COMMAND_COMPLETE or k == PORTAL_SUSPENDED or k == EMPTY_QUERY_RESPONSE:
                self._pop()
            elif k == COPY_OUT_RESPONSE or k == COPY_DATA or k == COPY_DONE:
                return self._copy(k, kind, framer, start, end, head, replacement)
            return replacement
        if hk == "DS":
            if k == ROW_DESCRIPTION:
                head.stmt.fields = _fields(framer.decode(kind, start, end))
                self._pop()
            elif k == NO_DATA:
                head.stmt.fields = ()
                self._pop()
            return replacement
        if hk == "DP" or hk == "XD":
            if k == ROW_DESCRIPTION or k == NO_DATA:
                portal = head.portal
                portal.fields = _fields(framer.decode(kind, start, end)) if k == ROW_DESCRIPTION else ()
                portal.rows = False
                self._pop()
                return b"" if hk == "XD" else replacement
            return replacement
        if hk in ("P", "B", "C"):
            if k == PARSE_COMPLETE or k == BIND_COMPLETE or k == CLOSE_COMPLETE:
                self._pop()
            return replacement
        if hk == "S" or hk == "F":
            if k == READY_FOR_QUERY:
                self._pop()
            return replacement
        return replacement

    def _query_message(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
                       head: _Entry, replacement: bytes | None) -> bytes | None:
        if k == ROW_DESCRIPTION:
            rm = self.m.row_masker(head.plan(), _fields(framer.decode(kind, start, end)))
            self._rows = None if rm.passthrough else rm
        elif k == COMMAND_COMPLETE:
            head.k += 1
            head.copy = None
            self._rows = None
        elif k == READY_FOR_QUERY:
            self._pop()
        elif k == COPY_OUT_RESPONSE or k == COPY_DATA or k == COPY_DONE:
            return self._copy(k, kind, framer, start, end, head, replacement)
        return replacement

    def _copy(self, k: int, kind: bytes, framer: Framer, start: int, end: int,
              head: _Entry, replacement: bytes | None) -> bytes | None:
        buf = framer.buf
        if k == COPY_OUT_RESPONSE:
            ncols = _I16.unpack_from(buf, start + 6)[0]
            plan = self._portal_plan(head.portal) if head.portal is not None else head.plan()
            cm = self.m.copy_masker(plan, ncols, binary=buf[start + 5] == 1)
            head.copy = None if cm.passthrough else cm
            return replacement
        cm = head.copy
        if cm is None:
            return replacement
        if k == COPY_DATA:
            out = cm.feed(bytes(buf[start + 5:end]))
            return codec.message(b"d", out) if out else b""
        # CopyDone: whatever incomplete row is left, masked, then CopyDone.
        head.copy = None
        tail = cm.finish()
        raw = bytes(buf[start:end])
        return (codec.message(b"d", tail) + raw) if tail else replacement

    def _scrub(self, kind: bytes, framer: Framer, start: int, end: int,
               head: _Entry | None) -> bytes | None:
        fields = framer.decode(kind, start, end).fields
        plan = head.plan() if head is not None else None
        new = self.m.mask_error_fields(fields, plan)
        if new == fields:
            return None
        return codec.encode_fields(kind, new)

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


FUNCTION_CALL_REFUSED = PolicyDenied(
    "pgguard: masking: fastpath function calls are not allowed while masking is on",
    hint="call the function in a SELECT")
