"""One client session: startup, authentication, upstream login, and the two pumps.

Data flows one way in each pump: client bytes -> framing -> policy -> upstream, and
upstream bytes -> framing -> (masking) -> (recorder) -> client. Messages nobody needs to
look at are forwarded as the original bytes, in as few sends as possible.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from ..errors import (
    CredentialsExpired,
    GatewayError,
    InternalError,
    NotPermitted,
    PolicyDenied,
    ProtocolViolation,
    StartupTimeout,
    TLSRequired,
    UnknownConnection,
)
from ..wire import codec
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
from . import backend
from .fastio import FastIO
from .guard import Guard, Verdict, guard_for
from .recording import SessionInfo, SessionTap, session_detectors
from .services import Services

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

# Startup parameters a client may pass through to PostgreSQL. Anything that changes who
# the session runs as is refused; unknown ones are dropped (a GUC set at startup would
# escape statement control).
FORWARDED_PARAMS = frozenset({
    "application_name", "client_encoding", "DateStyle", "datestyle", "TimeZone", "timezone",
    "IntervalStyle", "intervalstyle", "extra_float_digits", "search_path",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "standard_conforming_strings", "bytea_output", "default_transaction_isolation",
    "default_transaction_read_only", "client_min_messages", "geqo", "lc_messages",
    "lc_monetary", "lc_numeric", "lc_time", "xmlbinary", "xmloption", "jit", "work_mem",
    "enable_seqscan", "options",
})
REFUSED_PARAMS = frozenset({"role", "session_authorization", "replication"})


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_options(options: str) -> str:
    """Allow only ``-c name=value`` of forwarded parameters inside ``options``."""
    words = options.replace("--", "-c ").split()
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-c" and i + 1 < len(words):
            setting = words[i + 1]
            i += 2
        elif w.startswith("-c"):
            setting = w[2:]
            i += 1
        else:
            raise PolicyDenied(f"startup option {w!r} is not allowed")
        name = setting.split("=", 1)[0].replace("-", "_")
        if name not in FORWARDED_PARAMS or name == "options":
            raise PolicyDenied(f"startup setting {name!r} is not allowed")
    return options


class _Outgoing:
    """What a pump sends next: runs of untouched frames (slices of the receive buffer,
    copied once) and replacement bytes, in order."""

    __slots__ = ("buf", "parts", "start", "end")

    def __init__(self, buf: bytearray):
        self.buf = buf
        self.parts: list[bytes] = []
        self.start = -1
        self.end = -1

    def keep(self, start: int, end: int) -> None:
        if self.start < 0:
            self.start = start
        elif self.end != start:
            self._close_run()
            self.start = start
        self.end = end

    def put(self, data: bytes) -> None:
        self._close_run()
        if data:
            self.parts.append(data)

    def _close_run(self) -> None:
        if self.start >= 0:
            self.parts.append(bytes(self.buf[self.start:self.end]))
            self.start = -1

    def take(self) -> bytes:
        """Everything collected so far, as one bytes object (b"" when nothing)."""
        self._close_run()
        parts, self.parts = self.parts, []
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that ended a pump: a GatewayError if any, else the first other one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                walk(e)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, GatewayError):
            return exc
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return leaves[0]


def _terminates(framer: Framer) -> bool:
    """Whether the frames buffered in *framer* (consumed) include a Terminate."""
    while (frame := framer.next_frame()) is not None:
        if frame[0][0] == TERMINATE:
            return True
    return False


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
        # Errors the backend pump must replace, in order: (marker, replacement bytes).
        self.rewrites: deque[tuple[bytes, bytes]] = deque()
        self.end_reason = "client closed"
        self.state = "startup"
        self.tap: SessionTap | None = None  # when recording is on
        self._scan: Detectors | None = None

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
                                   exc.hint)
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
        except GatewayError as exc:
            self.end_reason = exc.message
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

    def _open_tap(self) -> SessionTap | None:
        recorder = self.services.recorder
        if recorder is None:
            return None
        assert self.guard is not None
        groups = tuple(self.identity.groups) if self.identity else ()
        info = SessionInfo(self.session_id, self.user or "", groups, self.guard.conn.name,
                           self.peer, self.tls, self.started)
        return SessionTap(recorder, info, self.exchange, self._detectors())

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
        params = self._upstream_params(startup)
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

    # --- relay --------------------------------------------------------------------

    async def _relay(self) -> None:
        assert self.link is not None and self.lease is not None
        self.link_io = FastIO(self.link.stream)
        source = self.services.credentials.source_for(self.lease.role)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_frontend, nursery.cancel_scope)
                nursery.start_soon(self._pump_backend, nursery.cancel_scope)
                nursery.start_soon(self._watch_lease, source, nursery.cancel_scope)
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
        while True:
            out = _Outgoing(framer.buf)
            while (frame := framer.next_frame()) is not None:
                kind, start, end = frame
                k = kind[0]
                if k not in READY_KINDS:
                    expect(Phase.READY, k)  # raises ProtocolViolation
                replacement: bytes | None = None
                if k == QUERY or k == PARSE or k == FUNCTION_CALL:
                    msg = framer.decode(kind, start, end)
                    if observe and guard.wants_catalog(msg):
                        # Masking reloads the catalog (after DDL) before planning: what
                        # came before must reach PostgreSQL and be answered first.
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
                    if sent is not msg and k == PARSE:
                        exchange.expect_failure()  # the marker fails: skip to Sync
                    if self.tap is not None:
                        await self.tap.statement(msg, verdict, notes, guard.last_decision)
                elif k in EXCHANGE_KINDS:
                    if exchange.skipping and k != SYNC:
                        # PostgreSQL discards it until Sync (after an error, or a refused
                        # Parse): it need not even see it.
                        replacement = b""
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
                            if self.tap is not None:  # parameters for the record
                                await self.tap.bind(msg)
                        if observe:
                            # Masking notes statements and portals; it may add a Describe
                            # before an Execute.
                            replacement = guard.on_frontend(msg, notes,
                                                            bytes(framer.buf[start:end]))
                        exchange.client_sent(msg, notes)
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
        """Wait for the decision on a held statement while watching the client.

        The client is read meanwhile (its bytes kept, in order, for after the hold): at
        end of stream or a Terminate the wait is cancelled, which withdraws the request
        at once, and None is returned (the session ends; nothing held runs).

        Raises:
            ProtocolViolation: the client sent a malformed frame, or more than a message's
                limit, while held.
        """
        guard = self.guard
        assert guard is not None
        framer = self.client_framer
        peek = Framer(framer.max_size)
        peek.feed(framer.buf[framer.pos:])
        if _terminates(peek):
            # Sent with the held message: the client is gone before anyone could decide.
            self.end_reason = "client terminated while held"
            return None
        early: list[bytes] = []
        limit = framer.max_size + RECEIVE_SIZE
        size = 0
        result: Verdict | None = None

        async def watch(cancel: trio.CancelScope) -> None:
            nonlocal size
            while True:
                data = await self._receive_client()
                if not data:
                    self.end_reason = "client disconnected while held"
                    break
                early.append(data)
                size += len(data)
                if size > limit:
                    raise ProtocolViolation("pgguard: too much data sent while a statement "
                                            "is held for approval")
                peek.feed(data)
                if _terminates(peek):
                    self.end_reason = "client terminated while held"
                    break
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            result = await guard.wait_for_approval(verdict)
            nursery.cancel_scope.cancel()
        if result is None:
            return None
        # Extended in place, not fed: the offsets of the frames being handled stay valid.
        for data in early:
            framer.buf += data
        return result

    def _refused_execute(self, verdict: Verdict) -> bytes:
        """An Execute refused (denied or not approved): in its place goes a Parse that
        fails in PostgreSQL's parser, so the error comes in order and what follows up to
        Sync is skipped, as after a failed Execute."""
        marker, parse = self._refusal(b"E", Parse("", "", ()), verdict)
        notes: dict = {}
        assert self.guard is not None
        self.guard.note_sent(parse, verdict, notes)
        self.exchange.client_sent(parse, notes)
        self.exchange.expect_failure()
        return marker

    def _refusal(self, kind: bytes, msg: Query | Parse | FunctionCall, verdict: Verdict
                 ) -> tuple[bytes, Query | Parse]:
        """Replace a refused statement with one that fails in PostgreSQL's parser.

        Sending a statement that fails upstream (and rewriting its error on the way back)
        keeps every pipelined response in order and fails an open transaction exactly as
        PostgreSQL would, without the refused text ever reaching the database.

        Returns:
            The bytes to send and the message they are.
        """
        marker = f"pgguard_refused_{secrets.token_hex(6)}"
        exc = verdict.refuse
        assert exc is not None
        self.rewrites.append((marker.encode(), codec.error_response(
            "ERROR", exc.sqlstate, exc.message, exc.detail, exc.hint)))
        if kind[0] == PARSE:
            return codec.parse(msg.name, marker), Parse(msg.name, marker, ())
        if kind[0] == EXECUTE:
            # Named after the marker: its failure leaves the client's statements alone.
            return codec.parse(marker, marker), Parse(marker, marker, ())
        # FunctionCall has no SQL to replace: run the marker as a simple query instead.
        return codec.query(marker), Query(marker)

    async def _pump_backend(self, scope: trio.CancelScope) -> None:
        assert self.link is not None
        framer = self.link.framer
        link_io = self.link_io
        assert link_io is not None
        guard = self.guard
        assert guard is not None
        observe = guard.observes_results
        exchange = self.exchange
        while True:
            buf = framer.buf
            out = _Outgoing(buf)
            while (frame := framer.next_frame()) is not None:
                kind, start, end = frame
                k = kind[0]
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
                    if k == ERROR_RESPONSE and self.rewrites:
                        replacement = self._rewritten_error(buf, start, end)
                elif k == PARAMETER_STATUS:
                    self._parameter_status(framer.decode(kind, start, end))
                if observe:
                    replacement = guard.on_backend(kind, framer, start, end, replacement, req)
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
                scope.cancel()
                return
            framer.feed(data)

    def _rewritten_error(self, buf: bytearray, start: int, end: int) -> bytes | None:
        """pgguard's error for a refused statement's marker error, else None.

        Refusals answer in order, but one can be skipped by the server (a pipeline that
        failed earlier ignores everything up to Sync, the marker too): markers older than
        the one that matched were skipped and are dropped.
        """
        for i, (marker, rewritten) in enumerate(self.rewrites):
            if buf.find(marker, start, end) >= 0:
                for _ in range(i + 1):
                    self.rewrites.popleft()
                return rewritten
        return None

    def _parameter_status(self, msg: ParameterStatus) -> None:
        if msg.name == "standard_conforming_strings" and self.guard is not None:
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
