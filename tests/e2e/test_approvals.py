"""The approvals store (SQLite and PostgreSQL) and the trio service sessions wait on."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
import trio

from pgguard.admin import parse
from pgguard.approvals import (
    AlreadyDecided,
    Approvals,
    NotAnApprover,
    OwnRequest,
    PostgresStore,
    SqliteStore,
    StoreUnavailable,
    UnknownRequest,
    held_notice,
    open_store,
    sqlite_path,
)
from pgguard.config import ApprovalsConfig
from pgguard.errors import ApprovalDenied, ApprovalTimeout, QueryCanceled

APPROVERS = ("dba",)
INJECTION = "'); DROP TABLE pgguard_approvals; --"


def new_request(store, user: str = "agent-bob", gateway: str = "gw1", **kw) -> int:
    fields = dict(user=user, groups=["engineers"], connection="appdb", category="ddl",
                  kind="AlterTableStmt", reason="ddl = review",
                  sql="ALTER TABLE t ADD COLUMN c int", params=["a@b.c", None], gateway=gateway)
    fields.update(kw)
    return store.create(**fields)


def test_create_get_list_round_trip(store):
    before = datetime.now(UTC)
    rid = new_request(store)
    req = store.get(rid)
    assert req.id == rid and req.status == "pending" and req.pending
    assert req.user == "agent-bob" and req.groups == ("engineers",)
    assert req.connection == "appdb" and req.category == "ddl" and req.kind == "AlterTableStmt"
    assert req.sql == "ALTER TABLE t ADD COLUMN c int"
    assert req.params == ("a@b.c", None)
    assert req.gateway == "gw1" and req.decided_by is None and req.decided_at is None
    assert before.timestamp() - 1 <= req.created_at.timestamp() <= time.time() + 1
    rid2 = new_request(store, user="agent-ann")
    assert [r.id for r in store.list()] == [rid, rid2]
    assert store.get(rid2 + 1000) is None
    assert held_notice(req) == f"pgguard: statement held for approval as request {rid}"


def test_ids_are_never_reused(store):
    first = new_request(store)
    store.finish(first, "withdrawn")
    assert new_request(store) > first


def test_approve_and_deny(store):
    a, d = new_request(store), new_request(store)
    req = store.decide(a, "alice", ["dba"], True, "looks fine", APPROVERS)
    assert req.status == "approved" and req.decided_by == "alice"
    assert req.decision_reason == "looks fine" and req.decided_at is not None
    assert req.error() is None
    req = store.decide(d, "alice", ["dba", "x"], False, "not on a Friday", APPROVERS)
    assert req.status == "denied"
    err = req.error()
    assert isinstance(err, ApprovalDenied) and err.sqlstate == "42501"
    assert "not on a Friday" in err.message and err.message.startswith("pgguard:")
    assert store.list() == []
    assert {r.status for r in store.list(None)} == {"approved", "denied"}


def test_non_approver_cannot_decide(store):
    rid = new_request(store)
    with pytest.raises(NotAnApprover) as exc:
        store.decide(rid, "mallory", ["engineers"], True, "", APPROVERS)
    assert exc.value.sqlstate == "42501" and exc.value.message.startswith("pgguard:")
    # An empty approver list lets nobody decide.
    with pytest.raises(NotAnApprover):
        store.decide(rid, "alice", ["dba"], True, "", ())
    assert store.get(rid).status == "pending"


def test_nobody_decides_their_own_request(store):
    rid = new_request(store, user="alice")
    with pytest.raises(OwnRequest) as exc:
        store.decide(rid, "alice", ["dba"], True, "self-service", APPROVERS)
    assert exc.value.sqlstate == "42501" and "own request" in exc.value.message
    assert store.get(rid).status == "pending"


def test_second_decision_is_refused(store):
    rid = new_request(store)
    store.decide(rid, "alice", ["dba"], True, "ok", APPROVERS)
    with pytest.raises(AlreadyDecided) as exc:
        store.decide(rid, "carol", ["dba"], False, "no!", APPROVERS)
    assert exc.value.sqlstate == "55000"
    assert "already approved by alice" in exc.value.message
    req = store.get(rid)
    assert (req.status, req.decided_by, req.decision_reason) == ("approved", "alice", "ok")


def test_unknown_request(store):
    with pytest.raises(UnknownRequest) as exc:
        store.decide(999999, "alice", ["dba"], True, "", APPROVERS)
    assert exc.value.sqlstate == "42704"


def test_concurrent_decisions_only_one_wins(store_url):
    setup = open_store(store_url)
    setup.setup()
    rid = new_request(setup)
    n = 8
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def decide(i: int) -> None:
        s = open_store(store_url)  # each decider with its own connections
        try:
            barrier.wait(timeout=10)
            results[i] = s.decide(rid, f"dba{i}", ["dba"], i % 2 == 0, f"r{i}", APPROVERS)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results[i] = exc
        finally:
            s.close()

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(e, AlreadyDecided) for e in losers), losers
    final = setup.get(rid)
    assert final.decided_by == winners[0].decided_by
    assert final.status == winners[0].status
    setup.close()


def test_restart_abandons_this_gateways_pending(store_url):
    first = open_store(store_url)
    first.setup()
    mine, other = new_request(first, gateway="gw1"), new_request(first, gateway="gw2")
    decided = new_request(first, gateway="gw1")
    first.decide(decided, "alice", ["dba"], True, "", APPROVERS)
    first.close()
    # A new store object on the same file/database: the requests survived the "restart".
    again = open_store(store_url)
    again.setup()
    assert {r.id for r in again.list()} == {mine, other}
    assert again.abandon_pending("gw1") == 1
    assert again.get(mine).status == "abandoned"
    assert again.get(other).status == "pending"
    assert again.get(decided).status == "approved"
    with pytest.raises(AlreadyDecided, match="abandoned"):
        again.decide(mine, "alice", ["dba"], True, "", APPROVERS)
    assert isinstance(again.get(mine).error(), ApprovalTimeout)
    again.close()


def test_finish_is_compare_and_set(store):
    pending, decided = new_request(store), new_request(store)
    store.decide(decided, "alice", ["dba"], False, "no", APPROVERS)
    assert store.finish(pending, "timeout").status == "timeout"
    assert store.finish(pending, "withdrawn").status == "timeout"
    assert store.finish(decided, "timeout").status == "denied"
    assert store.finish(424242, "withdrawn") is None
    assert isinstance(store.get(pending).error(), ApprovalTimeout)
    with pytest.raises(ValueError):
        store.finish(pending, "approved")


def test_injection_through_reason_is_data(store, store_url):
    rid = new_request(store)
    # The reason as an approver types it in the console, quoted as a SQL literal.
    quoted = INJECTION.replace("'", "''")
    cmd = parse(f"DENY {rid} '{quoted}';")
    assert cmd.reason == INJECTION
    req = store.decide(rid, "alice", ["dba"], False, cmd.reason, APPROVERS)
    assert req.decision_reason == INJECTION
    # The table is still there and still works.
    assert store.get(rid).decision_reason == INJECTION
    assert new_request(store) > rid
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url) as conn:
            count = conn.execute("SELECT count(*) FROM pgguard_approvals").fetchone()[0]
        assert count == 2


def test_injection_through_sql_and_user_is_data(store):
    rid = new_request(store, user="x'); DELETE FROM pgguard_approvals; --",
                      sql=INJECTION, params=[INJECTION])
    req = store.get(rid)
    assert req.sql == INJECTION and req.params == (INJECTION,)
    assert len(store.list()) == 1


def test_sqlite_path_forms():
    assert sqlite_path("sqlite:///var/lib/pgguard/approvals.db") == "/var/lib/pgguard/approvals.db"
    assert sqlite_path("sqlite:////tmp/a.db") == "/tmp/a.db"
    assert sqlite_path("sqlite:///approvals.db") == "approvals.db"
    assert sqlite_path("sqlite:///./data/a.db") == "./data/a.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///")


def test_sqlite_file_is_private(tmp_path):
    path = tmp_path / "sub" / "a.db"
    SqliteStore(str(path)).setup()
    assert path.stat().st_mode & 0o077 == 0


def test_unreachable_postgres_store_is_a_clear_error(pg):
    store = PostgresStore(f"postgresql://nobody:x@127.0.0.1:{pg.port}/nope?sslmode=disable",
                          timeout_s=2)
    with pytest.raises(StoreUnavailable) as exc:
        store.get(1)
    assert exc.value.message.startswith("pgguard: approvals store unavailable")
    assert "x@" not in exc.value.message


# ---------------------------------------------------------------------------- service

def cfg(store: str, timeout_s: float = 5.0, poll: float = 0.05) -> ApprovalsConfig:
    return ApprovalsConfig(store=store, approver_groups=APPROVERS, timeout_s=timeout_s,
                           poll_interval_s=poll)


async def submit(approvals: Approvals, user: str = "agent-bob"):
    return await approvals.submit(user=user, groups=["engineers"], connection="appdb",
                                  category="ddl", kind="AlterTableStmt", reason="ddl = review",
                                  sql="ALTER TABLE t ADD COLUMN c int", params=[None, "x"])


async def test_wait_times_out(store_url):
    svc = Approvals(cfg(store_url, timeout_s=0.3), "gw1")
    await svc.start()
    req = await submit(svc)
    start = time.monotonic()
    with trio.fail_after(5):
        final = await svc.wait(req.id)
    assert 0.25 <= time.monotonic() - start < 3
    assert final.status == "timeout"
    err = final.error()
    assert isinstance(err, ApprovalTimeout) and err.sqlstate == "57014"
    with pytest.raises(AlreadyDecided):
        await svc.decide(req.id, "alice", ["dba"], True, "too late")
    svc.close()


async def test_wait_released_by_local_decision(store_url):
    # A long poll interval: only the in-process wake-up can release it quickly.
    svc = Approvals(cfg(store_url, poll=30), "gw1")
    await svc.start()
    req = await submit(svc)
    results = []

    async def waiter():
        results.append(await svc.wait(req.id))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.2)
            start = time.monotonic()
            await svc.decide(req.id, "alice", ["dba"], True, "ok")
    assert time.monotonic() - start < 1.5
    assert results[0].status == "approved" and results[0].decided_by == "alice"
    svc.close()


async def test_wait_released_by_other_gateway_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    one, two = Approvals(cfg(url, poll=0.1), "gw1"), Approvals(cfg(url, poll=0.1), "gw2")
    await one.start()
    await two.start()
    req = await submit(one)
    results = []

    async def waiter():
        results.append(await one.wait(req.id))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.2)
            assert [r.id for r in await two.list()] == [req.id]
            await two.decide(req.id, "alice", ["dba"], False, "no")
    assert results[0].status == "denied"


async def test_wait_released_by_notify_from_other_gateway(pg_dsn):
    # Polling every 30 s: a release within a second proves LISTEN/NOTIFY woke the waiter.
    one = Approvals(cfg(pg_dsn, poll=30), "gw1")
    two = Approvals(cfg(pg_dsn, poll=30), "gw2")
    await one.start()
    await two.start()
    req = await submit(one)
    results = []

    async def waiter():
        results.append(await one.wait(req.id))

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(1.0)  # the listener thread connects and LISTENs
                start = time.monotonic()
                await two.decide(req.id, "alice", ["dba"], True, "ship it")
        assert time.monotonic() - start < 2
        assert results[0].status == "approved" and results[0].decision_reason == "ship it"
    finally:
        one.close()
        two.close()


async def test_cancelled_wait_withdraws(store_url):
    svc = Approvals(cfg(store_url), "gw1")
    await svc.start()
    req = await submit(svc)
    with trio.move_on_after(0.3) as scope:
        await svc.wait(req.id, timeout_s=30)
    assert scope.cancelled_caught
    final = await svc.get(req.id)
    assert final.status == "withdrawn"
    assert isinstance(final.error(), QueryCanceled)
    with pytest.raises(AlreadyDecided):
        await svc.decide(req.id, "alice", ["dba"], True, "")
    svc.close()


async def test_start_abandons_previous_run(store_url):
    old = Approvals(cfg(store_url), "gw1")
    await old.start()
    req = await submit(old)
    old.close()
    new = Approvals(cfg(store_url), "gw1")
    assert await new.start() == 1
    assert (await new.get(req.id)).status == "abandoned"
    new.close()


async def test_wait_unknown_request(store_url):
    svc = Approvals(cfg(store_url), "gw1")
    await svc.start()
    with trio.fail_after(5), pytest.raises(UnknownRequest):
        await svc.wait(123456, timeout_s=1)
    svc.close()
