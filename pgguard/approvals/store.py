"""Where requests live: the Protocol both stores fulfil, and the SQL they share.

Every transition out of ``pending`` is a compare-and-set on the row (``… WHERE status =
'pending'``), so exactly one of a decision, a timeout, a withdrawal and an abandonment
wins, and the others see what won. All methods block; the service calls them from worker
threads. The dialects live in :mod:`.sqlite` and :mod:`.postgres`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ..errors import GatewayError
from .model import (
    FINAL_BY_WAITER,
    MAX_REASON_CHARS,
    MAX_SQL_CHARS,
    STATUSES,
    NotAnApprover,
    Request,
    explain_refusal,
    is_approver,
)

log = logging.getLogger(__name__)

TABLE = "pgguard_approvals"
CHANNEL = "pgguard_approvals"
STORE_TIMEOUT_S = 10.0
LIST_LIMIT = 1000

T = TypeVar("T")

COLUMNS = ("id, username, groups, connection, category, kind, reason, sql, params, "
           "created_at, status, decided_by, decision_reason, decided_at, gateway")


class Cursor(Protocol):
    """The DB-API cursor surface the shared SQL uses (sqlite3 and psycopg both have it)."""

    rowcount: int

    def execute(self, query: str, params: Sequence[object] = ..., /) -> object: ...

    def fetchone(self) -> Sequence[Any] | None: ...

    def fetchall(self) -> list[Sequence[Any]]: ...


class Watch(Protocol):
    """A running notification listener a store started; see :meth:`ApprovalStore.listen`."""

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
