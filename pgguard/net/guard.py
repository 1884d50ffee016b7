"""Per-session enforcement: what the pumps ask before forwarding a statement.

The guard holds the session's policy view (grants of the user's groups), approvals and,
when configured, masking and recording hooks. The pumps stay dumb byte movers; the guard
turns domain decisions (policy, approvals) into verdicts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from .. import policy
from ..config import ConnectionConfig
from ..errors import ApprovalTimeout, GatewayError, PolicyDenied, QueryCanceled
from ..wire.messages import FunctionCall, Parse, Query

if TYPE_CHECKING:
    from ..identity import Identity
    from ..wire.parser import Framer

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    decision: policy.Decision | None
    sql: str
    protocol: str
    hold: bool = False
    refuse: GatewayError | None = None
    request_id: int | None = None


class Guard:
    """Decides, for one session, what may run."""

    observes_results = False

    def __init__(self, gateway, conn: ConnectionConfig, identity: Identity, session,
                 pol: policy.Policy):
        self.gateway = gateway
        self.conn = conn
        self.identity = identity
        self.session = session
        self.policy = pol
        self.groups = tuple(identity.groups)
        self.vault_role = pol.vault_role_for(self.groups)
        self._held: trio.CancelScope | None = None
        self._withdrawn = False

    def check(self, msg) -> Verdict | None:
        """Classify a Query, Parse or FunctionCall and decide; None means forward as is."""
        if isinstance(msg, Query):
            sql, protocol = msg.sql, "simple"
        elif isinstance(msg, Parse):
            sql, protocol = msg.sql, "extended"
        elif isinstance(msg, FunctionCall):
            sql, protocol = f"-- FunctionCall oid {msg.function_oid}", "function"
        else:
            return None
        if protocol == "function":
            cls = policy.unknown_classification("FunctionCall",
                                                 "fastpath function call by OID")
        else:
            cls = policy.classify(sql)
        decision = self.policy.decide(self.groups, cls)
        if decision.action == "allow":
            return None
        verdict = Verdict(decision, sql, protocol)
        if decision.action == "review" and self.gateway.approvals is not None:
            verdict.hold = True
            return verdict
        if decision.action == "review":
            verdict.refuse = PolicyDenied(
                policy.deny_message(decision, self.conn.name, review=True))
        else:
            verdict.refuse = PolicyDenied(policy.deny_message(decision, self.conn.name))
        log.info("event=statement_refused session=%s user=%s category=%s kind=%s action=%s",
                 self.session.session_id, self.identity.user, decision.category,
                 decision.kind, decision.action)
        return verdict

    async def wait_for_approval(self, verdict: Verdict) -> Verdict:
        """Hold the statement until an approver decides, the timeout, or a cancel."""
        approvals = self.gateway.approvals
        assert verdict.decision is not None
        req = await approvals.submit(
            user=self.identity.user, groups=list(self.groups), connection=self.conn.name,
            category=verdict.decision.category, kind=verdict.decision.kind,
            reason=verdict.decision.reason, sql=verdict.sql, params=[],
            gateway=self.gateway.instance)
        verdict.request_id = req.id
        await self.session.notice(f"pgguard: statement held for approval as request {req.id}")
        self._withdrawn = False
        with trio.CancelScope() as scope:
            self._held = scope
            try:
                final = await approvals.wait(req.id, self.gateway.cfg.approvals.timeout_s)
            finally:
                self._held = None
        if scope.cancelled_caught or self._withdrawn:
            await approvals.withdraw(req.id)
            verdict.hold = False
            verdict.refuse = QueryCanceled(
                f"pgguard: request {req.id} withdrawn: canceling statement due to user request")
            return verdict
        verdict.hold = False
        if final.status == "approved":
            return verdict
        if final.status == "denied":
            reason = final.decision_reason or "no reason given"
            verdict.refuse = PolicyDenied(
                f"pgguard: request {req.id} denied by {final.decided_by}: {reason}")
        elif final.status == "timeout":
            verdict.refuse = ApprovalTimeout(
                f"pgguard: request {req.id} timed out waiting for approval")
        else:
            verdict.refuse = QueryCanceled(f"pgguard: request {req.id} {final.status}")
        return verdict

    def withdraw(self) -> bool:
        if self._held is None:
            return False
        self._withdrawn = True
        self._held.cancel()
        return True

    def note_sent(self, msg, verdict: Verdict | None) -> None:
        return None

    def on_backend(self, kind: bytes, framer: Framer, start: int, end: int,
                   replacement: bytes | None) -> bytes | None:
        return replacement

    async def before_send(self, data: bytes) -> None:
        return None
