"""Per-session enforcement: what the pumps ask before forwarding a statement.

The guard holds the session's policy view (grants of the user's groups), approvals and,
when configured, masking and recording hooks. The pumps stay dumb byte movers; the guard
turns domain decisions (policy, approvals) into verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .. import policy
from ..approvals import held_notice
from ..config import ConnectionConfig
from ..errors import GatewayError, PolicyDenied, ProgramLimitExceeded, QueryCanceled
from ..masking.hub import hub_for
from ..wire.exchange import Effect, Exchange, Notes, Request
from ..wire.messages import FunctionCall, Message, Parse, Query
from .masker import FUNCTION_CALL_REFUSED, ResultMasker
from .services import Services

if TYPE_CHECKING:
    from ..identity import Identity
    from ..masking import Refusal, SessionMasking
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


class ApprovalTap(Protocol):
    """Records the approval steps of a held statement (``net.recording.SessionTap``)."""

    async def approval(self, type: str, **fields: Any) -> None: ...


class GuardedSession(Protocol):
    """What the guard needs of its session."""

    session_id: str
    exchange: Exchange

    @property
    def tap(self) -> ApprovalTap | None: ...

    async def notice(self, text: str) -> None: ...

    async def send_upstream(self, data: bytes) -> None: ...


def guard_for(services: Services, conn: ConnectionConfig, identity: Identity,
              session: GuardedSession) -> Guard | None:
    """The guard of a new session, or None when no grant of *conn* names the user's
    groups."""
    pol = services.policy_for(conn)
    if not pol.grants_for(identity.groups):
        return None
    return Guard(services, conn, identity, session, pol)


class Guard:
    """Decides, for one session, what may run."""

    observes_results = False

    def __init__(self, services: Services, conn: ConnectionConfig, identity: Identity,
                 session: GuardedSession, pol: policy.Policy):
        self.services = services
        self.conn = conn
        self.identity = identity
        self.session = session
        self.policy = pol
        self.groups = tuple(identity.groups)
        self.vault_role = pol.vault_role_for(self.groups)
        self._held: trio.CancelScope | None = None
        # SQL PREPAREd statements as policy judges an EXECUTE: from the exchange.
        self.prepared = PreparedView(session.exchange)
        self._cls: policy.Classification | None = None   # of the statement last checked
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
        hub = hub_for(services)
        if hub.active:
            self.masking = hub.session(self.groups)
            if self.masking is not None:
                self.masker = ResultMasker(self.masking, hub, conn, session.exchange,
                                           session.send_upstream, session.session_id)
                self.observes_results = True

    async def start(self, link: BackendLink, params: dict[str, str]) -> None:
        """The upstream link is logged in and the client does not have control yet: load
        what masking needs (the catalog).

        Raises:
            ConnectionFailure: the catalog could not be read (masking fails closed).
        """
        if self.masker is not None:
            await self.masker.start(link, params)

    def check(self, msg: Message) -> Verdict | None:
        """Classify a Query, Parse or FunctionCall and decide; None means forward as is."""
        if isinstance(msg, Query):
            sql, protocol = msg.sql, "simple"
        elif isinstance(msg, Parse):
            sql, protocol = msg.sql, "extended"
        elif isinstance(msg, FunctionCall):
            return self._function_call(msg)
        else:
            return None
        if (refused := self._too_large(sql, protocol)) is not None:
            return refused
        cls = self._cls = policy.classify(sql, self.prepared,
                                          standard_strings=self.standard_strings)
        decision = self.last_decision = self.policy.decide(self.groups, cls)
        masker = self.masker
        if decision.action == "allow":
            if masker is not None and (refusal := masker.plan_statement(sql)) is not None:
                return self._masking_refusal(decision, sql, protocol, refusal, cls)
            return None
        verdict = self._verdict(decision, sql, protocol)
        verdict.classification = cls
        if verdict.hold and masker is not None \
                and (refusal := masker.plan_statement(sql)) is not None:
            # No approver needs to see what masking would refuse anyway.
            return self._masking_refusal(decision, sql, protocol, refusal, cls)
        return verdict

    def _too_large(self, sql: str, protocol: str) -> Verdict | None:
        """Refuse a statement over ``listen.max_statement_bytes`` before it is parsed."""
        limit = self.services.cfg.listen.max_statement_bytes
        if len(sql) * 4 <= limit or (len(sql) <= limit
                                     and len(sql.encode("utf-8", "surrogatepass")) <= limit):
            return None
        reason = f"statement text is larger than listen.max_statement_bytes ({limit} bytes)"
        decision = policy.Decision("deny", "unknown", "TOO LARGE", reason, None)
        log.info("event=statement_refused session=%s user=%s category=unknown reason=%r",
                 self.session.session_id, self.identity.user, reason)
        return Verdict(decision, sql, protocol, refuse=ProgramLimitExceeded(
            f"pgguard: {reason}", hint="send smaller statements (COPY or several batches), "
                                      "or raise listen.max_statement_bytes"))

    def _masking_refusal(self, decision: policy.Decision, sql: str, protocol: str,
                         refusal: Refusal, cls: policy.Classification) -> Verdict:
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
        if decision.action == "review" and self.services.approvals is not None:
            verdict.hold = True
            return verdict
        verdict.refuse = PolicyDenied(policy.deny_message(decision, self.conn.name),
                                      detail=decision.reason or None)
        log.info("event=statement_refused session=%s user=%s category=%s kind=%s action=%s",
                 self.session.session_id, self.identity.user, decision.category,
                 decision.kind, decision.action)
        return verdict

    async def wait_for_approval(self, verdict: Verdict) -> Verdict:
        """Hold the statement until an approver decides, the timeout, or a cancel."""
        approvals = self.services.approvals
        assert verdict.decision is not None and approvals is not None
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
                final = await approvals.wait(req.id, self.services.cfg.approvals.timeout_s)
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
        log.info("event=approval_final session=%s request=%s status=%s",
                 self.session.session_id, req.id, final.status)
        return verdict

    def withdraw(self) -> bool:
        if self._held is None:
            return False
        self._withdrawn = True
        self._held.cancel()
        return True

    def note_sent(self, msg: Message, verdict: Verdict | None, notes: Notes
                  ) -> tuple[Effect | None, ...]:
        """A Query, Parse or FunctionCall (or the marker replacing a refused one) is about
        to go upstream: fill in *notes* (masking's plans) and say what its statements do
        to prepared statement and cursor names once PostgreSQL confirms them.

        Args:
            msg: the client's message (the one :meth:`check` just judged).
            verdict: :meth:`check`'s verdict (after approval), None when allowed.
            notes: the notes of the request, filled in place.
        """
        refused = verdict is not None and verdict.refuse is not None
        masking: list[Effect | None] = []
        if self.masker is not None:
            masking = self.masker.sent(msg, refused, notes)
        cls = self._cls
        if refused or cls is None or not isinstance(msg, Query | Parse):
            return ()
        if len(masking) != len(cls.statements):
            masking = [None] * len(cls.statements)
        effects: list[Effect | None] = []
        for st, effect in zip(cls.statements, masking, strict=True):
            if st.prepares is not None:
                prepared = dict(effect.notes) if effect is not None else {}
                prepared[POLICY] = policy.Classification((st,), st.category, st.categories)
                effects.append(Effect("prepare", st.prepares, prepared))
            elif st.deallocates is not None:
                # "*": DEALLOCATE ALL or DISCARD ALL, applied from the command tag.
                name = None if st.deallocates == "*" else st.deallocates
                effects.append(Effect("deallocate", name))
            else:
                effects.append(effect)
        return tuple(effects)

    def wants_catalog(self, msg: Message) -> bool:
        """Masking: reload the catalog before planning *msg* (only with observes_results)."""
        return self.masker is not None and self.masker.wants_catalog(msg)

    async def reload_catalog(self) -> None:
        """Masking: reload the catalog once what was sent before has been answered."""
        if self.masker is not None:
            await self.masker.reload_catalog()

    def on_frontend(self, msg: Message, notes: Notes, raw: bytes) -> bytes | None:
        """Bind/Describe/Execute/Close/Sync being forwarded (only with observes_results):
        masking notes statements and portals; may return replacement bytes."""
        if self.masker is None:
            return None
        return self.masker.on_frontend(msg, notes, raw)

    def on_backend(self, kind: bytes, framer: Framer, start: int, end: int,
                   replacement: bytes | None, req: Request | None) -> bytes | None:
        """Every upstream message (only with observes_results): masking rewrites rows,
        COPY data, errors and notices."""
        if self.masker is None:
            return replacement
        return self.masker.on_backend(kind, framer, start, end, replacement, req)


POLICY = "policy"


class PreparedView(Mapping[str, policy.Classification]):
    """The session's SQL PREPAREd statements for ``policy.classify``, read from the
    exchange.

    A name may have definitions PostgreSQL has not answered yet: an EXECUTE sent now runs
    one of them or the confirmed one, so it is judged by every body (the merge that
    ``policy.remember_prepared`` does), which errs towards refusing.
    """

    def __init__(self, exchange: Exchange):
        self.exchange = exchange

    def __getitem__(self, name: str) -> policy.Classification:
        bodies = [n[POLICY] for n in self.exchange.expected_statements(name) if POLICY in n]
        if not bodies:
            raise KeyError(name)
        if len(bodies) == 1:
            return bodies[0]
        merged: dict[str, policy.Classification] = {}
        for body in reversed(bodies):
            policy.remember_prepared(merged, body)
        return merged[name]

    def __iter__(self) -> Iterator[str]:
        return (n for n, st in self.exchange.statements.items() if POLICY in st.notes)

    def __len__(self) -> int:
        return sum(1 for _ in self)
