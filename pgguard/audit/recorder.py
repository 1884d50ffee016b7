"""The gateway's side of the audit log: the trio :class:`Recorder`.

``record()`` enqueues into a bounded queue (and awaits when it is full: back-pressure,
never a dropped record), and ``run()`` is one writer task that batches records and does
every disk operation in a worker thread through the
:class:`~pgguard.audit.writer.SegmentWriter`, so the trio loop never waits on the disk.
The writer lets records gather for at most ``_GATHER_S`` (5 ms) before each hand-off to its
thread. ``flush()`` waits until everything enqueued so far is written (and fsynced when
``recording.fsync = "always"``) and makes the writer write at once.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from typing import Any

import trio

from ..config import RecordingConfig
from .format import RECORD_TYPES, AuditError, load_key, new_packer
from .writer import MAX_BATCH_BYTES, SegmentWriter, WriteFailed

log = logging.getLogger(__name__)

_MAX_BATCH_RECORDS = 4096  # records per hand-off to the writer thread
_SHUTDOWN_GRACE_S = 10.0
# How long the writer lets records gather before handing a batch to its thread. Each
# hand-off costs more CPU than writing a small record, and a busy gateway enqueues a record
# every few tens of microseconds; a few milliseconds turn one hand-off per record into one
# per many. A flush() waiter, a filling queue or shutdown cut the wait short, so
# fsync = "always" and back-pressure never wait for it. Kept well below fsync_interval_s.
_GATHER_S = 0.005


class RecorderClosed(AuditError):
    """A record was offered after :meth:`Recorder.aclose`, or the writer has stopped."""


class Recorder:
    """Records gateway sessions into the audit log without blocking the trio loop on disk.

    Usage::

        recorder = Recorder(cfg.recording, instance="gw1")
        await nursery.start(recorder.run)
        sid = recorder.session_id()
        await recorder.record(sid, "session_start", user="alice", groups=[...], ...)
        ...
        await recorder.aclose()

    Args:
        cfg: the ``[recording]`` configuration (``dir`` and ``key_file`` must be set).
        instance: the gateway instance id; each instance writes its own segment chain.

    Raises:
        AuditError: recording is not configured or the key cannot be read.
    """

    def __init__(self, cfg: RecordingConfig, instance: str):
        if not cfg.dir or not cfg.key_file:
            raise AuditError("recording.dir and recording.key_file must be set")
        self.cfg = cfg
        self.instance = instance
        self._writer = SegmentWriter(cfg.dir, load_key(cfg.key_file), instance,
                                      cfg.fsync, cfg.segment_max_bytes)
        self._packer = new_packer()
        self._queue: collections.deque[tuple[float, str, str, bytes]] = collections.deque()
        self._slots = trio.Semaphore(cfg.queue_size)
        self._limiter = trio.CapacityLimiter(1)
        self._wakeup = trio.Event()
        self._progress = trio.Event()
        self._stopped = trio.Event()
        self._enqueued = 0
        self._done = 0
        self._inflight = 0
        self._started = False
        self._closing = False
        self._pressure = False
        self._blocked = 0
        self._failing = False
        self._dirty_since: float | None = None
        self._segment_opened = 0.0
        self._segment = -1
        self._gather_s = min(_GATHER_S, cfg.fsync_interval_s / 4)
        self._gather_until: float | None = None
        # The writer stops gathering and writes at once at this queue length, well before
        # record() would have to wait for room.
        self._urgent_len = max(1, min(_MAX_BATCH_RECORDS, cfg.queue_size // 2))
        self._flushers = 0

    @property
    def max_rows(self) -> int:
        """How many rows of each result are recorded (``recording.max_rows``)."""
        return self.cfg.max_rows

    def session_id(self) -> str:
        """A new unique session id (16 hex digits)."""
        return secrets.token_hex(8)

    async def record(self, session_id: str, type: str, **fields: Any) -> None:
        """Enqueue one record.

        Never drops: when the queue holds ``recording.queue_size`` records this waits for
        room (back-pressure on the session), and logs once per episode that it does so.
        It does not checkpoint when the queue has room, to keep the hot path cheap.

        Args:
            session_id: from :meth:`session_id`.
            type: one of :data:`RECORD_TYPES`.
            **fields: the record's fields (docs/audit-format.md); values must already be
                masked. ``result`` rows beyond ``max_rows`` are cut and ``truncated`` set.

        Raises:
            ValueError: unknown record type.
            TypeError: a field value msgpack cannot carry.
            RecorderClosed: after :meth:`aclose` or once the writer has stopped.
        """
        await self.record_map(session_id, type, fields)

    async def record_map(self, session_id: str, type: str, fields: dict[str, Any]) -> None:
        """Enqueue one record whose fields are already in a dict (see :meth:`record`).

        The gateway's tap builds its fields as dicts; this spares it a copy per record.
        *fields* is packed before this returns, so the caller may reuse it afterwards;
        for a ``result`` or ``session_start`` it may be completed in place (``truncated``,
        ``instance``).

        Args:
            session_id: from :meth:`session_id`.
            type: one of :data:`RECORD_TYPES`.
            fields: the record's fields.

        Raises:
            ValueError: unknown record type.
            TypeError: a field value msgpack cannot carry.
            RecorderClosed: after :meth:`aclose` or once the writer has stopped.
        """
        if self._closing or self._stopped.is_set():
            raise RecorderClosed("the audit recorder is closed")
        if type not in RECORD_TYPES:
            raise ValueError(f"unknown audit record type {type!r}")
        if type == "result":
            rows = fields.get("rows")
            if rows is None:
                fields["rows"] = rows = []
            if len(rows) > self.cfg.max_rows:
                fields["rows"] = list(rows[: self.cfg.max_rows])
                fields["truncated"] = True
            fields.setdefault("truncated", False)
        elif type == "session_start":
            fields.setdefault("instance", self.instance)
        packed = self._packer.pack(fields)
        item = (time.time(), session_id, type, packed)
        self._inflight += 1
        try:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                self._wakeup.set()  # the writer must not sit out its gathering delay
                self._blocked += 1
                if not self._pressure:
                    self._pressure = True
                    log.warning("event=audit_backpressure queue_size=%d: the audit writer is behind; "
                                "sessions wait for it instead of dropping records",
                                self.cfg.queue_size)
                await self._slots.acquire()
            queue = self._queue
            queue.append(item)
            self._enqueued += 1
            # Wake the writer when it idles (an empty queue) or the batch is big enough;
            # otherwise it is already gathering and wakes at its deadline.
            if len(queue) == 1 or len(queue) >= self._urgent_len:
                self._wakeup.set()
        finally:
            self._inflight -= 1

    async def flush(self) -> None:
        """Wait until every record enqueued so far is written (fsynced if fsync="always").

        Raises:
            RecorderClosed: the writer stopped before writing them.
        """
        target = self._enqueued
        await trio.lowlevel.checkpoint()
        if self._done >= target:
            return
        # Someone waits: the writer writes now instead of gathering more records.
        self._flushers += 1
        self._wakeup.set()
        try:
            while self._done < target:
                if self._stopped.is_set():
                    raise RecorderClosed("the audit writer stopped before the records were "
                                         "written")
                await self._progress.wait()
        finally:
            self._flushers -= 1

    async def aclose(self) -> None:
        """Stop accepting records, write everything queued, and seal the open segment."""
        self._closing = True
        if not self._started:
            self._stopped.set()
            return
        self._wakeup.set()
        await self._stopped.wait()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: recover crashed segments, then write the queue until closed.

        Start it with ``await nursery.start(recorder.run)``: it reports started once
        recovery is done and a new segment is open.

        Raises:
            AuditError: another recorder holds this instance's segments.
            OSError: the recording folder cannot be created or read.
        """
        if self._started:
            raise RuntimeError("Recorder.run() is already running")
        if self._closing:  # closed before it ever ran: nothing to recover or seal
            task_status.started()
            return
        self._started = True
        try:
            self._segment = await trio.to_thread.run_sync(self._start_writer,
                                                          limiter=self._limiter)
        except BaseException:
            self._stopped.set()
            raise
        self._segment_opened = trio.current_time()
        task_status.started()
        try:
            await self._loop()
        finally:
            self._closing = True  # the writer is going away: refuse new records
            with trio.move_on_after(_SHUTDOWN_GRACE_S) as scope:
                scope.shield = True
                await self._shutdown()
            self._stopped.set()
            self._progress.set()

    def _start_writer(self) -> int:
        self._writer.start()
        return self._writer.number

    def _take_batch(self) -> list[tuple[float, str, str, bytes]]:
        # Items stay in the queue until written (_account pops them): a writer cancelled
        # mid-batch leaves them for the shutdown drain instead of losing them.
        batch = []
        size = 0
        for item in self._queue:
            if len(batch) >= _MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
                break
            size += len(item[3])
            batch.append(item)
        return batch

    def _due(self) -> tuple[float, bool, bool]:
        """Next deadline, and whether an fsync or an age rotation is due now."""
        now = trio.current_time()
        deadline = float("inf")
        sync_due = rotate_due = False
        if self.cfg.fsync == "batch" and self._dirty_since is not None:
            at = self._dirty_since + self.cfg.fsync_interval_s
            sync_due = now >= at
            deadline = min(deadline, at)
        if self._writer.records_in_segment:
            at = self._segment_opened + self.cfg.segment_max_age_s
            rotate_due = now >= at
            deadline = min(deadline, at)
        return deadline, sync_due, rotate_due

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing and self._inflight == 0:
                    return
                deadline, sync_due, rotate_due = self._due()
                if sync_due or rotate_due:
                    await self._write([], sync_due, rotate_due)
                    continue
                self._wakeup = trio.Event()
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                continue
            if self._gathering():
                self._wakeup = trio.Event()
                with trio.move_on_at(self._gather_until):
                    await self._wakeup.wait()
                continue
            self._gather_until = None
            batch = self._take_batch()
            _, sync_due, rotate_due = self._due()
            await self._write(batch, sync_due or self.cfg.fsync == "always", rotate_due)

    def _gathering(self) -> bool:
        """Whether the writer should wait for more records before writing the queue.

        It waits at most ``_gather_s`` from the moment it finds the queue non-empty (after
        its previous write), and not at all when someone awaits flush(), when the queue is
        filling up, or when the recorder closes.
        """
        if (not self._gather_s or self._flushers or self._closing
                or len(self._queue) >= self._urgent_len):
            return False
        now = trio.current_time()
        if self._gather_until is None:
            self._gather_until = now + self._gather_s
        return now < self._gather_until

    async def _write(self, batch: list[tuple[float, str, str, bytes]], sync: bool,
                     rotate: bool) -> None:
        remaining = batch
        backoff = 0.05
        while True:
            try:
                number = await trio.to_thread.run_sync(
                    self._writer.write_batch, remaining, sync, rotate,
                    limiter=self._limiter)
                break
            except WriteFailed as exc:
                self._account(exc.written)
                remaining = remaining[exc.written:]
                if not self._failing:
                    self._failing = True
                    log.error("event=audit_write_failed error=%s: retrying; sessions wait for the "
                              "audit log instead of losing records", exc.cause)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if self._failing:
            self._failing = False
            log.warning("event=audit_write_recovered")
        if number != self._segment:
            self._segment = number
            self._segment_opened = trio.current_time()
        if sync or self.cfg.fsync == "never":
            self._dirty_since = None
        elif remaining and self._dirty_since is None:
            self._dirty_since = trio.current_time()
        self._account(len(remaining))

    def _account(self, n: int) -> None:
        if not n:
            return
        self._done += n
        for _ in range(n):
            self._queue.popleft()
            self._slots.release()
        if self._pressure and len(self._queue) <= self.cfg.queue_size // 2:
            self._pressure = False
            log.warning("event=audit_backpressure_end blocked_records=%d", self._blocked)
            self._blocked = 0
        event, self._progress = self._progress, trio.Event()
        event.set()

    async def _shutdown(self) -> None:
        try:
            while self._queue:
                batch = self._take_batch()
                await self._write(batch, False, False)
            await trio.to_thread.run_sync(self._writer.close,
                                          limiter=self._limiter)
        except BaseException:
            if self._queue:
                log.error("event=audit_shutdown_incomplete unwritten_records=%d", len(self._queue))
            # Only os.close calls: safe on the loop, and the scope may already be cancelled.
            self._writer.close_fds()
            raise
