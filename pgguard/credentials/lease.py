"""What a session holds and whom it asks: the :class:`Lease` and the :class:`CredentialSource`.

A source hands out a :class:`Lease` per client session; the session keeps it alive while it
lasts, ends when ``lease.expired`` is set, and releases it when it ends. This module names the
seam only; the sources live in :mod:`.static` and :mod:`.vault`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..config import ConnectionConfig


@dataclass
class Lease:
    """Credentials for one session. ``expired`` is set when they stop being valid."""

    user: str
    password: str = field(repr=False)
    source: str = "static"
    lease_id: str | None = field(default=None, repr=False)
    role: str | None = None
    expires_at: float | None = None
    expired: trio.Event = field(default_factory=trio.Event, repr=False)


class CredentialSource(Protocol):
    """Where a session's upstream login comes from."""

    async def acquire(self, conn: ConnectionConfig, role: str | None, user: str) -> Lease:
        """Credentials for a new session of *user* on *conn* under Vault role *role*.

        Raises:
            CredentialsUnavailable: nothing can be issued (the session must not start).
        """
        ...

    async def keep_alive(self, lease: Lease) -> None:
        """Runs while the session lasts: renews the lease; sets ``lease.expired`` and returns
        when it can no longer be kept."""
        ...

    async def release(self, lease: Lease) -> None:
        """The session ended: revoke or return the lease."""
        ...

    async def aclose(self) -> None:
        """The gateway stops: give back whatever the source still holds."""
        ...
