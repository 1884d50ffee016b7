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
from ..approvals import held_notice
from ..config import ConnectionConfig
from ..errors import GatewayError, PolicyDenied, QueryCanceled
from ..wire.messages import FunctionCall, Parse, Query
from .masker import FUNCTION_CALL_REFUSED, ResultMasker, hub_for

if TYPE_CHECKING:
    from ..identity import Identity
    from ..masking import SessionMasking
    from ..wire.framer import Framer
    from .backend import BackendLink

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    decision: policy.Decision | None
    sql: str
    protocol: str
    hold: bool = False
    refuse: GatewayError | None = None
    request_id: int | None = None
    classification: policy.Classification | None = None


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
        self.prepared: dict[str, policy.Classification] = {}
        self.standard_strings = True
        # The policy's decision on the statement last passed to check(), allowed ones
        # included (check() returns no verdict for those): the recorder reads it.
        self.last_decision: policy.Decision | None = None
        self._withdrawn = False
        # Masking, when configured and the user is not exempt. Only then does the backend
        # pump show this guard every upstream message (observes_results); other sessions
        # keep the raw byte path.
        self.masking: SessionMasking | None = None
        self.masker: ResultMasker | None = None
        hub = hub_for(gateway)
        if hub.active:
            self.masking = hub.session(self.groups)
            if self.masking is not None:
                self.masker = ResultMasker(self.masking, hub, conn, session)
                self.observes_results = True
                # The backend pump calls this for every upstream message: skip a hop.
                self.on_backend = self.masker.on_backend  # type: ignore[method-assign]

    async def start(self, link: BackendLink, params: dict[str, str]) -> None:
        """The upstream link is logged in and the client does not have control yet: load
        what masking needs (the catalog).

        Raises:
            ConnectionFailure: the catalog could not be read (masking fails closed).
        """
        if self.masker is not None:
            await self.masker.start(link, params)

    def check(self, msg) -> Verdict | None:
        """Classify a Query, Parse or FunctionCall and decide; None means forward as is."""
        if isinstance(msg, Query):
            sql, protocol = msg.sql, "simple"
        elif isinstance(msg, Parse):
            sql, protocol = msg.sql, "extended"
        elif isinstance(msg, FunctionCall):
            return self._function_call(msg)
        else:
            return None
        cls = policy.classify(sql, self.prepared, standard_strings=self.standard_strings)
        decision = self.last_decision = self.policy.decide(self.groups, cls)
        masker = self.masker
        if decision.action == "allow":
            if masker is not None and (refusal := masker.plan_statement(sql)) is not None:
                return self._masking_refusal(decision, sql, protocol, refusal, cls)
            self._remember(cls)
            return None
        verdict = self._verdict(decision, sql, protocol)
        verdict.classification = cls
        if verdict.hold and masker is not None \
                and (refusal := masker.plan_statement(sql)) is not None:
            # No approver needs to see what masking would refuse anyway.
            return self._masking_refusal(decision, sql, protocol, refusal, cls)
        return verdict

    def _masking_refusal(self, decision: policy.Decision, sql: str, protocol: str,
                         refusal, cls: policy.Classification) -> Verdict:
        verdict = Verdict(decision, sql, protocol, refuse=refusal.error(), classification=cls)
        log.info("event=statement_refused session=%s user=%s category=masking reason=%r",
                 self.session.session_id, self.identity.user, refusal.reason)
        return verdict

    def _function_call(self, msg: FunctionCall) -> Verdict | None:
        # The fastpath names a function by OID only: nothing to classify, so it is unknown.
        info = policy.StatementInfo("unknown", "FunctionCall",
                                    f"fastpath call of function OID {msg.function_oid}",
                                    "", frozenset({"unknown"}))
        cls = policy.Classification((info,), "unknown", frozenset({"unknown"}))
        decision = self.last_decision = self.policy.decide(self.groups, cls)
        sql = f"-- FunctionCall oid {msg.function_oid}"
        if self.masker is not None and decision.action != "deny":
            # A fastpath result has no RowDescription to mask by: refuse (fail closed).
            return Verdict(decision, sql, "function", refuse=FUNCTION_CALL_REFUSED)
        if decision.action == "allow":
            return None
        return self._verdict(decision, sql, "function")

    def _verdict(self, decision: policy.Decision, sql: str, protocol: str) -> Verdict:
        verdict = Verdict(decision, sql, protocol)
        if decision.action == "review" and self.gateway.approvals is not None:
            verdict.hold = True
            return verdict
        verdict.refuse = PolicyDenied(policy.deny_message(decision, self.conn.name),
                                      detail=decision.reason or None)
        log.info("event=statement_refused session=%s user=%s category=%s kind=%s action=%s",
                 self.session.session_id, self.identity.user, decision.category,
                 decision.kind, decision.action)
        return verdict

    def _remember(self, cls: policy.Classification) -> None:
        """Track SQL-level PREPARE so a later EXECUTE is judged by its body.

        Called when the statement is let through, before the server answers, so nothing
        is ever forgotten (a DEALLOCATE may fail); a re-PREPARE keeps both bodies.
        """
        if cls.has_execute or any(st.prepares or st.deallocates for st in cls.statements):
            policy.remember_prepared(self.prepared, cls)

    async def wait_for_approval(self, verdict: Verdict) -> Verdict:
        """Hold the statement until an approver decides, the timeout, or a cancel."""
        approvals = self.gateway.approvals
        assert verdict.decision is not None
        try:
            req = await approvals.submit(
                user=self.identity.user, groups=list(self.groups), connection=self.conn.name,
                category=verdict.decision.category, kind=verdict.decision.kind,
                reason=verdict.decision.reason, sql=verdict.sql, params=[])
        except GatewayError as exc:
            verdict.hold = False
            verdict.refuse = PolicyDenied(f"pgguard: statement needs approval, but {exc.message}")
            return verdict
        verdict.request_id = req.id
        tap = self.session.tap
        if tap is not None:
            await tap.approval("approval_request", request_id=req.id,
                               category=verdict.decision.category, kind=verdict.decision.kind,
                               reason=verdict.decision.reason)
        await self.session.notice(held_notice(req))
        self._withdrawn = False
        final = None
        with trio.CancelScope() as scope:
            self._held = scope
            try:
                final = await approvals.wait(req.id, self.gateway.cfg.approvals.timeout_s)
            except GatewayError as exc:
                verdict.hold = False
                verdict.refuse = exc
                return verdict
            finally:
                self._held = None
        verdict.hold = False
        if final is None or self._withdrawn:
            # wait() withdraws the request itself when cancelled.
            if tap is not None:
                await tap.approval("approval_decision", request_id=req.id,
                                   decision="withdrawn", approver=None, reason="client cancel")
            verdict.refuse = QueryCanceled(
                f"pgguard: canceling statement due to user request (request {req.id} withdrawn)")
            return verdict
        verdict.refuse = final.error()
        if tap is not None:
            await tap.approval("approval_decision", request_id=req.id, decision=final.status,
                               approver=final.decided_by, reason=final.decision_reason)
        if verdict.refuse is None and verdict.classification is not None:
            self._remember(verdict.classification)
        log.info("event=approval_final session=%s request=%s status=%s",
                 self.session.session_id, req.id, final.status)
        return verdict

    def withdraw(self) -> bool:
        if self._held is None:
            return False
        self._withdrawn = True
        self._held.cancel()
        return True

    def note_sent(self, msg, verdict: Verdict | None) -> None:
        """A Query, Parse or FunctionCall (or the marker replacing a refused one) is about
        to go upstream."""
        if self.masker is not None:
            self.masker.sent(msg, verdict is not None and verdict.refuse is not None)

    def wants_catalog(self, msg) -> bool:
        """Masking: reload the catalog before planning *msg* (only with observes_results)."""
        return self.masker is not None and self.masker.wants_catalog(msg)

    async def reload_catalog(self) -> None:
        """Masking: reload the catalog once what was sent before has been answered."""
        if self.masker is not None:
            await self.masker.reload_catalog()

    def on_frontend(self, kind: bytes, framer: Framer, start: int, end: int) -> bytes | None:
        """Bind/Describe/Execute/Close/Sync being forwarded (only with observes_results):
        masking tracks statements and portals; may return replacement bytes."""
        if self.masker is None:
            return None
        return self.masker.on_frontend(kind, framer, start, end)

    def on_backend(self, kind: bytes, framer: Framer, start: int, end: int,
                   replacement: bytes | None) -> bytes | None:
        """Every upstream message (only with observes_results): masking rewrites rows,
        COPY data, errors and notices."""
        if self.masker is None:
            return replacement
        return self.masker.on_backend(kind, framer, start, end, replacement)
