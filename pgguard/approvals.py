"""Held statements waiting for a human: the approvals store and the service sessions use.

A session whose statement needs review calls :meth:`Approvals.submit`, tells the client
:func:`held_notice`, then :meth:`Approvals.wait`. An approver decides through the admin
console (:mod:`pgguard.admin`), which calls :meth:`Approvals.decide`. Requests live in a
store:

* ``sqlite:///PATH`` (one host; the file survives restarts),
* ``postgresql://…`` (several gateways share one table, ``pgguard_approvals``; a decision
  sends ``NOTIFY pgguard_approvals`` so gateways waiting on it wake at once).

Every transition out of ``pending`` is a compare-and-set on the row (``… WHERE status =
'pending'``), so exactly one of a decision, a timeout, a withdrawal and an abandonment
wins, and the others see what won. Store I/O is blocking and runs in worker threads, off
the trio loop, under a deadline.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import trio

from .config import ApprovalsConfig
from .errors import ApprovalDenied, ApprovalTimeout, GatewayError, PolicyDenied, QueryCanceled

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "denied", "timeout", "withdrawn", "abandoned")
FINAL_BY_WAITER = ("timeout", "withdrawn")
TABLE = "pgguard_approvals"
CHANNEL = "pgguard_approvals"
# Bounds on what one request may hold, so a runaway client cannot fill the store.
MAX_SQL_CHARS = 1_000_000
MAX_REASON_CHARS = 2000
STORE_TIMEOUT_S = 10.0
LIST_LIMIT = 1000

T = TypeVar("T")


# ---------------------------------------------------------------------------- errors

class NotAnApprover(PolicyDenied):
    """The caller is in none of ``approvals.approver_groups``."""


class OwnRequest(PolicyDenied):
    """Nobody decides their own request."""


class AlreadyDecided(GatewayError, sqlstate="55000"):
    """The request left ``pending`` already (decided, timed out, withdrawn, abandoned)."""


class UnknownRequest(GatewayError, sqlstate="42704"):
    """No request has this id."""


class StoreUnavailable(GatewayError, sqlstate="58000"):
    """The approvals store could not be read or written in time."""


# ---------------------------------------------------------------------------- model

@dataclass(frozen=True, slots=True)
class Request:
    """One held statement and what became of it.

    ``params`` are the extended-protocol parameters *after* the masking detectors ran
    over them (the caller masks); ``None`` is SQL NULL.
    """

    id: int
    user: str
    groups: tuple[str, ...]
    connection: str
    category: str
    kind: str
    reason: str
    sql: str
    params: tuple[str | None, ...]
    created_at: datetime
    status: str
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    gateway: str

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def error(self) -> GatewayError | None:
        """The error a held client gets for this final status, or None when approved.

        Returns:
            ApprovalDenied (42501, with the approver's reason), ApprovalTimeout (57014)
            for a timeout or an abandoned request, QueryCanceled (57014) when withdrawn,
            None for ``approved``.
        """
        if self.status == "approved":
            return None
        if self.status == "denied":
            why = f": {self.decision_reason}" if self.decision_reason else ""
            return ApprovalDenied(f"request {self.id} denied by {self.decided_by}{why}")
        if self.status == "timeout":
            return ApprovalTimeout(f"request {self.id} was not decided in time")
        if self.status == "withdrawn":
            return QueryCanceled(f"request {self.id} was withdrawn")
        if self.status == "abandoned":
            return ApprovalTimeout(f"request {self.id} was abandoned by a gateway restart")
        return ApprovalTimeout(f"request {self.id} is still pending")


def held_notice(req: Request) -> str:
    """The NoticeResponse text a held client gets."""
    return f"pgguard: statement held for approval as request {req.id}"


def is_approver(groups: Iterable[str], allowed_groups: Iterable[str]) -> bool:
    """True when any of *groups* is in *allowed_groups* (an empty list allows nobody)."""
    return not set(groups).isdisjoint(allowed_groups)


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _jlist(value: Any) -> list[Any]:
    # psycopg decodes jsonb itself; sqlite hands back the text.
    return json.loads(value) if isinstance(value, str | bytes) else list(value)


COLUMNS = ("id, username, groups, connection, category, kind, reason, sql, params, "
           "created_at, status, decided_by, decision_reason, decided_at, gateway")


def _row(row: Sequence[Any]) -> Request:
    return Request(
        id=int(row[0]), user=row[1], groups=tuple(_jlist(row[2])), connection=row[3],
        category=row[4], kind=row[5], reason=row[6], sql=row[7],
        params=tuple(_jlist(row[8])), created_at=_ts(row[9]), status=row[10],
        decided_by=row[11], decision_reason=row[12], decided_at=_ts(row[13]),
        gateway=row[14])


def _explain_refusal(req: Request | None, request_id: int, approver: str) -> GatewayError:
    """Why a decision's compare-and-set matched no row."""
    if req is None:
        return UnknownRequest(f"no approval request {request_id}")
    if req.user == approver:
        return OwnRequest(f"you cannot decide your own request {request_id}")
    if req.status in ("approved", "denied"):
        return AlreadyDecided(f"request {request_id} was already {req.status} "
                              f"by {req.decided_by}")
    return AlreadyDecided(f"request {request_id} is no longer pending ({req.status})")


def _check_new(fields: dict[str, Any]) -> dict[str, Any]:
    sql = fields["sql"]
    if len(sql) > MAX_SQL_CHARS:
        sql = sql[:MAX_SQL_CHARS] + " /* pgguard: truncated */"
    params = [None if p is None else str(p) for p in fields.get("params") or ()]
    return dict(fields, sql=sql, params=params, groups=list(fields.get("groups") or ()))


# ---------------------------------------------------------------------------- stores

class ApprovalStore(Protocol):
    """Where requests live. All methods block; call them from a worker thread."""

    def setup(self) -> None:
        """Create the table if missing."""

    def create(self, *, user: str, groups: Sequence[str], connection: str, category: str,
               kind: str, reason: str, sql: str, params: Sequence[str | None],
               gateway: str) -> int:
        """Insert a pending request and return its id."""

    def get(self, request_id: int) -> Request | None:
        """The request, or None."""

    def list(self, status: str | None = "pending", limit: int = LIST_LIMIT) -> list[Request]:
        """Requests with *status* (None: any), oldest first, at most *limit* (newest kept)."""

    def decide(self, request_id: int, approver: str, approver_groups: Sequence[str],
               approve: bool, reason: str, allowed_groups: Sequence[str]) -> Request:
        """Approve or deny a pending request; see :meth:`_SqlStore.decide`."""

    def finish(self, request_id: int, status: str) -> Request | None:
        """Move a pending request to timeout/withdrawn; return the request as it now is."""

    def abandon_pending(self, gateway: str) -> int:
        """Mark this gateway's pending requests abandoned; return how many."""

    def close(self) -> None:
        """Release connections."""


class _SqlStore:
    """The logic both stores share; subclasses supply connections and the dialect."""

    placeholder = "%s"
    now_sql = "now()"

    def _run(self, fn: Callable[[Any], T], write: bool = False) -> T:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql.replace("%s", self.placeholder)

    def _notify(self, cur: Any, request_id: int) -> None:
        """Tell other gateways a request was decided (postgres only)."""

    def _now(self) -> Any:
        return time.time()

    def create(self, *, user: str, groups: Sequence[str], connection: str, category: str,
               kind: str, reason: str, sql: str, params: Sequence[str | None] = (),
               gateway: str) -> int:
        """Insert a pending request.

        Returns:
            The new id (never reused).

        Raises:
            StoreUnavailable: the store cannot be written.
        """
        f = _check_new(dict(user=user, groups=groups, connection=connection,
                            category=category, kind=kind, reason=reason, sql=sql,
                            params=params, gateway=gateway))

        def op(cur: Any) -> int:
            cur.execute(self._q(
                f"INSERT INTO {TABLE} (username, groups, connection, category, kind, reason,"
                " sql, params, created_at, status, gateway)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s) RETURNING id"),
                (f["user"], json.dumps(f["groups"]), f["connection"], f["category"],
                 f["kind"], f["reason"], f["sql"], json.dumps(f["params"]), self._now(),
                 f["gateway"]))
            return int(cur.fetchone()[0])

        return self._run(op, write=True)

    def get(self, request_id: int) -> Request | None:
        """The request with *request_id*, or None."""

        def op(cur: Any) -> Request | None:
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            row = cur.fetchone()
            return _row(row) if row else None

        return self._run(op)

    def list(self, status: str | None = "pending", limit: int = LIST_LIMIT) -> list[Request]:
        """Requests with *status* (None: every status), oldest first, the newest *limit*."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")

        def op(cur: Any) -> list[Request]:
            where = "WHERE status = %s" if status else ""
            args: tuple[Any, ...] = (status, limit) if status else (limit,)
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} {where}"
                                " ORDER BY id DESC LIMIT %s"), args)
            return [_row(r) for r in reversed(cur.fetchall())]

        return self._run(op)

    def decide(self, request_id: int, approver: str, approver_groups: Sequence[str],
               approve: bool, reason: str, allowed_groups: Sequence[str]) -> Request:
        """Approve or deny a pending request, once.

        Args:
            request_id: the request.
            approver: the deciding user (from their token).
            approver_groups: their groups.
            approve: True to approve, False to deny.
            reason: free text, stored verbatim (a bound parameter, never SQL).
            allowed_groups: ``approvals.approver_groups``.

        Returns:
            The request after the decision.

        Raises:
            NotAnApprover: *approver_groups* and *allowed_groups* do not meet (42501).
            OwnRequest: *approver* made the request (42501).
            UnknownRequest: no such id (42704).
            AlreadyDecided: it is no longer pending (55000).
            StoreUnavailable: the store failed.
        """
        if not is_approver(approver_groups, allowed_groups):
            raise NotAnApprover(f"{approver} is not in an approver group "
                                f"({', '.join(allowed_groups) or 'none configured'})")
        reason = reason[:MAX_REASON_CHARS]
        status = "approved" if approve else "denied"

        def op(cur: Any) -> Request | GatewayError:
            # One statement is the compare-and-set: of two concurrent deciders only one
            # matches status = 'pending'; the requester never matches their own row.
            cur.execute(self._q(
                f"UPDATE {TABLE} SET status = %s, decided_by = %s, decision_reason = %s,"
                " decided_at = %s WHERE id = %s AND status = 'pending' AND username <> %s"
                f" RETURNING {COLUMNS}"),
                (status, approver, reason, self._now(), int(request_id), approver))
            row = cur.fetchone()
            if row is not None:
                self._notify(cur, int(request_id))
                return _row(row)
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            found = cur.fetchone()
            return _explain_refusal(_row(found) if found else None, request_id, approver)

        result = self._run(op, write=True)
        if isinstance(result, GatewayError):
            raise result
        log.info("approval_decided id=%s status=%s by=%s", result.id, status, approver)
        return result

    def finish(self, request_id: int, status: str) -> Request | None:
        """End a pending request from the waiting side (timeout or withdrawal).

        Only a pending request changes; a decision that got there first stands.

        Returns:
            The request as it now is (its status may be a decision), or None if unknown.
        """
        if status not in FINAL_BY_WAITER:
            raise ValueError(f"finish() takes {FINAL_BY_WAITER}, not {status!r}")

        def op(cur: Any) -> Request | None:
            cur.execute(self._q(f"UPDATE {TABLE} SET status = %s, decided_at = %s"
                                " WHERE id = %s AND status = 'pending'"),
                        (status, self._now(), int(request_id)))
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            row = cur.fetchone()
            return _row(row) if row else None

        return self._run(op, write=True)

    def abandon_pending(self, gateway: str) -> int:
        """Mark requests still pending from an earlier run of *gateway* abandoned.

        Call once at startup, before this gateway submits anything.

        Returns:
            How many requests were abandoned.
        """

        def op(cur: Any) -> int:
            cur.execute(self._q(f"UPDATE {TABLE} SET status = 'abandoned', decided_at = %s"
                                " WHERE gateway = %s AND status = 'pending'"),
                        (self._now(), gateway))
            return int(cur.rowcount or 0)

        n = self._run(op, write=True)
        if n:
            log.warning("approvals_abandoned gateway=%s count=%d", gateway, n)
        return n


SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    groups TEXT NOT NULL,
    connection TEXT NOT NULL,
    category TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    sql TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT,
    decision_reason TEXT,
    decided_at REAL,
    gateway TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_status ON {TABLE} (status, gateway);
"""


def sqlite_path(store: str) -> str:
    """The file a ``sqlite:///…`` store names.

    ``sqlite:///var/lib/pgguard/approvals.db`` is ``/var/lib/pgguard/approvals.db`` (as in
    the documented example), ``sqlite:////abs.db`` is ``/abs.db``; a bare file name
    (``sqlite:///approvals.db``) or one starting with ``./`` is relative to the working
    directory.
    """
    if not store.startswith("sqlite:///"):
        raise ValueError("not a sqlite:/// store")
    rest = store[len("sqlite:///"):]
    if not rest:
        raise ValueError("sqlite:/// store names no file")
    if rest.startswith("/") or rest.startswith("./") or "/" not in rest:
        return rest
    return "/" + rest


class SqliteStore(_SqlStore):
    """Requests in a SQLite file: one host, survives restarts, safe across processes."""

    placeholder = "?"

    def __init__(self, path: str, busy_timeout_s: float = 5.0):
        self.path = path
        self.busy_timeout_s = busy_timeout_s

    def setup(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        # The SQL of held statements may hold personal data: owner-only from the start.
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: cheap for SQLite and safe from any worker thread.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        return conn

    def _run(self, fn: Callable[[Any], T], write: bool = False) -> T:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"approvals store unavailable: {exc}") from None
        try:
            cur = conn.cursor()
            # IMMEDIATE takes the write lock up front so read-then-write sequences within
            # one operation see no interleaved writer.
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(cur)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"approvals store unavailable: {exc}") from None
        finally:
            conn.close()

    def close(self) -> None:
        pass


