"""Session recording: the Recorder writes real segment files; verify, export, replay and the
CLI read them back. Tampering is done on the bytes on disk, the way an attacker would."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgguard import audit
from pgguard.audit import format as audit_format
from pgguard.audit import writer as audit_writer
from pgguard.config import RecordingConfig

REPO = Path(__file__).resolve().parents[2]
KEY = b"test-audit-key-0123456789"

USERS = [  # (user, groups, connection)
    ("alice", ["analysts"], "appdb"),
    ("bob", ["engineers"], "appdb"),
    ("alice", ["analysts"], "hrdb"),
    ("carol", ["dba"], "hrdb"),
]


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(KEY + b"\n")  # a trailing newline, as `echo` writes it
    return path


def make_cfg(tmp_path: Path, keyfile: Path, **kw) -> RecordingConfig:
    kw.setdefault("dir", str(tmp_path / "rec"))
    return RecordingConfig(key_file=str(keyfile), **kw)


async def record_session(rec: audit.Recorder, user: str, groups: list[str], conn: str,
                         n_statements: int = 3) -> str:
    sid = rec.session_id()
    await rec.record(sid, "session_start", user=user, groups=groups, connection=conn,
                     client_addr="127.0.0.1:40000", tls=True)
    for i in range(n_statements):
        await rec.record(sid, "statement", sql=f"SELECT id, email FROM users WHERE id > {i}",
                         params=[], protocol="simple" if i % 2 else "extended",
                         decision="allow", category="read", kind="SELECT", reason="grant")
        await rec.record(sid, "result", columns=[["id", 23], ["email", 25]], row_count=2,
                         rows=[[str(i), f"<hash:{user}{i}>"], [str(i + 1), None]],
                         command_tag="SELECT 2")
    await rec.record(sid, "statement", sql="DELETE FROM users", params=[], protocol="simple",
                     decision="deny", category="write", kind="DELETE",
                     reason="write is denied for analysts")
    await rec.record(sid, "error", sqlstate="42501",
                     message="pgguard: write statement DELETE denied")
    await rec.record(sid, "session_end", reason="client closed", duration_s=0.25,
                     bytes_in=120, bytes_out=900)
    return sid


async def write_log(cfg: RecordingConfig, instance: str = "gw1",
                    users=USERS) -> list[str]:
    rec = audit.Recorder(cfg, instance)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        sids = [await record_session(rec, *u) for u in users]
        await rec.aclose()
    return sids


def segments(cfg: RecordingConfig) -> list[Path]:
    return sorted(Path(cfg.dir).glob("*.pgglog"))


def offsets(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every record in a segment, read with plain msgpack."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    out, pos = [], 0
    for _ in unpacker:
        out.append((pos, unpacker.tell()))
        pos = unpacker.tell()
    return out


def raw_records(cfg: RecordingConfig) -> list[dict]:
    out = []
    for seg in segments(cfg):
        out.extend(msgpack.Unpacker(open(seg, "rb"), raw=False))
    return out


# ---------------------------------------------------------------------------------------
# Writing and verifying


async def test_untouched_log_verifies(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile)
    await write_log(cfg)
    result = audit.verify([cfg.dir], KEY)
    assert result.ok, result.first_bad
    records = raw_records(cfg)
    assert result.records == len(records)
    assert records[0]["type"] == "segment_start"
    assert records[-1]["type"] == "segment_seal"
    assert records[-1]["fields"]["reason"] == "close"
    assert [r["seq"] for r in records] == list(range(len(records)))
    starts = [r for r in records if r["type"] == "session_start"]
    assert [s["fields"]["user"] for s in starts] == [u for u, _, _ in USERS]
    assert starts[0]["fields"]["instance"] == "gw1"


async def test_rotation_by_size_chains_segments(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, segment_max_bytes=1500)
    await write_log(cfg)
    segs = segments(cfg)
    assert len(segs) >= 4
    for seg in segs[:-1]:
        assert seg.stat().st_size < 1500 + 600  # a segment passes the limit by one record
    result = audit.verify([str(s) for s in segs], KEY)
    assert result.ok, result.first_bad
    seals = [r["fields"]["reason"] for r in raw_records(cfg) if r["type"] == "segment_seal"]
    assert seals == ["size"] * (len(segs) - 1) + ["close"]


async def test_rotation_by_age(tmp_path, keyfile):
    # Real time: the writer works in a thread, which a mock clock would race past.
    cfg = make_cfg(tmp_path, keyfile, segment_max_age_s=0.3, fsync_interval_s=0.05)
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        sid = rec.session_id()
        await rec.record(sid, "session_start", user="u", groups=[], connection="c",
                         client_addr="x", tls=False)
        await rec.flush()
        with trio.fail_after(5):  # idle: the writer seals the aged segment on its own
            while len(segments(cfg)) < 2:
                await trio.sleep(0.05)
        await trio.sleep(0.7)  # an empty segment is not rotated again
        assert len(segments(cfg)) == 2
        await rec.aclose()
    assert audit.verify([cfg.dir], KEY).ok
    seals = [r["fields"]["reason"] for r in raw_records(cfg) if r["type"] == "segment_seal"]
    assert seals == ["age", "close"]


async def test_fsync_always_flush_puts_record_on_disk(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, fsync="always")
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        sid = rec.session_id()
        await rec.record(sid, "statement", sql="SELECT 'marker-1234'", params=[],
                         protocol="simple", decision="allow", category="read", kind="SELECT",
                         reason="")
        await rec.flush()
        assert b"marker-1234" in segments(cfg)[0].read_bytes()
        # While it runs the open segment has no seal; verify accepts it as open.
        result = audit.verify([cfg.dir], KEY)
        assert result.ok, result.first_bad
        assert any("open" in note for note in result.notes)
        await rec.aclose()


async def test_result_rows_capped_at_max_rows(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, max_rows=5)
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        sid = rec.session_id()
        await rec.record(sid, "result", columns=[["n", 23]], row_count=50,
                         rows=[[str(i)] for i in range(50)], command_tag="SELECT 50")
        await rec.record(sid, "result", columns=[["n", 23]], row_count=2,
                         rows=[["1"], ["2"]], command_tag="SELECT 2")
        await rec.aclose()
    results = [r["fields"] for r in raw_records(cfg) if r["type"] == "result"]
    assert results[0]["rows"] == [[str(i)] for i in range(5)]
    assert results[0]["truncated"] is True and results[0]["row_count"] == 50
    assert results[1]["truncated"] is False and len(results[1]["rows"]) == 2


async def test_record_rejects_bad_input_and_closed_recorder(tmp_path, keyfile):
    rec = audit.Recorder(make_cfg(tmp_path, keyfile), "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with pytest.raises(ValueError):
            await rec.record("s", "segment_seal")
        with pytest.raises(TypeError):
            await rec.record("s", "notice", message=object())
        await rec.aclose()
    with pytest.raises(audit.RecorderClosed):
        await rec.record("s", "notice", message="late")


async def test_second_recorder_for_same_instance_is_refused(tmp_path, keyfile, monkeypatch):
    monkeypatch.setattr(audit_writer, "_LOCK_WAIT_S", 0.2)
    cfg = make_cfg(tmp_path, keyfile)
    first = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        second = audit.Recorder(cfg, "gw1")
        with pytest.raises(audit.AuditError, match="another recorder"):
            await nursery.start(second.run)
        # Another instance id shares the folder with its own chain.
        other = audit.Recorder(cfg, "gw2")
        await nursery.start(other.run)
        await other.aclose()
        await first.aclose()
    assert audit.verify([cfg.dir], KEY).ok
    assert len(segments(cfg)) == 2


async def test_cancelled_writer_still_writes_and_seals(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile)
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        for i in range(50):
            await rec.record("s1", "notice", message=f"n{i}")
        nursery.cancel_scope.cancel()  # gateway shutting down hard, no aclose()
    assert audit.verify([cfg.dir], KEY).ok
    records = raw_records(cfg)
    assert [r["fields"]["message"] for r in records if r["type"] == "notice"] == \
        [f"n{i}" for i in range(50)]
    assert records[-1]["type"] == "segment_seal"
    with pytest.raises(audit.RecorderClosed):
        await rec.record("s1", "notice", message="late")


async def test_restart_continues_the_chain(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile)
    await write_log(cfg, users=USERS[:2])
    await write_log(cfg, users=USERS[2:])
    first, second = segments(cfg)
    seal = list(msgpack.Unpacker(open(first, "rb"), raw=False))[-1]
    start = next(iter(msgpack.Unpacker(open(second, "rb"), raw=False)))
    assert start["fields"]["segment"] == 1 and start["fields"]["prev_mac"] == seal["mac"]
    assert audit.verify([cfg.dir], KEY).ok
    # Old segments removed by retention: the rest still verifies, with a note.
    first.unlink()
    result = audit.verify([cfg.dir], KEY)
    assert result.ok and any("chain starts at segment 1" in n for n in result.notes)


def test_key_file_rules(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(audit.AuditError, match="empty"):
        audit.load_key(empty)
    with pytest.raises(audit.AuditError, match="cannot read"):
        audit.load_key(tmp_path / "missing")
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"k\x00ey\r\n")
    assert audit.load_key(crlf) == b"k\x00ey"


async def test_wrong_key_fails_verify(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile)
    await write_log(cfg, users=USERS[:1])
    result = audit.verify([cfg.dir], b"another key")
    assert not result.ok
    assert result.first_bad.seq == 0 and "another key" in result.first_bad.why


# ---------------------------------------------------------------------------------------
# Tampering: each must fail verify and name the place


@pytest.fixture
async def one_segment_log(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile)
    await write_log(cfg)
    (seg,) = segments(cfg)
    assert audit.verify([str(seg)], KEY).ok
    return cfg, seg


def assert_bad(paths, seg: Path, seq: int, *words: str) -> None:
    result = audit.verify(paths, KEY)
    assert not result.ok
    assert result.first_bad.file == str(seg)
    assert result.first_bad.seq == seq, str(result.first_bad)
    for word in words:
        assert word in result.first_bad.why, str(result.first_bad)


async def test_flipping_any_byte_of_a_record_is_detected(one_segment_log):
    _, seg = one_segment_log
    original = seg.read_bytes()
    spans = offsets(seg)
    target = 7
    start, end = spans[target]
    for pos in range(start, end):  # every byte of one record: structure, values and MAC
        data = bytearray(original)
        data[pos] ^= 0x01
        seg.write_bytes(data)
        result = audit.verify([str(seg)], KEY)
        assert not result.ok, pos
        assert result.first_bad.file == str(seg)
        assert result.first_bad.seq == target, (pos, str(result.first_bad))


async def test_flipping_a_value_byte_names_mac(one_segment_log):
    _, seg = one_segment_log
    data = bytearray(seg.read_bytes())
    pos = data.index(b"DELETE FROM users")
    data[pos] = ord("d")
    seg.write_bytes(data)
    seq = next(i for i, (s, e) in enumerate(offsets(seg)) if s <= pos < e)
    assert_bad([str(seg)], seg, seq, "MAC mismatch")


async def test_deleting_a_record_is_detected(one_segment_log):
    _, seg = one_segment_log
    data = seg.read_bytes()
    start, end = offsets(seg)[5]
    seg.write_bytes(data[:start] + data[end:])
    assert_bad([str(seg)], seg, 5, "expected seq 5, found seq 6")


async def test_swapping_two_records_is_detected(one_segment_log):
    _, seg = one_segment_log
    data = seg.read_bytes()
    (s4, e4), (s5, e5) = offsets(seg)[4:6]
    seg.write_bytes(data[:s4] + data[s5:e5] + data[s4:e4] + data[e5:])
    assert_bad([str(seg)], seg, 4, "expected seq 4")


async def test_inserting_a_forged_record_is_detected(one_segment_log):
    _, seg = one_segment_log
    data = seg.read_bytes()
    spans = offsets(seg)
    records = list(msgpack.Unpacker(open(seg, "rb"), raw=False))
    # A forger without the key: a well-formed record with the right seq, renumbering the
    # ones after it, and a MAC made with a guessed key over the right chain input.
    forged, _ = audit_format.encode_record(
        audit_format.new_packer(), audit_format.mac_proto(b"guess"), records[5]["mac"], 6,
        time.time(), records[6]["session"], "result",
        msgpack.packb({"rows": [["nothing to see"]]}))
    tail = b""
    for i in range(6, len(records)):
        rec = records[i]
        rec["seq"] = i + 1
        tail += msgpack.packb(rec)
    seg.write_bytes(data[: spans[6][0]] + forged + tail)
    assert_bad([str(seg)], seg, 6, "MAC mismatch")


async def test_truncating_a_sealed_segment_is_detected(one_segment_log):
    _, seg = one_segment_log
    data = seg.read_bytes()
    spans = offsets(seg)
    # Cut at a record boundary: the seal is gone.
    seg.write_bytes(data[: spans[-1][0]])
    assert_bad([str(seg)], seg, len(spans) - 1, "not sealed")
    # Cut mid-record: a torn record.
    seg.write_bytes(data[: spans[-3][0] + 10])
    assert_bad([str(seg)], seg, len(spans) - 3, "torn record")


async def test_deleting_a_middle_segment_is_detected(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, segment_max_bytes=1500)
    await write_log(cfg)
    segs = segments(cfg)
    assert len(segs) >= 4
    segs[2].unlink()
    assert_bad([cfg.dir], segs[3], 0, "segment 2 of instance gw1 is missing")


async def test_replacing_a_middle_segment_is_detected(tmp_path, keyfile):
    # A whole segment rewritten from scratch with the key would still not chain unless the
    # forger has the key; without it, the swap of two logs' segments is caught by the link.
    cfg = make_cfg(tmp_path, keyfile, segment_max_bytes=1500)
    await write_log(cfg)
    other = make_cfg(tmp_path / "other", keyfile, segment_max_bytes=1500)
    await write_log(other, users=list(reversed(USERS)))
    segs = segments(cfg)
    shutil.copyfile(segments(other)[2], segs[2])
    result = audit.verify([cfg.dir], KEY)
    assert not result.ok
    assert result.first_bad.file in (str(segs[2]), str(segs[3]))
    assert result.first_bad.seq == 0
    assert "chain" in result.first_bad.why


@pytest.fixture(scope="module")
def sample_log(tmp_path_factory) -> dict[str, bytes]:
    """A multi-segment log, written once; tests tamper with copies of its bytes."""
    base = tmp_path_factory.mktemp("sample")
    key = base / "key"
    key.write_bytes(KEY)
    cfg = make_cfg(base, key, segment_max_bytes=2500)
    trio.run(write_log, cfg)
    return {seg.name: seg.read_bytes() for seg in segments(cfg)}


def tampered_dir(tmp_path_factory, log: dict[str, bytes], name: str, data: bytes) -> Path:
    d = tmp_path_factory.mktemp("t")
    for n, b in log.items():
        (d / n).write_bytes(data if n == name else b)
    return d


def record_index(data: bytes, pos: int) -> int:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    start = 0
    for i, _ in enumerate(unpacker):
        if start <= pos < unpacker.tell():
            return i
        start = unpacker.tell()
    raise AssertionError(pos)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_change_anywhere_is_detected_in_place(sample_log, tmp_path_factory, data):
    names = sorted(sample_log)
    name = data.draw(st.sampled_from(names))
    original = sample_log[name]
    pos = data.draw(st.integers(0, len(original) - 1))
    changed = bytearray(original)
    changed[pos] ^= data.draw(st.integers(1, 255))
    d = tampered_dir(tmp_path_factory, sample_log, name, bytes(changed))
    result = audit.verify([d], KEY)
    assert not result.ok
    assert Path(result.first_bad.file).name == name
    assert result.first_bad.seq == record_index(original, pos), str(result.first_bad)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_truncation_of_any_segment_is_detected(sample_log, tmp_path_factory, data):
    name = data.draw(st.sampled_from(sorted(sample_log)))
    original = sample_log[name]
    cut = data.draw(st.integers(0, len(original) - 1))
    d = tampered_dir(tmp_path_factory, sample_log, name, original[:cut])
    result = audit.verify([d], KEY)
    assert not result.ok
    assert Path(result.first_bad.file).name == name, str(result.first_bad)


# ---------------------------------------------------------------------------------------
# Crashes


CHILD = textwrap.dedent("""
    import sys, trio
    from pgguard import audit
    from pgguard.config import RecordingConfig

    cfg = RecordingConfig(dir=sys.argv[1], key_file=sys.argv[2], fsync=sys.argv[3],
                          queue_size=64)

    async def main():
        rec = audit.Recorder(cfg, "gw1")
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            sid = rec.session_id()
            await rec.record(sid, "session_start", user="alice", groups=[],
                             connection="appdb", client_addr="127.0.0.1", tls=True)
            i = 0
            while True:
                for _ in range(20):
                    await rec.record(sid, "statement", sql=f"SELECT {i}", params=[],
                                     protocol="simple", decision="allow", category="read",
                                     kind="SELECT", reason="")
                    await rec.record(sid, "result", columns=[["n", 23]], row_count=1,
                                     rows=[[str(i)]], command_tag="SELECT 1")
                    i += 1
                await rec.flush()
                # What a client has received: the gateway sends it only after flush().
                print(f"flushed {i}", flush=True)
                await trio.sleep(0)

    trio.run(main)
