"""The operator console through a real gateway: SHOW SESSIONS/STATS/SERVERS/LEASES,
KILL, RELOAD and the kill switch (BLOCK USER / UNBLOCK USER) with psycopg clients.

Gateways run in threads (ThreadGateway) in front of the test cluster; tokens are real
OpenBao-signed OIDC tokens; the console is database ``pgguard`` on the same port.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import psycopg
import pytest
import tomli_w
from harness.gateway import ThreadGateway
from psycopg import errors

DBA = ("alice", ("dba",))
AGENT = ("agent-bob", ("engineers",))
OTHER = ("carol", ("engineers",))
WAIT_S = 15


def console(gw, tokens, who=DBA):
    user, groups = who
    return psycopg.connect(gw.dsn(user, dbname="pgguard"), password=tokens(user, groups),
                           autocommit=True)


def client(gw, tokens, who=AGENT):
    user, groups = who
    return psycopg.connect(gw.dsn(user), password=tokens(user, groups), autocommit=True)


def rows(conn, sql: str) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def until(predicate, limit: float = WAIT_S):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def dead(conn) -> BaseException:
    """The error a killed client's next statement gets (or the FATAL it already read)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return exc
    raise AssertionError("the session still works")


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/approvals.db"


@pytest.fixture
def gw(start_gateway, make_config, store):
    return start_gateway(make_config(
        admin={"groups": ["dba"]},
        approvals={"store": store, "approver_groups": ["dba"], "timeout_s": 10,
                   "poll_interval_s": 0.1}))


def test_show_sessions_states_and_statement(gw, tokens):
    admin = console(gw, tokens)
    agent = client(gw, tokens)
    pool = ThreadPoolExecutor(1)
    try:
        # A running query is active, its text shown after the detectors.
        running = pool.submit(agent.execute,
                              "SELECT pg_sleep(1.5), 'bob.secret@example.com' AS who")

        def active():
            mine = [r for r in rows(admin, "SHOW SESSIONS") if r["user"] == AGENT[0]]
            return mine if mine and mine[0]["state"] == "active" else None

        view = until(active)[0]
        assert "pg_sleep" in view["statement"]
        assert "bob.secret@example.com" not in view["statement"]
        datetime.fromisoformat(view["started_at"])
        datetime.fromisoformat(view["statement_started_at"])
        assert view["connection"] == "appdb"
        assert view["groups"] == "engineers"
        running.result(WAIT_S)
        idle = rows(admin, "SHOW SESSIONS")
        assert [r["state"] for r in idle if r["user"] == AGENT[0]] == ["idle"]
        agent.execute("BEGIN")
        agent.execute("SELECT 1")
        assert [r["state"] for r in rows(admin, "SHOW SESSIONS")
                if r["user"] == AGENT[0]] == ["idle in transaction"]
        agent.execute("ROLLBACK")
        # A client that went away is not listed.
        agent.close()
        until(lambda: not [r for r in rows(admin, "SHOW SESSIONS") if r["user"] == AGENT[0]])
    finally:
        pool.shutdown()
        admin.close()


def test_held_statement_is_shown_held(gw, tokens, app_db):
    table = f"held_{uuid.uuid4().hex[:8]}"
    admin = console(gw, tokens)
    agent = client(gw, tokens)
    pool = ThreadPoolExecutor(1)
    try:
        fut = pool.submit(agent.execute, f"CREATE TABLE {table} (id int)")
        view = until(lambda: [r for r in rows(admin, "SHOW SESSIONS")
                              if r["user"] == AGENT[0] and r["state"] == "held"
                              and r["request"]])[0]
        assert table in view["statement"]
        request = view["request"]
        assert request
        admin.execute(f"DENY {request} 'not today'")
        with pytest.raises(errors.InsufficientPrivilege):
            fut.result(WAIT_S)
        stats = {r["connection"]: r for r in rows(admin, "SHOW STATS")}["appdb"]
        assert int(stats["held"]) >= 1
    finally:
        pool.shutdown()
        agent.close()
        admin.close()


