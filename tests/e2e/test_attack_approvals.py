"""Issue 11, class 3: an approval covers one execution of one statement by one session.

The agent is an engineer (DDL held for review); ``TRUNCATE victims`` is the held
statement, so whether it ran is one ``count(*)`` away (read directly, not through the
gateway). A DBA decides on the gateway's admin console.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
from harness.attack import APPROVER, CAREFUL, CONN, ENGINEER
from harness.rawclient import RawClient, error_of

from pgguard.wire import codec
from pgguard.wire.messages import (
    DataRow,
    ErrorResponse,
    NoticeResponse,
    Raw,
    ReadyForQuery,
)

pytestmark = pytest.mark.usefixtures("reset_victims")

HELD = "pgguard: statement held for approval as request "
WAIT_S = 6


class Agent:
    """A psycopg client running statements in a thread, collecting held notices."""

    def __init__(self, gw, tokens, who=ENGINEER):
        user, groups = who
        self.conn = psycopg.connect(gw.dsn(user, dbname=CONN), password=tokens(user, groups),
                                    autocommit=True)
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        self.pool = ThreadPoolExecutor(1)

    def start(self, sql: str, prepare: bool | None = None) -> Future:
        return self.pool.submit(lambda: self.conn.execute(sql, prepare=prepare).statusmessage)

    def held(self, count: int = 1, fut: Future | None = None) -> list[int]:
        """The request ids of the first *count* held notices (waiting up to WAIT_S); fewer
        when *fut* finishes first."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            ids = [int(n[len(HELD):]) for n in self.notices if n.startswith(HELD)]
            if len(ids) >= count or (fut is not None and fut.done()):
                return ids
            time.sleep(0.02)
        return [int(n[len(HELD):]) for n in self.notices if n.startswith(HELD)]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.conn.close()


@pytest.fixture
def agent(attack_gw, tokens):
    a = Agent(attack_gw, tokens)
    yield a
    a.close()