""")


def run_child_and_kill(cfg: RecordingConfig, fsync: str, after_lines: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, cfg.dir, cfg.key_file, fsync],
                            stdout=subprocess.PIPE, text=True, env=env)
    flushed = 0
    watchdog = threading.Timer(30, proc.kill)  # bounds the reads below if the child hangs
    watchdog.start()
    try:
        deadline = time.monotonic() + 20
        for line in proc.stdout:
            flushed = int(line.split()[1])
            after_lines -= 1
            if after_lines <= 0 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)  # mid-write, no seal
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=10)
    assert flushed > 0
    return flushed


async def test_sigkill_then_torn_tail_is_recovered_on_restart(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, fsync="always")
    flushed = await trio.to_thread.run_sync(run_child_and_kill, cfg, "always", 5)
    (seg,) = segments(cfg)
    # Simulate the kill landing mid-write: chop the last record in half.
    start, end = offsets(seg)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[: (start + end) // 2])
    before = audit.verify([cfg.dir], KEY)
    assert not before.ok and "torn record" in before.first_bad.why

    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await rec.aclose()

    result = audit.verify([cfg.dir], KEY)
    assert result.ok, result.first_bad
    first, second = segments(cfg)
    records = list(msgpack.Unpacker(open(first, "rb"), raw=False))
    seal = records[-1]
    assert seal["type"] == "segment_seal" and seal["fields"]["reason"] == "recovered"
    assert 0 < seal["fields"]["torn_bytes"] < end - start
    # Every statement whose flush returned before the kill is there; only the chopped
    # record (written after the last reported flush) may be missing.
    sqls = {r["fields"]["sql"] for r in records if r["type"] == "statement"}
    assert {f"SELECT {i}" for i in range(flushed)} <= sqls
    # The new segment chains to the recovered seal.
    start_rec = next(iter(msgpack.Unpacker(open(second, "rb"), raw=False)))
    assert start_rec["fields"]["prev_mac"] == seal["mac"]


async def test_sigkill_of_busy_writer_batch_mode_recovers(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, fsync="batch")
    flushed = await trio.to_thread.run_sync(run_child_and_kill, cfg, "batch", 30)
    # Another instance starting in the same folder recovers the dead instance's segment.
    rec = audit.Recorder(cfg, "gw2")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await rec.aclose()
    result = audit.verify([cfg.dir], KEY)
    assert result.ok, result.first_bad
    records = raw_records(cfg)
    sqls = {r["fields"]["sql"] for r in records if r["type"] == "statement"}
    assert {f"SELECT {i}" for i in range(flushed)} <= sqls
    assert any(r["type"] == "segment_seal" and r["fields"]["reason"] == "recovered"
               for r in records)


async def test_recovery_keeps_complete_records_even_if_tampered(one_segment_log):
    # A restart must not launder tampering: only a torn tail is cut.
    cfg, seg = one_segment_log
    data = bytearray(seg.read_bytes())
    spans = offsets(seg)
    data = data[: spans[-1][0]]  # drop the seal: looks like a crash
    pos = data.index(b"DELETE FROM users")
    data[pos] = ord("d")
    seg.write_bytes(data)
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await rec.aclose()
    result = audit.verify([cfg.dir], KEY)
    assert not result.ok
    assert result.first_bad.file == str(seg) and "MAC mismatch" in result.first_bad.why


# ---------------------------------------------------------------------------------------
# Back-pressure


async def test_backpressure_never_drops(tmp_path, keyfile, caplog, monkeypatch):
    cfg = make_cfg(tmp_path, keyfile, queue_size=3)
    real = audit_writer.SegmentWriter.write_batch

    def slow(self, items, sync=False, rotate=False):
        time.sleep(0.002)
        return real(self, items, sync, rotate)

    monkeypatch.setattr(audit_writer.SegmentWriter, "write_batch", slow)
    rec = audit.Recorder(cfg, "gw1")
    high = 0

    async def producer(name: str) -> None:
        nonlocal high
        for i in range(60):
            await rec.record(name, "notice", message=f"{name}-{i}")
            high = max(high, len(rec._queue))

    caplog.set_level(logging.WARNING, logger="pgguard.audit")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            async with trio.open_nursery() as producers:
                for p in ("a", "b", "c", "d"):
                    producers.start_soon(producer, p)
            await rec.flush()
            await rec.aclose()
    assert high <= 3
    notices = [r for r in raw_records(cfg) if r["type"] == "notice"]
    assert len(notices) == 240
    for p in ("a", "b", "c", "d"):
        mine = [r["fields"]["message"] for r in notices if r["session"] == p]
        assert mine == [f"{p}-{i}" for i in range(60)]  # every one, in order
    warnings = [r.getMessage() for r in caplog.records if "event=audit_backpressure " in
                r.getMessage()]
    assert 1 <= len(warnings) < 240  # said so, once per episode, not once per record
    assert audit.verify([cfg.dir], KEY).ok


async def test_write_errors_are_retried_without_loss(tmp_path, keyfile, monkeypatch):
    cfg = make_cfg(tmp_path, keyfile)
    real_write = audit_writer._write_all
    failures = {"left": 3}

    def flaky(fd, data):
        if failures["left"] and len(data) > 200:
            failures["left"] -= 1
            os.write(fd, bytes(data[:50]))  # a partial write, then the disk fills up
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    rec = audit.Recorder(cfg, "gw1")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            monkeypatch.setattr(audit_writer, "_write_all", flaky)
            sids = [await record_session(rec, *u) for u in USERS]
            await rec.flush()
            assert failures["left"] == 0
            await rec.aclose()
    assert audit.verify([cfg.dir], KEY).ok
    starts = [r for r in raw_records(cfg) if r["type"] == "session_start"]
    assert [r["session"] for r in starts] == sids


# ---------------------------------------------------------------------------------------
# Export and replay


def read_export(path: Path) -> tuple[dict, list[dict]]:
    with open(path, "rb") as f:
        items = list(msgpack.Unpacker(f, raw=False))
    return items[0], items[1:]


@pytest.fixture
async def sessions_log(tmp_path, keyfile):
    cfg = make_cfg(tmp_path, keyfile, segment_max_bytes=2000)
    sids = []
    rec = audit.Recorder(cfg, "gw1")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        for u in USERS:
            sids.append(await record_session(rec, *u))
            await trio.sleep(0.02)  # distinct timestamps between sessions
        await rec.aclose()
    return cfg, sids


def expected(cfg, pred) -> list[tuple[str, int]]:
    """What an export must contain, computed from the raw files with plain msgpack."""
    who = {}
    out = []
    for seg in segments(cfg):
        for r in msgpack.Unpacker(open(seg, "rb"), raw=False):
            if r["type"] in ("segment_start", "segment_seal"):
                continue
            if r["type"] == "session_start":
                who[r["session"]] = (r["fields"]["user"], r["fields"]["connection"])
            if pred(r, *who.get(r["session"], (None, None))):
                out.append((seg.name, r["seq"]))
    return out


async def test_export_filters_return_exactly_the_matching_records(sessions_log, tmp_path):
    cfg, sids = sessions_log
    all_records = [r for r in raw_records(cfg) if r["type"] not in audit.SEGMENT_TYPES]
    t_mid = all_records[len(all_records) // 2]["ts"]
    t_late = all_records[3 * len(all_records) // 4]["ts"]
    cases = [
        ({}, lambda r, u, c: True),
        ({"user": "alice"}, lambda r, u, c: u == "alice"),
        ({"connection": "hrdb"}, lambda r, u, c: c == "hrdb"),
        ({"session": sids[1]}, lambda r, u, c: r["session"] == sids[1]),
        ({"since": t_mid}, lambda r, u, c: r["ts"] >= t_mid),
        ({"until": t_mid}, lambda r, u, c: r["ts"] < t_mid),
        ({"since": t_mid, "until": t_late, "user": "alice"},
         lambda r, u, c: t_mid <= r["ts"] < t_late and u == "alice"),
        ({"user": "nobody"}, lambda r, u, c: False),
    ]
    out = tmp_path / "export.msgpack"
    for filters, pred in cases:
        n = audit.export(cfg.dir, KEY, out, **filters)
        header, records = read_export(out)
        assert header["format"] == "pgguard-audit-export" and header["version"] == 1
        assert header["verified"] is True
        got = [(r["segment"], r["seq"]) for r in records]
        want = expected(cfg, pred)
        assert sorted(got) == sorted(want), filters
        assert n == len(records)
        if filters == {"user": "alice"}:
            assert {r["user"] for r in records} == {"alice"}
            assert {r["session"] for r in records} == {sids[0], sids[2]}
    assert not list(tmp_path.glob("export.msgpack.tmp*"))


async def test_export_refuses_a_corrupt_log_unless_forced(sessions_log, tmp_path):
    cfg, _ = sessions_log
    seg = segments(cfg)[1]
    data = bytearray(seg.read_bytes())
    data[offsets(seg)[2][0] + 20] ^= 0xFF
    seg.write_bytes(data)
    out = tmp_path / "x.msgpack"
    with pytest.raises(audit.AuditError, match="does not verify"):
        audit.export(cfg.dir, KEY, out)
    assert not out.exists()
    audit.export(cfg.dir, KEY, out, force=True)
    header, _ = read_export(out)
    assert header["verified"] is False and seg.name in header["verify_error"]


async def test_replay_shows_statements_decisions_and_rows(sessions_log):
    cfg, sids = sessions_log
    text = audit.replay(cfg.dir, KEY, sids[1][:6])  # a unique prefix works
    assert text.startswith(f"Session {sids[1]}")
    assert "user        bob (groups: engineers)" in text
    assert "connection  appdb" in text
    assert "SELECT id, email FROM users WHERE id > 2" in text
    assert "statement (simple): allow, read/SELECT" in text
    assert "deny, write/DELETE" in text and "reason: write is denied for analysts" in text
    assert "error 42501: pgguard: write statement DELETE denied" in text
    assert "<hash:bob0>" in text and "NULL" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "email" in line and "|" in line)
    table = lines[header: header + 4]
    assert len({line.index("|") for line in table if "|" in line}) == 1  # aligned columns
    assert "Session ended" in text and "client closed" in text
    with pytest.raises(audit.AuditError, match="no session"):
        audit.replay(cfg.dir, KEY, "ffffffffffffffff")


def test_replay_escapes_terminal_control_characters():
    rec = {"ts": 0.0, "session": "s", "type": "result", "seq": 1,
           "fields": {"columns": [["v", 25]], "row_count": 1, "command_tag": "SELECT 1",
                      "rows": [["\x1b[2Jgotcha\nline"]], "truncated": False}}
    text = audit.render_session([rec])
    assert "\x1b" not in text and "\\x1b[2Jgotcha\\nline" in text


# ---------------------------------------------------------------------------------------
# Command line


def write_config(tmp_path: Path, cfg: RecordingConfig) -> Path:
    path = tmp_path / "pgguard.toml"
    path.write_text(f'[recording]\ndir = "{cfg.dir}"\nkey_file = "{cfg.key_file}"\n')
    return path


def cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pgguard.audit", *argv], capture_output=True,
                          text=True, env=env, timeout=60)


async def test_cli_verify_exit_codes(sessions_log, tmp_path):
    cfg, _ = sessions_log
    conf = write_config(tmp_path, cfg)
    ok = await trio.to_thread.run_sync(cli, "verify", "--config", str(conf))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK:")
    seg = segments(cfg)[1]
    data = seg.read_bytes()
    start, end = offsets(seg)[3]
    seg.write_bytes(data[:start] + data[end:])
    bad = await trio.to_thread.run_sync(cli, "verify", "--config", str(conf), str(seg))
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"{seg}:3: expected seq 3")
    missing = await trio.to_thread.run_sync(cli, "verify", "--key-file", "/nonexistent",
                                            str(seg))
    assert missing.returncode == 1 and "cannot read key file" in missing.stderr


async def test_cli_export_and_replay(sessions_log, tmp_path):
    cfg, sids = sessions_log
    conf = write_config(tmp_path, cfg)
    out = tmp_path / "alice.msgpack"
    parser = argparse.ArgumentParser(prog="pgguard")
    audit.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "export", "--config", str(conf), "--user", "alice",
                              "--since", "1970-01-01T00:00:00Z", "-o", str(out)])
    assert args.func(args) == 0
    header, records = read_export(out)
    assert header["filters"]["user"] == "alice" and header["filters"]["since"] == 0.0
    assert records and {r["user"] for r in records} == {"alice"}
    args = parser.parse_args(["audit", "export", "--config", str(conf), "--until", "0",
                              "-o", str(out)])
    assert args.func(args) == 0
    assert read_export(out)[1] == []

    shown = await trio.to_thread.run_sync(cli, "replay", "--config", str(conf), sids[3])
    assert shown.returncode == 0, shown.stderr
    assert "user        carol (groups: dba)" in shown.stdout
    nothing = await trio.to_thread.run_sync(cli, "audit", "replay", "--config", str(conf),
                                            "0000")
    assert nothing.returncode == 1 and "no session" in nothing.stderr


def test_parse_time():
    assert audit.parse_time("1700000000") == 1700000000.0
    assert audit.parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert audit.parse_time("2023-11-14T22:13:20") == 1700000000.0  # naive means UTC
    assert audit.parse_time("2023-11-15T00:13:20+02:00") == 1700000000.0
    with pytest.raises(ValueError):
        audit.parse_time("yesterday")
