"""Audit log throughput: records/s written through the Recorder, and verified.

Feeds the records of a realistic agent session (session_start; statements with their
decisions; results of 1-5 rows and of 100 masked rows x 8 columns; notices, errors; end)
through :class:`pgguard.audit.Recorder` in each fsync mode, then times ``verify`` and
``export`` over the written log.

    python benchmarks/bench_audit.py [--records 20000] [--sessions 8] [--dir DIR]

``always`` is measured the way the gateway uses it: every session awaits ``flush()`` after
each result, so concurrent sessions share fsyncs (group commit).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgguard import audit  # noqa: E402
from pgguard.config import RecordingConfig  # noqa: E402

COLUMNS = [["id", 23], ["email", 25], ["name", 25], ["ssn", 25], ["city", 25],
           ["created_at", 1184], ["balance", 1700], ["notes", 25]]


def session_records(rng: random.Random, n: int) -> list[tuple[str, dict]]:
    """About *n* records of one realistic session, as (type, fields)."""
    out: list[tuple[str, dict]] = [("session_start", {
        "user": "agent-7@example.com", "groups": ["analysts", "skills"],
        "connection": "appdb", "client_addr": "10.1.2.3:51234", "tls": True})]
    i = 0
    while len(out) < n - 1:
        i += 1
        big = rng.random() < 0.3
        out.append(("statement", {
            "sql": f"SELECT id, email, name, ssn, city, created_at, balance, notes "
                   f"FROM customers WHERE region = $1 AND id > {i} ORDER BY id LIMIT "
                   f"{100 if big else 3}",
            "params": ["emea"], "protocol": "extended", "decision": "allow",
            "category": "read", "kind": "SELECT", "reason": "grant analysts: read allow"}))
        rows = [[str(r), f"hmac:{rng.getrandbits(64):016x}", "Jane Q. Public",
                 f"***-**-{rng.randrange(10000):04d}", "Lisbon", "2024-03-01 10:11:12+00",
                 f"{rng.random() * 1e4:.2f}", None]
                for r in range(100 if big else rng.randrange(1, 6))]
        out.append(("result", {"columns": COLUMNS, "row_count": 10_000 if big else len(rows),
                               "rows": rows, "truncated": big,
                               "command_tag": f"SELECT {10_000 if big else len(rows)}"}))
        if i % 25 == 0:
            out.append(("notice", {"severity": "NOTICE", "message": "pgguard: column ssn "
                                                                  "masked (partial)"}))
        if i % 40 == 0:
            out.append(("error", {"sqlstate": "42501",
                                  "message": "pgguard: write statement UPDATE denied"}))
    out.append(("session_end", {"reason": "client closed", "duration_s": 12.5,
                                "bytes_in": 10_000, "bytes_out": 2_000_000}))
    return out


async def write(cfg: RecordingConfig, sessions: list[list[tuple[str, dict]]],
                flush_each_result: bool) -> float:
    rec = audit.Recorder(cfg, "bench")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        t0 = time.perf_counter()

        async def one(records: list[tuple[str, dict]]) -> None:
            sid = rec.session_id()
            for type_, fields in records:
                await rec.record(sid, type_, **dict(fields))
                if flush_each_result and type_ == "result":
                    await rec.flush()

        async with trio.open_nursery() as clients:
            for records in sessions:
                clients.start_soon(one, records)
        await rec.aclose()
        return time.perf_counter() - t0


def log_size(directory: str) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("*.pgglog"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="records per fsync mode")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    parser.add_argument("--modes", default="never,batch,always")
    args = parser.parse_args()

    base = Path(args.dir or tempfile.mkdtemp(prefix="pgguard-bench-audit-"))
    base.mkdir(parents=True, exist_ok=True)
    key_file = base / "key"
    key_file.write_bytes(os.urandom(32))
    key = audit.load_key(key_file)
    rng = random.Random(7)
    per = max(10, args.records // args.sessions)
    sessions = [session_records(rng, per) for _ in range(args.sessions)]
    total = sum(len(s) for s in sessions)

    print(f"{total} records in {args.sessions} concurrent sessions "
          f"(max_rows 100; 30% of results have 100 rows x 8 columns)")
    print(f"{'mode':<28}{'records/s':>12}{'MB/s':>10}{'log MB':>10}")
    written = None
    for mode in args.modes.split(","):
        directory = base / f"rec-{mode}"
        shutil.rmtree(directory, ignore_errors=True)
        cfg = RecordingConfig(dir=str(directory), key_file=str(key_file), max_rows=100,
                              fsync=mode, segment_max_bytes=16 << 20)
        elapsed = trio.run(write, cfg, sessions, mode == "always")
        size = log_size(str(directory))
        label = f"write fsync={mode}" + (" (+flush)" if mode == "always" else "")
        print(f"{label:<28}{total / elapsed:>12,.0f}{size / elapsed / 1e6:>10.1f}"
              f"{size / 1e6:>10.1f}")
        written = directory

    t0 = time.perf_counter()
    result = audit.verify([str(written)], key)
    elapsed = time.perf_counter() - t0
    assert result.ok, result.first_bad
    size = log_size(str(written))
    print(f"{'verify':<28}{result.records / elapsed:>12,.0f}{size / elapsed / 1e6:>10.1f}"
          f"{size / 1e6:>10.1f}")

    out = base / "export.msgpack"
    t0 = time.perf_counter()
    n = audit.export(str(written), key, out)
    elapsed = time.perf_counter() - t0
    print(f"{'export (incl. verify)':<28}{n / elapsed:>12,.0f}{size / elapsed / 1e6:>10.1f}"
          f"{out.stat().st_size / 1e6:>10.1f}")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
