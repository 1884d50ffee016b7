"""pytest fixtures for the OpenBao dev server (identity tokens, database secrets)."""

from __future__ import annotations

import pytest

from harness.openbao import BaoServer


@pytest.fixture(scope="session")
def bao(tmp_path_factory) -> BaoServer:
    """One configured OpenBao dev server for the whole test session.

    It errors (never skips) when the ``bao`` binary is missing. A test that stops the
    server must start it again (``bao.start()`` re-applies the configuration).
    """
    server = BaoServer(str(tmp_path_factory.mktemp("bao")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bao_running(bao: BaoServer) -> BaoServer:
    """The session server, restarted first if an earlier test left it stopped."""
    if not bao.running:
        bao.start()
    return bao
