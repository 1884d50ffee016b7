"""Database credentials for a session: where the gateway's upstream login comes from.

A source hands out a :class:`Lease` per client session; the session releases it when it
ends. The ``static`` source (user + password from an environment variable) exists for
development only and says so in the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

import trio

from .config import Config, ConnectionConfig
from .errors import CredentialsUnavailable

log = logging.getLogger(__name__)


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
        ...


class StaticCredentials:
    """``user`` and ``password_env`` on the connection: development only."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    async def acquire(self, conn: ConnectionConfig, role: str | None, user: str) -> Lease:
        if not conn.user or not conn.password_env:
            raise CredentialsUnavailable(f"credentials unavailable for {conn.name}")
        password = os.environ.get(conn.password_env)
        if password is None:
            log.error("event=static_credentials_missing connection=%s env=%s",
                      conn.name, conn.password_env)
            raise CredentialsUnavailable(f"credentials unavailable for {conn.name}")
        if conn.name not in self._warned:
            self._warned.add(conn.name)
            log.warning("event=static_credentials connection=%s user=%s "
                        "note=development-only", conn.name, conn.user)
        return Lease(user=conn.user, password=password, source="static")

    async def keep_alive(self, lease: Lease) -> None:
        await trio.sleep_forever()

    async def release(self, lease: Lease) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Credentials:
    """Routes each session to the source its grant names: Vault role or static."""

    def __init__(self, cfg: Config):
        self.static = StaticCredentials()
        self.vault: CredentialSource | None = None
        if cfg.vault.url:
            from .vault import VaultCredentials  # hvac is an optional extra
            self.vault = VaultCredentials(cfg.vault)

    def source_for(self, role: str | None) -> CredentialSource:
        if role is None:
            return self.static
        if self.vault is None:
            raise CredentialsUnavailable("credentials unavailable: vault is not configured")
        return self.vault

    async def aclose(self) -> None:
        if self.vault is not None:
            await self.vault.aclose()