@pytest.fixture(scope="module")
def dba(attack_gw, tokens):
    user, groups = APPROVER
    with psycopg.connect(attack_gw.dsn(user, dbname="pgguard"), password=tokens(user, groups),
                         autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        yield conn


def decide(dba, verb: str, rid: int) -> None:
    dba.execute(f"{verb} {rid} 'issue 11 test'")


def status(dba, rid: int) -> str:
    return dba.execute(f"SHOW APPROVAL {rid}").fetchone()[1]


def count(attack_db) -> int:
    return attack_db.value("SELECT count(*) FROM victims")


def refill(attack_db) -> None:
    attack_db.execute("INSERT INTO victims SELECT g, 'v' || g FROM generate_series(1, 5) g "
                      "ON CONFLICT DO NOTHING")


def _approve_first(agent, dba, attack_db, sql: str, prepare: bool | None) -> int:
    fut = agent.start(sql, prepare)
    (rid,) = agent.held(1)
    assert count(attack_db) == 5
    decide(dba, "APPROVE", rid)
    assert fut.result(timeout=WAIT_S) in ("TRUNCATE TABLE", "EXECUTE")
    assert count(attack_db) == 0
    refill(attack_db)
    return rid


def _second_execution_is_held(agent, dba, attack_db, sql: str, prepare: bool | None,
                              first: int) -> None:
    fut = agent.start(sql, prepare)
    ids = agent.held(2, fut)
    ran = count(attack_db) == 0
    if len(ids) >= 2:
        decide(dba, "DENY", ids[1])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            fut.result(timeout=WAIT_S)
    assert not ran, f"the second execution ran on approval {first} alone"
    assert len(ids) == 2 and ids[1] != first, agent.notices
    assert count(attack_db) == 5


def test_one_approval_runs_a_held_statement_once(agent, dba, attack_db):
    """Control: the simple protocol asks again for the same text."""
    first = _approve_first(agent, dba, attack_db, "TRUNCATE victims", None)
    _second_execution_is_held(agent, dba, attack_db, "TRUNCATE victims", None, first)
def test_named_prepared_statement_is_held_again_on_the_second_execute(agent, dba, attack_db):
    first = _approve_first(agent, dba, attack_db, "TRUNCATE victims", True)
    _second_execution_is_held(agent, dba, attack_db, "TRUNCATE victims", True, first)


def _decide_while(dba, fut: Future, verb: str, seen: set[int]) -> list[int]:
    """Until *fut* is done (at most WAIT_S): decide every new pending request."""
    decided = []
    deadline = time.monotonic() + WAIT_S
    while not fut.done() and time.monotonic() < deadline:
        for rid in _pending_ids(dba):
            if rid not in seen:
                seen.add(rid)
                decide(dba, verb, rid)
                decided.append(rid)
        time.sleep(0.05)
    return decided
def test_raw_parse_once_execute_twice_is_two_requests(attack_gw, tokens, dba, attack_db):
    """Wherever the gateway holds (Parse or Execute), the second execution of the named
    statement needs a request of its own."""
    user, groups = ENGINEER
    c = RawClient(attack_gw.port)
    pool = ThreadPoolExecutor(1)
    seen = set(_pending_ids(dba))
    try:
        assert error_of(c.login(user, tokens(user, groups), CONN)) is None
        c.send(codec.parse("held1", "TRUNCATE victims") + codec.sync())
        fut = pool.submit(c.until, ReadyForQuery)
        approved = _decide_while(dba, fut, "APPROVE", seen)
        fut.result(timeout=WAIT_S)
        c.send(codec.bind("", "held1") + codec.execute("", 0) + codec.sync())
        fut = pool.submit(c.until, ReadyForQuery)
        approved += _decide_while(dba, fut, "APPROVE", seen)
        fut.result(timeout=WAIT_S)
        assert approved and count(attack_db) == 0  # the approved execution ran
        refill(attack_db)
        c.send(codec.bind("", "held1") + codec.execute("", 0) + codec.sync())
        fut = pool.submit(c.until, ReadyForQuery)
        time.sleep(0.5)  # a held Execute asks within this; an unheld one has run
        ran = count(attack_db) == 0
        denied = _decide_while(dba, fut, "DENY", seen)
        fut.result(timeout=WAIT_S)
        assert not ran and count(attack_db) == 5, "the second Execute ran on the first approval"
        assert denied, "no new request for the second Execute"
    finally:
        c.close()
        pool.shutdown(wait=False, cancel_futures=True)


def _pending_ids(dba) -> list[int]:
    return sorted(int(r[0]) for r in dba.execute("SHOW APPROVALS").fetchall()
                  if r[1] == "pending")


@pytest.fixture
def careful(attack_gw, tokens):
    """A user whose writes are held (SQL PREPARE takes DML only)."""
    a = Agent(attack_gw, tokens, CAREFUL)
    yield a
    a.close()


def test_sql_prepare_of_a_held_statement_then_execute_twice_is_two_requests(
        careful, dba, attack_db):
    agent = careful
    fut = agent.start("PREPARE trunc AS DELETE FROM victims")
    ids = agent.held(1, fut)
    if ids:  # PREPARE itself may be held (it names DDL) or pass (it runs nothing)
        decide(dba, "APPROVE", ids[0])
    assert fut.result(timeout=WAIT_S) == "PREPARE"
    assert count(attack_db) == 5
    try:
        before = len(agent.held(0))
        first = _approve_first_execute(agent, dba, attack_db, before)
        _second_execution_is_held_n(agent, dba, attack_db, first, before + 1)
    finally:
        agent.conn.execute("DEALLOCATE ALL")


def _approve_first_execute(agent, dba, attack_db, before: int) -> int:
    fut = agent.start("EXECUTE trunc")
    ids = agent.held(before + 1, fut)
    assert len(ids) == before + 1, "EXECUTE of a held body was not held"
    decide(dba, "APPROVE", ids[-1])
    assert fut.result(timeout=WAIT_S) == "DELETE 5"
    assert count(attack_db) == 0
    refill(attack_db)
    return ids[-1]


def _second_execution_is_held_n(agent, dba, attack_db, first: int, before: int) -> None:
    fut = agent.start("EXECUTE trunc")
    ids = agent.held(before + 1, fut)
    ran = count(attack_db) == 0
    if len(ids) > before:
        decide(dba, "DENY", ids[-1])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            fut.result(timeout=WAIT_S)
    assert not ran and len(ids) == before + 1 and ids[-1] != first
    assert count(attack_db) == 5


# --- a vanished client withdraws its request ----------------------------------------------


def _held_by_a_raw_client(attack_gw, tokens, sql: str) -> tuple[RawClient, int]:
    user, groups = ENGINEER
    c = RawClient(attack_gw.port)
    assert error_of(c.login(user, tokens(user, groups), CONN)) is None
    c.send(codec.query(sql))
    msg = c.receive()
    assert isinstance(msg, NoticeResponse), msg
    text = msg.fields.get("M", "")
    assert text.startswith(HELD), text
    return c, int(text[len(HELD):])


def _wait_status(dba, rid: int, want: str, within: float) -> str:
    deadline = time.monotonic() + within
    st = status(dba, rid)
    while st != want and time.monotonic() < deadline:
        time.sleep(0.05)
        st = status(dba, rid)
    return st
@pytest.mark.parametrize("how", ["close", "shutdown"])
def test_killed_client_withdraws_at_once_and_an_approval_runs_nothing(
        attack_gw, tokens, dba, attack_db, how):
    import socket
    c, rid = _held_by_a_raw_client(attack_gw, tokens, "TRUNCATE victims")
    assert status(dba, rid) == "pending"
    if how == "shutdown":
        c.sock.shutdown(socket.SHUT_RDWR)
    c.close()  # no Terminate: the socket just goes away
    st = _wait_status(dba, rid, "withdrawn", 2)
    if st == "pending":
        try:
            decide(dba, "APPROVE", rid)
        except psycopg.Error:
            pass
        time.sleep(1)
    assert count(attack_db) == 5, "an approval after the client vanished ran the statement"
    assert st == "withdrawn"


def test_terminate_withdraws(attack_gw, tokens, dba, attack_db):
    """Control: a client that says goodbye (Terminate) withdraws its request."""
    c, rid = _held_by_a_raw_client(attack_gw, tokens, "TRUNCATE victims")
    c.send(codec.message(b"X", b""))
    c.close()
    st = _wait_status(dba, rid, "withdrawn", 2)
    if st == "pending":
        decide(dba, "DENY", rid)
    assert st == "withdrawn"
    assert count(attack_db) == 5


def test_decision_on_a_withdrawn_request_is_refused(attack_gw, tokens, dba, attack_db):
    c, rid = _held_by_a_raw_client(attack_gw, tokens, "TRUNCATE victims")
    c.send(codec.message(b"X", b""))
    c.close()
    _wait_status(dba, rid, "withdrawn", 2)
    with pytest.raises(psycopg.Error) as info:
        decide(dba, "APPROVE", rid)
    assert info.value.sqlstate == "55000"
    time.sleep(0.3)
    assert count(attack_db) == 5


# --- more executions of one held statement: every Execute message asks ---------------------


class RawAgent:
    """A protocol-level client whose backend messages a thread collects, so a test can
    see each held notice while the session is blocked."""

    def __init__(self, gw, tokens, who):
        user, groups = who
        self.c = RawClient(gw.port)
        assert error_of(self.c.login(user, tokens(user, groups), CONN)) is None
        self.msgs: list = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while (msg := self.c.receive()) is not None:
                self.msgs.append(msg)
        except OSError:
            pass
        self.closed.set()

    def send(self, *parts: bytes) -> None:
        self.c.send(b"".join(parts))

    def held(self, count: int) -> list[int]:
        """The ids of the held notices, once there are *count* (or after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            ids = [int(m.fields["M"][len(HELD):]) for m in list(self.msgs)
                   if isinstance(m, NoticeResponse) and m.fields.get("M", "").startswith(HELD)]
            if len(ids) >= count or time.monotonic() > deadline:
                return ids
            time.sleep(0.02)

    def ready(self, count: int) -> list:
        """The messages so far, once *count* ReadyForQuery arrived (or after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while sum(isinstance(m, ReadyForQuery) for m in list(self.msgs)) < count \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.msgs)

    def errors(self) -> list[str]:
        return [m.fields.get("C", "") for m in list(self.msgs) if isinstance(m, ErrorResponse)]

    def close(self) -> None:
        self.c.close()
        self.thread.join(2)


@pytest.fixture
def raw_careful(attack_gw, tokens):
    a = RawAgent(attack_gw, tokens, CAREFUL)
    yield a
    a.close()


def ids_of(attack_db) -> list[int]:
    return [r[0] for r in attack_db.query("SELECT id FROM victims ORDER BY id")]


DELETE_ONE = "DELETE FROM victims WHERE id = $1"


def _param(value: int, fmt: str) -> tuple[list[bytes], list[int]]:
    if fmt == "binary":
        return [struct.pack("!i", value)], [1]
    return [str(value).encode()], [0]


@pytest.mark.parametrize("fmt", ["text", "binary"])
@pytest.mark.parametrize("sync_between", [True, False], ids=["sync-between", "one-sync"])
def test_named_statement_executed_twice_in_one_pipeline(raw_careful, dba, attack_db, fmt,
                                                        sync_between):
    """Parse once, then Bind+Execute twice in one write: two requests. The first is
    approved and runs; the second is denied and runs nothing (with one Sync for both,
    PostgreSQL's error rolls the first back too, as it would for any failing Execute)."""
    a = raw_careful
    p1, f1 = _param(1, fmt)
    p2, f2 = _param(2, fmt)
    a.send(codec.parse("del", DELETE_ONE, [23]),
           codec.bind("", "del", p1, f1), codec.execute(""),
           codec.sync() if sync_between else b"",
           codec.bind("", "del", p2, f2), codec.execute(""), codec.sync())
    (first,) = a.held(1)
    assert ids_of(attack_db) == [1, 2, 3, 4, 5]
    decide(dba, "APPROVE", first)
    ids = a.held(2)
    assert len(ids) == 2 and ids[1] != first, "the second Execute ran on the first approval"
    assert ids_of(attack_db) == ([2, 3, 4, 5] if sync_between else [1, 2, 3, 4, 5])
    decide(dba, "DENY", ids[1])
    a.ready(2 if sync_between else 1)
    assert a.errors() == ["42501"]
    time.sleep(0.2)
    assert ids_of(attack_db) == ([2, 3, 4, 5] if sync_between else [1, 2, 3, 4, 5])
    assert len(a.held(3)) == 2


@pytest.mark.parametrize("second", ["APPROVE", "DENY"])
def test_portal_with_a_row_limit_asks_at_each_execute(raw_careful, dba, attack_db, second):
    """One Execute message is one execution: resuming a suspended portal runs the
    statement's code again (its next rows), so it needs its own approval."""
    a = raw_careful
    a.send(codec.query("BEGIN"))
    a.ready(1)
    a.send(codec.parse("", "DELETE FROM victims WHERE id <= 3 RETURNING id"),
           codec.bind("", ""), codec.execute("", 1), codec.sync())
    (first,) = a.held(1)
    decide(dba, "APPROVE", first)
    msgs = a.ready(2)
    assert any(isinstance(m, Raw) and m.kind == b"s" for m in msgs), msgs  # suspended
    a.send(codec.execute("", 1), codec.sync())
    ids = a.held(2)
    assert len(ids) == 2 and ids[1] != first, "the resumed portal ran on the first approval"
    decide(dba, second, ids[1])
    msgs = a.ready(3)
    rows = [m for m in msgs if isinstance(m, DataRow)]
    if second == "APPROVE":
        assert len(rows) == 2 and a.errors() == []
        a.send(codec.query("COMMIT"))
        a.ready(4)
        assert ids_of(attack_db) == [4, 5]
    else:
        assert len(rows) == 1 and a.errors() == ["42501"]
        a.send(codec.query("ROLLBACK"))
        a.ready(4)
        assert ids_of(attack_db) == [1, 2, 3, 4, 5]


def test_sql_prepared_statement_asks_at_every_execution_in_every_protocol(
        raw_careful, dba, attack_db):
    """A statement PREPAREd in SQL is held at each run: its Bind/Execute (the extended
    protocol can bind a SQL-prepared name), a simple EXECUTE, and a Parse of EXECUTE."""
    a = raw_careful
    a.send(codec.query("PREPARE d(int) AS DELETE FROM victims WHERE id = $1"))
    seen = a.held(1)
    for rid in seen:  # PREPARE names a write: held (and runs nothing)
        decide(dba, "APPROVE", rid)
    a.ready(1)
    assert ids_of(attack_db) == [1, 2, 3, 4, 5]
    ready = 1

    def run(verdict: str, *parts: bytes) -> None:
        nonlocal ready
        a.send(*parts)
        ids = a.held(len(seen) + 1)
        assert len(ids) == len(seen) + 1, f"no new request for {parts[0][:40]!r}"
        seen.append(ids[-1])
        decide(dba, verdict, ids[-1])
        ready += 1
        a.ready(ready)

    run("APPROVE", codec.bind("", "d", [b"1"]), codec.execute(""), codec.sync())
    assert ids_of(attack_db) == [2, 3, 4, 5]
    run("DENY", codec.bind("", "d", [b"2"]), codec.execute(""), codec.sync())
    run("DENY", codec.query("EXECUTE d(2)"))
    run("DENY", codec.parse("", "EXECUTE d(2)"), codec.bind("", ""), codec.execute(""),
        codec.sync())
    run("APPROVE", codec.parse("", "EXECUTE d(3)"), codec.bind("", ""), codec.execute(""),
        codec.sync())
    assert a.errors() == ["42501"] * 3
    assert ids_of(attack_db) == [2, 4, 5]
    a.send(codec.query("DEALLOCATE d"))
    a.ready(ready + 1)


def test_parse_defined_statement_run_by_sql_execute_is_judged_by_its_body(
        attack_gw, tokens, dba, attack_db):
    """The extended protocol's statements and SQL PREPARE share one namespace: a Parse of
    a held statement, then ``EXECUTE name`` in SQL, asks like the statement itself."""
    a = RawAgent(attack_gw, tokens, ENGINEER)
    try:
        a.send(codec.parse("t1", "TRUNCATE victims"), codec.sync())
        a.ready(1)
        assert a.held(0) == [] and a.errors() == []
        a.send(codec.query("EXECUTE t1"))
        ids = a.held(1)
        assert len(ids) == 1, "EXECUTE of a Parse-defined held statement ran unasked"
        decide(dba, "DENY", ids[0])
        a.ready(2)
        assert a.errors() == ["42501"]
        assert count(attack_db) == 5
    finally:
        a.close()


# --- a session that ends withdraws, however it ends -----------------------------------------


CLIENT = """
import os, psycopg
conn = psycopg.connect(os.environ["DSN"], password=os.environ["TOKEN"], autocommit=True)
conn.execute(os.environ["SQL"], prepare=os.environ.get("PREPARE") == "1")
"""


def _new_pending(dba, before: set[int]) -> list[int]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        new = [rid for rid in _pending_ids(dba) if rid not in before]
        if new:
            return new
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "extended"])
def test_sigkilled_client_process_withdraws(attack_gw, tokens, dba, attack_db, prepare):
    user, groups = ENGINEER
    before = set(_pending_ids(dba))
    env = dict(os.environ, DSN=attack_gw.dsn(user, dbname=CONN), TOKEN=tokens(user, groups),
               SQL="TRUNCATE victims", PREPARE="1" if prepare else "0")
    proc = subprocess.Popen([sys.executable, "-c", CLIENT], env=env)
    try:
        new = _new_pending(dba, before)
        assert len(new) == 1, new
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    rid = new[0]
    assert _wait_status(dba, rid, "withdrawn", 2) == "withdrawn"
    with pytest.raises(psycopg.Error) as info:
        decide(dba, "APPROVE", rid)
    assert info.value.sqlstate == "55000"
    time.sleep(0.3)
    assert count(attack_db) == 5


