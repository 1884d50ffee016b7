"""``pgguard audit sessions`` and ``replay`` over what a real gateway recorded: statements,
refusals, a held statement (shown before its approval records) and a session ended by
the console's KILL (its reason in the log)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import tomli_w
from harness.gateway import ThreadGateway
from psycopg import errors

REPO = Path(__file__).resolve().parents[1]
KEY = b"audit-sessions-test-key-0123456789"
DBA = ("alice", ("dba",))
AGENT = ("agent-bob", ("engineers",))
READER = ("dave", ("analysts",))


def audit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgguard", "audit", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def connect(gw, tokens, who, dbname="appdb"):
    user, groups = who
    return psycopg.connect(gw.dsn(user, dbname=dbname), password=tokens(user, groups),
                           autocommit=True)


def until(predicate, limit: float = 15):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def recorded(make_config, tokens, tmp_path_factory):
    """One gateway run: a reader (2 statements, 1 refused), an agent with a held
    statement (approved) then KILLed; returns (config path, session ids by user, t0)."""
    tmp = tmp_path_factory.mktemp("audit-sessions")
    key = tmp / "audit.key"
    key.write_bytes(KEY + b"\n")
    cfg = make_config(
        recording={"dir": str(tmp / "rec"), "key_file": str(key)},
        admin={"groups": ["dba"]},
        approvals={"store": f"sqlite:///{tmp}/approvals.db", "approver_groups": ["dba"],
                   "timeout_s": 10, "poll_interval_s": 0.1})
    path = tmp / "pgguard.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    t0 = time.time()
    gw = ThreadGateway(cfg).start()
    sids: dict[str, str] = {}
    table = f"held_{uuid.uuid4().hex[:8]}"
    try:
        admin = connect(gw, tokens, DBA, "pgguard")

        def sid_of(user):
            with admin.cursor() as cur:
                cur.execute("SHOW SESSIONS")
                return [r[0] for r in cur.fetchall() if r[1] == user]

        reader = connect(gw, tokens, READER)
        reader.execute("SELECT count(*) FROM accounts").fetchall()
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("DELETE FROM accounts")
        sids["dave"] = sid_of("dave")[0]
        reader.close()

        agent = connect(gw, tokens, AGENT)
        sids["agent-bob"] = sid_of("agent-bob")[0]
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(agent.execute, f"CREATE TABLE {table} (id int)")

            def request():
                with admin.cursor() as cur:
                    cur.execute("SHOW APPROVALS")
                    return [r[0] for r in cur.fetchall()]

            rid = until(request)[0]
            admin.execute(f"APPROVE {rid} 'fine'")
            fut.result(15)
        admin.execute(f"KILL '{sids['agent-bob']}' 'end of test'")
        admin.close()
        until(lambda: gw.run_sync(lambda: len(gw.gateway.all_sessions)) == 0)
    finally:
        gw.stop()
    return path, sids, t0


def test_audit_sessions_lists_what_was_recorded(recorded):
    path, sids, t0 = recorded
    out = audit("sessions", "--config", str(path))
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert out.stdout.splitlines()[0].split() == ["id", "user", "connection", "start",
                                                  "end", "statements", "refusals", "holds"]
    dave = lines[sids["dave"]]
    assert dave[1:3] == ["dave", "appdb"] and dave[5:] == ["2", "1", "0"]
    bob = lines[sids["agent-bob"]]
    assert bob[1] == "agent-bob" and bob[5:] == ["1", "0", "1"]
    only = audit("sessions", "--config", str(path), "--user", "dave")
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [sids["dave"]]
    later = audit("sessions", "--config", str(path), "--since", str(time.time() + 60))
    assert later.stdout.splitlines()[1:] == []
    since = audit("sessions", "--config", str(path), "--since",
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 1)))
    assert len(since.stdout.splitlines()[1:]) == 2


def test_replay_shows_held_statement_before_its_approval(recorded):
    path, sids, _ = recorded
    out = audit("replay", "--config", str(path), sids["agent-bob"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    statement = text.index("statement (simple)")
    held = text.index("held for approval as request")
    decided = text.index(": approved by alice")
    assert statement < held < decided
    # The KILL's reason is the session's end reason in the log.
    assert "killed by alice from the admin console: end of test" in text
