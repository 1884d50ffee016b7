"""Property tests: classify() never raises and only returns valid categories."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgguard import config
from pgguard.policy import CATEGORY_SEVERITY, Classification, Policy, cache_clear, classify

FRAGMENTS = [
    "SELECT", "select", "INSERT INTO", "UPDATE", "SET", "DELETE FROM", "DROP", "TABLE", "t",
    "users", "FROM", "WHERE", "AND", "OR", "(", ")", ",", ";", "'", '"', "$$", "$q$", "--",
    "/*", "*/", "\n", " ", "\\", "E'", "U&'", 'U&"', "\\0061", "1", "NULL", "nextval('s')",
    "pg_read_file('x')", "WITH d AS (", "RETURNING *", "FOR UPDATE", "COPY", "TO PROGRAM",
    "STDIN", "STDOUT", "DO", "BEGIN", "COMMIT", "ROLLBACK", "EXPLAIN", "ANALYZE", "PREPARE",
    "EXECUTE", "p", "AS", "INTO", "ROLE", "SESSION AUTHORIZATION", "CREATE", "TEMP",
    "FUNCTION", "LANGUAGE sql", "CALL", "LOCK", "set_config('role', 'x', false)", "::",
    "ARRAY[", "]", "CASE WHEN", "THEN", "END", "é", "\x00", "\ud800", "$1", "*", "=",
]

sqlish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(" ".join)
sqlish_tight = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
raw = st.binary(max_size=400).map(lambda b: b.decode("utf-8", errors="replace"))
surrogate = st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="surrogateescape"))
texts = st.one_of(sqlish, sqlish_tight, raw, surrogate, st.text(max_size=200))

_POLICY = Policy(config.parse({
    "identity": {"issuer": "https://idp.example/"},
    "connections": [{"name": "appdb", "user": "dev", "password_env": "X",
                     "grants": [{"groups": ["g"], "write": "allow"}]}],
}).connections[0])


def _check(cls: Classification) -> None:
    assert isinstance(cls, Classification)
    assert cls.category in CATEGORY_SEVERITY
    for stmt in cls.statements:
        assert stmt.category in CATEGORY_SEVERITY
        assert stmt.categories and stmt.categories <= set(CATEGORY_SEVERITY)
        assert isinstance(stmt.kind, str) and isinstance(stmt.reason, str)
    if cls.statements:
        assert cls.category == max((s.category for s in cls.statements),
                                   key=CATEGORY_SEVERITY.index)
    decision = _POLICY.decide(["g"], cls)
    assert decision.action in config.ACTIONS


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_classify_never_raises(sql):
    _check(classify(sql))


@settings(max_examples=200, deadline=None)
@given(texts, st.booleans())
def test_classify_uncached_and_flags(sql, standard_strings):
    cache_clear()
    _check(classify(sql, {}, standard_strings=standard_strings))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["SELECT 1", "DROP TABLE t", "INSERT INTO t VALUES (1)",
                                 "SET ROLE x", "COMMIT", "EXECUTE p", "SELEC"]),
                min_size=1, max_size=6))
def test_multi_statement_takes_the_worst(parts):
    cls = classify("; ".join(parts))
    single = [classify(p).category for p in parts]
    assert cls.category == max(single, key=CATEGORY_SEVERITY.index)
