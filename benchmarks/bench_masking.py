"""Rows per second of RowMasker.mask_datarow for a 10-column row.

Cases: nothing masked (passthrough and the walk), 1 column masked, all 10 masked, and
detectors on over the clear text columns (the same row again and again, so repeated
values hit the scan cache; the ``distinct`` cases use rows whose values all differ). No
database needed: the catalog is built from
in-memory relations.

    python benchmarks/bench_masking.py [--rows N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pgguard.config import MaskingConfig, MaskRule  # noqa: E402
from pgguard.masking import SessionMasking, SqlCatalog  # noqa: E402
from pgguard.masking.catalog import Relation  # noqa: E402

COLS = [("id", 23), ("name", 25), ("email", 25), ("ssn", 25), ("card", 25), ("phone", 1043),
        ("city", 25), ("note", 25), ("score", 701), ("created", 1184)]
VALUES = [b"12345", b"Alice Anderson", b"alice.anderson@example.com", b"432-29-7468",
          b"4181 5908 3016 6131", b"+1 293 555 7955", b"Springfield",
          b"Customer prefers morning calls; account reviewed", b"3.14159",
          b"2024-01-02 09:00:00+00"]
OID = 50000


def body() -> bytes:
    out = struct.pack("!h", len(VALUES))
    for v in VALUES:
        out += struct.pack("!i", len(v)) + v
    return out


def session(rules: tuple[MaskRule, ...], detectors: tuple[str, ...]) -> SessionMasking:
    rel = Relation(OID, "public", "t", "r",
                   tuple((i + 1, n, t) for i, (n, t) in enumerate(COLS)))
    cfg = MaskingConfig(rules=rules, detectors=detectors)
    return SessionMasking(cfg, ["bench"], SqlCatalog([rel]), hash_key=b"bench")


def distinct_rows(n: int) -> list[bytes]:
    """*n* rows whose text values all differ (defeats the scan cache), shaped like the
    rows of bench_masking_e2e.py: one e-mail address, an md5, ids inside text."""
    rows = []
    for g in range(n):
        vals = [b"%d" % g, b"name %d" % g, b"user%d@example.com" % g, b"city %d" % (g % 100),
                b"%d Main Street" % g, b"a note about nothing in particular %d" % g,
                hashlib.md5(b"%d" % g).hexdigest().encode(), b"label-%d" % g,
                b"%.1f" % (g * 1.5), b"2024-01-02 09:00:00+00"]
        rows.append(struct.pack("!h", len(vals))
                    + b"".join(struct.pack("!i", len(v)) + v for v in vals))
    return rows


def run(name: str, rules: tuple[MaskRule, ...], detectors: tuple[str, ...], n: int,
        distinct: bool = False) -> None:
    s = session(rules, detectors)
    plan = s.plan_result("SELECT * FROM t")
    fields = [(c, OID, i + 1, t, 0) for i, (c, t) in enumerate(COLS)]
    masker = s.row_masker(plan, fields)
    rows = distinct_rows(n) if distinct else [body()] * n
    fn = masker.mask_datarow
    start = time.perf_counter()
    for row in rows:
        fn(row)
    elapsed = time.perf_counter() - start
    mode = "passthrough" if masker.passthrough else f"{len(masker.masked)} masked"
    print(f"{name:<34} {n / elapsed:>12,.0f} rows/s   ({mode})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    n = ap.parse_args().rows
    t0 = time.perf_counter()
    s = session((MaskRule(("t.ssn",), "partial", 4),), ())
    for _ in range(1000):
        s._planner.plan_sql("SELECT * FROM t WHERE id = 1")
    print(f"{'plan (uncached parse + lineage)':<34} {1000 / (time.perf_counter() - t0):>12,.0f}"
          " statements/s")
    run("0 masked, detectors off", (), (), n)
    run("1 masked (partial)", (MaskRule(("t.ssn",), "partial", 4),), (), n)
    run("1 masked (hash)", (MaskRule(("t.email",), "hash"),), (), n)
    run("all 10 masked (redact)", (MaskRule(("t.*",), "redact"),), (), n)
    run("0 masked, detectors on", (), ("email", "ssn", "card", "phone", "iban", "secret"), n)
    global VALUES
    pii = VALUES
    VALUES = [b"12345", b"Alice", b"order 1234 shipped", b"Room 12", b"blue", b"v2",
              b"Springfield", b"Customer prefers morning calls; account reviewed", b"3.1",
              b"2024-01-02 09:00:00+00"]
    run("0 masked, detectors on, no PII", (), ("email", "ssn", "card", "phone", "iban",
                                               "secret"), n)
    VALUES = pii
    run("1 masked + detectors on", (MaskRule(("t.ssn",), "partial", 4),),
        ("email", "ssn", "card", "phone", "iban", "secret"), n)
    run("0 masked, detectors on, distinct", (), ("email", "ssn", "card", "phone", "iban",
                                                 "secret"), min(n, 100_000), distinct=True)
    run("1 masked (hash), distinct", (MaskRule(("t.email",), "hash"),), (), min(n, 100_000),
        distinct=True)


if __name__ == "__main__":
    main()
