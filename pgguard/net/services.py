"""What every session of a gateway shares, as one typed object built by ``pgguard.app``.

A session gets a :class:`Services`, not the gateway: it sees the configuration and the
shared components (token verifier, credentials, policies, approvals, recorder, masking
hub), the session registry that routes CancelRequests, and the admin console entry; it
cannot reach the accept loop. Objects meet through the small Protocols below.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .. import config as config_mod
from .. import policy
from ..approvals import StoreUnavailable, blocked_message
from ..credentials import CredentialSource
from ..errors import BlocksUnavailable, UserBlocked
from ..identity import Identity
from ..masking.hub import MaskingHub
from ..metrics import Metrics
from ..policy.guardrails import RateWindow
from .activity import GatewayStats

if TYPE_CHECKING:
    # Optional components, imported by pgguard.app only when configured.
    from ..approvals import Approvals, Blocks
    from ..audit import Recorder

log = logging.getLogger(__name__)


class Verifier(Protocol):
    """Checks a client's token (``pgguard.identity.TokenVerifier``)."""

    async def verify(self, token: str, user: str) -> Identity: ...


class CredentialSources(Protocol):
    """Where a session's database credentials come from (``pgguard.credentials``)."""

    vault: CredentialSource | None

    def source_for(self, role: str | None) -> CredentialSource: ...

    async def aclose(self) -> None: ...


class Cancellable(Protocol):
    """A session that a CancelRequest can reach."""

    async def cancel_request(self) -> None: ...


class SessionRegistry:
    """The live sessions, and the cancel keys that route a CancelRequest to one.

    Registering a session (it is connected upstream) and unregistering it are also where
    the sessions gauge, the lease gauge and ``SHOW STATS``' session counts move.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.by_key: dict[tuple[int, int], Cancellable] = {}
        self.all: set = set()   # every session, active or not (the admin console lists them)
        self.metrics = metrics

    def add(self, session: object) -> None:
        self.all.add(session)

    def register(self, process_id: int, secret_key: int, session: Cancellable) -> None:
        """*session* answers CancelRequests carrying this key."""
        self.by_key[(process_id, secret_key)] = session
        activity = getattr(session, "activity", None)
        if activity is not None:
            activity.stats.sessions_total += 1
            if self.metrics is not None:
                self.metrics.sessions.labels(activity.connection).inc()
                if _is_vault(session):
                    self.metrics.vault_leases.inc()

    def unregister(self, session: object, key: tuple[int, int] | None = None) -> None:
        if key is not None and self.by_key.pop(key, None) is not None:
            activity = getattr(session, "activity", None)
            if activity is not None:
                activity.ended(getattr(session, "bytes_in", 0), getattr(session, "bytes_out", 0))
                if self.metrics is not None:
                    self.metrics.sessions.labels(activity.connection).dec()
                    if _is_vault(session):
                        self.metrics.vault_leases.dec()
        self.all.discard(session)

    async def cancel(self, process_id: int, secret_key: int) -> None:
        """Route a CancelRequest to the session with this key, if any."""
        session = self.by_key.get((process_id, secret_key))
        if session is None:
            # Like PostgreSQL: no answer, and nothing to learn from the absence of one.
            log.info("event=cancel_unknown_key pid=%d", process_id)
            return
        await session.cancel_request()


def _is_vault(session: object) -> bool:
    lease = getattr(session, "lease", None)
    return lease is not None and lease.source == "vault"


@dataclass
class Services:
    """The shared objects a session needs. ``cfg`` and ``policies`` are swapped on SIGHUP
    (a session keeps the configuration it started with)."""

    cfg: config_mod.Config
    instance: str
    server_ssl: ssl.SSLContext | None
    verifier: Verifier
    credentials: CredentialSources
    policies: dict[str, policy.Policy]
    masking: MaskingHub
    approvals: Approvals | None = None
    # The kill switch's blocks, whenever the console is usable (admin or approver groups).
    blocks: Blocks | None = None
    recorder: Recorder | None = None
    metrics: Metrics = field(default_factory=Metrics)
    stats: GatewayStats = field(default_factory=GatewayStats)
    registry: SessionRegistry = field(default_factory=SessionRegistry)
    # max_statements_per_minute: statements per user over the last minute, shared by the
    # sessions of this process (each worker counts its own: docs/guardrails.md).
    rates: RateWindow = field(default_factory=RateWindow)
    # Runs the admin console on a session that logged into database "pgguard".
    admin_console: Callable[[object], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if self.registry.metrics is None:
            self.registry.metrics = self.metrics

    def policy_for(self, conn: config_mod.ConnectionConfig) -> policy.Policy:
        return self.policies.get(conn.name) or policy.Policy(conn)

    async def check_blocked(self, user: str, console: bool = False) -> None:
        """Refuse a blocked *user*'s new session (after authentication, before the
        upstream login).

        Args:
            console: the session is for the admin console: a store failure lets it in
                (operators need the console most when something is broken; the commands
                that need the store fail on their own).

        Raises:
            UserBlocked: *user* is blocked (the FATAL names the reason).
            BlocksUnavailable: the store failed (fail closed).
        """
        if self.blocks is None:
            return
        try:
            reason = await self.blocks.is_blocked(user)
        except StoreUnavailable as exc:
            log.error("event=blocks_check_failed user=%r error=%s", user, exc)
            if console:
                return
            raise BlocksUnavailable("pgguard: cannot check blocks") from None
        if reason is not None:
            if self.metrics is not None:
                self.metrics.auth_failures.labels("blocked").inc()
            log.warning("event=session_refused_blocked user=%r", user)
            raise UserBlocked(blocked_message(user, reason))
