"""/readyz against real things: a PostgreSQL that stops and comes back, a recording folder
that goes away, a broken approvals store."""

from __future__ import annotations

import shutil

import pytest
import trio
from harness.postgres import throwaway_cluster
from test_metrics import get

from pgguard import config
from pgguard.metrics import Metrics, serve_metrics
from pgguard.readiness import checks_for


@pytest.fixture(scope="module")
def own_pg():
    """A cluster of this module's own: the test stops and restarts it."""
    with throwaway_cluster() as cluster:
        yield cluster


def _cfg(pg, tmp_path, keyfile):
    return config.parse({
        "identity": {"issuer": "https://idp.example"},
        "connections": [{"name": "appdb", "port": pg.port, "user": "app",
                         "password_env": "X", "grants": [{"groups": ["*"]}]}],
        "recording": {"dir": str(tmp_path / "rec"), "key_file": keyfile},
        "approvals": {"store": f"sqlite:///{tmp_path}/approvals.db",
                      "approver_groups": ["dba"]},
    })


async def test_readyz_follows_the_database_and_the_recording_folder(own_pg, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    (tmp_path / "rec").mkdir()
    keys_loaded = [False]
    checks = checks_for(_cfg(own_pg, tmp_path, str(key)), lambda: keys_loaded[0])
    assert list(checks) == ["identity", "approvals_store", "recording", "database:appdb"]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_metrics(Metrics().registry, "127.0.0.1", 0,
                                              checks=checks, check_timeout_s=5,
                                              task_status=task_status))
        status, body = await get(port, "/readyz")
        assert status == 503 and body.startswith("identity: ")
        keys_loaded[0] = True
        assert await get(port, "/readyz") == (200, "ready\n")

        await trio.to_thread.run_sync(own_pg.stop)
        status, body = await get(port, "/readyz")
        assert status == 503
        assert body.startswith("database:appdb: cannot connect to 127.0.0.1:"), body
        await trio.to_thread.run_sync(own_pg.start)
        assert await get(port, "/readyz") == (200, "ready\n")

        shutil.rmtree(tmp_path / "rec")
        status, body = await get(port, "/readyz")
        assert status == 503 and body.startswith("recording: ") and "does not exist" in body
        (tmp_path / "rec").mkdir()
        (tmp_path / "approvals.db").write_bytes(b"not sqlite" * 100)
        status, body = await get(port, "/readyz")
        assert status == 503 and body.startswith("approvals_store: ")
        nursery.cancel_scope.cancel()


async def test_something_that_is_not_postgresql_is_not_ready():
    async def handler(stream):
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            lambda task_status: trio.serve_tcp(handler, 0, host="127.0.0.1",
                                               task_status=task_status))
        port = listener.socket.getsockname()[1]
        cfg = config.parse({"identity": {"issuer": "https://i"}, "connections": [
            {"name": "web", "port": port, "user": "u", "password_env": "X",
             "grants": [{"groups": ["*"]}]}]})
        with pytest.raises(Exception, match="does not answer as PostgreSQL"):
            await checks_for(cfg)["database:web"]()
        nursery.cancel_scope.cancel()
