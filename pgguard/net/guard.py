"""Per-session enforcement: what the pumps ask before forwarding a statement.

The guard holds the session's policy view (grants of the user's groups), approvals and,
when configured, masking and recording hooks. The pumps stay dumb byte movers; the guard
turns domain decisions (policy, approvals) into verdicts.

**An approval covers one execution.** A statement whose decision is ``review`` is held
where it *runs*, once per run: a simple Query and a FunctionCall when they arrive; in the
extended protocol at each Execute, never at Parse (a Parse only defines it; an approval
there would cover every later Bind/Execute). Each prepared statement keeps its rule
(:class:`ExecutionRule`, under the ``approval`` note: statements defined by Parse and by
SQL ``PREPARE`` alike), each Bind copies the rules of every statement it may bind, and
each Execute of a portal with a rule asks again: one Execute message is one execution,
so a portal run with a row limit (PortalSuspended, then Execute again) asks once per
Execute. SQL ``EXECUTE name`` is a statement of its own, judged by its body's
categories, and held like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .. import policy
from ..approvals import held_notice
from ..config import ConnectionConfig
from ..errors import GatewayError, PolicyDenied, ProgramLimitExceeded, QueryCanceled
from ..masking.hub import hub_for
from ..policy import guardrails
from ..policy.inert import builtin_types
from ..policy.results import make_classification
from ..wire.exchange import Effect, Exchange, Notes, Request
from ..wire.limits import ResultLimiter
from ..wire.messages import Bind, Execute, FunctionCall, Message, Parse, Query
from .masker import FUNCTION_CALL_REFUSED, ResultMasker
from .services import Services

if TYPE_CHECKING:
    from ..identity import Identity
    from ..masking import Refusal, SessionMasking
    from ..masking.detectors import Detectors
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
    # Extended protocol: the bound parameters, after the masking detectors (for the
    # approver).
    params: tuple[str | None, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutionRule:
    """What every execution of a prepared statement (or of a portal bound to it) needs:
    an approval of its own (``review``) or nothing, since it is refused (``deny``).

    Attributes:
        decision: the policy's decision on the statement's text (never ``allow``).
        sql: the text an approver is shown.
    """

    decision: policy.Decision
    sql: str


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
        # The strictest guardrails over the user's grants (docs/guardrails.md).
        self.limits = guardrails.limits_for(pol.grants_for(self.groups))
        # max_rows / max_result_bytes: the backend pump shows it every message.
        self.limiter: ResultLimiter | None = None
        if self.limits.max_rows is not None or self.limits.max_result_bytes is not None:
            self.limiter = ResultLimiter(self.limits.max_rows, self.limits.max_result_bytes,
                                         session.exchange)
        self._held: trio.CancelScope | None = None
        self._holding = False          # wait_for_approval is under way
        # Requests submitted and not yet final: withdrawn when the session ends.
        self.pending_requests: set[int] = set()
        # Some prepared statement of this session may have an ExecutionRule (a Parse
        # had one, or a SQL PREPARE ran): from then on Binds and Executes are looked at
        # (until then they pass untouched, as on the hot path).
        self.rules_seen = False
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
        if (refused := self._guardrails(decision, sql, protocol, cls)) is not None:
            return refused
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
        if verdict.hold and protocol == "extended":
            # A Parse runs nothing: it goes upstream, and each Execute of a portal bound
            # to it is held instead (note_sent leaves the rule on the statement).
            return None
        return verdict

    def refuse_unreadable(self, msg: Query | Parse, exc: GatewayError) -> Verdict:
        """A Query or Parse whose text pgguard cannot read as PostgreSQL will (it did not
        decode in the session's client_encoding, or that encoding is not settled: see
        ``wire.clienttext``): refused unjudged, with *exc*."""
        protocol = "simple" if isinstance(msg, Query) else "extended"
        decision = policy.Decision("deny", "encoding", "unreadable", exc.message, None)
        self._cls = None
        self.last_decision = decision
        log.info("event=statement_refused session=%s user=%s category=encoding reason=%r",
                 self.session.session_id, self.identity.user, exc.message)
        return Verdict(decision, msg.sql, protocol, refuse=exc)

    def _guardrails(self, decision: policy.Decision, sql: str, protocol: str,
                    cls: policy.Classification) -> Verdict | None:
        """A refusal when the statement would lift a guardrail or the user is over the
        rate limit (the same marker path as a denied statement, so pipelines keep order)."""
        limits = self.limits
        error: GatewayError | None = None
        why = guardrails.refusal(cls, limits)
        if why is not None:
            error = PolicyDenied(f"pgguard: {why}",
                                 detail="a guardrail of the grant (docs/guardrails.md)")
        elif protocol == "simple":
            # The extended protocol counts its Executes instead (rate_limit_execute).
            error = self._rate(max(1, len(cls.statements)))
        if error is None:
            return None
        log.info("event=statement_refused session=%s user=%s category=guardrail error=%r",
                 self.session.session_id, self.identity.user, error.message)
        return Verdict(decision, sql, protocol, refuse=error, classification=cls)

    def _rate(self, count: int) -> GatewayError | None:
        """max_statements_per_minute: count *count* statements; the error when over."""
        limit = self.limits.max_statements_per_minute
        if limit is None or self.services.rates.allow(self.identity.user, limit,
                                                      trio.current_time(), count):
            return None
        return guardrails.RateLimited(
            f"pgguard: rate limit of {limit} statements per minute reached",
            hint="wait and retry")

    def rate_limit_execute(self) -> GatewayError | None:
        """An Execute is about to go upstream: the rate limit's error, else None."""
        error = self._rate(1)
        if error is not None:
            log.info("event=statement_refused session=%s user=%s category=guardrail "
                     "error=%r", self.session.session_id, self.identity.user, error.message)
        return error

    def upstream_params(self, params: dict[str, str]) -> dict[str, str]:
        """The client's startup parameters plus what the guardrails set upstream.

        Raises:
            GuardrailRefused: a parameter or ``options`` setting would lift a guardrail.
        """
        if not self.limits.holds_settings:
            return params
        options = guardrails.options_settings(params.get("options", ""))
        return {**params, **guardrails.startup_settings(params, options, self.limits)}

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
        """Hold the statement until an approver decides, the timeout, or a cancel.

        A request that does not reach a final status here (the session is cancelled: the
        client left, the gateway ends the session) is withdrawn before this returns or
        raises, shielded and bounded: a later decision on it runs nothing.
        """
        approvals = self.services.approvals
        assert verdict.decision is not None and approvals is not None
        self._withdrawn = False
        self._holding = True
        try:
            # Shielded: cancelled half-way, the request would exist with nobody to
            # withdraw it (the store call is bounded by its own deadline).
            with trio.CancelScope(shield=True):
                req = await approvals.submit(
                    user=self.identity.user, groups=list(self.groups),
                    connection=self.conn.name, category=verdict.decision.category,
                    kind=verdict.decision.kind, reason=verdict.decision.reason,
                    sql=verdict.sql, params=list(verdict.params))
        except GatewayError as exc:
            self._holding = False
            verdict.hold = False
            verdict.refuse = PolicyDenied(f"pgguard: statement needs approval, but {exc.message}")
            return verdict
        self.pending_requests.add(req.id)
        try:
            return await self._wait(verdict, req.id, held_notice(req))
        finally:
            self._holding = False
            self._held = None
            if req.id in self.pending_requests:
                await self._withdraw_request(req.id)

    async def _wait(self, verdict: Verdict, request_id: int, notice: str) -> Verdict:
        approvals = self.services.approvals
        assert verdict.decision is not None and approvals is not None
        verdict.request_id = request_id
        tap = self.session.tap
        if tap is not None:
            await tap.approval("approval_request", request_id=request_id,
                               category=verdict.decision.category, kind=verdict.decision.kind,
                               reason=verdict.decision.reason)
        await self.session.notice(notice)
        final = None
        with trio.CancelScope() as scope:
            self._held = scope
            if self._withdrawn:
                scope.cancel()  # a CancelRequest came while the request was being made
            try:
                final = await approvals.wait(request_id, self.services.cfg.approvals.timeout_s)
            except GatewayError as exc:
                verdict.hold = False
                verdict.refuse = exc
                return verdict
            finally:
                self._held = None
        verdict.hold = False
        if final is None:
            # Cancelled (CancelRequest): wait() withdrew the request. A decision that
            # came first stands (final is not None): the approver was told it runs.
            await self._withdraw_request(request_id)
            if tap is not None:
                await tap.approval("approval_decision", request_id=request_id,
                                   decision="withdrawn", approver=None, reason="client cancel")
            verdict.refuse = QueryCanceled("pgguard: canceling statement due to user request "
                                           f"(request {request_id} withdrawn)")
            return verdict
        self.pending_requests.discard(request_id)
        verdict.refuse = final.error()
        if tap is not None:
            await tap.approval("approval_decision", request_id=request_id,
                               decision=final.status, approver=final.decided_by,
                               reason=final.decision_reason)
        log.info("event=approval_final session=%s request=%s status=%s",
                 self.session.session_id, request_id, final.status)
        return verdict

    async def _withdraw_request(self, request_id: int) -> None:
        """Withdraw *request_id* unless already final (shielded, bounded)."""
        approvals = self.services.approvals
        self.pending_requests.discard(request_id)
        if approvals is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            final = await approvals.withdraw(request_id)
            log.info("event=approval_withdrawn session=%s request=%s status=%s",
                     self.session.session_id, request_id,
                     final.status if final is not None else "unknown")

    async def withdraw_all(self) -> None:
        """The session ends: withdraw every request it still has pending."""
        for request_id in sorted(self.pending_requests):
            await self._withdraw_request(request_id)

    def withdraw(self) -> bool:
        """A CancelRequest: withdraw the statement being held, if any.

        Returns:
            True when a statement was being held (nothing to cancel upstream).
        """
        if not self._holding:
            return False
        self._withdrawn = True
        if self._held is not None:
            self._held.cancel()
        return True

    # --- executions of prepared statements (the extended protocol) -------------------

    def _rule(self, notes: Notes) -> ExecutionRule | None:
        """The rule every execution of the statement whose *notes* these are follows."""
        if APPROVAL in notes:
            return notes[APPROVAL]
        cls = notes.get(POLICY)
        if cls is None:
            # Nothing known of what it runs (cannot happen for a statement defined
            # through this session): judged as unknown, failing closed.
            info = policy.StatementInfo("unknown", "", "statement not seen by the gateway",
                                        "", frozenset({"unknown"}))
            cls = policy.Classification((info,), "unknown", frozenset({"unknown"}))
        decision = self.policy.decide(self.groups, cls)
        rule = None
        if decision.action != "allow":
            rule = ExecutionRule(decision, ";\n".join(st.text for st in cls.statements))
            self.rules_seen = True
        notes[APPROVAL] = rule
        return rule

    def on_bind(self, msg: Bind, notes: Notes) -> bool:
        """A Bind is being forwarded: its portal takes the rules of every statement it may
        bind (a pending redefinition, or the confirmed one).

        Returns:
            Whether it took any (then :meth:`note_params` wants the whole Bind).
        """
        rules = _distinct(self._rule(n)
                          for n in self.session.exchange.expected_statements(msg.statement))
        if rules:
            notes[APPROVAL] = rules
        return bool(rules)

    def note_params(self, msg: Bind, notes: Notes, detectors: Detectors) -> None:
        """Keep the parameters of a Bind whose executions are held, after the masking
        *detectors* (the session's), for the approver."""
        formats = msg.param_formats
        nf = len(formats)
        params: list[str | None] = []
        for i, value in enumerate(msg.params):
            fmt = formats[i] if nf > 1 else (formats[0] if nf else 0)
            if value is None:
                params.append(None)
            elif fmt == 1:
                params.append(f"<binary {len(value)} bytes>")
            else:
                params.append(detectors.scan_text(value.decode("utf-8", "replace")))
        notes[PARAMS] = tuple(params)

    def check_execute(self, msg: Execute) -> Verdict | None:
        """An Execute: None when what it may run needs no approval, else the verdict (a
        hold, for one execution, or a refusal)."""
        rules: list[ExecutionRule] = []
        params: tuple[str | None, ...] | None = None
        for n in self.session.exchange.expected_portals(msg.portal):
            for rule in n.get(APPROVAL, ()):
                if rule not in rules:
                    rules.append(rule)
            if params is None and APPROVAL in n:
                params = n.get(PARAMS, ())  # the newest Bind's
        if not rules:
            return None
        # The strictest rule decides; the approver sees every text it may run.
        worst = next((r for r in rules if r.decision.action == "deny"), rules[0])
        sql = "\n-- or, if a pending Parse/Bind of the name fails:\n".join(
            dict.fromkeys(r.sql for r in rules))
        self.last_decision = worst.decision
        if worst.decision.action == "deny":
            return Verdict(worst.decision, sql, "extended", refuse=PolicyDenied(
                policy.deny_message(worst.decision, self.conn.name),
                detail=worst.decision.reason or None))
        verdict = self._verdict(worst.decision, sql, "extended")
        verdict.params = params or ()
        return verdict

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
        if self.limiter is not None and not refused and self._cls is not None \
                and isinstance(msg, Query | Parse):
            self.limiter.note_statements(self._cls.statements, notes)
        masking: list[Effect | None] = []
        if self.masker is not None:
            masking = self.masker.sent(msg, refused, notes)
        cls = self._cls
        if refused or cls is None or not isinstance(msg, Query | Parse):
            return ()
        if isinstance(msg, Parse):
            # The statement's own classification: SQL EXECUTE of its name is judged by
            # it, and every execution of it follows its rule.
            notes[POLICY] = cls
            decision = self.last_decision
            rule = None
            if decision is not None and decision.action != "allow":
                rule = ExecutionRule(decision, msg.sql)
                self.rules_seen = True
            notes[APPROVAL] = rule
        if isinstance(msg, Parse) and cls.statements and cls.statements[0].encoding_params:
            notes[ENCODING_PARAMS] = cls.statements[0].encoding_params
        if isinstance(msg, Parse) and self.inert(msg, verdict):
            notes[INERT] = True
        if len(masking) != len(cls.statements):
            masking = [None] * len(cls.statements)
        effects: list[Effect | None] = []
        for st, effect in zip(cls.statements, masking, strict=True):
            if st.prepares is not None:
                prepared = dict(effect.notes) if effect is not None else {}
                prepared[POLICY] = policy.Classification((st,), st.category, st.categories)
                # A Bind may name it (one namespace with Parse): its rule is found then.
                self.rules_seen = True
                effects.append(Effect("prepare", st.prepares, prepared))
            elif st.deallocates is not None:
                # "*": DEALLOCATE ALL or DISCARD ALL, applied from the command tag.
                name = None if st.deallocates == "*" else st.deallocates
                effects.append(Effect("deallocate", name))
            else:
                effects.append(effect)
        return tuple(effects)

    def encoding_params(self, statement: str) -> tuple[int, ...]:
        """The parameters of prepared statement *statement* whose Bind values set
        client_encoding (``set_config('client_encoding', $1, false)``): of every
        definition an Execute sent now may run (see ``Exchange.expected_statements``)."""
        out: tuple[int, ...] = ()
        for notes in self.session.exchange.expected_statements(statement):
            out += notes.get(ENCODING_PARAMS, ())
        return out

    def inert(self, msg: Message, verdict: Verdict | None) -> bool:
        """The Query or Parse :meth:`check` just judged runs no user code and changes no
        setting (``policy.inert``; a Parse's declared parameter types are built-in), so
        it cannot change client_encoding (``wire.clienttext``)."""
        cls = self._cls
        if not isinstance(msg, Query | Parse) or cls is None \
                or (verdict is not None and verdict.refuse is not None) \
                or not cls.statements or not all(st.inert for st in cls.statements):
            return False
        return not isinstance(msg, Parse) or builtin_types(msg.param_types)

    def runs_inert(self, msg: Bind | Execute, notes: Notes) -> bool:
        """A Bind of a statement, or an Execute of a portal, every definition of which
        (see ``Exchange.expected_statements``) is inert; a Bind's *notes* then say so for
        the portal it defines."""
        if isinstance(msg, Bind):
            found = list(self.session.exchange.expected_statements(msg.statement))
        else:
            found = list(self.session.exchange.expected_portals(msg.portal))
        inert = bool(found) and all(n.get(INERT) for n in found)
        if inert and isinstance(msg, Bind):
            notes[INERT] = True
        return inert

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
APPROVAL = "approval"
PARAMS = "approval_params"


def _distinct(rules: Iterable[ExecutionRule | None]) -> tuple[ExecutionRule, ...]:
    return tuple(dict.fromkeys(r for r in rules if r is not None))
ENCODING_PARAMS = "encoding_params"  # a Parse's notes: StatementInfo.encoding_params
INERT = "inert"  # a Parse's or Bind's notes: what it defines runs nothing (guard.inert)


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
        return make_classification(tuple(st for body in bodies for st in body.statements))

    def __iter__(self) -> Iterator[str]:
        return (n for n, st in self.exchange.statements.items() if POLICY in st.notes)

    def __len__(self) -> int:
        return sum(1 for _ in self)