POSTGRES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    groups jsonb NOT NULL,
    connection text NOT NULL,
    category text NOT NULL,
    kind text NOT NULL,
    reason text NOT NULL,
    sql text NOT NULL,
    params jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN
        ('pending', 'approved', 'denied', 'timeout', 'withdrawn', 'abandoned')),
    decided_by text,
    decision_reason text,
    decided_at timestamptz,
    gateway text NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_pending ON {TABLE} (gateway) WHERE status = 'pending'
"""


class PostgresStore(_SqlStore):
    """Requests in a PostgreSQL table several gateways share; decisions NOTIFY them."""

    def __init__(self, dsn: str, timeout_s: float = STORE_TIMEOUT_S, max_idle: int = 4):
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def connect(self, autocommit: bool = True) -> Any:
        """A new psycopg connection to the store with bounded connect and statement time."""
        import psycopg

        ms = int(self.timeout_s * 1000)
        return psycopg.connect(self.dsn, autocommit=autocommit,
                               connect_timeout=max(1, int(self.timeout_s)),
                               options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
                               application_name="pgguard-approvals")

    def _now(self) -> Any:
        return datetime.now(UTC)

    def _notify(self, cur: Any, request_id: int) -> None:
        # Delivered at commit, so listeners never wake before the decision is visible.
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(request_id)))

    def setup(self) -> None:
        def op(cur: Any) -> None:
            # Two gateways starting together would race on CREATE TABLE IF NOT EXISTS.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            for stmt in POSTGRES_SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)

        self._run(op, write=True)

    def _run(self, fn: Callable[[Any], T], write: bool = False) -> T:
        import psycopg

        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None or conn.closed:
                conn = self.connect()
            with conn.transaction(), conn.cursor() as cur:
                result = fn(cur)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"approvals store unavailable: {type(exc).__name__}: "
                                   f"{str(exc).strip()}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def open_store(store: str) -> SqliteStore | PostgresStore:
    """The store an ``approvals.store`` setting names (no I/O yet)."""
    if store.startswith("sqlite:///"):
        return SqliteStore(sqlite_path(store))
    if store.startswith(("postgresql://", "postgres://")):
        return PostgresStore(store)
    raise ValueError("approvals.store must be sqlite:///PATH or a postgresql:// DSN")


# ---------------------------------------------------------------------------- service

def _thread_kwargs() -> dict[str, bool]:
    # trio renamed cancellable to abandon_on_cancel in 0.23.
    params = inspect.signature(trio.to_thread.run_sync).parameters
    key = "abandon_on_cancel" if "abandon_on_cancel" in params else "cancellable"
    return {key: True}


_ABANDON = _thread_kwargs()


class _Listener:
    """A daemon thread LISTENing on the postgres store, waking local waiters on NOTIFY."""

    def __init__(self, store: PostgresStore, on_notify: Callable[[int], None]):
        self.store = store
        self.on_notify = on_notify
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pgguard-approvals-listen",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self.store.connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.payload.isdigit():
                                self.on_notify(int(note.payload))
            except Exception as exc:  # the poll still bounds the delay; retry quietly
                log.warning("approvals_listen_failed error=%s", type(exc).__name__)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self.stopping.set()


class Approvals:
    """The trio-facing approvals service: one per gateway process.

    Args:
        cfg: the ``[approvals]`` section.
        instance: this gateway's id, stable across its restarts and unique among the
            gateways sharing a store (e.g. ``hostname:port``); requests it left pending
            are abandoned by :meth:`start`.
        store: an explicit store (tests); default from ``cfg.store``.
    """

    def __init__(self, cfg: ApprovalsConfig, instance: str,
                 store: SqliteStore | PostgresStore | None = None):
        self.cfg = cfg
        self.instance = instance
        self.store = store if store is not None else open_store(cfg.store)
        self._limiter = trio.CapacityLimiter(8)
        self._waiters: dict[int, set[tuple[trio.lowlevel.TrioToken, trio.Event]]] = {}
        self._waiters_lock = threading.Lock()
        self._listener: _Listener | None = None

    # -- plumbing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        with trio.move_on_after(STORE_TIMEOUT_S + 2) as scope:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter, **_ABANDON)
        assert scope.cancelled_caught
        raise StoreUnavailable("approvals store did not answer in time")

    def _wake(self, request_id: int) -> None:
        """Wake local waiters on *request_id*; callable from any thread."""
        with self._waiters_lock:
            waiters = list(self._waiters.get(request_id, ()))
        for token, event in waiters:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

    # -- lifecycle

    async def start(self) -> int:
        """Create the store's table and abandon this instance's leftovers.

        Returns:
            How many requests were abandoned.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        await self._call(self.store.setup)
        return await self._call(self.store.abandon_pending, self.instance)

    def close(self) -> None:
        """Stop the NOTIFY listener and drop idle connections."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.store.close()

    # -- the held session's side

    async def submit(self, *, user: str, groups: Sequence[str], connection: str,
                     category: str, kind: str, reason: str, sql: str,
                     params: Sequence[str | None] = ()) -> Request:
        """Record a pending request.

        Args:
            params: extended-protocol parameters, already masked by the caller.

        Returns:
            The stored request (its id goes into :func:`held_notice`).

        Raises:
            StoreUnavailable: the store failed; the caller should refuse the statement.
        """
        request_id = await self._call(lambda: self.store.create(
            user=user, groups=groups, connection=connection, category=category, kind=kind,
            reason=reason, sql=sql, params=params, gateway=self.instance))
        req = await self.get(request_id)
        if req is None:
            raise StoreUnavailable(f"request {request_id} vanished from the store")
        log.info("approval_requested id=%s user=%s connection=%s category=%s kind=%s",
                 req.id, user, connection, category, kind)
        return req

    async def wait(self, request_id: int, timeout_s: float | None = None) -> Request:
        """Wait for the request's final status.

        Polls the store every ``poll_interval_s``; with a postgres store a NOTIFY (and with
        any store a decision made through this object) wakes it sooner. When the timeout
        expires the request is marked ``timeout``, unless a decision got there first, in
        which case that decision is returned. If the caller cancels the wait (the client
        sent CancelRequest or hung up), the request is withdrawn before the cancellation
        propagates.

        Args:
            timeout_s: default ``approvals.timeout_s``.

        Returns:
            The request in a final status; see :meth:`Request.error`.

        Raises:
            UnknownRequest: no such request.
            StoreUnavailable: the store failed at the timeout and the outcome is unknown.
        """
        timeout = self.cfg.timeout_s if timeout_s is None else timeout_s
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()
        entry = (token, event)
        with self._waiters_lock:
            self._waiters.setdefault(request_id, set()).add(entry)
        if isinstance(self.store, PostgresStore) and self._listener is None:
            self._listener = _Listener(self.store, self._wake)
        try:
            with trio.move_on_after(timeout):
                while True:
                    try:
                        req = await self._call(self.store.get, request_id)
                    except StoreUnavailable as exc:
                        log.warning("approval_poll_failed id=%s error=%s", request_id, exc)
                        req = None
                    else:
                        if req is None:
                            raise UnknownRequest(f"no approval request {request_id}")
                        if not req.pending:
                            return req
                    with trio.move_on_after(self.cfg.poll_interval_s):
                        await event.wait()
                    if event.is_set():
                        event = trio.Event()
                        with self._waiters_lock:
                            self._waiters[request_id].discard(entry)
                            entry = (token, event)
                            self._waiters[request_id].add(entry)
            final = await self._call(self.store.finish, request_id, "timeout")
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.withdraw(request_id)
            raise
        finally:
            with self._waiters_lock:
                entries = self._waiters.get(request_id)
                if entries is not None:
                    entries.discard(entry)
                    if not entries:
                        del self._waiters[request_id]
        if final is None:
            raise UnknownRequest(f"no approval request {request_id}")
        log.info("approval_finished id=%s status=%s", final.id, final.status)
        return final

    async def withdraw(self, request_id: int) -> Request | None:
        """Withdraw a pending request (client cancel or disconnect).

        Returns:
            The request as it now is (a decision that won stays), or None if unknown.
        """
        try:
            return await self._call(self.store.finish, request_id, "withdrawn")
        except StoreUnavailable as exc:
            log.warning("approval_withdraw_failed id=%s error=%s", request_id, exc)
            return None

    # -- the admin console's side

    async def get(self, request_id: int) -> Request | None:
        """The request, or None."""
        return await self._call(self.store.get, request_id)

    async def list(self, status: str | None = "pending",
                   limit: int = LIST_LIMIT) -> list[Request]:
        """Requests with *status* (None: all), oldest first."""
        return await self._call(self.store.list, status, limit)

    async def decide(self, request_id: int, approver: str, approver_groups: Sequence[str],
                     approve: bool, reason: str) -> Request:
        """Approve or deny, checked against ``approvals.approver_groups``.

        Raises:
            NotAnApprover, OwnRequest, UnknownRequest, AlreadyDecided, StoreUnavailable.
        """
        req = await self._call(self.store.decide, request_id, approver,
                               tuple(approver_groups), approve, reason,
                               tuple(self.cfg.approver_groups))
        self._wake(req.id)
        return req