def test_show_stats_servers_leases(gw, tokens):
    admin = console(gw, tokens)
    before = {r["connection"]: r for r in rows(admin, "SHOW STATS")}["appdb"]
    agent = client(gw, tokens)
    try:
        agent.execute("SELECT * FROM accounts").fetchall()
        with pytest.raises(errors.InsufficientPrivilege):
            client(gw, tokens, ("dave", ("analysts",))).execute("DELETE FROM accounts")
        after = {r["connection"]: r for r in rows(admin, "SHOW STATS")}["appdb"]
        assert int(after["sessions"]) >= 1
        assert int(after["sessions_total"]) >= int(before["sessions_total"]) + 2
        assert int(after["allowed"]) >= int(before["allowed"]) + 1
        assert int(after["refused"]) >= int(before["refused"]) + 1
        assert int(after["rows"]) >= int(before["rows"]) + 100
        assert int(after["bytes_sent"]) > int(before["bytes_sent"])
        assert after["mean_ms"] is not None and after["p99_ms"] is not None
        servers = [r for r in rows(admin, "SHOW SERVERS") if r["connection"] == "appdb"]
        assert servers and all(int(r["backend_pid"]) > 0 for r in servers)
        leases = rows(admin, "SHOW LEASES")
        assert any(r["source"] == "static" for r in leases)
    finally:
        agent.close()
        admin.close()


def _columns(admin, sql):
    with admin.cursor() as cur:
        cur.execute(sql)
        return [d.name for d in cur.description]


def test_kill_ends_the_session(gw, tokens):
    admin = console(gw, tokens)
    agent = client(gw, tokens)
    other = client(gw, tokens, OTHER)
    try:
        sid = [r["id"] for r in rows(admin, "SHOW SESSIONS") if r["user"] == AGENT[0]][0]
        out = rows(admin, f"KILL '{sid}' 'runaway loop'")
        assert out == [{"session": sid, "result": "killed"}]
        exc = dead(agent)
        assert "killed by alice from the admin console: runaway loop" in str(exc)
        assert other.execute("SELECT 1").fetchone() == (1,)
        assert sid not in [r["id"] for r in rows(admin, "SHOW SESSIONS")]
        with pytest.raises(errors.UndefinedObject):
            admin.execute(f"KILL '{sid}'")
    finally:
        other.close()
        admin.close()


def test_kill_sends_admin_shutdown(gw, tokens):
    admin = console(gw, tokens)
    agent = client(gw, tokens)
    pool = ThreadPoolExecutor(1)
    try:
        fut = pool.submit(agent.execute, "SELECT pg_sleep(30)")
        sid = until(lambda: [r["id"] for r in rows(admin, "SHOW SESSIONS")
                             if r["user"] == AGENT[0] and r["state"] == "active"])[0]
        admin.execute(f"KILL '{sid}'")
        with pytest.raises(psycopg.OperationalError) as info:
            fut.result(WAIT_S)
        assert info.value.sqlstate == "57P01"
        assert "session killed by alice" in str(info.value)
    finally:
        pool.shutdown()
        admin.close()


def test_block_user_ends_and_refuses_then_unblock(gw, tokens):
    admin = console(gw, tokens)
    agent = client(gw, tokens)
    other = client(gw, tokens, OTHER)
    try:
        out = rows(admin, f"BLOCK USER '{AGENT[0]}' 'prompt injected'")
        assert out[0]["sessions_ended"] == "1"
        assert "prompt injected" in str(dead(agent))
        with pytest.raises(psycopg.OperationalError, match="is blocked: prompt injected"):
            client(gw, tokens)
        assert other.execute("SELECT 1").fetchone() == (1,)
        assert [r["user"] for r in rows(admin, "SHOW BLOCKS")] == [AGENT[0]]
        admin.execute(f"UNBLOCK USER '{AGENT[0]}'")
        back = client(gw, tokens)
        assert back.execute("SELECT 1").fetchone() == (1,)
        back.close()
    finally:
        other.close()
        admin.close()


