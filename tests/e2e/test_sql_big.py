"""Texts over pgguard.sql.parse.MAX_CACHED_TEXT: parsed once for classification and
masking, with long IN lists of constants cut to their first constant, which changes
neither analysis."""

from __future__ import annotations

import importlib

import pytest
from harness.masking_db import CFG, load_catalog, make_pii_db

from pgguard.masking import SessionMasking
from pgguard.sql import parse as P

classify_mod = importlib.import_module("pgguard.policy.classify")

ITEMS = ", ".join(["1", "-2", "3.5", "'a''b'", "NULL", "true", "E'x\\\\y'", "''", "0"] * 1500)
BIG = [
    f"SELECT email FROM users WHERE id IN ({ITEMS}) AND name NOT IN ({ITEMS})",
    f"SELECT nextval('s') FROM users WHERE id IN ({ITEMS})",
    f"DELETE FROM users WHERE id IN ({ITEMS}) RETURNING ssn",
    f"SELECT * FROM users WHERE id IN ({ITEMS}, id + 1) OR id BETWEEN 1 AND 2",
    f"SELECT {ITEMS}",
    f"VALUES ({ITEMS})",
]


@pytest.fixture()
def catalog(pg):
    return load_catalog(make_pii_db(pg))


@pytest.mark.parametrize("sql", BIG, ids=[s[:40] for s in BIG])
def test_shrunk_parse_analyses_like_the_whole(catalog, sql, monkeypatch):
    assert len(sql) > P.MAX_CACHED_TEXT
    classify_mod.cache_clear()
    parses = P.cache_info()["parses"]
    cls = classify_mod.classify(sql)
    plans = SessionMasking(CFG, ["analysts"], catalog, hash_key=b"k").peek(sql)
    assert P.cache_info()["parses"] == parses + 1  # one parse for both
    classify_mod.cache_clear()
    monkeypatch.setattr(P, "_shrink", lambda js: js)
    assert classify_mod.classify(sql) == cls
    assert SessionMasking(CFG, ["analysts"], catalog, hash_key=b"k").peek(sql) == plans


def test_only_long_in_lists_of_constants_shrink():
    js = P._pg.parse_sql_json(BIG[0])
    assert len(P._shrink(js)) < len(js) // 100
    for sql in BIG[3:]:
        js = P._pg.parse_sql_json(sql)
        assert P._shrink(js) == js
