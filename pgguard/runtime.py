"""Wires the optional components (approvals, recording, masking) into a gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .net.listener import Gateway


def attach_components(gateway: Gateway) -> None:
    """Create the components the configuration asks for and hang them on *gateway*."""
    cfg = gateway.cfg
    from .net.masker import attach_masking
    # Reads masking.hash_key_file now, so a bad key stops the gateway at start.
    attach_masking(gateway)
    if cfg.approvals.approver_groups:
        from .approvals import Approvals
        gateway.approvals = Approvals(cfg.approvals, gateway.instance)
    if cfg.recording.dir:
        from .audit import Recorder
        gateway.recorder = Recorder(cfg.recording, gateway.instance)