def test_blocks_work_without_approvals_and_survive_a_restart(make_config, tokens, tmp_path):
    cfg = make_config(admin={"groups": ["dba"]},
                      approvals={"store": f"sqlite:///{tmp_path}/blocks.db"})
    gw = ThreadGateway(cfg).start()
    try:
        admin = console(gw, tokens)
        admin.execute(f"BLOCK USER '{AGENT[0]}' 'cost overrun'")
        admin.close()
    finally:
        gw.stop()
    gw = ThreadGateway(cfg).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="is blocked: cost overrun"):
            client(gw, tokens)
        admin = console(gw, tokens)
        admin.execute(f"UNBLOCK USER '{AGENT[0]}'")
        admin.close()
        client(gw, tokens).close()
    finally:
        gw.stop()


def test_unreadable_block_store_fails_closed(make_config, tokens, tmp_path):
    path = tmp_path / "blocks.db"
    cfg = make_config(admin={"groups": ["dba"]}, approvals={"store": f"sqlite:///{path}"})
    gw = ThreadGateway(cfg).start()
    try:
        gw.run_sync(lambda: setattr(gw.gateway.services.blocks.store, "active_block",
                                    _failing))
        with pytest.raises(psycopg.OperationalError, match="cannot check blocks"):
            client(gw, tokens)
    finally:
        gw.stop()


def _failing(user):
    from pgguard.approvals import StoreUnavailable
    raise StoreUnavailable("disk on fire")


@pytest.fixture(scope="module")
def pg_store(app_db) -> str:
    name = f"blocks_{uuid.uuid4().hex[:8]}"
    app_db.psql(f"CREATE DATABASE {name}")
    pg = app_db
    return (f"postgresql://{pg.superuser}:{pg.password}@{pg.host}:{pg.port}/{name}"
            "?sslmode=disable")


def test_block_on_one_gateway_ends_sessions_on_another(make_config, tokens, pg_store):
    cfg = make_config(admin={"groups": ["dba"]},
                      approvals={"store": pg_store, "approver_groups": ["dba"],
                                 "poll_interval_s": 0.2})
    a = ThreadGateway(cfg).start()
    b = ThreadGateway(cfg).start()
    try:
        agent_b = client(b, tokens)
        admin_a = console(a, tokens)
        admin_a.execute(f"BLOCK USER '{AGENT[0]}' 'shared store'")
        # Gateway B learns it from the store (NOTIFY) and ends its session.
        until(lambda: agent_b.closed or _fails(agent_b))
        with pytest.raises(psycopg.OperationalError, match="is blocked: shared store"):
            client(b, tokens)
        admin_a.execute(f"UNBLOCK USER '{AGENT[0]}'")
        client(b, tokens).close()
        admin_a.close()
    finally:
        for gw in (a, b):
            gw.stop()
            if gw.gateway is not None and gw.gateway.approvals is not None:
                gw.gateway.approvals.close()


