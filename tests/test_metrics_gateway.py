"""``[metrics]`` through a real gateway: scrape ``/metrics`` while statements, refusals,
holds, masks and failed logins happen and see each counter move; ``/readyz`` turns 503
when a database stops and 200 when it is back; ``--workers`` sums the workers' figures.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import tomli_w
from harness.gateway import ThreadGateway, free_port
from harness.postgres import throwaway_cluster
from psycopg import errors

DBA = ("alice", ("dba",))
AGENT = ("agent-bob", ("engineers",))
READER = ("dave", ("analysts",))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample *name* with exactly these labels (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return 0.0


def connect(port: int, tokens, who, dbname="appdb", password=None):
    user, groups = who
    return psycopg.connect(f"host=127.0.0.1 port={port} dbname={dbname} user={user} "
                           "sslmode=disable connect_timeout=10",
                           password=password or tokens(user, groups), autocommit=True)


def until(predicate, limit: float = 15):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def spare():
    """A second PostgreSQL the test may stop and start (readiness of 'spare')."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def gw(make_config, spare, tmp_path):
    key = tmp_path / "hash.key"
    key.write_text("metrics-test-hash-key\n")
    cfg = make_config(
        metrics={"listen": "127.0.0.1:0"},
        admin={"groups": ["dba"]},
        approvals={"store": f"sqlite:///{tmp_path}/approvals.db", "approver_groups": ["dba"],
                   "timeout_s": 10, "poll_interval_s": 0.1},
        masking={"hash_key_file": str(key),
                 "rules": [{"columns": ["accounts.owner"], "strategy": "redact"}]})
    cfg["connections"].append({
        "name": "spare", "host": spare.host, "port": spare.port, "dbname": "postgres",
        "sslmode": "disable", "user": "nobody", "password_env": "PGGUARD_TEST_APP_PASSWORD",
        "grants": [{"groups": ["owners"], "read": "allow"}]})
    gateway = ThreadGateway(cfg).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_counters_move_with_traffic(gw, tokens, app_db):
    port = gw.gateway.metrics_port
    assert port
    _, before = get(port, "/metrics")
    reader = connect(gw.port, tokens, READER)
    owners = reader.execute("SELECT owner FROM accounts ORDER BY id").fetchall()
    assert len(owners) == 100 and owners[0][0] != "owner1"
    with pytest.raises(errors.InsufficientPrivilege):
        reader.execute("DELETE FROM accounts")
    _, during = get(port, "/metrics")
    assert value(during, "pgguard_sessions", connection="appdb") >= 1
    with pytest.raises(psycopg.OperationalError):
        connect(gw.port, tokens, READER, password="not-a-token")
    # A held statement, approved at the console.
    admin = connect(gw.port, tokens, DBA, "pgguard")
    agent = connect(gw.port, tokens, AGENT)
    table = f"m_{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(agent.execute, f"CREATE TABLE {table} (id int)")

        def pending():
            with admin.cursor() as cur:
                cur.execute("SHOW APPROVALS")
                return [r[0] for r in cur.fetchall()]

        rid = until(pending)[0]
        admin.execute(f"APPROVE {rid}")
        fut.result(15)
    reader.close()
    agent.close()
    admin.close()
    _, after = get(port, "/metrics")

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pgguard_statements_total", connection="appdb", category="read",
                 decision="allowed") >= 1
    assert moved("pgguard_statements_total", connection="appdb", category="write",
                 decision="refused") >= 1
    assert moved("pgguard_statements_total", connection="appdb", category="ddl",
                 decision="held") >= 1
    assert moved("pgguard_statement_seconds_count", connection="appdb") >= 2
    assert moved("pgguard_masked_values_total", strategy="redact", detector="rule") >= 100
    assert moved("pgguard_approval_requests_total", outcome="approved") >= 1
    assert moved("pgguard_approval_wait_seconds_count") >= 1
    assert moved("pgguard_auth_failures_total", reason="InvalidToken") >= 1
    until(lambda: value(get(port, "/metrics")[1], "pgguard_sessions",
                        connection="appdb") == 0)
    status, body = get(port, "/healthz")
    assert status == 200


def test_recording_records_are_counted(make_config, tokens, tmp_path):
    key = tmp_path / "audit.key"
    key.write_bytes(b"metrics-recording-key-0123456789\n")
    cfg = make_config(metrics={"listen": "127.0.0.1:0"},
                      recording={"dir": str(tmp_path / "rec"), "key_file": str(key)})
    gw = ThreadGateway(cfg).start()
    try:
        port = gw.gateway.metrics_port
        _, before = get(port, "/metrics")
        with connect(gw.port, tokens, READER) as conn:
            conn.execute("SELECT 1").fetchall()
        _, after = get(port, "/metrics")
        assert value(after, "pgguard_recording_records_total") \
            >= value(before, "pgguard_recording_records_total") + 2
    finally:
        gw.stop()


def test_readyz_follows_the_database(gw, spare):
    port = gw.gateway.metrics_port
    status, body = get(port, "/readyz")
    assert status == 200, body
    spare.stop()
    status, body = get(port, "/readyz")
    assert status == 503
    assert "database:spare" in body and "database:appdb" not in body
    spare.start()
    status, body = until(lambda: (r := get(port, "/readyz"))[0] == 200 and r)
    assert body == "ready\n"


def test_workers_serve_the_sum(make_config, tokens, tmp_path):
    metrics_port = free_port()
    cfg = make_config(metrics={"listen": f"127.0.0.1:{metrics_port}"})
    cfg["listen"]["port"] = free_port()
    path = tmp_path / "pgguard.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pgguard", "serve", "--config", str(path),
                             "--workers", "2"], stdout=log, stderr=log,
                            env=dict(os.environ), start_new_session=True)
    try:
        def listening():
            try:
                with socket.create_connection(("127.0.0.1", cfg["listen"]["port"]), 1):
                    return get(metrics_port, "/healthz")[0] == 200
            except OSError:
                return False

        until(listening, 30)
        _, before = get(metrics_port, "/metrics")
        n = 6
        for _ in range(n):  # SO_REUSEPORT spreads them over the workers
            with connect(cfg["listen"]["port"], tokens, READER) as conn:
                conn.execute("SELECT 1").fetchall()
        _, after = get(metrics_port, "/metrics")
        label = dict(connection="appdb", category="read", decision="allowed")
        assert value(after, "pgguard_statements_total", **label) \
            - value(before, "pgguard_statements_total", **label) == n
        assert get(metrics_port, "/readyz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()
