"""The trio-facing approvals service sessions and the admin console use.

A session whose statement needs review calls :meth:`Approvals.submit`, tells the client
:func:`~.model.held_notice`, then :meth:`Approvals.wait`. An approver decides through the
admin console (:mod:`pgguard.admin`), which calls :meth:`Approvals.decide`. Requests live
in a store:

* ``sqlite:///PATH`` (one host; the file survives restarts; :mod:`.sqlite`),
* ``postgresql://…`` (several gateways share one table, ``pgguard_approvals``; a decision
  sends ``NOTIFY pgguard_approvals`` so gateways waiting on it wake at once;
  :mod:`.postgres`).

Store I/O is blocking and runs in worker threads, off the trio loop, under a deadline.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

from ..config import ApprovalsConfig
from .model import Request, StoreUnavailable, UnknownRequest
from .postgres import PostgresStore
from .sqlite import SqliteStore, sqlite_path
from .store import LIST_LIMIT, STORE_TIMEOUT_S, ApprovalStore, Watch

log = logging.getLogger(__name__)

T = TypeVar("T")


def open_store(store: str) -> SqliteStore | PostgresStore:
    """The store an ``approvals.store`` setting names (no I/O yet)."""
    if store.startswith("sqlite:///"):
        return SqliteStore(sqlite_path(store))
    if store.startswith(("postgresql://", "postgres://")):
        return PostgresStore(store)
    raise ValueError("approvals.store must be sqlite:///PATH or a postgresql:// DSN")


def _thread_kwargs() -> dict[str, bool]:
    # trio renamed cancellable to abandon_on_cancel in 0.23.
    params = inspect.signature(trio.to_thread.run_sync).parameters
    key = "abandon_on_cancel" if "abandon_on_cancel" in params else "cancellable"
    return {key: True}


_ABANDON = _thread_kwargs()


async def in_thread(fn: Callable[..., T], *args: object,
                    limiter: trio.CapacityLimiter) -> T:
    """``fn(*args)`` in a worker thread under the store's deadline.

    Raises:
        StoreUnavailable: no answer within ``STORE_TIMEOUT_S`` (+2 s); the thread is
            abandoned (the store's own timeouts end it).
    """
    with trio.move_on_after(STORE_TIMEOUT_S + 2) as scope:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter, **_ABANDON)
    assert scope.cancelled_caught
    raise StoreUnavailable("approvals store did not answer in time")


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
                 store: ApprovalStore | None = None):
        self.cfg = cfg
        self.instance = instance
        self.store: ApprovalStore = store if store is not None else open_store(cfg.store)
        self._limiter = trio.CapacityLimiter(8)
        self._waiters: dict[int, set[tuple[trio.lowlevel.TrioToken, trio.Event]]] = {}
        self._waiters_lock = threading.Lock()
        self._listener: Watch | None = None

    # -- plumbing

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await in_thread(fn, *args, limiter=self._limiter)

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
        """Create the store's tables (requests and blocks) and abandon this instance's leftovers.

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
        if self._listener is None:
            # Only a store that can notify (postgres) starts a listener; others return None
            # and their waiters rely on polling and on decisions made through this object.
            self._listener = self.store.listen(self._wake)
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
