"""One parse per statement text (pgguard.sql.parse): policy classification and the masking
planner share one parser call through one bounded cache. Pure: no database, no sockets
(the catalog is built in memory)."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path

import pytest

from pgguard import policy
from pgguard.config import MaskingConfig, MaskRule
from pgguard.masking import SessionMasking, SqlCatalog
from pgguard.masking.catalog import Relation
from pgguard.sql import nodes
from pgguard.sql import parse as sql_parse

CORPUS = tomllib.loads((Path(__file__).parents[1] / "corpus" / "statements.toml").read_text())["case"]

USERS = Relation(70001, "public", "users", "r", ((1, "id", 23), (2, "email", 25), (3, "ssn", 25)))
USER_EMAILS = Relation(70002, "public", "user_emails", "v", ((1, "id", 23), (2, "email", 25)),
                       definition=" SELECT users.id, users.email FROM users;")
CFG = MaskingConfig(rules=(MaskRule(columns=("public.users.email",), strategy="hash"),
                           MaskRule(columns=("public.users.ssn",), strategy="partial", keep=4)),
                    detectors=())

_unique = itertools.count()


def _session() -> SessionMasking:
    return SessionMasking(CFG, ["analysts"], SqlCatalog([USERS, USER_EMAILS]), hash_key=b"k")


def _parses() -> int:
    return sql_parse.cache_info()["parses"]


def _fresh(sql: str) -> str:
    """*sql* with a comment no other test used, so no cache already holds it."""
    return f"{sql} -- t{next(_unique)}"


@pytest.fixture(autouse=True)
def _empty_caches():
    policy.cache_clear()   # the classification cache and the shared parse cache
    yield
    policy.cache_clear()


def test_classified_and_planned_statement_is_parsed_once():
    sql = _fresh("SELECT id, email FROM users WHERE ssn = '1'")
    before = _parses()
    cls = policy.classify(sql)
    plans = _session().plan(sql)
    assert _parses() - before == 1
    assert cls.category == "read"
    assert [c.mask.strategy if c.mask else None for c in plans[0].columns] == [None, "hash"]
    # A second session, and the same text classified again: still no new parse.
    _session().plan(sql)
    policy.classify(sql)
    assert _parses() - before == 1


def test_planned_first_then_classified_is_parsed_once():
    sql = _fresh("SELECT ssn FROM users")
    before = _parses()
    _session().peek(sql)
    assert policy.classify(sql).kind == "SELECT"
    assert _parses() - before == 1


def test_a_different_text_parses_again():
    before = _parses()
    policy.classify(_fresh("SELECT 1"))
    policy.classify(_fresh("SELECT 1"))
    assert _parses() - before == 2


def test_both_see_the_same_parse():
    sql = _fresh("SELECT email FROM users; DELETE FROM users")
    parsed = sql_parse.parse(sql)
    assert sql_parse.parse(sql) is parsed
    assert [s.text for s in parsed.statements] == ["SELECT email FROM users",
                                                   f"DELETE FROM users -- t{_last(sql)}"]
    assert [st.text for st in policy.classify(sql).statements] == \
        [s.text for s in parsed.statements]
    assert [nodes.node(s.node)[0] for s in parsed.statements] == ["SelectStmt", "DeleteStmt"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.error = "x"  # type: ignore[misc]


def _last(sql: str) -> str:
    return sql.rsplit("-- t", 1)[1]


def test_view_definitions_are_parsed_once_for_every_session():
    sql = _fresh("SELECT * FROM user_emails")
    before = _parses()
    for _ in range(3):
        plans = _session().plan(sql)
        assert plans[0].columns[1].mask.strategy == "hash"
    assert _parses() - before == 2   # the statement and the view's definition


def test_a_parse_error_is_parsed_once_and_cached():
    sql = _fresh("SELEC email FROM users")
    before = _parses()
    cls = policy.classify(sql)
    plans = _session().plan(sql)
    assert _parses() - before == 1
    assert cls.category == "unknown" and cls.statements[0].reason.startswith("cannot parse: ")
    assert plans[0].kind == "unknown" and plans[0].fallback is not None
    parsed = sql_parse.parse(sql)
    assert parsed.statements == () and "syntax error" in parsed.error


def test_the_cache_is_bounded_by_entries(monkeypatch):
    monkeypatch.setattr(sql_parse._CACHE, "max_entries", 3)
    texts = [_fresh("SELECT 1") for _ in range(10)]
    for t in texts:
        sql_parse.parse(t)
    assert sql_parse.cache_info()["entries"] == 3
    before = _parses()
    sql_parse.parse(texts[-1])          # still cached
    assert _parses() == before
    sql_parse.parse(texts[0])           # evicted: parsed again
    assert _parses() == before + 1


def test_the_cache_is_bounded_by_size(monkeypatch):
    monkeypatch.setattr(sql_parse._CACHE, "max_cost", 4000)
    for _ in range(50):
        sql_parse.parse(_fresh("SELECT a, b, c FROM t WHERE x = 1"))
    info = sql_parse.cache_info()
    assert 0 < info["entries"] < 50
    assert info["cost"] <= 4000


def test_huge_texts_are_never_cached():
    huge = "SELECT 1 " + " " * (sql_parse.MAX_CACHED_TEXT + 10)
    entries = sql_parse.cache_info()["entries"]
    before = _parses()
    assert sql_parse.parse(huge).error is None
    # Kept for the next caller only (masking after classification), then parsed again.
    assert sql_parse.parse(huge).error is None
    assert _parses() - before == 1
    assert sql_parse.parse(huge).error is None
    assert _parses() - before == 2
    assert sql_parse.cache_info()["entries"] == entries
    assert policy.classify(huge).category == "read"
    assert policy.cache_info()["entries"] == 0


def test_policy_cache_info_reports_both_caches():
    sql = _fresh("SELECT 1")
    policy.classify(sql)
    policy.classify(sql)
    info = policy.cache_info()
    assert info["entries"] == 1 and info["hits"] == 1
    assert info["parse_entries"] == 1 and info["parse_misses"] == 1
    policy.cache_clear()
    info = policy.cache_info()
    assert info["entries"] == 0 and info["parse_entries"] == 0


@pytest.mark.parametrize("standard_strings", [True, False])
def test_standard_conforming_strings_on_and_off_give_the_corpus_categories(standard_strings):
    for case in CORPUS:
        cls = policy.classify(case["sql"], standard_strings=standard_strings)
        if not standard_strings and "\\" in case["sql"]:
            assert cls.category == "unknown", case["sql"]
            assert "standard_conforming_strings is off" in cls.statements[0].reason
        else:
            assert cls.category == case["category"], case["sql"]


def test_standard_strings_off_does_not_parse_nor_poison_the_cache():
    sql = _fresh("SELECT 'a\\''; DROP TABLE t; --'")
    before = _parses()
    assert policy.classify(sql, standard_strings=False).category == "unknown"
    assert _parses() == before          # refused before any parse
    assert policy.classify(sql).category == "read"      # as the server reads it when on
    assert policy.classify(sql, standard_strings=False).category == "unknown"
    assert _parses() - before == 1
