"""The composition root: builds a gateway's shared services from the configuration."""

from __future__ import annotations

import os
import socket

from . import config as config_mod
from . import policy
from .credentials import build_credentials
from .identity import TokenVerifier
from .masking.hub import MaskingHub
from .net.listener import Gateway, server_ssl_context
from .net.services import Services


def instance_name(cfg: config_mod.Config) -> str:
    """Stable across restarts (approvals left pending by a previous run of this gateway
    are abandoned at start; the audit chain continues) and distinct per worker."""
    worker = os.environ.get("PGGUARD_WORKER")
    return f"{socket.gethostname()}-{cfg.listen.port}" + (f"-w{worker}" if worker else "")


def console_usable(cfg: config_mod.Config) -> bool:
    """Someone may run console commands that need the store (operators or approvers)."""
    return bool(cfg.admin.groups or cfg.approvals.approver_groups)


def build_services(cfg: config_mod.Config, instance: str | None = None) -> Services:
    """Create what the configuration asks for: verifier, credentials, policies, masking
    (reads ``masking.hash_key_file`` now, so a bad key stops the gateway at start),
    approvals, the kill switch's blocks and recording when configured, and this process's
    metrics.

    Raises:
        ConfigError: a file the configuration names cannot be used.
    """
    instance = instance or instance_name(cfg)
    services = Services(
        cfg=cfg, instance=instance, server_ssl=server_ssl_context(cfg),
        verifier=TokenVerifier(cfg.identity), credentials=build_credentials(cfg),
        policies={c.name: policy.Policy(c) for c in cfg.connections},
        masking=MaskingHub(cfg.masking))
    if cfg.approvals.approver_groups:
        from .approvals import Approvals
        services.approvals = Approvals(cfg.approvals, instance)
    if console_usable(cfg):
        # The kill switch works without [approvals]: its blocks live in approvals.store
        # (shared with the approvals service when there is one).
        from .approvals import Blocks
        store = services.approvals.store if services.approvals is not None else None
        services.blocks = Blocks.open(cfg.approvals, instance, store=store)
    if cfg.recording.dir:
        from .audit import Recorder
        services.recorder = Recorder(cfg.recording, instance)
    return services


def build_gateway(cfg: config_mod.Config, instance: str | None = None) -> Gateway:
    """A gateway for *cfg*, ready to ``serve()``."""
    return Gateway(build_services(cfg, instance))
