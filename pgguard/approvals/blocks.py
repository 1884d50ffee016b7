"""The kill switch's blocks, trio-facing: ``BLOCK USER``, ``UNBLOCK USER``, ``SHOW BLOCKS``.

Blocks live in the approvals store (its file or database, table ``pgguard_blocks``), so
they survive restarts and every gateway and worker sharing the store sees them. A gateway
uses :class:`Blocks` three ways:

* a session calls :meth:`Blocks.is_blocked` at start and refuses a blocked user;
* the admin console calls :meth:`Blocks.block` / :meth:`Blocks.unblock` /
  :meth:`Blocks.list`;
* one task runs :meth:`Blocks.watch` for the gateway's lifetime and ends the live sessions
  of every user blocked anywhere (a PostgreSQL store NOTIFYs ``pgguard_blocks`` so this is
  immediate; a SQLite store is polled).

The store opens even when ``approvals.approver_groups`` is empty (:meth:`Blocks.open`): a
gateway with ``[admin]`` but no approvals keeps its blocks at ``approvals.store`` (default
``sqlite:///pgguard-approvals.db``).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import trio

from ..config import ApprovalsConfig
from .model import Block, StoreUnavailable
from .service import in_thread, open_store
from .store import LIST_LIMIT, STORE_TIMEOUT_S, BlockStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What :meth:`Blocks.watch` calls for each new block; it may be a coroutine function.
OnBlock = Callable[[Block], Awaitable[None] | None]


class Blocks:
    """Kill-switch blocks in the approvals store: one per gateway process.

    Args:
        store: the store; :meth:`open` picks it from the configuration.
        instance: this gateway's id (recorded with the blocks it makes).
        poll_interval_s: how often :meth:`watch` looks for new blocks when the store cannot
            notify (SQLite); with notifications (PostgreSQL) it polls 10 times less often,
            at least every 5 s, only to cover a listener reconnecting.
        owns_store: :meth:`close` closes the store (False when it is shared with
            :class:`~.service.Approvals`, which closes it).
    """

    def __init__(self, store: BlockStore, instance: str, poll_interval_s: float = 0.5,
                 owns_store: bool = True):
        self.store = store
        self.instance = instance
        self.poll_interval_s = poll_interval_s
        self.owns_store = owns_store
        self._limiter = trio.CapacityLimiter(4)
        # Watchers in this process, poked when this process blocks someone, so a SQLite
        # store (no NOTIFY) still ends this gateway's sessions at once.
        self._local: set[Callable[[int], None]] = set()
        self._local_lock = threading.Lock()

    @classmethod
    def open(cls, cfg: ApprovalsConfig, instance: str,
             store: BlockStore | None = None) -> Blocks:
        """Blocks in the store ``cfg.store`` names, with or without approver groups.

        Args:
            cfg: the ``[approvals]`` section (its defaults when the file has none).
            instance: this gateway's id.
            store: a store already open for approvals (``Approvals.store``) to share;
                then :meth:`close` leaves it open.
        """
        if store is not None:
            return cls(store, instance, cfg.poll_interval_s, owns_store=False)
        return cls(open_store(cfg.store), instance, cfg.poll_interval_s)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await in_thread(fn, *args, limiter=self._limiter)

    async def start(self) -> None:
        """Create the store's tables if missing.

        Raises:
            StoreUnavailable: the store cannot be reached or written.
        """
        await self._call(self.store.setup)

    def close(self) -> None:
        """Release the store's connections (when this object owns it)."""
        if self.owns_store:
            self.store.close()

    # -- the console's side

    async def block(self, user: str, reason: str, blocked_by: str) -> tuple[Block, bool]:
        """Block *user* on every gateway sharing the store.

        Only records the block and tells the watchers (other gateways through the store,
        this process's :meth:`watch` directly); ending this gateway's live sessions is the
        caller's (the console's ``ConsoleContext.block_user``) or the watcher's job.

        Returns:
            The active block and whether this call created it (False: *user* was already
            blocked; the first block, its reason and author stand).

        Raises:
            ValueError: an empty or oversized user name.
            StoreUnavailable: the store failed.
        """
        block, created = await self._call(self.store.block, user, reason, blocked_by,
                                          self.instance)
        if created:
            with self._local_lock:
                pokes = list(self._local)
            for poke in pokes:
                poke(block.id)
        return block, created

    async def unblock(self, user: str, unblocked_by: str) -> Block | None:
        """Lift *user*'s block; new sessions are let in again at once.

        Returns:
            The lifted block, or None when *user* was not blocked.
        """
        return await self._call(self.store.unblock, user, unblocked_by)

    async def list(self, include_lifted: bool = False,
                   limit: int = LIST_LIMIT) -> list[Block]:
        """Active blocks (*include_lifted*: lifted ones too), oldest first."""
        return await self._call(self.store.blocks, include_lifted, limit)

    # -- the gateway's side

    async def is_blocked(self, user: str) -> str | None:
        """The reason *user* is blocked, or None when they are not.

        A session calls this at start, before it opens an upstream connection. The reason
        may be ``""`` (blocked without a reason): test the result with ``is not None``.

        Raises:
            StoreUnavailable: the store failed; the caller decides whether to fail closed.
        """
        block = await self._call(self.store.active_block, user)
        return None if block is None else block.reason

    async def watch(self, on_block: OnBlock, *, poll_s: float | None = None,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> NoReturn:
        """Call *on_block(block)* for every block made from now on, by any gateway.

        Run it as a task for the gateway's lifetime (``await nursery.start(blocks.watch,
        on_block)``; ``start`` returns once the watch is in place: blocks made after that
        are delivered). Blocks this process makes are delivered too, so the callback must
        tolerate users whose sessions are already gone. A block lifted before the watcher
        saw it is skipped. An exception in *on_block* is logged and the watch goes on; a
        store that fails is retried at the next poll.

        Args:
            on_block: a function or coroutine function taking the :class:`Block`.
            poll_s: how often to look without a notification; see the class docstring.
        """
        token = trio.lowlevel.current_trio_token()
        current = [trio.Event()]

        def poke(_block_id: int) -> None:
            # From the listener thread or this process's block(): wake the watcher.
            event = current[0]
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

        last = await self._call(self.store.last_block_id)
        listener = self.store.listen_blocks(poke)
        with self._local_lock:
            self._local.add(poke)
        try:
            if listener is not None:
                try:
                    ready = await self._call(listener.ready.wait, STORE_TIMEOUT_S)
                except StoreUnavailable:
                    ready = False
                if not ready:
                    log.warning("event=blocks_listen_not_ready fallback=polling")
            interval = poll_s if poll_s is not None else (
                self.poll_interval_s if listener is None else max(5.0, self.poll_interval_s * 10))
            task_status.started()
            while True:
                # A new event before the query: a poke during the query makes us look again.
                current[0] = trio.Event()
                try:
                    new = await self._call(self.store.blocks_after, last)
                except StoreUnavailable as exc:
                    log.warning("event=blocks_poll_failed error=%s", exc)
                    new = []
                for block in new:
                    last = max(last, block.id)
                    if block.active:
                        await self._deliver(on_block, block)
                with trio.move_on_after(interval):
                    await current[0].wait()
        finally:
            with self._local_lock:
                self._local.discard(poke)
            if listener is not None:
                listener.stop()

    async def _deliver(self, on_block: OnBlock, block: Block) -> None:
        try:
            result = on_block(block)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a bug in ending sessions must not end the watch
            log.exception("event=blocks_callback_failed id=%s", block.id)
