"""What a held statement is: the request, its statuses, its errors, and pure helpers.

No I/O here; the stores (:mod:`.sqlite`, :mod:`.postgres`) persist :class:`Request`
rows and the service (:mod:`.service`) waits on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..errors import ApprovalDenied, ApprovalTimeout, GatewayError, PolicyDenied, QueryCanceled

STATUSES = ("pending", "approved", "denied", "timeout", "withdrawn", "abandoned")
FINAL_BY_WAITER = ("timeout", "withdrawn")
# Bounds on what one request may hold, so a runaway client cannot fill the store.
MAX_SQL_CHARS = 1_000_000
MAX_REASON_CHARS = 2000
# A user name is what the identity provider's claim says; bound it like a reason.
MAX_USER_CHARS = 1000


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


@dataclass(frozen=True, slots=True)
class Block:
    """One kill-switch block of a user (``BLOCK USER``) and, once lifted, who lifted it.

    A user has at most one active block (``unblocked_at`` is None); lifted blocks stay in
    the store as history.
    """

    id: int
    user: str
    reason: str
    blocked_by: str
    blocked_at: datetime
    gateway: str
    unblocked_by: str | None = None
    unblocked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.unblocked_at is None


def blocked_message(user: str, reason: str) -> str:
    """The FATAL text a blocked user's sessions get (ended or refused at start)."""
    return f"pgguard: user {user!r} is blocked: {reason}" if reason else \
        f"pgguard: user {user!r} is blocked"


def held_notice(req: Request) -> str:
    """The NoticeResponse text a held client gets."""
    return f"pgguard: statement held for approval as request {req.id}"


def is_approver(groups: Iterable[str], allowed_groups: Iterable[str]) -> bool:
    """True when any of *groups* is in *allowed_groups* (an empty list allows nobody)."""
    return not set(groups).isdisjoint(allowed_groups)


def explain_refusal(req: Request | None, request_id: int, approver: str) -> GatewayError:
    """Why a decision's compare-and-set matched no row.

    Args:
        req: the request as it is now, or None if no row has *request_id*.
        request_id: the id the approver named.
        approver: the deciding user.

    Returns:
        UnknownRequest, OwnRequest or AlreadyDecided, to raise.
    """
    if req is None:
        return UnknownRequest(f"no approval request {request_id}")
    if req.user == approver:
        return OwnRequest(f"you cannot decide your own request {request_id}")
    if req.status in ("approved", "denied"):
        return AlreadyDecided(f"request {request_id} was already {req.status} "
                              f"by {req.decided_by}")
    return AlreadyDecided(f"request {request_id} is no longer pending ({req.status})")
