"""Static credentials from the configuration: development only, and the log says so."""

from __future__ import annotations

import logging
import os

import trio

from ..config import ConnectionConfig
from ..errors import CredentialsUnavailable
from .lease import Lease

log = logging.getLogger(__name__)


class StaticCredentials:
    """A :class:`~.lease.CredentialSource` from ``user`` and ``password_env`` on the
    connection."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    async def acquire(self, conn: ConnectionConfig, role: str | None, user: str) -> Lease:
        """The connection's configured user, with the password read from its env var.

        Raises:
            CredentialsUnavailable: no static user or the variable is not set.
        """
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
        """A static password never expires: wait until the session ends."""
        await trio.sleep_forever()

    async def release(self, lease: Lease) -> None:
        """Nothing to give back."""
        return None

    async def aclose(self) -> None:
        """Nothing to give back."""
        return None
