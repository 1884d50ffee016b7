"""pytest fixtures for the OpenBao dev server (identity tokens, database secrets)."""

from __future__ import annotations

import pytest

from harness.openbao import BaoServer


@pytest.fixture(scope="session")
def bao(tmp_path_factory) -> BaoServer:
    """One configured OpenBao server for the whole test session.

    Persistent (single-node raft), so a test may ``stop()`` and ``start()`` it, or
    ``pause()`` and ``resume()`` it, without invalidating tokens and leases that other
    tests hold; it must leave it running. Errors (never skips) when the ``bao`` binary
    is missing.
    """
    server = BaoServer(str(tmp_path_factory.mktemp("bao")), persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bao_running(bao: BaoServer) -> BaoServer:
    """The session server, restarted (or resumed) first if an earlier test left it
    stopped (or paused)."""
    bao.resume()
    if not bao.running:
        bao.start()
    return bao
