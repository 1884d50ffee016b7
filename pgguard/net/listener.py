"""The gateway process: accept loop, TLS context, SIGHUP reload, the kill-switch watch,
the metrics endpoint, and the dispatch of a connection to its client session or the
admin console."""

from __future__ import annotations

import functools
import logging
import os
import signal
import ssl
from typing import TYPE_CHECKING

import trio

from .. import config as config_mod
from .. import policy
from ..admin.console import run_admin_console
from ..approvals import Approvals, Block
from ..errors import ConfigError
from ..logs import log_event
from ..masking.hub import MaskingHub
from ..metrics import ReadyCheck, serve_metrics
from ..readiness import checks_for
from .console_context import GatewayConsole, end_user_sessions
from .services import CredentialSources, Services
from .session import ClientSession

if TYPE_CHECKING:
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
        # /readyz's checks, updated in place by a reload (serve_metrics does not copy).
        self.ready_checks: dict[str, ReadyCheck] = checks_for(services.cfg)
        self.metrics_port: int | None = None
        self._accepting = False

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

    def reload(self) -> str:
        """SIGHUP: build a new config and policies and swap the references.

        Sessions stay connected; their next statement is judged by the new grants (if
        no grant matches a live user's groups any more, every statement is refused). A
        bad file leaves everything as it was.

        Returns:
            A one-line summary of what changed (also logged).

        Raises:
            ConfigError: the file is bad (nothing changed); or the gateway has no file.
        """
        path = self.cfg.path
        if not path or path.startswith("<"):
            raise ConfigError("path", "this gateway was not started from a file")
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log.error("event=reload_failed error=%s", exc)
            raise
        old = self.cfg
        policies = {c.name: policy.Policy(c) for c in new.connections}
        self.services.policies = policies
        self.services.cfg = new
        for s in list(self.all_sessions):
            if s.guard is not None and s.guard.conn.name in policies:
                s.guard.policy = policies[s.guard.conn.name]
        self.ready_checks.clear()
        self.ready_checks.update(checks_for(new))
        changes = config_changes(old, new)
        log_event(log, "reloaded", path=path, connections=len(new.connections),
                  connections_added=",".join(changes["added"]),
                  connections_removed=",".join(changes["removed"]),
                  connections_changed=",".join(changes["changed"]),
                  grants=";".join(changes["grants"]),
                  restart_needed=",".join(changes["restart"]))
        return summary(path, new, changes)

    async def reload_async(self) -> str:
        """The console's RELOAD: the same reload (the file is small; read in place)."""
        return self.reload()

    async def run_admin(self, session: ClientSession) -> None:
        session.state = "admin"
        console = GatewayConsole(self.services, session, self.reload_async)
        await run_admin_console(console, console)

    async def _on_block(self, block: Block) -> None:
        """A block made by any gateway or worker: end the user's sessions here."""
        ended = await end_user_sessions(self.services, block.user, block.reason)
        if ended:
            log.warning("event=block_applied user=%r sessions_ended=%d", block.user, ended)

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
            blocks = self.services.blocks
            if blocks is not None:
                await blocks.start()
                await nursery.start(blocks.watch, self._on_block)
            mcfg = self.cfg.metrics
            # Workers report into the parent's folder; only the parent serves (cli.py).
            if mcfg.enabled and not os.environ.get("PGGUARD_WORKER"):
                self.metrics_port = await nursery.start(functools.partial(
                    serve_metrics, self.services.metrics.registry, mcfg.host, mcfg.port,
                    healthy=lambda: self._accepting, checks=self.ready_checks,
                    check_timeout_s=mcfg.check_timeout_s))
            if self.credentials.vault is not None and hasattr(self.credentials.vault, "run"):
                await nursery.start(self.credentials.vault.run)
            recorder_scope = trio.CancelScope(shield=True)
            if self.recorder is not None:
                await nursery.start(self._run_recorder, recorder_scope)
            task_status.started(self.port)
            self._accepting = True
            try:
                # Sessions live in their own nursery so that their cleanup (session_end
                # records, lease release) finishes before the recorder and credentials close.
                async with trio.open_nursery() as sessions:
                    await trio.serve_listeners(self._handle, listeners,
                                               handler_nursery=sessions)
            finally:
                self._accepting = False
                with trio.move_on_after(5) as cleanup_scope:
                    cleanup_scope.shield = True
                    await self.credentials.aclose()
                    if blocks is not None:
                        blocks.close()
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
                    try:
                        self.reload()
                    except ConfigError:
                        pass  # logged; the running configuration stays
        except RuntimeError:
            # Not in the main thread (tests run gateways in threads): no signal handling.
            return


def config_changes(old: config_mod.Config, new: config_mod.Config) -> dict[str, list[str]]:
    """What a reload changes: connections added, removed and changed, grants per
    connection (by their groups), and the sections that take effect only at a restart."""
    before = {c.name: c for c in old.connections}
    after = {c.name: c for c in new.connections}
    out: dict[str, list[str]] = {
        "added": [n for n in after if n not in before],
        "removed": [n for n in before if n not in after],
        "changed": [], "grants": [], "restart": []}
    for name in after:
        if name not in before or before[name] == after[name]:
            continue
        out["changed"].append(name)
        g_old = {g.groups: g for g in before[name].grants}
        g_new = {g.groups: g for g in after[name].grants}
        parts = [f"+{','.join(k)}" for k in g_new if k not in g_old]
        parts += [f"-{','.join(k)}" for k in g_old if k not in g_new]
        parts += [f"~{','.join(k)}" for k in g_new if k in g_old and g_new[k] != g_old[k]]
        if parts:
            out["grants"].append(f"{name}:{' '.join(parts)}")
    for section in ("listen", "identity", "vault", "masking", "approvals", "recording",
                    "metrics"):
        if getattr(old, section) != getattr(new, section):
            out["restart"].append(section)
    return out


def summary(path: str, cfg: config_mod.Config, changes: dict[str, list[str]]) -> str:
    """The one line RELOAD answers with."""
    words = [f"reloaded {path}: {len(cfg.connections)} connection(s)"]
    for key, label in (("added", "added"), ("removed", "removed"), ("changed", "changed")):
        if changes[key]:
            words.append(f"{label} {', '.join(changes[key])}")
    if changes["grants"]:
        words.append(f"grants {'; '.join(changes['grants'])}")
    if not any(changes[k] for k in ("added", "removed", "changed")):
        words.append("no connection changed")
    if changes["restart"]:
        words.append(f"restart needed for [{'], ['.join(changes['restart'])}]")
    return ", ".join(words)


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    await sock.bind(addr)
    sock.listen(1024)
    return trio.SocketListener(sock)
