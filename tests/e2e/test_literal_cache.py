"""The literal-blind caches: the scanner's keys, and analyses reused across constants only
when they never read a constant's value (classification and masking plan alike)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
from harness.lineage_cases import CASES as LINEAGE_CASES
from harness.masking_db import CFG, load_catalog, make_pii_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgguard.masking import SessionMasking
from pgguard.sql.literals import literal_key, shift_offset
from pgguard.sql.parse import literals_covered, parse

classify_mod = importlib.import_module("pgguard.policy.classify")
classify = classify_mod.classify

CORPUS = Path(__file__).parents[1] / "corpus"


def _corpus_sql() -> list[str]:
    out = []
    for name in ("statements.toml", "options.toml"):
        with open(CORPUS / name, "rb") as f:
            data = tomllib.load(f)
        for cases in data.values():
            if isinstance(cases, list):
                out.extend(c["sql"] for c in cases if isinstance(c, dict) and "sql" in c)
    return out


CORPUS_SQL = _corpus_sql()
EXTRA_SQL = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 77;",
    "SELECT set_config('role', 'x', false)",
    "SELECT set_config('work_mem', 'x', false)",
    "SET standard_conforming_strings = 'off'",
    "SET client_encoding = 'UTF8'",
    "COPY users TO '/tmp/x'",
    "DO 'BEGIN PERFORM 1; END'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "PREPARE p AS SELECT * FROM users WHERE id = 5",
    "SELECT 'users'::regclass, to_regclass('users')",
    "SELECT email FROM users WHERE name = E'a\\'b' AND id IN (1, 2.5, 1e3, 0x1F)",
    "SELECT $q$it's$q$, U&'d\\0061t', B'101', X'1F', N'n' /* 'c' /* nested */ */ -- 'x'",
    "SELECT \"we'ird\", 'é' || 'ü' FROM users ORDER BY 1 LIMIT 10 OFFSET 3",
    "SELECT 1; SELECT 'two' ;  SELECT 3.5",
]
ALL_SQL = [s for s in CORPUS_SQL + EXTRA_SQL + [c[0] for c in LINEAGE_CASES] if "\x00" not in s]
KEYED_SQL = [s for s in ALL_SQL if (lk := literal_key(s)) is not None and lk.spans]


# -- the scanner -------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "key"), [
    ("SELECT 1", "SELECT \x00i"),
    ("SELECT 2147483647, 2147483648, 1.5, .5, 1e3, 0x1F, 1_000",
     "SELECT \x00i, \x00f, \x00f, \x00f, \x00f, \x00i, \x00i"),
    ("SELECT 'a''b', E'a\\'b', e'\\\\', $$x'$$, $t$ $$ $t$",
     "SELECT \x00s, \x00e, \x00e, \x00d, \x00d"),
    ("SELECT U&'x', u&\"col'\", B'1', x'F', N'n'", "SELECT \x00u, u&\"col'\", \x00b, \x00x, \x00n"),
    ("SELECT \"a'b\" FROM t -- it's\n", "SELECT \"a'b\" FROM t -- it's\n"),
    ("SELECT /* it's /* 'nested' */ still */ 5", "SELECT /* it's /* 'nested' */ still */ \x00i"),
    ("SELECT $1, a$b$c, f$1", "SELECT $1, a$b$c, f$1"),
    ("SELECT x'", None),                      # unterminated string
    ("SELECT \"x", None),                     # unterminated quoted identifier
    ("SELECT /* /* */ 1", None),              # unterminated nested comment
    ("SELECT $a$ x", None),                   # unterminated dollar quote
    ("SELECT E'\\'", None),                   # escaped quote: still open
    ("SELECT 'a'\n'b'", None),                # continued string: one constant
    ("SELECT 'a' -- c\n 'b'", None),
    ("SELECT 123abc", None),                  # trailing junk
    ("SELECT 1..2", None),
    ("SELECT $1abc", None),
    ("SELECT 'a\x00'", None),
    ("SELECT '\ud800'", None),               # a lone surrogate: cannot be encoded
    ("SELECT U&'\\zzzz'", None),              # U&'' escapes may be invalid
    ("SELECT E'\\u12'", None),                # so may E'' Unicode, octal, hex escapes
    ("SELECT E'\\\\x'", None),                # (conservative: \\ then x)
    ("SELECT E'\\n\\q'", "SELECT \x00e"),
    ("SELECT B'12', X'g'", None),
])
def test_scanner_keys(sql, key):
    lk = literal_key(sql)
    assert (lk.key if lk else None) == key


def test_scanner_standard_strings_off():
    assert literal_key("SELECT 'a\\'", standard_strings=False) is None
    assert literal_key("SELECT 'a\\'") is not None  # on: the backslash is a character
    assert literal_key("SELECT 'a'", standard_strings=False) is not None


def test_shift_offset():
    old = ((5, 6), (10, 13))
    new = ((5, 9), (13, 14))
    assert shift_offset(0, old, new) == 0
    assert shift_offset(6, old, new) == 9
    assert shift_offset(13, old, new) == 14


@pytest.mark.parametrize("sql", [
    "FETCH 5 FROM c",                          # consumed by the grammar
    "SELECT 1::float(30)",                     # decides float4 or float8
    "COPY users TO '/tmp/x'",                  # a file name, no A_Const
    "DO 'BEGIN END'",
    "SELECT U&'a' UESCAPE '!'",
])
def test_consumed_constants_are_not_covered(sql):
    lk = literal_key(sql)
    parsed = parse(sql)
    assert lk is None or parsed.error is not None or not literals_covered(sql, parsed, lk)


def test_negative_constants_are_covered():
    sql = "SELECT - 5, -2.5, 3 - 4"
    lk = literal_key(sql)
    assert lk is not None and literals_covered(sql, parse(sql), lk)


# -- classification ----------------------------------------------------------------------

def _fresh(sql: str):
    return classify_mod._classify_uncached(sql)[0]


_FORMS = {
    "i": st.integers(0, 2**31 - 1).map(str),
    "f": st.one_of(st.integers(2**31, 10**20).map(str),
                   st.tuples(st.integers(0, 10**6), st.integers(0, 999))
                   .map(lambda t: f"{t[0]}.{t[1]}")),
    # Surrogates, which make the parse fail, included.
    "s": st.text(st.characters(blacklist_characters="\x00"),
                 max_size=12).map(lambda t: "'" + t.replace("'", "''") + "'"),
    # With escapes that make the parse fail (\u12, \xFF, \400).
    "e": st.one_of(st.text("abc xyz09'\\", max_size=8)
                   .map(lambda t: "E'" + t.replace("\\", "\\\\").replace("'", "\\'") + "'"),
                   st.sampled_from(["E'\\u12'", "E'\\xFF'", "E'\\400'", "E'\\ud800'",
                                    "E'\\n\\t'", "E'\\q'"])),
    "d": st.text("abc'é ", max_size=8).map(lambda t: "$$" + t + "$$"),
    "u": st.text("abcé\\z0", max_size=5).map(lambda t: f"U&'{t}'"),
    "n": st.text("abc", max_size=5).map(lambda t: f"N'{t}'"),
    "b": st.text("012", max_size=6).map(lambda t: f"B'{t}'"),
    "x": st.text("0123456789abcdefg", max_size=6).map(lambda t: f"X'{t}'"),
}


@st.composite
def variants(draw, sqls=KEYED_SQL):
    """A text with a key and the text with other constants of the same lexical forms
    (some of which the scanner refuses: the variant then has no key, or another one)."""
    sql = draw(st.sampled_from(sqls))
    lk = literal_key(sql)
    assert lk is not None
    pieces, prev = [], 0
    forms = [lk.key[i + 1] for i, c in enumerate(lk.key) if c == "\x00"]
    for (start, end), form in zip(lk.spans, forms, strict=True):
        pieces.append(sql[prev:start])
        pieces.append(draw(_FORMS[form]))
        prev = end
    pieces.append(sql[prev:])
    return sql, "".join(pieces)


def test_key_mates_share_their_key():
    a = literal_key("SELECT * FROM t WHERE a = 'x''y' AND b = 5")
    b = literal_key("SELECT * FROM t WHERE a = 'é' AND b = 2147483647")
    assert a is not None and b is not None and a.key == b.key


def test_corpus_has_keyed_texts():
    assert len(KEYED_SQL) > 200


@settings(max_examples=400, deadline=None)
@given(variants())
def test_cached_classification_equals_fresh(pair):
    sql, variant = pair
    classify_mod.cache_clear()
    classify(sql)
    assert classify(variant) == _fresh(variant)
    assert classify(variant) == _fresh(variant)  # now from the exact-text cache


def test_pgbench_statements_hit_the_cache():
    classify_mod.cache_clear()
    parses = classify_mod.cache_info()["parses"]
    for aid in range(1, 101):
        assert classify(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid * 37};"
                        ).category == "read"
    info = classify_mod.cache_info()
    assert info["key_hits"] == 99
    assert info["parses"] == parses + 1  # one parse for a hundred texts


@pytest.mark.parametrize(("a", "b"), [
    ("SELECT set_config('role', 'x', false)", "SELECT set_config('work_mem', 'x', false)"),
    ("SELECT set_config('work_mem', 'x', false)", "SELECT set_config('role', 'x', false)"),
    ("SET standard_conforming_strings = 'on'", "SET standard_conforming_strings = 'off'"),
    ("SET standard_conforming_strings = 1", "SET standard_conforming_strings = 0"),
    ("SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"),
    ("SET work_mem = '64MB'", "SET role = 'x'"),
])
def test_literal_dependent_classifications_never_shared(a, b):
    classify_mod.cache_clear()
    classify(a)
    assert classify(b) == _fresh(b)
    assert classify_mod.cache_info()["key_hits"] == 0


def test_set_on_off_keywords_have_distinct_keys():
    on = literal_key("SET standard_conforming_strings = on")
    off = literal_key("SET standard_conforming_strings = off")
    assert on is not None and off is not None and on.key != off.key
    classify_mod.cache_clear()
    assert classify("SET standard_conforming_strings = on").category == "txn"
    assert classify("SET standard_conforming_strings = off").category == "privileged"


# -- masking plans -----------------------------------------------------------------------

@pytest.fixture()
def catalog(pg):
    return load_catalog(make_pii_db(pg))


def _session(catalog) -> SessionMasking:
    return SessionMasking(CFG, ["analysts"], catalog, hash_key=b"unit-test-key")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=variants())
def test_cached_plan_equals_fresh(catalog, pair):
    sql, variant = pair
    warm = _session(catalog)
    warm.peek(sql)
    assert warm.peek(variant) == _session(catalog)._planner.plan_sql(variant)


def test_pgbench_plans_hit_the_cache(catalog):
    s = _session(catalog)
    for aid in range(1, 51):
        s.peek(f"SELECT email, name FROM users WHERE id = {aid};")
    assert s.key_hits == 49


def test_ordinal_order_by_is_not_shared(catalog):
    s = _session(catalog)
    a = s.peek("SELECT id, email FROM users ORDER BY 1")
    b = s.peek("SELECT id, email FROM users ORDER BY 2")
    assert s.key_hits == 0
    assert b == _session(catalog)._planner.plan_sql("SELECT id, email FROM users ORDER BY 2")
    assert a is not b
