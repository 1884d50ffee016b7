"""One client session: startup, authentication, upstream login, and the two pumps.

Data flows one way in each pump: client bytes -> framing -> policy -> upstream, and
upstream bytes -> framing -> (masking) -> (recorder) -> client. Messages nobody needs to
look at are forwarded as the original bytes, in as few sends as possible.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
import time
from typing import TYPE_CHECKING

import trio

from ..errors import (
    CharacterNotInRepertoire,
    CredentialsExpired,
    EncodingRefused,
    FeatureNotSupported,
    GatewayError,
    InternalError,
    NotPermitted,
    PolicyDenied,
    ProtocolViolation,
    StartupTimeout,
    TLSRequired,
    UnknownConnection,
)
from ..policy.guardrails import SessionTimeLimit
from ..wire import codec
from ..wire.clienttext import (
    ClientText,
    Judgement,
    bound_encoding_refusal,
    kind_of,
    text_of,
)
from ..wire.exchange import Exchange
from ..wire.framer import NEED_DATA, Framer, StartupFramer
from ..wire.messages import (
    AUTH_CLEARTEXT,
    AUTH_OK,
    BIND,
    CLOSE,
    COMMAND_COMPLETE,
    COPY_DATA,
    DATA_ROW,
    DESCRIBE,
    ERROR_RESPONSE,
    EXECUTE,
    FUNCTION_CALL,
    NOTICE_RESPONSE,
    NOTIFICATION_RESPONSE,
    PARAMETER_STATUS,
    PARSE,
    QUERY,
    READY_FOR_QUERY,
    SYNC,
    TERMINATE,
    Bind,
    CancelRequest,
    FunctionCall,
    GSSENCRequest,
    ParameterStatus,
    Parse,
    PasswordMessage,
    Query,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    Sync,
)
from ..wire.state import ALLOWED, Phase, expect
from . import backend, held
from .activity import Activity, count_failure, count_masked
from .fastio import FastIO
from .guard import Guard, Verdict, guard_for
from .outgoing import Outgoing as _Outgoing
from .outgoing import first_error as _first_error
from .recording import SessionInfo, SessionTap, session_detectors
from .refusals import Refusals
from .services import Services
from .startup import (  # noqa: F401 - _check_options and the sets: tests import them here
    FORWARDED_PARAMS,
    REFUSED_PARAMS,
    _check_options,
    check_startup_encoding,
)

if TYPE_CHECKING:
    from ..credentials import CredentialSource, Lease
    from ..identity import Identity
    from ..masking.detectors import Detectors

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65536
READY_KINDS = ALLOWED[Phase.READY]
# Frontend messages PostgreSQL answers, besides Query, Parse and FunctionCall (which the
# guard checks first): the exchange follows them.
EXCHANGE_KINDS = frozenset((BIND, DESCRIBE, EXECUTE, CLOSE, SYNC))
SYNC_MESSAGE = Sync()
# Backend messages that answer no request (or are part of a result the exchange does not
# need to see): not fed to the exchange, so the row hot path stays a byte copy.
UNOWNED_KINDS = frozenset((DATA_ROW, COPY_DATA, NOTICE_RESPONSE, PARAMETER_STATUS,
                           NOTIFICATION_RESPONSE))



def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


TEXT_MARK = "text"  # the session's key in a request's notes: its ClientText mark


class ClientSession:
    """Everything about one client connection."""

    def __init__(self, services: Services, stream: trio.abc.Stream, peer: str,
                 local_host: str):
        self.services = services
        self.cfg = services.cfg
        self.client: trio.abc.Stream = stream
        self.client_io = FastIO(stream)
        self.link_io: FastIO | None = None
        self.peer = peer
        self.local_host = local_host
        self.tls = False
        self.session_id = secrets.token_hex(8)
        self.started = time.time()
        self.user: str | None = None
        self.database: str | None = None
        self.identity: Identity | None = None
        self.link: backend.BackendLink | None = None
        self.lease: Lease | None = None
        self.secret_key = secrets.randbits(31)
        self.client_framer = Framer(self.cfg.listen.max_message_size)
        self._send_lock = trio.StrictFIFOLock()
        self.bytes_in = 0
        self.bytes_out = 0
        # The protocol state: what PostgreSQL owes, which names it knows (wire/exchange).
        self.exchange = Exchange()
        self.guard: Guard | None = None
        # Markers sent for refused messages, whose errors the backend pump rewrites.
        self.refusals = Refusals()
        self.end_reason = "client closed"
        self.state = "startup"
        self.tap: SessionTap | None = None  # when recording is on
        self._scan: Detectors | None = None
        # The client_encoding PostgreSQL reads statements in (set at the upstream login),
        # and an event set whenever a ReadyForQuery settles it (wire/clienttext).
        self.text: ClientText | None = None
        self._text_settled = trio.Event()
        self.activity: Activity | None = None  # once connected upstream
        # KILL and the kill switch end the session from outside: the FATAL it gets, and
        # the scope of the relay they cancel (cancelled early, it ends the relay at once).
        self.killed: GatewayError | None = None
        self.relay_scope = trio.CancelScope()
        self.ended = trio.Event()   # set once cleanup is done (lease released)

    @property
    def txn_status(self) -> str:
        """The transaction status of the last ReadyForQuery ('I', 'T' or 'E')."""
        return self.exchange.txn_status

    # --- sending ------------------------------------------------------------------

    async def send_client(self, data: bytes) -> None:
        async with self._send_lock:
            await self.client_io.send_all(data)
        self.bytes_out += len(data)

    async def send_error(self, exc: GatewayError) -> None:
        data = codec.error_response(exc.severity, exc.sqlstate, exc.message, exc.detail,
                                   exc.hint, encoding=self.client_framer.encoding)
        with trio.move_on_after(2):
            try:
                await self.send_client(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                pass

    async def notice(self, text: str) -> None:
        await self.send_client(codec.notice_response(text))

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            try:
                with trio.fail_after(self.cfg.listen.startup_timeout_s):
                    startup = await self._startup()
                    if startup is None:
                        return
                    await self._authenticate(startup)
                    await self.services.check_blocked(self.user or "",
                                                      console=self.database == "pgguard")
                    if self.database == "pgguard":
                        greeting = None
                    else:
                        greeting = await self._connect_upstream(startup)
            except trio.TooSlowError:
                raise StartupTimeout("pgguard: startup timed out") from None
            if greeting is None:
                console = self.services.admin_console
                assert console is not None
                await console(self)
                return
            await self.send_client(greeting)
            self.state = "active"
            assert self.link is not None
            self.services.registry.register(self.link.process_id, self.secret_key, self)
            self.tap = self._open_tap()
            if self.tap is not None:
                await self.tap.session_start()
            await self._relay()
            if self.killed is not None:
                self.end_reason = self.killed.message
                await self.send_error(self.killed)
        except GatewayError as exc:
            self.end_reason = exc.message
            count_failure(self.services.metrics, exc, authenticated=self.identity is not None,
                          connection=self.guard.conn.name if self.guard else None)
            log.info("event=session_error session=%s user=%s sqlstate=%s error=%r",
                     self.session_id, self.user, exc.sqlstate, exc.message)
            await self.send_error(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.end_reason = "connection lost"
        except Exception:
            self.end_reason = "internal error"
            log.exception("event=session_crash session=%s", self.session_id)
            await self.send_error(InternalError("pgguard: internal error"))
        finally:
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                await self._cleanup()
            if cleanup.cancelled_caught:
                log.warning("event=cleanup_timeout session=%s", self.session_id)
            self.ended.set()

    def _open_tap(self) -> SessionTap | None:
        recorder = self.services.recorder
        if recorder is None:
            return None
        assert self.guard is not None
        groups = tuple(self.identity.groups) if self.identity else ()
        info = SessionInfo(self.session_id, self.user or "", groups, self.guard.conn.name,
                           self.peer, self.tls, self.started)
        tap = SessionTap(recorder, info, self.exchange, self._detectors())
        if self.link is not None:
            tap.server_encoding = self.link.parameters.get("server_encoding")
            tap.follow_encoding(self.link.parameters.get("client_encoding", "UTF8"))
        tap.records = self.services.metrics.recording_records
        return tap

    def _detectors(self) -> Detectors:
        """What scans this session's statement text and parameters (made once)."""
        if self._scan is None:
            assert self.guard is not None
            groups = tuple(self.identity.groups) if self.identity else ()
            self._scan = session_detectors(self.guard.masking, self.cfg.masking, groups)
        return self._scan

    async def _cleanup(self) -> None:
        if self.guard is not None:
            # First: a decision on a request of a session that ended must run nothing.
            await self.guard.withdraw_all()
        key = (self.link.process_id, self.secret_key) if self.link is not None else None
        self.services.registry.unregister(self, key)
        if self.link is not None:
            try:
                await self.link.stream.send_all(codec.terminate())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await trio.aclose_forcefully(self.link.stream)
        if self.lease is not None:
            try:
                await self.services.credentials.source_for(self.lease.role).release(self.lease)
            except Exception:
                log.exception("event=lease_release_failed session=%s", self.session_id)
                self.services.metrics.vault_lease_errors.labels("revoke").inc()
        if self.state == "active":
            if self.tap is not None:
                await self.tap.session_end(self.end_reason, self.bytes_in, self.bytes_out)
            log.info("event=session_end session=%s user=%s reason=%r bytes_in=%d "
                     "bytes_out=%d", self.session_id, self.user, self.end_reason,
                     self.bytes_in, self.bytes_out)
        await trio.aclose_forcefully(self.client)

    # --- startup ------------------------------------------------------------------

    async def receive_client(self) -> bytes:
        """The next bytes from the client (``b""`` at end of stream), counted in bytes_in."""
        data = await self.client_io.receive(RECEIVE_SIZE)
        self.bytes_in += len(data)
        return data

    # The name the session's own pumps use; an alias, so the hot path gains no await.
    _receive_client = receive_client

    async def _startup(self) -> StartupMessage | None:
        framer = StartupFramer(self.cfg.listen.max_startup_size)
        while True:
            packet = framer.next_packet()
            if packet is NEED_DATA:
                data = await self._receive_client()
                if not data:
                    raise trio.ClosedResourceError
                framer.feed(data)
                continue
            if isinstance(packet, SSLRequest):
                if framer.buf:
                    # Bytes after SSLRequest would be read in clear and trusted as if they
                    # came over TLS (CVE-2021-23222 class): drop the client.
                    raise ProtocolViolation("data received after SSLRequest")
                if self.tls or self.services.server_ssl is None:
                    await self.client.send_all(b"N")
                    continue
                await self.client.send_all(b"S")
                tls = trio.SSLStream(self.client, self.services.server_ssl, server_side=True)
                await tls.do_handshake()
                self.client = tls
                self.client_io = FastIO(tls)
                self.tls = True
                continue
            if isinstance(packet, GSSENCRequest):
                if framer.buf:
                    raise ProtocolViolation("data received after GSSENCRequest")
                await self.client.send_all(b"N")
                continue
            if isinstance(packet, CancelRequest):
                await self.services.registry.cancel(packet.process_id, packet.secret_key)
                return None
            assert isinstance(packet, StartupMessage)
            rest = framer.take_rest()
            if rest:
                self.client_framer.feed(rest)
            return packet

    async def _authenticate(self, startup: StartupMessage) -> None:
        params = startup.params
        unrecognized = [k for k in params if k.startswith("_pq_.")]
        if startup.minor > 0 or unrecognized:
            await self.send_client(codec.negotiate_protocol_version(0, unrecognized))
        self.user = params.get("user")
        if not self.user:
            raise NotPermitted("pgguard: no user name in the startup packet")
        self.database = params.get("database") or self.user
        if not (self.tls or self.cfg.listen.allow_plaintext or is_loopback(self.local_host)):
            raise TLSRequired("pgguard: TLS is required: connect with sslmode=require",
                              hint="the password is an OIDC token and is never sent in clear")
        if params.get("replication") not in (None, "false", "0", "off", "no"):
            raise NotPermitted("pgguard: replication connections are not allowed")
        await self.send_client(codec.authentication(AUTH_CLEARTEXT))
        msg = await self._receive_password()
        token = msg.data.rstrip(b"\0").decode("utf-8", "replace").strip()
        self.identity = await self.services.verifier.verify(token, self.user)
        log.info("event=authenticated session=%s user=%s groups=%s peer=%s tls=%s db=%s",
                 self.session_id, self.user, ",".join(self.identity.groups), self.peer,
                 self.tls, self.database)

    async def _receive_password(self) -> PasswordMessage:
        while True:
            frame = self.client_framer.next_frame()
            if frame is not None:
                kind, start, end = frame
                expect(Phase.AUTHENTICATING, kind[0])
                msg = self.client_framer.decode(kind, start, end)
                assert isinstance(msg, PasswordMessage)
                return msg
            data = await self._receive_client()
            if not data:
                raise trio.ClosedResourceError
            self.client_framer.feed(data)

    def _upstream_params(self, startup: StartupMessage) -> dict[str, str]:
        check_startup_encoding(startup.params)
        out: dict[str, str] = {}
        for name, value in startup.params.items():
            if name in ("user", "database") or name.startswith("_pq_."):
                continue
            if name in REFUSED_PARAMS:
                raise PolicyDenied(f"pgguard: startup parameter {name!r} is not allowed")
            if name == "options":
                out[name] = _check_options(value)
            elif name in FORWARDED_PARAMS:
                out[name] = value
            else:
                log.info("event=startup_param_dropped session=%s name=%s", self.session_id, name)
        return out

    async def _connect_upstream(self, startup: StartupMessage) -> bytes:
        conn = self.cfg.connection(self.database or "")
        if conn is None:
            raise UnknownConnection(f"pgguard: no connection named {self.database!r}")
        assert self.identity is not None
        guard = guard_for(self.services, conn, self.identity, self)
        if guard is None:
            raise NotPermitted(f"pgguard: user {self.user!r} has no grant on connection "
                               f"{conn.name!r}")
        self.guard = guard
        self.activity = Activity(conn.name, self.services.stats, self.services.metrics)
        if guard.masker is not None:
            guard.masker.on_masked = lambda rows: count_masked(self.services.metrics, rows)
        params = guard.upstream_params(self._upstream_params(startup))
        source = self.services.credentials.source_for(guard.vault_role)
        self.lease = await source.acquire(conn, guard.vault_role, self.user or "")
        self.lease.role = guard.vault_role
        try:
            self.link = await backend.connect(conn, self.lease.user, self.lease.password,
                                              params, self.cfg.listen.max_message_size)
        except backend.UpstreamRefused as exc:
            log.warning("event=upstream_login_refused session=%s connection=%s sqlstate=%s",
                        self.session_id, conn.name, exc.fields.get("C"))
            raise
        self._start_text(self.link.parameters)
        guard.standard_strings = self.link.parameters.get("standard_conforming_strings",
                                                          "on") == "on"
        if guard.observes_results:
            # Masking loads the catalog before the client gets control.
            await guard.start(self.link, params)
        parts = [codec.authentication(AUTH_OK)]
        parts.extend(self.link.startup_messages)
        parts.append(codec.backend_key_data(self.link.process_id, self.secret_key))
        parts.append(codec.ready_for_query("I"))
        return b"".join(parts)

    def _start_text(self, parameters: dict[str, str]) -> None:
        """Decode statements in the client_encoding PostgreSQL reported at the login
        (a role's or database's settings may choose it). Raises EncodingRefused."""
        assert self.link is not None
        self.text = ClientText(parameters.get("server_encoding", ""))
        self._follow_encoding(parameters.get("client_encoding", ""))

    def _follow_encoding(self, value: str) -> None:
        """PostgreSQL reported client_encoding *value*: decode in it from now on, or end
        the session before anything else is relayed (the backstop behind the policy's
        refusal of SET: whatever was pipelined behind the change is upstream already).

        Raises:
            EncodingRefused: pgguard cannot read statements in it.
        """
        assert self.text is not None and self.link is not None
        why = self.text.report(value)
        if why is not None:
            log.warning("event=client_encoding_refused session=%s user=%s state=%s "
                        "encoding=%r", self.session_id, self.user, self.state, value[:64])
            raise EncodingRefused(f"pgguard: {why}")
        self.client_framer.encoding = self.link.framer.encoding = self.text.codec

    async def _wait_settled(self) -> None:
        """Until every statement sent has been answered up to a ReadyForQuery."""
        assert self.text is not None
        while not self.text.settled:
            await self._text_settled.wait()

    def _text_ready(self, mark: int) -> None:
        assert self.text is not None
        self.text.ready(mark)
        event, self._text_settled = self._text_settled, trio.Event()
        event.set()

    # --- relay --------------------------------------------------------------------

    async def _relay(self) -> None:
        assert self.link is not None and self.lease is not None
        self.link_io = FastIO(self.link.stream)
        source = self.services.credentials.source_for(self.lease.role)
        try:
            with self.relay_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump_frontend, nursery.cancel_scope)
                    nursery.start_soon(self._pump_backend, nursery.cancel_scope)
                    nursery.start_soon(self._watch_lease, source, nursery.cancel_scope)
                    if (limit := self.guard.limits.max_session_s) is not None:
                        nursery.start_soon(self._time_limit, limit)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _watch_lease(self, source: CredentialSource, scope: trio.CancelScope) -> None:
        assert self.lease is not None
        async with trio.open_nursery() as n:
            n.start_soon(source.keep_alive, self.lease)
            await self.lease.expired.wait()
            n.cancel_scope.cancel()
        self.end_reason = "credentials expired"
        await self.send_error(CredentialsExpired("pgguard: credentials expired"))
        scope.cancel()

    async def _time_limit(self, seconds: float) -> None:
        """max_session_s: end the session (run() sends the FATAL, cleanup revokes)."""
        await trio.sleep(max(0.0, self.started + seconds - time.time()))
        self.killed = SessionTimeLimit("pgguard: session time limit reached")
        self.relay_scope.cancel()

    async def send_upstream(self, data: bytes) -> None:
        """Send bytes to PostgreSQL (the frontend pump's, and masking's own queries)."""
        assert self.link_io is not None
        await self.link_io.send_all(data)

    async def _pump_frontend(self, scope: trio.CancelScope) -> None:
        framer = self.client_framer
        guard = self.guard
        assert guard is not None
        observe = guard.observes_results
        exchange = self.exchange
        send_upstream = self.send_upstream
        full_binds = observe or self.tap is not None
        text = self.text
        assert text is not None
        activity = self.activity
        assert activity is not None
        while True:
            out = _Outgoing(framer.buf)
            while (frame := framer.next_frame()) is not None:
                kind, start, end = frame
                k = kind[0]
                if k not in READY_KINDS:
                    expect(Phase.READY, k)  # raises ProtocolViolation
                replacement: bytes | None = None
                if k == QUERY or k == PARSE or k == FUNCTION_CALL:
                    unreadable: GatewayError | None = None
                    raw = b""
                    if k != FUNCTION_CALL:
                        # Decode the text as PostgreSQL will read it (wire/clienttext).
                        ts, te = codec.text_span(kind, framer.buf, start, end)
                        if not framer.buf[ts:te].isascii():
                            raw = bytes(framer.buf[ts:te])
                            judgement, why = text.judge(False)
                            if judgement is Judgement.WAIT:
                                if pending := out.take():
                                    await send_upstream(pending)
                                await self._wait_settled()
                                judgement, why = text.judge(False)
                            if judgement is Judgement.REFUSE:
                                unreadable = FeatureNotSupported(f"pgguard: {why}")
                    msg = framer.decode(kind, start, end)
                    if raw and unreadable is None \
                            and (why := text.unreadable(raw, text_of(msg))) is not None:
                        # PostgreSQL rejects the bytes or reads them otherwise: never
                        # judge such a text.
                        unreadable = CharacterNotInRepertoire(f"pgguard: {why}")
                    if unreadable is not None:
                        verdict = guard.refuse_unreadable(msg, unreadable)
                    else:
                        if observe and guard.wants_catalog(msg):
                            # Masking reloads the catalog (after DDL) before planning:
                            # what came before must reach PostgreSQL and be answered first.
                            if pending := out.take():
                                await send_upstream(pending)
                            await guard.reload_catalog()
                        verdict = guard.check(msg)
                    sent = msg
                    if verdict is not None:
                        if verdict.hold:
                            # Send what came before, then wait for a human.
                            if pending := out.take():
                                await send_upstream(pending)
                            verdict = await self._hold(verdict)
                            if verdict is None:  # the client left: nothing runs
                                scope.cancel()
                                return
                        if verdict.refuse is not None:
                            replacement, sent = self._refusal(kind, msg, verdict)
                    notes: dict = {}
                    effects = guard.note_sent(msg, verdict, notes)
                    exchange.client_sent(sent, notes, effects)
                    notes[TEXT_MARK] = text.sent(kind_of(sent), guard.inert(msg, verdict))
                    if sent is not msg and k == PARSE:
                        exchange.expect_failure()  # the marker fails: skip to Sync
                    activity.statement(getattr(msg, "sql", None) or "", verdict,
                                       guard.last_decision)
                    if self.tap is not None:
                        await self.tap.statement(msg, verdict, notes, guard.last_decision)
                elif k in EXCHANGE_KINDS:
                    if exchange.skipping and k != SYNC:
                        # PostgreSQL discards it until Sync (after an error, or a refused
                        # Parse): it need not even see it.
                        replacement = b""
                    elif k == EXECUTE and (limited := guard.rate_limit_execute()) is not None:
                        replacement = self._refused_execute(
                            Verdict(None, "", "extended", refuse=limited))
                    else:
                        if k == SYNC:
                            msg = SYNC_MESSAGE
                        elif k == BIND and not full_binds:
                            # Only the names matter when nobody reads the parameters.
                            msg = framer.decode_bind_names(start, end)
                        else:
                            msg = framer.decode(kind, start, end)
                        notes = {}
                        if guard.rules_seen and k == EXECUTE:
                            verdict = guard.check_execute(msg)
                            if verdict is not None:
                                if verdict.hold:
                                    # One execution, one approval: what came before goes
                                    # first, then this Execute waits for a human.
                                    if pending := out.take():
                                        await send_upstream(pending)
                                    verdict = await self._hold(verdict)
                                    if verdict is None:
                                        scope.cancel()
                                        return
                                if verdict.refuse is not None:
                                    out.put(self._refused_execute(verdict))
                                    continue
                        elif k == BIND:
                            if guard.rules_seen and guard.on_bind(msg, notes):
                                if not full_binds:
                                    msg = framer.decode(kind, start, end)
                                guard.note_params(msg, notes, self._detectors())
                        if k == BIND and (encoding_params := guard.encoding_params(
                                msg.statement)):
                            # set_config('client_encoding', $n): the value comes now.
                            if not full_binds:
                                msg = framer.decode(kind, start, end)
                            if (why := bound_encoding_refusal(msg, encoding_params,
                                                              framer.encoding)):
                                replacement, msg = self._refused_bind(
                                    msg, FeatureNotSupported(f"pgguard: {why}"))
                        if k == BIND and self.tap is not None:  # parameters for the record
                            await self.tap.bind(msg)
                        if observe and replacement is None:
                            # Masking notes statements and portals; it may add a Describe
                            # before an Execute.
                            replacement = guard.on_frontend(msg, notes,
                                                            bytes(framer.buf[start:end]))
                        req = exchange.client_sent(msg, notes)
                        mark = text.sent(k, (k == BIND or k == EXECUTE)
                                         and guard.runs_inert(msg, notes))
                        if req is not None:
                            req.notes[TEXT_MARK] = mark
                elif k == TERMINATE:
                    out.put(codec.terminate())
                    await send_upstream(out.take())
                    self.end_reason = "client terminated"
                    scope.cancel()
                    return
                if replacement is None:
                    out.keep(start, end)
                else:
                    out.put(replacement)
            if pending := out.take():
                await send_upstream(pending)
            data = await self._receive_client()
            if not data:
                self.end_reason = "client disconnected"
                scope.cancel()
                return
            framer.feed(data)

    async def _hold(self, verdict: Verdict) -> Verdict | None:
        """Wait for the decision on a held statement, watching the client (held.py)."""
        assert self.guard is not None
        if self.activity is not None:  # shows the session as held meanwhile
            wait = functools.partial(self.activity.hold, self.guard)
        else:
            wait = self.guard.wait_for_approval
        return await held.wait_watching_client(self, wait, verdict)

    def _refused_execute(self, verdict: Verdict) -> bytes:
        """A refused Execute's stand-in: a Parse failing in PostgreSQL's parser (the
        error comes in order; what follows up to Sync is skipped, as after an Execute)."""
        marker, parse = self._refusal(b"E", Parse("", "", ()), verdict)
        notes: dict = {}
        assert self.guard is not None
        self.guard.note_sent(parse, verdict, notes)
        self.exchange.client_sent(parse, notes)
        self.exchange.expect_failure()
        return marker

    def _refusal(self, kind: bytes, msg: Query | Parse | FunctionCall, verdict: Verdict
                 ) -> tuple[bytes, Query | Parse]:
        """Replace a refused statement with a marker that fails in PostgreSQL's parser
        (net/refusals.py): the bytes to send and the message they are."""
        assert verdict.refuse is not None
        return self.refusals.statement(kind[0], msg, verdict.refuse,
                                       self.client_framer.encoding)

    def _refused_bind(self, msg: Bind, exc: GatewayError) -> tuple[bytes, Bind]:
        """Replace a refused Bind with one of a statement that does not exist."""
        log.info("event=statement_refused session=%s user=%s category=encoding reason=%r",
                 self.session_id, self.user, exc.message)
        return self.refusals.bind(msg, exc, self.client_framer.encoding)

    async def _pump_backend(self, scope: trio.CancelScope) -> None:
        assert self.link is not None
        framer = self.link.framer
        link_io = self.link_io
        assert link_io is not None
        guard = self.guard
        assert guard is not None
        observe = guard.observes_results
        limiter = guard.limiter
        # Rows nobody reads (no masking, no row limit) go out as whole runs.
        bulk_rows = not observe and limiter is None
        exchange = self.exchange
        activity = self.activity
        assert activity is not None
        while True:
            buf = framer.buf
            out = _Outgoing(buf)
            while (frame := framer.next_frame()) is not None:
                kind, start, end = frame
                k = kind[0]
                if k == DATA_ROW and bulk_rows:
                    # Rows nobody reads: the whole run as one slice (_speedups' walk).
                    out.keep(start, framer.datarow_run(end))
                    continue
                replacement: bytes | None = None
                req = None
                if k not in UNOWNED_KINDS:
                    if k == READY_FOR_QUERY:
                        msg = ReadyForQuery(chr(buf[start + 5]))
                    elif k == COMMAND_COMPLETE:
                        msg = framer.decode(kind, start, end)
                    else:
                        msg = None
                    req = exchange.server_sent(k, msg)
                    if k == READY_FOR_QUERY and req is not None \
                            and (mark := req.notes.get(TEXT_MARK)) is not None:
                        self._text_ready(mark)
                    if msg is not None:
                        activity.backend(k, msg, exchange)
                    if k == ERROR_RESPONSE and self.refusals:
                        replacement = self.refusals.rewritten(buf, start, end)
                elif k == PARAMETER_STATUS:
                    self._parameter_status(framer.decode(kind, start, end))
                if observe:
                    replacement = guard.on_backend(kind, framer, start, end, replacement, req)
                if limiter is not None:  # max_rows / max_result_bytes
                    replacement = limiter.on_backend(k, buf, start, end, replacement, req)
                if replacement is None:
                    out.keep(start, end)
                else:
                    out.put(replacement)
            data = out.take()
            if data:
                if self.tap is not None:
                    await self.tap.to_client(data)
                await self.send_client(data)
            data = await link_io.receive(RECEIVE_SIZE)
            if not data:
                self.end_reason = "database closed the connection"
                self.services.metrics.upstream_errors.labels(guard.conn.name).inc()
                scope.cancel()
                return
            framer.feed(data)

    def _parameter_status(self, msg: ParameterStatus) -> None:
        """Raises EncodingRefused: PostgreSQL reports a client_encoding pgguard cannot
        read (nothing after it is relayed)."""
        if msg.name == "client_encoding":
            self._follow_encoding(msg.value)
        elif msg.name == "standard_conforming_strings" and self.guard is not None:
            # With it off, backslashes in literals parse differently: policy must know.
            self.guard.standard_strings = msg.value == "on"

    # --- cancel -------------------------------------------------------------------

    async def cancel_request(self) -> None:
        """The client asked to cancel: withdraw a held statement or cancel upstream."""
        if self.tap is not None:
            await self.tap.cancel()
        if self.guard is not None and self.guard.withdraw():
            return
        if self.link is not None and self.guard is not None:
            await backend.send_cancel(self.guard.conn, self.link.process_id,
                                      self.link.secret_key)
