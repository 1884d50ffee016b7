"""Which source serves a session: the one its grant names (a Vault role, or none: static)."""

from __future__ import annotations

from ..errors import CredentialsUnavailable
from .lease import CredentialSource


class Credentials:
    """Routes each session to the source its grant names, over sources built elsewhere
    (:func:`~.build.build_credentials`).

    Args:
        static: the source for grants without a Vault role.
        vault: the source for grants with one; None when ``[vault]`` is not configured.
    """

    def __init__(self, static: CredentialSource, vault: CredentialSource | None = None):
        self.static = static
        self.vault = vault

    def source_for(self, role: str | None) -> CredentialSource:
        """The source for a grant naming Vault role *role* (None: static credentials).

        Raises:
            CredentialsUnavailable: a role is named but Vault is not configured.
        """
        if role is None:
            return self.static
        if self.vault is None:
            raise CredentialsUnavailable("credentials unavailable: vault is not configured")
        return self.vault

    async def aclose(self) -> None:
        """Clean shutdown: every source gives back what it holds (Vault revokes leases)."""
        await self.static.aclose()
        if self.vault is not None:
            await self.vault.aclose()
