"""The gateway as the admin console sees it: :class:`GatewayConsole` implements the
console's :class:`~pgguard.admin.context.ConsoleContext` (typed snapshots of this
process's sessions, upstream links, leases and counters, and the actions KILL, BLOCK USER
and RELOAD) and its :class:`~pgguard.admin.console.Channel` over one console session.

:func:`end_session` and :func:`end_user_sessions` are also what the kill-switch watcher
calls when a block arrives from another gateway or worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import trio

from ..admin.context import LeaseView, ServerView, SessionView, StatsView
from ..approvals import Approvals, Blocks, blocked_message
from ..config import Config
from ..errors import AdminShutdown, GatewayError
from .activity import Activity
from .recording import session_detectors
from .services import Services

if TYPE_CHECKING:
    from ..credentials import Lease
    from ..identity import Identity
    from ..wire.exchange import Exchange
    from .backend import BackendLink
    from .guard import Guard

log = logging.getLogger(__name__)

#: The longest statement text SHOW SESSIONS prints (the rest is cut, marked with …).
MAX_STATEMENT_CHARS = 500
#: How long KILL waits for the session's cleanup (upstream closed, lease revoked).
END_WAIT_S = 5.0


class LiveSession(Protocol):
    """What the console reads of a client session (``net.session.ClientSession``)."""

    session_id: str
    user: str | None
    peer: str
    started: float
    state: str
    identity: Identity | None
    guard: Guard | None
    link: BackendLink | None
    lease: Lease | None
    activity: Activity | None
    exchange: Exchange
    bytes_in: int
    bytes_out: int
    killed: GatewayError | None
    relay_scope: trio.CancelScope
    ended: trio.Event


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def live_sessions(services: Services) -> list[LiveSession]:
    """The sessions connected upstream now (not starting, not ending, not consoles)."""
    return [s for s in list(services.registry.all)
            if s.state == "active" and s.activity is not None and s.killed is None]


async def end_session(session: LiveSession, exc: GatewayError,
                      wait_s: float = END_WAIT_S) -> None:
    """End *session* from outside: it sends *exc* (FATAL) to its client, closes upstream,
    releases its lease and records ``exc.message`` as its end reason; returns once that
    cleanup is done (or after *wait_s*)."""
    session.killed = exc
    session.relay_scope.cancel()
    with trio.move_on_after(wait_s):
        await session.ended.wait()


def _starting(services: Services, user: str) -> list[LiveSession]:
    """Sessions of *user* past authentication but not yet relaying: one may have passed
    the block check just before the block was made."""
    return [s for s in list(services.registry.all)
            if s.state == "startup" and s.identity is not None and s.user == user
            and s.killed is None and getattr(s, "database", None) != "pgguard"]


async def end_user_sessions(services: Services, user: str, reason: str) -> int:
    """End every live session of *user* with the kill switch's FATAL; how many ended.

    A session still starting is marked too: its relay, cancelled before it begins, ends
    at once with the same FATAL.
    """
    victims = [s for s in live_sessions(services) if s.user == user]
    victims += _starting(services, user)
    message = blocked_message(user, reason)
    async with trio.open_nursery() as nursery:
        for s in victims:
            log.warning("event=session_blocked session=%s user=%r", s.session_id, user)
            nursery.start_soon(end_session, s, AdminShutdown(message))
    return len(victims)


def _statement_text(services: Services, s: LiveSession, sql: str | None) -> str | None:
    """The statement as the session log has it: after the detectors (a value they would
    mask never shows in clear), cut to :data:`MAX_STATEMENT_CHARS`."""
    if not sql:
        return None
    groups = tuple(s.identity.groups) if s.identity else ()
    masking = s.guard.masking if s.guard is not None else None
    detectors = session_detectors(masking, services.cfg.masking, groups)
    # Cut before scanning too: the scan's cost stays bounded however long the text.
    text = sql[:MAX_STATEMENT_CHARS * 2]
    if detectors:
        text = detectors.scan_text(text)
    if len(text) > MAX_STATEMENT_CHARS or len(sql) > MAX_STATEMENT_CHARS * 2:
        text = text[:MAX_STATEMENT_CHARS - 1] + "…"
    return text


def session_view(services: Services, s: LiveSession) -> SessionView:
    a = s.activity
    assert a is not None and s.guard is not None
    holding = a.holding
    started = _utc(s.started)
    assert started is not None
    return SessionView(
        id=s.session_id, user=s.user or "",
        groups=tuple(s.identity.groups) if s.identity else (),
        connection=s.guard.conn.name, client=s.peer, state=a.state(s.exchange),
        started_at=started, statement=_statement_text(services, s, a.sql),
        statement_started_at=_utc(a.started_at),
        request_id=holding.request_id if holding is not None else None)


def _server_view(s: LiveSession) -> ServerView | None:
    a, link, guard = s.activity, s.link, s.guard
    if a is None or link is None or guard is None:
        return None
    state = a.state(s.exchange)
    conn = guard.conn
    return ServerView(
        session_id=s.session_id, connection=conn.name, backend_pid=link.process_id,
        server=f"{conn.host}:{conn.port}", user=s.lease.user if s.lease else "",
        # A held statement has not gone upstream: the server is idle meanwhile.
        state="idle" if state == "held" else state,
        connected_at=_utc(a.connected_at) or datetime.now(UTC), tls=link.tls)


def lease_views(sessions: Sequence[LiveSession]) -> list[LeaseView]:
    """One view per lease (a lease shared under ``vault.reuse = "user"`` lists its
    sessions); static credentials, which have no lease id, one per connection and user."""
    groups: dict[tuple[str, str, str], list[LiveSession]] = {}
    for s in sessions:
        if s.lease is None or s.guard is None:
            continue
        key = (s.lease.lease_id or "", s.guard.conn.name, s.lease.user)
        groups.setdefault(key, []).append(s)
    out = []
    for (lease_id, connection, user), members in groups.items():
        lease = members[0].lease
        assert lease is not None
        expires = lease.expires_at
        out.append(LeaseView(
            lease_id=lease_id, source=lease.source, role=lease.role, connection=connection,
            user=user, sessions=tuple(m.session_id for m in members),
            expires_at=_utc(expires) if expires is not None and expires != float("inf")
            else None,
            renewable=bool(getattr(getattr(lease, "state", None), "renewable", False))))
    return out


def stats_views(services: Services) -> list[StatsView]:
    """One entry per configured connection, in configuration order (zeros included)."""
    live = live_sessions(services)
    out = []
    for conn in services.cfg.connections:
        st = services.stats.of(conn.name)
        mine = [s for s in live if s.guard is not None and s.guard.conn.name == conn.name]
        out.append(StatsView(
            connection=conn.name, sessions=len(mine), sessions_total=st.sessions_total,
            allowed=st.allowed, held=st.held, refused=st.refused, rows=st.rows,
            bytes_received=st.bytes_received + sum(s.bytes_in for s in mine),
            bytes_sent=st.bytes_sent + sum(s.bytes_out for s in mine),
            mean_statement_s=st.mean_s, p99_statement_s=st.p99_s))
    return out


class ConsoleSession(Protocol):
    """The console connection itself: who it is and its bytes."""

    identity: Identity | None
    secret_key: int
    client_framer: object

    async def receive_client(self) -> bytes: ...

    async def send_client(self, data: bytes) -> None: ...


class GatewayConsole:
    """The console's Channel and ConsoleContext over one console session.

    Args:
        services: the gateway's shared objects.
        session: the authenticated console session.
        reload: the gateway's reload (what SIGHUP does), returning its summary.
    """

    def __init__(self, services: Services, session: ConsoleSession,
                 reload: Callable[[], Awaitable[str]]):
        assert session.identity is not None
        self._identity = session.identity
        self._session = session
        self._services = services
        self._reload = reload

    # --- Channel -------------------------------------------------------------------

    @property
    def framer(self):  # the session's Framer (the console's Frames protocol)
        return self._session.client_framer

    async def receive(self) -> bytes:
        return await self._session.receive_client()

    async def send(self, data: bytes) -> None:
        await self._session.send_client(data)

    # --- ConsoleContext ------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def approvals(self) -> Approvals | None:
        return self._services.approvals

    @property
    def blocks(self) -> Blocks | None:
        return self._services.blocks

    @property
    def secret_key(self) -> int:
        return self._session.secret_key

    @property
    def config(self) -> Config:
        return self._services.cfg

    def sessions(self) -> Iterable[SessionView]:
        return [session_view(self._services, s) for s in live_sessions(self._services)]

    def servers(self) -> Iterable[ServerView]:
        views = (_server_view(s) for s in live_sessions(self._services))
        return [v for v in views if v is not None]

    def leases(self) -> Iterable[LeaseView]:
        return lease_views(live_sessions(self._services))

    def stats(self) -> Iterable[StatsView]:
        return stats_views(self._services)

    async def reload(self) -> str:
        return await self._reload()

    async def kill(self, session_id: str, reason: str) -> bool:
        for s in live_sessions(self._services):
            if s.session_id == session_id:
                log.warning("event=session_killed session=%s user=%r by=%r", session_id,
                            s.user, self._identity.user)
                await end_session(s, AdminShutdown(f"pgguard: session {reason}"))
                return True
        return False

    async def block_user(self, user: str, reason: str) -> int:
        return await end_user_sessions(self._services, user, reason)
