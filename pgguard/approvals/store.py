"""Where requests live: the Protocol both stores fulfil, and the SQL they share.

Every transition out of ``pending`` is a compare-and-set on the row (``… WHERE status =
'pending'``), so exactly one of a decision, a timeout, a withdrawal and an abandonment
wins, and the others see what won. All methods block; the service calls them from worker
threads. The dialects live in :mod:`.sqlite` and :mod:`.postgres`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ..errors import GatewayError
from .model import (
    FINAL_BY_WAITER,
    MAX_REASON_CHARS,
    MAX_SQL_CHARS,
    MAX_USER_CHARS,
    STATUSES,
    Block,
    NotAnApprover,
    Request,
    explain_refusal,
    is_approver,
)

log = logging.getLogger(__name__)

TABLE = "pgguard_approvals"
CHANNEL = "pgguard_approvals"
# The kill switch's blocks share the store (file or database) but not the table: a
# gateway without approvals still keeps blocks there.
BLOCKS_TABLE = "pgguard_blocks"
BLOCKS_CHANNEL = "pgguard_blocks"
STORE_TIMEOUT_S = 10.0
LIST_LIMIT = 1000

T = TypeVar("T")

COLUMNS = ("id, username, groups, connection, category, kind, reason, sql, params, "
           "created_at, status, decided_by, decision_reason, decided_at, gateway")
BLOCK_COLUMNS = "id, username, reason, blocked_by, blocked_at, gateway, unblocked_by, unblocked_at"


class Cursor(Protocol):
    """The DB-API cursor surface the shared SQL uses (sqlite3 and psycopg both have it)."""

    rowcount: int

    def execute(self, query: str, params: Sequence[object] = ..., /) -> object: ...

    def fetchone(self) -> Sequence[Any] | None: ...

    def fetchall(self) -> list[Sequence[Any]]: ...


class Watch(Protocol):
    """A running notification listener a store started; see :meth:`ApprovalStore.listen`."""

    #: Set once the listener hears notifications (sent after it is set, they arrive).
    ready: threading.Event

    def stop(self) -> None: ...


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
        """Approve or deny a pending request; see :meth:`SqlStore.decide`."""

    def finish(self, request_id: int, status: str) -> Request | None:
        """Move a pending request to timeout/withdrawn; return the request as it now is."""

    def abandon_pending(self, gateway: str) -> int:
        """Mark this gateway's pending requests abandoned; return how many."""

    def listen(self, on_decided: Callable[[int], None]) -> Watch | None:
        """Start calling *on_decided(id)* (from any thread) when another gateway decides.

        Returns:
            The running listener, or None when the store cannot notify (waiters poll).
        """

    def close(self) -> None:
        """Release connections."""


class BlockStore(Protocol):
    """Where kill-switch blocks live. All methods block; call them from a worker thread."""

    def setup(self) -> None:
        """Create the tables (requests and blocks) if missing."""

    def block(self, user: str, reason: str, blocked_by: str, gateway: str
              ) -> tuple[Block, bool]:
        """Block *user*; see :meth:`SqlStore.block`."""

    def unblock(self, user: str, unblocked_by: str) -> Block | None:
        """Lift *user*'s active block; see :meth:`SqlStore.unblock`."""

    def active_block(self, user: str) -> Block | None:
        """*user*'s active block, or None."""

    def blocks(self, include_lifted: bool = False, limit: int = LIST_LIMIT) -> list[Block]:
        """Active blocks (or every block), oldest first, the newest *limit*."""

    def blocks_after(self, block_id: int) -> list[Block]:
        """Blocks created after *block_id* (by any gateway), oldest first."""

    def last_block_id(self) -> int:
        """The newest block's id, 0 when there is none."""

    def listen_blocks(self, on_block: Callable[[int], None]) -> Watch | None:
        """Start calling *on_block(id)* (from any thread) when any gateway blocks a user.

        Returns:
            The running listener, or None when the store cannot notify (watchers poll).
        """

    def close(self) -> None:
        """Release connections."""


# ---------------------------------------------------------------------------- rows

def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _jlist(value: Any) -> list[Any]:
    # psycopg decodes jsonb itself; sqlite hands back the text.
    return json.loads(value) if isinstance(value, str | bytes) else list(value)


def row_to_request(row: Sequence[Any]) -> Request:
    """A :class:`Request` from a row selected as :data:`COLUMNS`."""
    return Request(
        id=int(row[0]), user=row[1], groups=tuple(_jlist(row[2])), connection=row[3],
        category=row[4], kind=row[5], reason=row[6], sql=row[7],
        params=tuple(_jlist(row[8])), created_at=_ts(row[9]), status=row[10],
        decided_by=row[11], decision_reason=row[12], decided_at=_ts(row[13]),
        gateway=row[14])