@pytest.mark.parametrize("ending", ["terminate", "eof", "pipelined-then-eof", "partial-frame"])
def test_held_execute_withdrawn_when_the_client_goes(attack_gw, tokens, dba, attack_db,
                                                    ending):
    """An Execute held in the extended protocol: the client says goodbye, or just goes
    (after pipelining more, or in the middle of a frame)."""
    a = RawAgent(attack_gw, tokens, ENGINEER)
    try:
        a.send(codec.parse("t2", "TRUNCATE victims"), codec.bind("", "t2"),
               codec.execute(""), codec.sync())
        (rid,) = a.held(1)
        if ending == "terminate":
            a.send(codec.terminate())
        elif ending == "pipelined-then-eof":
            a.send(codec.bind("", "t2"), codec.execute(""), codec.sync(),
                   codec.query("SELECT 1"))
        elif ending == "partial-frame":
            a.send(codec.query("TRUNCATE victims")[:3])
        a.c.sock.shutdown(socket.SHUT_RDWR)
        assert _wait_status(dba, rid, "withdrawn", 2) == "withdrawn"
    finally:
        a.close()
    with pytest.raises(psycopg.Error) as info:
        decide(dba, "APPROVE", rid)
    assert info.value.sqlstate == "55000"
    time.sleep(0.3)
    assert count(attack_db) == 5
    assert not [r for r in _pending_ids(dba) if r > rid], "a later execution was asked for"