def _fails(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as exc:
        assert "shared store" in str(exc) or conn.closed
        return True
    return False


def test_reload_reports_changes(make_config, tokens, tmp_path):
    import os

    from pgguard import config as config_mod
    from pgguard.app import build_gateway

    cfg = make_config(admin={"groups": ["dba"]},
                      approvals={"store": f"sqlite:///{tmp_path}/a.db"})
    path = tmp_path / "pgguard.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    gw = ThreadGateway(cfg)
    gw.cfg = config_mod.load(str(path))
    gw.start()
    try:
        cfg["connections"][0]["grants"].append({"groups": ["auditors"], "read": "allow"})
        path.write_bytes(tomli_w.dumps(cfg).encode())
        admin = console(gw, tokens)
        out = rows(admin, "RELOAD")
        summary = out[0]["result"]
        assert "changed appdb" in summary and "+auditors" in summary
        os.chmod(path, 0o600)
        path.write_text("[listen\n")
        with pytest.raises(psycopg.Error, match="reload failed"):
            admin.execute("RELOAD")
        admin.close()
        assert build_gateway  # the same composition root the CLI uses
    finally:
        gw.stop()


def test_psql_runs_each_console_command(gw, tokens):
    user, groups = DBA
    agent = client(gw, tokens)
    try:
        for command in ("HELP", "SHOW SESSIONS", "SHOW STATS", "SHOW SERVERS",
                        "SHOW LEASES", "SHOW CONFIG", "SHOW VERSION", "SHOW APPROVALS",
                        "SHOW BLOCKS"):
            out = subprocess.run(
                ["psql", gw.url(user, "pgguard"), "-X", "-A", "-c", f"{command};"],
                env={"PGPASSWORD": tokens(user, groups), "PATH": "/usr/bin:/bin"},
                capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, (command, out.stderr)
            assert "ERROR" not in out.stderr, (command, out.stderr)
    finally:
        agent.close()


def test_sighup_reload_logs_what_changed(make_config, tmp_path):
    import signal

    from harness.gateway import ProcessGateway

    cfg = make_config()
    gw = ProcessGateway(cfg, str(tmp_path)).start()
    try:
        changed = dict(gw.cfg_dict)
        changed["connections"][0]["grants"].append({"groups": ["auditors"], "read": "allow"})
        changed["connections"][0]["grants"] = [
            g for g in changed["connections"][0]["grants"] if g["groups"] != ["analysts"]]
        gw.path and open(gw.path, "wb").write(tomli_w.dumps(changed).encode())
        gw.proc.send_signal(signal.SIGHUP)
        line = until(lambda: next((ln for ln in gw.read_log().splitlines()
                                   if ln.startswith("event=reloaded")), None))
        assert "connections_changed=appdb" in line
        assert "+auditors" in line and "-analysts" in line
    finally:
        gw.stop()


def test_block_reaches_every_worker(make_config, tokens, tmp_path):
    """serve --workers 2 on a SQLite store: a BLOCK made on one worker ends the user's
    sessions on the other (found by polling the store)."""
    import os
    import signal
    import socket
    import sys

    from harness.gateway import free_port

    cfg = make_config(admin={"groups": ["dba"]},
                      approvals={"store": f"sqlite:///{tmp_path}/blocks.db",
                                 "poll_interval_s": 0.2})
    cfg["listen"]["port"] = port = free_port()
    path = tmp_path / "pgguard.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pgguard", "serve", "--config", str(path),
                             "--workers", "2"], stdout=log, stderr=log,
                            start_new_session=True)

    class Dsn:
        def dsn(self, user, dbname="appdb"):
            return (f"host=127.0.0.1 port={port} dbname={dbname} user={user} "
                    "sslmode=disable connect_timeout=10")

    gw = Dsn()
    agents = []
    try:
        def listening():
            try:
                with socket.create_connection(("127.0.0.1", port), 1):
                    return True
            except OSError:
                return False

        until(listening, 30)
        time.sleep(1)  # both workers listening
        agents = [client(gw, tokens) for _ in range(8)]
        for a in agents:
            a.execute("SELECT 1")
        admin = console(gw, tokens)
        here = [r for r in rows(admin, "SHOW SESSIONS") if r["user"] == AGENT[0]]
        out = rows(admin, f"BLOCK USER '{AGENT[0]}' 'all workers'")
        assert out[0]["sessions_ended"] == str(len(here))
        for a in agents:
            until(lambda a=a: _fails_with(a, "all workers"))
        with pytest.raises(psycopg.OperationalError, match="is blocked: all workers"):
            client(gw, tokens)
        admin.close()
        # SO_REUSEPORT put some of the 8 on the other worker (all on one: 1 in 128).
        assert len(here) < len(agents)
    finally:
        for a in agents:
            a.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def _fails_with(conn, text: str) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as exc:
        assert text in str(exc) or conn.closed, str(exc)
        return True
    return False