def row_to_block(row: Sequence[Any]) -> Block:
    """A :class:`Block` from a row selected as :data:`BLOCK_COLUMNS`."""
    blocked_at = _ts(row[4])
    assert blocked_at is not None  # NOT NULL in both schemas
    return Block(id=int(row[0]), user=row[1], reason=row[2], blocked_by=row[3],
                 blocked_at=blocked_at, gateway=row[5], unblocked_by=row[6],
                 unblocked_at=_ts(row[7]))


def _check_new(fields: dict[str, Any]) -> dict[str, Any]:
    sql = fields["sql"]
    if len(sql) > MAX_SQL_CHARS:
        sql = sql[:MAX_SQL_CHARS] + " /* pgguard: truncated */"
    params = [None if p is None else str(p) for p in fields.get("params") or ()]
    return dict(fields, sql=sql, params=params, groups=list(fields.get("groups") or ()))


# ---------------------------------------------------------------------------- shared SQL

class SqlStore:
    """The logic both stores share; subclasses supply connections and the dialect."""

    placeholder = "%s"

    def _run(self, fn: Callable[[Cursor], T], write: bool = False) -> T:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql.replace("%s", self.placeholder)

    def _notify(self, cur: Cursor, request_id: int) -> None:
        """Tell other gateways a request was decided (postgres only)."""

    def _now(self) -> float | datetime:
        return time.time()

    def listen(self, on_decided: Callable[[int], None]) -> Watch | None:
        """No notifications by default: waiters find decisions by polling."""
        return None

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

        def op(cur: Cursor) -> int:
            cur.execute(self._q(
                f"INSERT INTO {TABLE} (username, groups, connection, category, kind, reason,"
                " sql, params, created_at, status, gateway)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s) RETURNING id"),
                (f["user"], json.dumps(f["groups"]), f["connection"], f["category"],
                 f["kind"], f["reason"], f["sql"], json.dumps(f["params"]), self._now(),
                 f["gateway"]))
            row = cur.fetchone()
            assert row is not None  # RETURNING always yields the new row
            return int(row[0])

        return self._run(op, write=True)

    def get(self, request_id: int) -> Request | None:
        """The request with *request_id*, or None."""

        def op(cur: Cursor) -> Request | None:
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            row = cur.fetchone()
            return row_to_request(row) if row else None

        return self._run(op)

    def list(self, status: str | None = "pending", limit: int = LIST_LIMIT) -> list[Request]:
        """Requests with *status* (None: every status), oldest first, the newest *limit*."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")

        def op(cur: Cursor) -> list[Request]:
            where = "WHERE status = %s" if status else ""
            args: tuple[object, ...] = (status, limit) if status else (limit,)
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} {where}"
                                " ORDER BY id DESC LIMIT %s"), args)
            return [row_to_request(r) for r in reversed(cur.fetchall())]

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

        def op(cur: Cursor) -> Request | GatewayError:
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
                return row_to_request(row)
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            found = cur.fetchone()
            return explain_refusal(row_to_request(found) if found else None, request_id,
                                   approver)

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

        def op(cur: Cursor) -> Request | None:
            cur.execute(self._q(f"UPDATE {TABLE} SET status = %s, decided_at = %s"
                                " WHERE id = %s AND status = 'pending'"),
                        (status, self._now(), int(request_id)))
            cur.execute(self._q(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"),
                        (int(request_id),))
            row = cur.fetchone()
            return row_to_request(row) if row else None

        return self._run(op, write=True)

    def abandon_pending(self, gateway: str) -> int:
        """Mark requests still pending from an earlier run of *gateway* abandoned.

        Call once at startup, before this gateway submits anything.

        Returns:
            How many requests were abandoned.
        """

        def op(cur: Cursor) -> int:
            cur.execute(self._q(f"UPDATE {TABLE} SET status = 'abandoned', decided_at = %s"
                                " WHERE gateway = %s AND status = 'pending'"),
                        (self._now(), gateway))
            return int(cur.rowcount or 0)

        n = self._run(op, write=True)
        if n:
            log.warning("approvals_abandoned gateway=%s count=%d", gateway, n)
        return n

    # ------------------------------------------------------------------------ blocks

    def _notify_block(self, cur: Cursor, block_id: int) -> None:
        """Tell other gateways a user was blocked (postgres only)."""

    def listen_blocks(self, on_block: Callable[[int], None]) -> Watch | None:
        """No notifications by default: watchers find new blocks by polling."""
        return None

    def block(self, user: str, reason: str, blocked_by: str, gateway: str
              ) -> tuple[Block, bool]:
        """Block *user* until :meth:`unblock`; a user already blocked stays as they were.

        The insert is the compare-and-set (a unique index on the active block per user):
        of two gateways blocking one user at once, one row wins and both return it.

        Args:
            user: the user name as the identity provider gives it.
            reason: why; the blocked clients see it in their FATAL error.
            blocked_by: the operator.
            gateway: this gateway's instance id.

        Returns:
            The active block, and whether this call created it.

        Raises:
            ValueError: an empty or oversized user name.
            StoreUnavailable: the store failed.
        """
        if not user or len(user) > MAX_USER_CHARS or "\x00" in user:
            raise ValueError("a user name must be 1 to "
                             f"{MAX_USER_CHARS} characters, without NUL")
        reason = reason[:MAX_REASON_CHARS]

        def op(cur: Cursor) -> tuple[Block, bool]:
            cur.execute(self._q(
                f"INSERT INTO {BLOCKS_TABLE} (username, reason, blocked_by, blocked_at,"
                " gateway) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (username) WHERE unblocked_at IS NULL DO NOTHING"
                f" RETURNING {BLOCK_COLUMNS}"),
                (user, reason, blocked_by, self._now(), gateway))
            row = cur.fetchone()
            if row is not None:
                # Delivered at commit, so a woken gateway finds the row.
                self._notify_block(cur, int(row[0]))
                return row_to_block(row), True
            cur.execute(self._q(f"SELECT {BLOCK_COLUMNS} FROM {BLOCKS_TABLE}"
                                " WHERE username = %s AND unblocked_at IS NULL"), (user,))
            found = cur.fetchone()
            assert found is not None  # the conflicting row is committed and active
            return row_to_block(found), False

        block, created = self._run(op, write=True)
        if created:
            log.warning("event=user_blocked user=%r by=%r id=%s", user, blocked_by, block.id)
        return block, created

    def unblock(self, user: str, unblocked_by: str) -> Block | None:
        """Lift *user*'s active block; it stays in the store as history.

        Returns:
            The lifted block, or None when *user* was not blocked.
        """

        def op(cur: Cursor) -> Block | None:
            cur.execute(self._q(
                f"UPDATE {BLOCKS_TABLE} SET unblocked_by = %s, unblocked_at = %s"
                " WHERE username = %s AND unblocked_at IS NULL"
                f" RETURNING {BLOCK_COLUMNS}"), (unblocked_by, self._now(), user))
            row = cur.fetchone()
            return row_to_block(row) if row else None

        block = self._run(op, write=True)
        if block is not None:
            log.warning("event=user_unblocked user=%r by=%r id=%s", user, unblocked_by, block.id)
        return block

    def active_block(self, user: str) -> Block | None:
        """*user*'s active block, or None."""

        def op(cur: Cursor) -> Block | None:
            cur.execute(self._q(f"SELECT {BLOCK_COLUMNS} FROM {BLOCKS_TABLE}"
                                " WHERE username = %s AND unblocked_at IS NULL"), (user,))
            row = cur.fetchone()
            return row_to_block(row) if row else None

        return self._run(op)

    def blocks(self, include_lifted: bool = False, limit: int = LIST_LIMIT) -> list[Block]:
        """Active blocks (*include_lifted*: every block), oldest first, the newest *limit*."""

        def op(cur: Cursor) -> list[Block]:
            where = "" if include_lifted else "WHERE unblocked_at IS NULL"
            cur.execute(self._q(f"SELECT {BLOCK_COLUMNS} FROM {BLOCKS_TABLE} {where}"
                                " ORDER BY id DESC LIMIT %s"), (limit,))
            return [row_to_block(r) for r in reversed(cur.fetchall())]

        return self._run(op)

    def blocks_after(self, block_id: int) -> list[Block]:
        """Blocks with an id above *block_id*, oldest first (lifted ones included)."""

        def op(cur: Cursor) -> list[Block]:
            cur.execute(self._q(f"SELECT {BLOCK_COLUMNS} FROM {BLOCKS_TABLE}"
                                " WHERE id > %s ORDER BY id LIMIT %s"),
                        (int(block_id), LIST_LIMIT))
            return [row_to_block(r) for r in cur.fetchall()]

        return self._run(op)

    def last_block_id(self) -> int:
        """The newest block's id, 0 when there is none."""

        def op(cur: Cursor) -> int:
            cur.execute(f"SELECT max(id) FROM {BLOCKS_TABLE}")
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return self._run(op)
