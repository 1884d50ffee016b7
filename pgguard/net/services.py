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
from ..credentials import CredentialSource
from ..identity import Identity
from ..masking.hub import MaskingHub

if TYPE_CHECKING:
    # Optional components, imported by pgguard.app only when configured.
    from ..approvals import Approvals
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
    """The live sessions, and the cancel keys that route a CancelRequest to one."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, int], Cancellable] = {}
        self.all: set = set()   # every session, active or not (the admin console lists them)

    def add(self, session: object) -> None:
        self.all.add(session)

    def register(self, process_id: int, secret_key: int, session: Cancellable) -> None:
        """*session* answers CancelRequests carrying this key."""
        self.by_key[(process_id, secret_key)] = session

    def unregister(self, session: object, key: tuple[int, int] | None = None) -> None:
        if key is not None:
            self.by_key.pop(key, None)
        self.all.discard(session)

    async def cancel(self, process_id: int, secret_key: int) -> None:
        """Route a CancelRequest to the session with this key, if any."""
        session = self.by_key.get((process_id, secret_key))
        if session is None:
            # Like PostgreSQL: no answer, and nothing to learn from the absence of one.
            log.info("event=cancel_unknown_key pid=%d", process_id)
            return
        await session.cancel_request()


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
    recorder: Recorder | None = None
    registry: SessionRegistry = field(default_factory=SessionRegistry)
    # Runs the admin console on a session that logged into database "pgguard".
    admin_console: Callable[[object], Awaitable[None]] | None = None

    def policy_for(self, conn: config_mod.ConnectionConfig) -> policy.Policy:
        return self.policies.get(conn.name) or policy.Policy(conn)
