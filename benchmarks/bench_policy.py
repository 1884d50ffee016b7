"""Per-statement cost of pgguard.policy.classify(), cold (cache miss) and cached, and of
classification plus masking plan of one huge statement.

Run: python benchmarks/bench_policy.py [--n 20000] [--big 1000000]

Cold uses a distinct text per call (a comment in it changes, so its literal-blind key
does too) and emptied caches (classification and the shared parse of pgguard.sql.parse),
so every call parses and walks; "new const" changes only a number each call, as pgbench's
simple protocol does (a hit by literal-blind key after the first); cached repeats one
text. Each figure is the best of three runs. For reference it also times
pglast.parse_sql (Python AST objects) and pglast.parser.parse_sql_json alone.

``--big N`` times ``SELECT abalance FROM pgbench_accounts WHERE aid IN (1, …, N)`` (N =
1,000,000 is 6.9 MB): the parser alone, classification, then the masking plan of the same
text (one column of the table masked), once each.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import pglast
from pglast import parser

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgguard import config  # noqa: E402
from pgguard.policy import Policy, cache_clear, classify  # noqa: E402

SHAPES = {
    "select one-liner": "SELECT * FROM users WHERE id = {i}",
    "select join+cte": (
        "WITH recent AS (SELECT user_id, max(created_at) AS last FROM orders "
        "WHERE created_at > now() - interval '30 days' GROUP BY user_id) "
        "SELECT u.id, u.email, r.last FROM users u JOIN recent r ON r.user_id = u.id "
        "WHERE u.id > {i} ORDER BY r.last DESC LIMIT 50"
    ),
    "insert": "INSERT INTO t (a, b, c) VALUES ({i}, 'x', now())",
    "3 statements": "BEGIN; UPDATE t SET a = {i} WHERE id = 1; COMMIT",
}


def _per_call_us(fn, n: int, before=None) -> float:
    """Best of three runs (the machine may be shared), in µs per call."""
    best = float("inf")
    for _ in range(3):
        if before is not None:
            before()
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--big", type=int, default=0, help="also time an IN list of this many")
    args = ap.parse_args()
    n = args.n
    policy = Policy(config.parse({
        "identity": {"issuer": "https://idp.example/"},
        "connections": [{"name": "appdb", "user": "dev", "password_env": "X",
                         "grants": [{"groups": ["g"], "write": "allow"}]}],
    }).connections[0])
    groups = ["g"]

    print(f"{'shape':18} {'stmts':>5} {'parse_sql':>10} {'json only':>10} "
          f"{'cold':>8} {'new const':>9} {'cached':>8} {'decide':>8}   (µs per call)")
    for name, template in SHAPES.items():
        texts = [template.format(i=i) for i in range(n)]
        distinct = [f"/* {i} */ " + template.format(i=i) for i in range(n)]
        stmts = len(classify(texts[0]).statements)
        ast_n = max(1, n // 10)
        ast = _per_call_us(lambda i, t=texts: pglast.parse_sql(t[i]), ast_n)
        js = _per_call_us(lambda i, t=texts: parser.parse_sql_json(t[i]), n)
        cold = _per_call_us(lambda i, t=distinct: classify(t[i]), n, before=cache_clear)
        same_key = _per_call_us(lambda i, t=texts: classify(t[i]), n, before=cache_clear)
        one = texts[0]
        classify(one)
        cached = _per_call_us(lambda i, t=one: classify(t), n)
        cls = classify(one)
        dec = _per_call_us(lambda i, c=cls: policy.decide(groups, c), n)
        print(f"{name:18} {stmts:5d} {ast:10.1f} {js:10.1f} {cold:8.1f} {same_key:9.1f} "
              f"{cached:8.2f} {dec:8.2f}")
        cache_clear()
    if args.big:
        _big(args.big)


def _big(count: int) -> None:
    """Time the analyses of one IN list of *count* constants (seconds, once each)."""
    from pgguard.config import MaskingConfig, MaskRule
    from pgguard.masking import SessionMasking
    from pgguard.masking.catalog import Relation, SqlCatalog
    parse = importlib.import_module("pgguard.sql.parse")

    sql = ("SELECT abalance FROM pgbench_accounts WHERE aid IN ("
           + ",".join(map(str, range(1, count + 1))) + ")")
    rel = Relation(16400, "public", "pgbench_accounts", "r",
                   ((1, "aid", 23), (2, "bid", 23), (3, "abalance", 23), (4, "filler", 1042)))
    masking = SessionMasking(
        MaskingConfig(rules=(MaskRule(("pgbench_accounts.filler",), "redact"),),
                      detectors=(), present=True),
        ["g"], SqlCatalog([rel]), hash_key=b"k")
    cache_clear()
    print(f"\nIN list of {count} constants: {len(sql) / 1e6:.2f} MB of text")
    for label, fn in (("parse_sql_json alone", lambda: parser.parse_sql_json(sql)),
                      ("classify", lambda: classify(sql)),
                      ("masking plan (same text)", lambda: masking.peek(sql))):
        start = time.perf_counter()
        fn()
        print(f"  {label:26} {time.perf_counter() - start:7.2f} s")
    print(f"  parser calls: {parse.cache_info()['parses']}")


if __name__ == "__main__":
    main()
