"""The gateway process: accept loop, TLS context, cancel routing, session registry."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
from typing import TYPE_CHECKING

import trio

from .. import config as config_mod
from .. import policy
from ..admin.console import run_admin_console
from ..approvals import Approvals
from ..credentials import build_credentials
from ..errors import ConfigError
from ..identity import TokenVerifier
from .guard import Guard
from .session import ClientSession

if TYPE_CHECKING:
    from ..identity import Identity

log = logging.getLogger(__name__)


def server_ssl_context(cfg: config_mod.Config) -> ssl.SSLContext | None:
    if not cfg.listen.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.listen.tls_cert, cfg.listen.tls_key)
    return ctx


class Gateway:
    """Holds what all sessions share; the config reference is swapped on SIGHUP."""

    def __init__(self, cfg: config_mod.Config, instance: str | None = None):
        self.cfg = cfg
        # Stable across restarts (approvals left pending by a previous run of this gateway
        # are abandoned at start; the audit chain continues) and distinct per worker.
        worker = os.environ.get("PGGUARD_WORKER")
        self.instance = instance or f"{socket.gethostname()}-{cfg.listen.port}" + (
            f"-w{worker}" if worker else "")
        self.server_ssl = server_ssl_context(cfg)
        self.verifier = TokenVerifier(cfg.identity)
        self.credentials = build_credentials(cfg)
        self.policies = {c.name: policy.Policy(c) for c in cfg.connections}
        self.sessions: dict[tuple[int, int], ClientSession] = {}
        self.all_sessions: set[ClientSession] = set()
        self.approvals = None
        self.recorder = None
        self.port: int | None = None
        # Several worker processes share the port (pgguard serve --workers N).
        self.reuse_port = os.environ.get("PGGUARD_REUSE_PORT") == "1"
        self._limit = trio.CapacityLimiter(cfg.listen.max_clients)

    # --- policy -------------------------------------------------------------------

    def guard_for(self, conn: config_mod.ConnectionConfig, identity: Identity,
                  session: ClientSession) -> Guard | None:
        pol = self.policies.get(conn.name) or policy.Policy(conn)
        if not pol.grants_for(identity.groups):
            return None
        return Guard(self, conn, identity, session, pol)

    def reload(self) -> None:
        """SIGHUP: build a new config and policies and swap the references.

        Sessions stay connected; their next statement is judged by the new grants (if
        no grant matches a live user's groups any more, every statement is refused). A
        bad file leaves everything as it was.
        """
        path = self.cfg.path
        if not path:
            return
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log.error("event=reload_failed error=%s", exc)
            return
        self.policies = {c.name: policy.Policy(c) for c in new.connections}
        self.cfg = new
        for s in list(self.all_sessions):
            if s.guard is not None and s.guard.conn.name in self.policies:
                s.guard.policy = self.policies[s.guard.conn.name]
        log.info("event=reloaded path=%s connections=%d", path, len(new.connections))

    # --- sessions -----------------------------------------------------------------

    def register(self, session: ClientSession) -> None:
        assert session.link is not None
        self.sessions[(session.link.process_id, session.secret_key)] = session

    def unregister(self, session: ClientSession) -> None:
        if session.link is not None:
            self.sessions.pop((session.link.process_id, session.secret_key), None)
        self.all_sessions.discard(session)

    def open_tap(self, session: ClientSession):
        """The recorder tap for a new session, or None when recording is off."""
        if self.recorder is None:
            return None
        from .recording import SessionTap
        return SessionTap(self.recorder, session)

    async def session_ended(self, session: ClientSession) -> None:
        log.info("event=session_end session=%s user=%s reason=%r bytes_in=%d bytes_out=%d",
                 session.session_id, session.user, session.end_reason, session.bytes_in,
                 session.bytes_out)

    async def cancel(self, process_id: int, secret_key: int) -> None:
        session = self.sessions.get((process_id, secret_key))
        if session is None:
            # Like PostgreSQL: no answer, and nothing to learn from the absence of one.
            log.info("event=cancel_unknown_key pid=%d", process_id)
            return
        await session.cancel_request()

    async def run_admin(self, session: ClientSession) -> None:
        session.state = "admin"
        link = _ConsoleLink(self, session)
        await run_admin_console(link, link)

    # --- serving ------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            local = stream.socket.getsockname()
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        session = ClientSession(self, stream, f"{peer[0]}:{peer[1]}", local[0])
        self.all_sessions.add(session)
        try:
            async with self._limit:
                await session.run()
        except Exception:
            # A session's failure ends only that session, never the accept loop.
            log.exception("event=session_handler_crash peer=%s", session.peer)

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg.listen
        if self.reuse_port:
            listeners = [await _reuse_port_listener(cfg.host, cfg.port)]
        else:
            listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("event=listening host=%s port=%d tls=%s", cfg.host, self.port,
                 self.server_ssl is not None)
        async with trio.open_nursery() as nursery:
            if hasattr(signal, "SIGHUP"):
                nursery.start_soon(self._watch_sighup)
            if self.approvals is not None:
                await self.approvals.start()
            if self.credentials.vault is not None and hasattr(self.credentials.vault, "run"):
                await nursery.start(self.credentials.vault.run)
            recorder_scope = trio.CancelScope(shield=True)
            if self.recorder is not None:
                await nursery.start(self._run_recorder, recorder_scope)
            task_status.started(self.port)
            try:
                # Sessions live in their own nursery so that their cleanup (session_end
                # records, lease release) finishes before the recorder and credentials close.
                async with trio.open_nursery() as sessions:
                    await trio.serve_listeners(self._handle, listeners,
                                               handler_nursery=sessions)
            finally:
                with trio.move_on_after(5) as cleanup_scope:
                    cleanup_scope.shield = True
                    await self.credentials.aclose()
                    if self.approvals is not None:
                        self.approvals.close()
                    if self.recorder is not None:
                        await self.recorder.aclose()
                recorder_scope.cancel()

    async def _run_recorder(self, scope: trio.CancelScope,
                            task_status=trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: a shutdown must not stop the writer before the sessions' last records.
        with scope:
            await self.recorder.run(task_status=task_status)

    async def _watch_sighup(self) -> None:
        try:
            with trio.open_signal_receiver(signal.SIGHUP) as signals:
                async for _ in signals:
                    self.reload()
        except RuntimeError:
            # Not in the main thread (tests run gateways in threads): no signal handling.
            return


class _ConsoleLink:
    """The admin console's Channel and ConsoleContext over one session and its gateway."""

    def __init__(self, gateway: Gateway, session: ClientSession):
        assert session.identity is not None
        self.identity = session.identity
        self.secret_key = session.secret_key
        self.framer = session.client_framer
        self._gateway = gateway
        self._session = session

    @property
    def approvals(self) -> Approvals | None:
        return self._gateway.approvals

    async def receive(self) -> bytes:
        return await self._session.receive_client()

    async def send(self, data: bytes) -> None:
        await self._session.send_client(data)

    def sessions(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for s in list(self._gateway.all_sessions):
            if s.state != "active":
                continue
            out.append({
                "id": s.session_id, "user": s.user,
                "groups": ",".join(s.identity.groups) if s.identity else "",
                "connection": s.database, "client": s.peer, "started_at": s.started,
                "state": "idle" if s.txn_status == "I" else
                         ("in transaction" if s.txn_status == "T" else "failed transaction"),
            })
        return out


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    await sock.bind(addr)
    sock.listen(1024)
    return trio.SocketListener(sock)
