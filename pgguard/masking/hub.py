"""What all sessions of a gateway share for masking: the HMAC key and the catalogs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from ..config import MaskingConfig
from ..errors import ConfigError, ConnectionFailure
from .catalog import SqlCatalog
from .rules import load_hash_key
from .session import SessionMasking

log = logging.getLogger(__name__)

CATALOG_TTL_S = 30.0          # a new session reuses a catalog loaded this recently


def masking_configured(cfg: MaskingConfig) -> bool:
    """True when the configuration asks for masking: rules, or a ``[masking]`` section
    with detectors (all six unless ``detectors`` says otherwise).

    Without a ``[masking]`` section the default detector list stays off, so gateways
    that mask nothing keep the raw byte path.
    """
    return bool(cfg.rules) or (cfg.present and bool(cfg.detectors))


class MaskingHub:
    """What all sessions of a gateway share for masking: the HMAC key and the catalogs.

    Args:
        cfg: the ``[masking]`` configuration.
        key: the HMAC key (tests); read from ``masking.hash_key_file`` when None.

    Raises:
        ConfigError: ``masking.hash_key_file`` cannot be read or is empty.
    """

    def __init__(self, cfg: MaskingConfig, key: bytes | None = None):
        self.cfg = cfg
        self.active = masking_configured(cfg)
        self.key = key or b""
        if self.active and key is None:
            try:
                self.key = load_hash_key(cfg)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError("masking.hash_key_file",
                                  f"cannot read the key {cfg.hash_key_file}: {reason}") from None
        self._catalogs: dict[tuple, tuple[float, int, SqlCatalog]] = {}
        self.generation: dict[str, int] = {}

    def session(self, groups: Sequence[str]) -> SessionMasking | None:
        """A :class:`SessionMasking` for a user, or None when nothing is masked for them."""
        if not self.active:
            return None
        m = SessionMasking(self.cfg, groups, hash_key=self.key)
        return m if m.active else None

    def cached(self, key: tuple) -> SqlCatalog | None:
        """A catalog loaded for *key* less than :data:`CATALOG_TTL_S` ago and not since
        invalidated by DDL through this gateway."""
        hit = self._catalogs.get(key)
        if hit is None:
            return None
        loaded, gen, catalog = hit
        if time.monotonic() - loaded > CATALOG_TTL_S or gen != self.generation.get(key[0], 0):
            return None
        return catalog

    def store(self, key: tuple, catalog: SqlCatalog) -> None:
        self._catalogs[key] = (time.monotonic(), self.generation.get(key[0], 0), catalog)

    def invalidate(self, conn_name: str) -> None:
        """DDL ran on *conn_name*: catalogs cached for it are out of date."""
        self.generation[conn_name] = self.generation.get(conn_name, 0) + 1


class _MaskingSection(Protocol):
    masking: MaskingConfig


class MaskingHost(Protocol):
    """What holds the gateway's hub: its configuration and the hub itself
    (``pgguard.net.services.Services``, and the gateway that wraps them)."""

    @property
    def cfg(self) -> _MaskingSection: ...

    masking: MaskingHub | None


def attach_masking(host: MaskingHost) -> MaskingHub:
    """Create *host*'s :class:`MaskingHub` (reads the hash key: call at start).

    Raises:
        ConfigError: the hash key file cannot be read.
    """
    hub = MaskingHub(host.cfg.masking)
    host.masking = hub
    return hub


def hub_for(host: MaskingHost) -> MaskingHub:
    """*host*'s hub, made anew when the configuration was reloaded with another
    ``[masking]`` section.

    Raises:
        ConnectionFailure: the hash key cannot be read (never mask nothing instead).
    """
    hub = host.masking
    if hub is None or hub.cfg is not host.cfg.masking:
        try:
            hub = attach_masking(host)
        except ConfigError as exc:
            # Never run a session unmasked because the key is missing.
            log.error("event=masking_unavailable error=%s", exc)
            raise ConnectionFailure("pgguard: masking is misconfigured") from None
    return hub
