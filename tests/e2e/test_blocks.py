"""The kill switch's blocks in the approvals store (SQLite and PostgreSQL) and their watch.

Against the real stores: a SQLite file in ``tmp_path`` and a database on the test
PostgreSQL cluster. Two :class:`Blocks` objects on one store stand for two gateways.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
import trio
from harness.console_fakes import DBA, FakeContext, session
from harness.console_wire import converse, query, tags

from pgguard.approvals import Approvals, Block, Blocks, blocked_message, open_store
from pgguard.config import ApprovalsConfig

INJECTION = "x'); DROP TABLE pgguard_blocks; --"


# ---------------------------------------------------------------------------- store

def test_block_round_trip(store):
    block, created = store.block("agent-bob", "runaway loop", "alice", "gw1")
    assert created and isinstance(block, Block) and block.active
    assert (block.user, block.reason, block.blocked_by, block.gateway) == (
        "agent-bob", "runaway loop", "alice", "gw1")
    assert block.blocked_at.tzinfo is not None and block.unblocked_at is None
    assert store.active_block("agent-bob") == block
    assert store.active_block("agent-eve") is None
    assert store.blocks() == [block]
    assert store.last_block_id() == block.id


def test_second_block_keeps_the_first(store):
    first, _ = store.block("agent-bob", "first", "alice", "gw1")
    again, created = store.block("agent-bob", "second", "carol", "gw2")
    assert not created and again == first
    assert [b.reason for b in store.blocks()] == ["first"]


def test_unblock_keeps_history(store):
    old, _ = store.block("agent-bob", "runaway", "alice", "gw1")
    lifted = store.unblock("agent-bob", "carol")
    assert lifted is not None and lifted.id == old.id and not lifted.active
    assert lifted.unblocked_by == "carol" and lifted.unblocked_at is not None
    assert store.active_block("agent-bob") is None and store.blocks() == []
    assert store.unblock("agent-bob", "carol") is None
    new, created = store.block("agent-bob", "again", "alice", "gw1")
    assert created and new.id > old.id
    assert [(b.id, b.active) for b in store.blocks(include_lifted=True)] == [
        (old.id, False), (new.id, True)]
    assert [b.id for b in store.blocks_after(old.id)] == [new.id]
    assert [b.id for b in store.blocks_after(0)] == [old.id, new.id]


def test_blocks_survive_a_restart(store_url):
    first = open_store(store_url)
    first.setup()
    first.block("agent-bob", "runaway", "alice", "gw1")
    first.close()
    again = open_store(store_url)
    again.setup()
    assert again.active_block("agent-bob").reason == "runaway"
    again.close()


def test_names_and_reasons_are_data(store):
    block, _ = store.block(INJECTION, INJECTION, INJECTION, "gw1")
    assert store.active_block(INJECTION) == block and block.reason == INJECTION
    assert store.active_block("x") is None
    assert store.unblock(INJECTION, INJECTION).unblocked_by == INJECTION
    for bad in ("", "a" * 1001, "a\x00b"):
        with pytest.raises(ValueError):
            store.block(bad, "r", "alice", "gw1")


def test_concurrent_blocks_one_wins(store_url):
    setup = open_store(store_url)
    setup.setup()
    n = 6
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def block(i: int) -> None:
        s = open_store(store_url)
        try:
            barrier.wait(timeout=10)
            results[i] = s.block("agent-bob", f"r{i}", f"op{i}", f"gw{i}")
        except Exception as exc:  # noqa: BLE001 - asserted below
            results[i] = exc
        finally:
            s.close()

    threads = [threading.Thread(target=block, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(created for _, created in results) == 1
    assert len({b.id for b, _ in results}) == 1
    assert len(setup.blocks()) == 1
    setup.close()


def test_blocked_message():
    assert blocked_message("bob", "runaway") == "pgguard: user 'bob' is blocked: runaway"
    assert blocked_message("bob", "") == "pgguard: user 'bob' is blocked"


# ---------------------------------------------------------------------------- service

def cfg(store: str, approver_groups: tuple[str, ...] = ()) -> ApprovalsConfig:
    return ApprovalsConfig(store=store, approver_groups=approver_groups, poll_interval_s=0.05)


async def test_blocks_without_approvals_configured(tmp_path, monkeypatch):
    # No [approvals] at all: the default store, relative to the working directory.
    monkeypatch.chdir(tmp_path)
    blocks = Blocks.open(ApprovalsConfig(), "gw1")
    await blocks.start()
    assert (tmp_path / "pgguard-approvals.db").exists()
    assert await blocks.is_blocked("agent-bob") is None
    block, created = await blocks.block("agent-bob", "runaway", "alice")
    assert created and block.gateway == "gw1"
    assert await blocks.is_blocked("agent-bob") == "runaway"
    assert [b.user for b in await blocks.list()] == ["agent-bob"]
    assert (await blocks.unblock("agent-bob", "alice")).unblocked_by == "alice"
    assert await blocks.is_blocked("agent-bob") is None
    assert len(await blocks.list(include_lifted=True)) == 1
    blocks.close()


async def test_blocks_share_the_approvals_store(tmp_path):
    approvals = Approvals(cfg(f"sqlite:///{tmp_path}/a.db", ("dba",)), "gw1")
    await approvals.start()
    blocks = Blocks.open(approvals.cfg, "gw1", store=approvals.store)
    await blocks.start()
    await blocks.block("agent-bob", "runaway", "alice")
    blocks.close()  # does not close the store it shares
    assert await blocks.is_blocked("agent-bob") == "runaway"
    other = Blocks.open(approvals.cfg, "gw2")  # the same file, opened on its own
    assert await other.is_blocked("agent-bob") == "runaway"
    approvals.close()


async def _watching(blocks: Blocks, seen: list[Block], nursery, **kw) -> None:
    async def on_block(block: Block) -> None:
        seen.append(block)

    await nursery.start(lambda task_status: blocks.watch(on_block, task_status=task_status,
                                                         **kw))


async def _until(predicate, limit: float = 10) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.02)


async def test_watch_sees_blocks_of_this_and_other_gateways(store_url):
    one, two = Blocks.open(cfg(store_url), "gw1"), Blocks.open(cfg(store_url), "gw2")
    await one.start()
    await two.start()
    old, _ = await one.block("before-watch", "old", "alice")
    seen: list[Block] = []
    try:
        async with trio.open_nursery() as nursery:
            await _watching(one, seen, nursery)
            await one.block("agent-bob", "mine", "alice")
            await two.block("agent-eve", "theirs", "carol")
            await _until(lambda: len(seen) == 2)
            nursery.cancel_scope.cancel()
    finally:
        one.close()
        two.close()
    assert {(b.user, b.gateway) for b in seen} == {("agent-bob", "gw1"), ("agent-eve", "gw2")}
    assert old.id not in {b.id for b in seen}


async def test_watch_skips_a_block_lifted_before_it_looked(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    one, two = Blocks.open(cfg(url), "gw1"), Blocks.open(cfg(url), "gw2")
    await one.start()
    seen: list[Block] = []
    async with trio.open_nursery() as nursery:
        # SQLite cannot notify and gw2 is another "process": gw1 looks only when poked
        # by its own block below.
        await _watching(one, seen, nursery, poll_s=3600)
        await two.block("agent-eve", "short-lived", "carol")
        await two.unblock("agent-eve", "carol")
        await one.block("agent-bob", "runaway", "alice")
        await _until(lambda: len(seen) == 1)
        nursery.cancel_scope.cancel()
    assert [b.user for b in seen] == ["agent-bob"]
    one.close()
    two.close()


async def test_watch_survives_a_failing_callback(tmp_path):
    blocks = Blocks.open(cfg(f"sqlite:///{tmp_path}/a.db"), "gw1")
    await blocks.start()
    seen: list[str] = []

    def on_block(block: Block) -> None:
        seen.append(block.user)
        if block.user == "first":
            raise RuntimeError("bug in the kill code")

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: blocks.watch(on_block,
                                                             task_status=task_status))
        await blocks.block("first", "r", "alice")
        await _until(lambda: seen == ["first"])
        await blocks.block("second", "r", "alice")
        await _until(lambda: seen == ["first", "second"])
        nursery.cancel_scope.cancel()
    blocks.close()


async def test_postgres_notify_reaches_the_other_gateway(pg_dsn):
    # Polling once an hour: only NOTIFY pgguard_blocks can deliver the block to gw1.
    one, two = Blocks.open(cfg(pg_dsn), "gw1"), Blocks.open(cfg(pg_dsn), "gw2")
    await one.start()
    seen: list[Block] = []
    try:
        async with trio.open_nursery() as nursery:
            await _watching(one, seen, nursery, poll_s=3600)
            block, created = await two.block("agent-bob", "runaway on gw2", "carol")
            assert created
            await _until(lambda: len(seen) == 1)
            nursery.cancel_scope.cancel()
        assert seen == [block]
        # And the session-start lookup on gw1 sees gw2's block.
        assert await one.is_blocked("agent-bob") == "runaway on gw2"
        await two.unblock("agent-bob", "carol")
        assert await one.is_blocked("agent-bob") is None
    finally:
        one.close()
        two.close()


async def test_postgres_notify_is_sent_on_the_blocks_channel(pg_dsn):
    blocks = Blocks.open(cfg(pg_dsn), "gw1")
    await blocks.start()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("LISTEN pgguard_blocks")
        block, _ = await blocks.block("agent-bob", "r", "alice")
        notes = list(conn.notifies(timeout=10, stop_after=1))
    blocks.close()
    assert [(n.channel, n.payload) for n in notes] == [("pgguard_blocks", str(block.id))]


async def test_console_block_on_one_gateway_ends_sessions_on_the_other(pg_dsn):
    # gw1's operator types BLOCK USER at gw1's console; gw2 watches the shared store and
    # ends its own sessions of that user (the gateway wires on_block to block_user).
    one, two = Blocks.open(cfg(pg_dsn), "gw1"), Blocks.open(cfg(pg_dsn), "gw2")
    await one.start()
    gw1 = FakeContext(DBA, blocks=one, live=[session("a1", "agent-bob")])
    gw2 = FakeContext(DBA, blocks=two, live=[session("b1", "agent-bob"),
                                             session("b2", "agent-eve")])

    async def on_block(block: Block) -> None:
        await gw2.block_user(block.user, block.reason)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: two.watch(on_block, poll_s=3600,
                                                              task_status=task_status))
            out = await converse(gw1, query("BLOCK USER 'agent-bob' 'runaway';"))
            assert tags(out) == ["BLOCK"]
            await _until(lambda: gw2.blocked == [("agent-bob", "runaway")])
            nursery.cancel_scope.cancel()
        assert [s.id for s in gw1.live] == [] and [s.id for s in gw2.live] == ["b2"]
        assert await two.is_blocked("agent-bob") == "runaway"
    finally:
        one.close()
        two.close()
