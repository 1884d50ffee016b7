"""The gateway process: accept loop, TLS context, SIGHUP reload, and the dispatch of a
connection to its client session or the admin console."""

from __future__ import annotations

import logging
import os
import signal
import ssl
from typing import TYPE_CHECKING

import trio

from .. import config as config_mod
from .. import policy
from ..admin.console import run_admin_console
from ..approvals import Approvals
from ..errors import ConfigError
from ..masking.hub import MaskingHub
from .services import CredentialSources, Services
from .session import ClientSession

if TYPE_CHECKING:
    from ..approvals import Approvals
    from ..audit import Recorder

log = logging.getLogger(__name__)


def server_ssl_context(cfg: config_mod.Config) -> ssl.SSLContext | None:
    if not cfg.listen.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.listen.tls_cert, cfg.listen.tls_key)
    return ctx


class Gateway:
    """The accept loop over the shared :class:`~pgguard.net.services.Services` (built by
    ``pgguard.app``); the config reference is swapped on SIGHUP."""

    def __init__(self, services: Services):
        self.services = services
        services.admin_console = self.run_admin
        self.port: int | None = None
        # Several worker processes share the port (pgguard serve --workers N).
        self.reuse_port = os.environ.get("PGGUARD_REUSE_PORT") == "1"
        self._limit = trio.CapacityLimiter(services.cfg.listen.max_clients)

    # What tests and the admin console read; the services hold them.
    @property
    def cfg(self) -> config_mod.Config:
        return self.services.cfg

    @cfg.setter
    def cfg(self, cfg: config_mod.Config) -> None:
        # New sessions start with it (as after a SIGHUP reload).
        self.services.cfg = cfg

    @property
    def instance(self) -> str:
        return self.services.instance

    @property
    def server_ssl(self) -> ssl.SSLContext | None:
        return self.services.server_ssl

    @property
    def credentials(self) -> CredentialSources:
        return self.services.credentials

    @property
    def approvals(self) -> Approvals | None:
        return self.services.approvals

    @property
    def recorder(self) -> Recorder | None:
        return self.services.recorder

    @property
    def masking(self) -> MaskingHub | None:
        return self.services.masking

    @masking.setter
    def masking(self, hub: MaskingHub) -> None:
        self.services.masking = hub

    @property
    def sessions(self) -> dict:
        """Live sessions by cancel key."""
        return self.services.registry.by_key

    @property
    def all_sessions(self) -> set:
        return self.services.registry.all

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
        policies = {c.name: policy.Policy(c) for c in new.connections}
        self.services.policies = policies
        self.services.cfg = new
        for s in list(self.all_sessions):
            if s.guard is not None and s.guard.conn.name in policies:
                s.guard.policy = policies[s.guard.conn.name]
        log.info("event=reloaded path=%s connections=%d", path, len(new.connections))

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
        session = ClientSession(self.services, stream, f"{peer[0]}:{peer[1]}", local[0])
        self.services.registry.add(session)
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
