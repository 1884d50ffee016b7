"""Held statements end to end: psycopg clients, the admin console, the terminal prompt.

A real gateway (in a thread) in front of the test cluster, real OpenBao-signed tokens,
psycopg 3 as the agent, psycopg or ``pgguard approvals`` in a pseudo-terminal as the DBA.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pexpect
import psycopg
import pytest
from psycopg import errors

from pgguard.admin import quote_literal

APPROVER = ("alice", ("dba",))
AGENT = ("agent-bob", ("engineers",))
WAIT_S = 15  # every wait below is bounded by this


@pytest.fixture
def gateways(make_config):
    from harness.gateway import ThreadGateway

    started = []

    def start(**approvals):
        section = {"approver_groups": ["dba"], "timeout_s": 10, "poll_interval_s": 0.1}
        section.update(approvals)
        gw = ThreadGateway(make_config(approvals=section)).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
        if gw.gateway is not None and gw.gateway.approvals is not None:
            # Idle store connections would make the cluster's smart shutdown wait.
            gw.gateway.approvals.close()


@pytest.fixture
def sqlite_store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/approvals.db"


@pytest.fixture(scope="module")
def pg_store(app_db) -> str:
    name = f"approvals_{uuid.uuid4().hex[:8]}"
    app_db.psql(f"CREATE DATABASE {name}")
    pg = app_db
    return f"postgresql://{pg.superuser}:{pg.password}@{pg.host}:{pg.port}/{name}?sslmode=disable"


@pytest.fixture
def table(app_db) -> str:
    """A fresh table in the app database, owned by the role the gateway logs in as."""
    from harness.gateway import APP_DB, APP_USER

    name = f"held_{uuid.uuid4().hex[:8]}"
    app_db.psql(f"CREATE TABLE {name} (id int); ALTER TABLE {name} OWNER TO {APP_USER}",
                dbname=APP_DB)
    return name


def columns(app_db, table: str) -> list[str]:
    out = app_db.psql("SELECT column_name FROM information_schema.columns "
                      f"WHERE table_name = '{table}' ORDER BY ordinal_position", dbname="app")
    return out.split()


class Agent:
    """A psycopg client that runs one statement in a thread and collects notices."""

    def __init__(self, gw, tokens, who=AGENT):
        user, groups = who
        self.conn = psycopg.connect(gw.dsn(user), password=tokens(user, groups),
                                    autocommit=True)
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        self.pool = ThreadPoolExecutor(1)

    def start(self, sql: str):
        return self.pool.submit(self._run, sql)

    def _run(self, sql: str):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.statusmessage

    def held_request(self) -> int:
        """The request id from the 'held for approval' notice."""
        deadline = time.monotonic() + WAIT_S
        prefix = "pgguard: statement held for approval as request "
        while time.monotonic() < deadline:
            for n in self.notices:
                if n.startswith(prefix):
                    return int(n[len(prefix):])
            time.sleep(0.02)
        raise AssertionError(f"no held notice within {WAIT_S} s: {self.notices}")

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.conn.close()


@pytest.fixture
def agents(tokens):
    made = []

    def make(gw, who=AGENT):
        a = Agent(gw, tokens, who)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def console(gw, tokens, who=APPROVER):
    user, groups = who
    return psycopg.connect(gw.dsn(user, dbname="pgguard"), password=tokens(user, groups),
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def run(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


# ---------------------------------------------------------------------------- held statements

def test_alter_table_held_then_approved(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store)
    agent = agents(gw)
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN approved_col int")
    rid = agent.held_request()
    time.sleep(0.3)
    assert not fut.done(), "the client must block while the statement is held"
    assert columns(app_db, table) == ["id"]
    with console(gw, tokens) as dba:
        pending = run(dba, "SHOW APPROVALS")
        row = next(r for r in pending if r[0] == str(rid))
        assert row[1] == "pending" and row[3] == "agent-bob"
        assert "ADD COLUMN approved_col" in row[9]
        decided = run(dba, f"APPROVE {rid} 'schema change reviewed'")
        assert decided[0][:2] == (str(rid), "approved")
    assert fut.result(timeout=WAIT_S) == "ALTER TABLE"
    assert columns(app_db, table) == ["id", "approved_col"]
    # The session stays usable afterwards.
    with agent.conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (0,)


def test_alter_table_denied(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store)
    agent = agents(gw)
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN denied_col int")
    rid = agent.held_request()
    with console(gw, tokens) as dba:
        run(dba, f"DENY {rid} 'not during the freeze'")
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        fut.result(timeout=WAIT_S)
    assert exc.value.sqlstate == "42501"
    assert "not during the freeze" in str(exc.value)
    assert columns(app_db, table) == ["id"]
    with agent.conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_alter_table_times_out(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store, timeout_s=1)
    agent = agents(gw)
    start = time.monotonic()
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN late_col int")
    rid = agent.held_request()
    with pytest.raises(errors.QueryCanceled) as exc:
        fut.result(timeout=WAIT_S)
    assert exc.value.sqlstate == "57014"
    assert time.monotonic() - start < 8
    assert columns(app_db, table) == ["id"]
    with console(gw, tokens) as dba, pytest.raises(psycopg.Error) as exc:
        run(dba, f"APPROVE {rid} 'too late'")
    assert exc.value.sqlstate == "55000"
    assert columns(app_db, table) == ["id"]


def test_console_refusals(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store)
    # alice is an approver who is also an engineer: her own DDL is held like anyone's.
    alice_both = ("alice", ("dba", "engineers"))
    own = agents(gw, alice_both)
    own_fut = own.start(f"ALTER TABLE {table} ADD COLUMN own_col int")
    own_id = own.held_request()
    agent = agents(gw)
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN other_col int")
    rid = agent.held_request()
    # A non-approver cannot decide.
    with console(gw, tokens, AGENT) as eng, pytest.raises(psycopg.Error) as exc:
        run(eng, f"APPROVE {rid} 'approving myself'")
    assert exc.value.sqlstate == "42501"
    # Nobody decides their own request.
    with console(gw, tokens, alice_both) as dba, pytest.raises(psycopg.Error) as exc:
        run(dba, f"APPROVE {own_id} 'mine'")
    assert exc.value.sqlstate == "42501" and "own request" in str(exc.value)
    carol = ("carol", ("dba",))
    with console(gw, tokens, carol) as dba:
        # SQL injection through the reason is data.
        evil = "'); DROP TABLE pgguard_approvals; --"
        row = run(dba, f"DENY {rid} {quote_literal(evil)}")[0]
        assert row[1] == "denied" and row[4] == evil
        # A second decision is an error.
        with pytest.raises(psycopg.Error) as exc:
            run(dba, f"APPROVE {rid} 'changed my mind'")
        assert exc.value.sqlstate == "55000"
        # Not SQL at all.
        with pytest.raises(psycopg.Error) as exc:
            run(dba, "SELECT * FROM pgguard_approvals")
        assert exc.value.sqlstate == "42601"
        detail = run(dba, f"SHOW APPROVAL {rid}")[0]
        assert detail[1] == "denied" and evil in detail
        run(dba, f"APPROVE {own_id} 'carol approves'")
    with pytest.raises(errors.InsufficientPrivilege):
        fut.result(timeout=WAIT_S)
    assert own_fut.result(timeout=WAIT_S) == "ALTER TABLE"
    assert columns(app_db, table) == ["id", "own_col"]
    path = sqlite_store[len("sqlite:///"):]
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT decision_reason FROM pgguard_approvals WHERE id = ?",
                            (rid,)).fetchone()
    assert stored == (evil,)


def test_two_gateways_share_a_postgres_store(gateways, pg_store, agents, tokens, app_db, table):
    # A slow poll: a prompt release shows the NOTIFY path works across gateways.
    gw1 = gateways(store=pg_store, poll_interval_s=5)
    gw2 = gateways(store=pg_store, poll_interval_s=5)
    agent = agents(gw1)
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN shared_col int")
    rid = agent.held_request()
    with console(gw2, tokens) as dba:
        assert str(rid) in [r[0] for r in run(dba, "SHOW APPROVALS")]
        start = time.monotonic()
        run(dba, f"APPROVE {rid} 'via the other gateway'")
    assert fut.result(timeout=WAIT_S) == "ALTER TABLE"
    assert time.monotonic() - start < 3
    assert columns(app_db, table) == ["id", "shared_col"]
    with psycopg.connect(pg_store) as db:
        assert db.execute("SELECT count(*) FROM pgguard_approvals").fetchone()[0] >= 1


def test_cancel_withdraws_request(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store)
    agent = agents(gw)
    fut = agent.start(f"ALTER TABLE {table} ADD COLUMN cancelled_col int")
    rid = agent.held_request()
    agent.conn.cancel_safe()
    with pytest.raises(errors.QueryCanceled):
        fut.result(timeout=WAIT_S)
    with console(gw, tokens) as dba:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            status = run(dba, f"SHOW APPROVAL {rid}")[0][1]
            if status != "pending":
                break
            time.sleep(0.05)
        assert status == "withdrawn"
    assert columns(app_db, table) == ["id"]


# ---------------------------------------------------------------------------- the prompt

def spawn_prompt(gw, tokens, *extra, who=APPROVER):
    user, groups = who
    env = dict(os.environ, PGPASSWORD=tokens(user, groups), TERM="xterm")
    env.pop("NO_COLOR", None)
    return pexpect.spawn(sys.executable,
                         ["-m", "pgguard", "approvals", "--gateway", gw.url(user, "pgguard"),
                          *extra], env=env, encoding="utf-8", timeout=WAIT_S,
                         dimensions=(50, 200))


def test_prompt_approves_in_a_pty(gateways, sqlite_store, agents, tokens, app_db, table):
    gw = gateways(store=sqlite_store)
    agent = agents(gw)
    fut = agent.start(f"alter table {table} add column prompt_col text default 'x'")
    rid = agent.held_request()
    child = spawn_prompt(gw, tokens)
    try:
        child.expect(f"request {rid}")
        child.expect("agent-bob")
        child.expect("engineers")
        child.expect("ALTER")  # pretty-printed (upper case) by pglast, in colour
        child.expect(r"approve / deny / skip \[a/d/s\]\? ")
        child.sendline("a")
        child.expect("reason: ")
        child.sendline("reviewed in the pty test")
        child.expect(f"request {rid} approved")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert fut.result(timeout=WAIT_S) == "ALTER TABLE"
    assert columns(app_db, table) == ["id", "prompt_col"]
    with console(gw, tokens) as dba:
        detail = run(dba, f"SHOW APPROVAL {rid}")[0]
    assert detail[1] == "approved" and "reviewed in the pty test" in detail


def test_prompt_watch_denies_then_quits_on_ctrl_c(gateways, sqlite_store, agents, tokens, app_db,
                                                  table):
    gw = gateways(store=sqlite_store)
    child = spawn_prompt(gw, tokens, "--watch", "--interval", "0.2")
    try:
        child.expect("waiting for new requests")
        agent = agents(gw)
        fut = agent.start(f"ALTER TABLE {table} ADD COLUMN watched_col int")
        rid = agent.held_request()
        child.expect(f"request {rid}")
        child.expect("\x1b\\[")  # colour on a terminal
        child.expect(r"\[a/d/s\]\? ")
        child.sendline("d")
        child.expect("reason: ")
        child.sendline("it's Friday")
        child.expect(f"request {rid} denied")
        child.expect("waiting for new requests")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "Traceback" not in (child.before or "")
    assert child.exitstatus == 130
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        fut.result(timeout=WAIT_S)
    assert "it's Friday" in str(exc.value)
    assert columns(app_db, table) == ["id"]


def test_prompt_without_token_is_a_usage_error(gateways, sqlite_store):
    gw = gateways(store=sqlite_store)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    child = pexpect.spawn(sys.executable, ["-m", "pgguard", "approvals", "--gateway",
                                           gw.url("alice", "pgguard")],
                          env=env, encoding="utf-8", timeout=WAIT_S)
    child.expect("PGPASSWORD")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2

