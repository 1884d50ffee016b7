"""Requests and blocks in PostgreSQL tables several gateways share; changes NOTIFY them.

A decision sends ``NOTIFY pgguard_approvals`` with the request id; each gateway waiting on
requests runs one :class:`Listener` thread that LISTENs and wakes its local waiters, so
they need not wait for their next poll. A block (``BLOCK USER``) sends ``NOTIFY
pgguard_blocks`` with the block id, which every gateway watching blocks hears at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .model import StoreUnavailable
from .store import (
    BLOCKS_CHANNEL,
    BLOCKS_TABLE,
    CHANNEL,
    STORE_TIMEOUT_S,
    TABLE,
    Cursor,
    SqlStore,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# psycopg is imported where used: it costs about 0.2 s, and a gateway with a SQLite store
# (or none) never needs it. Its connections are therefore typed Any here.

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
CREATE INDEX IF NOT EXISTS {TABLE}_pending ON {TABLE} (gateway) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS {BLOCKS_TABLE} (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    reason text NOT NULL,
    blocked_by text NOT NULL,
    blocked_at timestamptz NOT NULL DEFAULT now(),
    gateway text NOT NULL,
    unblocked_by text,
    unblocked_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS {BLOCKS_TABLE}_active ON {BLOCKS_TABLE} (username)
    WHERE unblocked_at IS NULL
"""


class PostgresStore(SqlStore):
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

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _notify(self, cur: Cursor, request_id: int) -> None:
        # Delivered at commit, so listeners never wake before the decision is visible.
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(request_id)))

    def listen(self, on_decided: Callable[[int], None]) -> Listener:
        """Start a LISTEN thread calling *on_decided(id)* for every decision's NOTIFY."""
        return Listener(self, on_decided)

    def _notify_block(self, cur: Cursor, block_id: int) -> None:
        cur.execute("SELECT pg_notify(%s, %s)", (BLOCKS_CHANNEL, str(block_id)))

    def listen_blocks(self, on_block: Callable[[int], None]) -> Listener:
        """Start a LISTEN thread calling *on_block(id)* for every block's NOTIFY."""
        return Listener(self, on_block, channel=BLOCKS_CHANNEL)

    def setup(self) -> None:
        def op(cur: Cursor) -> None:
            # Two gateways starting together would race on CREATE TABLE IF NOT EXISTS.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            for stmt in POSTGRES_SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)

        self._run(op, write=True)

    def _run(self, fn: Callable[[Cursor], T], write: bool = False) -> T:
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


class Listener:
    """A daemon thread LISTENing on the postgres store, waking local waiters on NOTIFY.

    ``ready`` is set once the first LISTEN is in place (notifications sent after that
    arrive); after a reconnect the caller's poll covers what was missed in between.
    """

    def __init__(self, store: PostgresStore, on_notify: Callable[[int], None],
                 channel: str = CHANNEL):
        self.store = store
        self.on_notify = on_notify
        self.channel = channel
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"{channel}-listen",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self.store.connect() as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.ready.set()
                    backoff = 0.5
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.payload.isdigit():
                                self.on_notify(int(note.payload))
            except Exception as exc:  # the poll still bounds the delay; retry quietly
                log.warning("approvals_listen_failed channel=%s error=%s", self.channel,
                            type(exc).__name__)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self.stopping.set()