def test_bytes_sent_while_held_run_in_order_after_the_decision(attack_gw, tokens, dba,
                                                               attack_db):
    """Watching the client while held keeps what it pipelines (even half a message): after
    the decision it runs as sent."""
    a = RawAgent(attack_gw, tokens, ENGINEER)
    try:
        a.send(codec.query("TRUNCATE victims"))
        (rid,) = a.held(1)
        later = codec.query("SELECT 42")
        a.send(later[:3])
        time.sleep(0.1)
        a.send(later[3:])
        time.sleep(0.1)
        assert count(attack_db) == 5
        decide(dba, "DENY", rid)
        msgs = a.ready(2)
        assert a.errors() == ["42501"]
        rows = [m for m in msgs if isinstance(m, DataRow)]
        assert len(rows) == 1 and rows[0].values == (b"42",), msgs
        assert count(attack_db) == 5
    finally:
        a.close()


def test_the_approver_sees_the_bound_parameters_after_the_detectors(raw_careful, dba,
                                                                     attack_db):
    """A held Execute's request carries its Bind's parameters (what will run), with the
    detectors applied: an e-mail address is not shown in clear."""
    a = raw_careful
    a.send(codec.parse("lab", "UPDATE victims SET label = $1 WHERE id = $2"),
           codec.bind("", "lab", [b"someone@example.com", b"3"]), codec.execute(""),
           codec.sync())
    (rid,) = a.held(1)
    row = next(r for r in dba.execute("SHOW APPROVALS").fetchall() if int(r[0]) == rid)
    params = json.loads(row[-1])
    assert params[1] == "3" and len(params) == 2
    assert "someone@example.com" not in row[-1]
    decide(dba, "DENY", rid)
    a.ready(1)
    assert attack_db.value("SELECT label FROM victims WHERE id = 3") == "v3"


def test_held_statement_sent_together_with_terminate_runs_nothing(attack_gw, tokens, dba,
                                                                  attack_db):
    """Query and Terminate in one write: the client leaves before anyone can decide."""
    before = set(_pending_ids(dba))
    a = RawAgent(attack_gw, tokens, ENGINEER)
    try:
        a.send(codec.query("TRUNCATE victims"), codec.terminate())
        assert a.closed.wait(WAIT_S)
    finally:
        a.close()
    assert not [r for r in _pending_ids(dba) if r not in before]
    time.sleep(0.3)
    assert count(attack_db) == 5
