"""Requests and blocks in a SQLite file: one host, survives restarts, safe across processes.

Blocks are not notified: watchers on this host (other workers) find them by polling.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from .model import StoreUnavailable
from .store import BLOCKS_TABLE, TABLE, Cursor, SqlStore

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS {BLOCKS_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    reason TEXT NOT NULL,
    blocked_by TEXT NOT NULL,
    blocked_at REAL NOT NULL,
    gateway TEXT NOT NULL,
    unblocked_by TEXT,
    unblocked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS {BLOCKS_TABLE}_active ON {BLOCKS_TABLE} (username)
    WHERE unblocked_at IS NULL;
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


class SqliteStore(SqlStore):
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

    def _run(self, fn: Callable[[Cursor], T], write: bool = False) -> T:
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
