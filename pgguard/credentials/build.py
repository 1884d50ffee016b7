"""Build the credential sources the configuration asks for (called by the composition root)."""

from __future__ import annotations

from ..config import Config
from .lease import CredentialSource
from .router import Credentials
from .static import StaticCredentials


def build_credentials(cfg: Config) -> Credentials:
    """The sources for *cfg*: static always, Vault when ``vault.url`` is set.

    Args:
        cfg: the gateway's configuration.

    Returns:
        A :class:`Credentials` router over the built sources.
    """
    vault: CredentialSource | None = None
    if cfg.vault.url:
        # Imported here, not at the top: hvac is the optional ``vault`` extra, and a base
        # install without it must still import pgguard.credentials.
        from .vault import VaultCredentials

        vault = VaultCredentials(cfg.vault)
    return Credentials(StaticCredentials(), vault)
