"""Issue 11, class 3: an approval covers one execution of one statement by one session.

The agent is an engineer (DDL held for review); ``TRUNCATE victims`` is the held
statement, so whether it ran is one ``count(*)`` away (read directly, not through the
gateway). A DBA decides on the gateway's admin console.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
from harness.attack import APPROVER, CAREFUL, CONN, ENGINEER
from rawclient import RawClient, error_of

from pgguard.wire import codec
from pgguard.wire.messages import NoticeResponse, ReadyForQuery

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
