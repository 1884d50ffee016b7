"""The metrics registry and its HTTP endpoint, over real HTTP on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
import trio

from pgguard import config
from pgguard.errors import ConfigError
from pgguard.metrics import (
    Metrics,
    aggregate_registry,
    mark_worker_dead,
    serve_metrics,
    worker_env,
)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await trio.to_thread.run_sync(_get, port, path)


def sample(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in\n{text}")


async def test_counters_move_between_scrapes():
    m = Metrics()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, m.registry, "127.0.0.1", 0)
        status, before = await get(port, "/metrics")
        assert status == 200
        assert "pgguard_statements_total" in before and "pgguard_sessions" in before
        m.sessions.labels(connection="appdb").inc()
        m.statements.labels(connection="appdb", category="read", decision="allow").inc(3)
        m.statements.labels(connection="appdb", category="write", decision="deny").inc()
        m.statement_seconds.labels(connection="appdb").observe(0.003)
        m.masked_values.labels(strategy="redact", detector="email").inc(2)
        m.approval_requests.labels(outcome="approved").inc()
        m.approval_wait_seconds.observe(12)
        m.auth_failures.labels(reason="bad_token").inc()
        m.upstream_errors.labels(connection="appdb").inc()
        m.vault_leases.set(2)
        m.vault_lease_errors.labels(operation="renew").inc()
        m.recording_records.inc(5)
        _, after = await get(port, "/metrics")
        nursery.cancel_scope.cancel()
    assert sample(after, 'pgguard_sessions{connection="appdb"}') == 1
    assert sample(after, 'pgguard_statements_total{category="read",connection="appdb",'
                         'decision="allow"}') == 3
    assert sample(after, 'pgguard_statements_total{category="write",connection="appdb",'
                         'decision="deny"}') == 1
    assert sample(after, 'pgguard_statement_seconds_count{connection="appdb"}') == 1
    assert sample(after, 'pgguard_masked_values_total{detector="email",'
                         'strategy="redact"}') == 2
    assert sample(after, 'pgguard_approval_requests_total{outcome="approved"}') == 1
    assert sample(after, "pgguard_approval_wait_seconds_count") == 1
    assert sample(after, 'pgguard_auth_failures_total{reason="bad_token"}') == 1
    assert sample(after, 'pgguard_upstream_errors_total{connection="appdb"}') == 1
    assert sample(after, "pgguard_vault_leases") == 2
    assert sample(after, 'pgguard_vault_lease_errors_total{operation="renew"}') == 1
    assert sample(after, "pgguard_recording_records_total") == 5


def test_two_registries_do_not_collide():
    a, b = Metrics(), Metrics()
    a.recording_records.inc()
    assert "pgguard_recording_records_total 1.0" in a.render().decode()
    assert "pgguard_recording_records_total 0.0" in b.render().decode()


async def test_healthz_follows_the_callable_and_unknown_path_is_404():
    accepting = [True]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_metrics(Metrics().registry, "127.0.0.1", 0,
                                              healthy=lambda: accepting[0],
                                              task_status=task_status))
        assert await get(port, "/healthz") == (200, "ok\n")
        accepting[0] = False
        assert (await get(port, "/healthz"))[0] == 503
        assert (await get(port, "/nope"))[0] == 404
        nursery.cancel_scope.cancel()


async def test_readyz_flips_with_a_failing_check_and_names_it():
    db_up = [True]

    async def database() -> bool:
        return db_up[0]

    async def store() -> None:
        return None

    async def hangs() -> None:
        await trio.sleep_forever()

    checks = {"approvals_store": store, "database:appdb": database}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_metrics(Metrics().registry, "127.0.0.1", 0,
                                              checks=checks, check_timeout_s=0.5,
                                              task_status=task_status))
        assert await get(port, "/readyz") == (200, "ready\n")
        db_up[0] = False
        status, body = await get(port, "/readyz")
        assert status == 503 and "database:appdb" in body and "approvals_store" not in body
        db_up[0] = True
        assert (await get(port, "/readyz"))[0] == 200
        checks["recording"] = hangs
        status, body = await get(port, "/readyz")
        assert status == 503 and "recording: timed out" in body
        nursery.cancel_scope.cancel()


async def test_bad_request_line_gets_400_and_server_stops_on_cancel():
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, Metrics().registry, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"garbage\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some(4096):
            reply += chunk
        await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


WORKER = textwrap.dedent("""
    import sys
    from pgguard.metrics import Metrics
    m = Metrics()
    m.statements.labels(connection="appdb", category="read", decision="allow").inc(int(sys.argv[1]))
    m.sessions.labels(connection="appdb").inc()
""")


def test_worker_figures_are_summed_in_the_parent(tmp_path):
    mpdir = tmp_path / "mp"
    mpdir.mkdir()
    env = worker_env(str(mpdir))
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True)
    text = __import__("prometheus_client").generate_latest(
        aggregate_registry(str(mpdir))).decode()
    assert sample(text, 'pgguard_statements_total{category="read",connection="appdb",'
                        'decision="allow"}') == 7
    # livesum gauges: the parent drops a dead worker's files (files are named by pid).
    for name in os.listdir(mpdir):
        if name.startswith("gauge_livesum_"):
            mark_worker_dead(int(name.rsplit("_", 1)[1].split(".")[0]), str(mpdir))
    text = __import__("prometheus_client").generate_latest(
        aggregate_registry(str(mpdir))).decode()
    assert 'pgguard_sessions{connection="appdb"} 1' not in text


@pytest.mark.parametrize("listen, ok", [("127.0.0.1:9930", True), ("[::1]:9", True),
                                         ("localhost", False), ("h:99999", False)])
def test_metrics_listen_is_validated(listen, ok):
    if ok:
        cfg = config.parse({"metrics": {"listen": listen}})
        assert cfg.metrics.enabled
    else:
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            config.parse({"metrics": {"listen": listen}})


def test_metrics_off_without_section_and_log_format_validated():
    cfg = config.parse({})
    assert not cfg.metrics.enabled and cfg.log.format == "text"
    assert config.parse({"log": {"format": "json"}}).log.format == "json"
    with pytest.raises(ConfigError, match=r"log\.format"):
        config.parse({"log": {"format": "xml"}})
