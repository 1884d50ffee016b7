"""policy.inert: the shapes that run no user code (so cannot change client_encoding), and
ClientText's use of them in an unsynced pipeline."""

from __future__ import annotations

import pytest

from pgguard import policy
from pgguard.policy.inert import builtin_types
from pgguard.wire.clienttext import ClientText, Judgement
from pgguard.wire.messages import BIND, EXECUTE, PARSE, SYNC


@pytest.mark.parametrize("sql", [
    "BEGIN", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "SAVEPOINT a",
    "RELEASE SAVEPOINT a", "SELECT 1", "SELECT 'é' AS x, NULL, $1", "VALUES (1, $2)",
    "BEGIN; SELECT 1",
])
def test_inert(sql):
    assert all(st.inert for st in policy.classify(sql).statements)


@pytest.mark.parametrize("sql", [
    "COMMIT", "ROLLBACK", "ROLLBACK TO SAVEPOINT a", "SELECT f()", "SELECT 1 FROM t",
    "SELECT 1::int", "SELECT 'x'::text", "SELECT 1 + 1", "SELECT 1 WHERE true",
    "SELECT 1 LIMIT 1", "SELECT 1 UNION SELECT 2", "SELECT 1 INTO t", "SELECT (SELECT 1)",
    "WITH a AS (SELECT 1) SELECT 1", "SELECT 1 FOR UPDATE", "SELECT DISTINCT 1",
    "SET client_encoding TO LATIN1", "RESET ALL", "DISCARD ALL", "DO $$ BEGIN END $$",
    "EXECUTE p", "VALUES (f())", "SELECT ROW(1)", "SELECT ARRAY[1]", "SELECT 1 ORDER BY 1",
    "BEGIN; SELECT f()", "SELECT * FROM t", "TABLE t", "CALL p()",
])
def test_not_inert(sql):
    assert not all(st.inert for st in policy.classify(sql).statements)


def test_builtin_types():
    assert builtin_types(()) and builtin_types((0, 25, 16383))
    assert not builtin_types((25, 16384))


def test_an_unsynced_inert_run_leaves_the_encoding_settled():
    t = ClientText("UTF8")
    t.report("LATIN9")
    t.sent(PARSE)
    t.sent(BIND, inert=True)
    t.sent(EXECUTE, inert=True)
    assert t.judge(False) == (Judgement.DECODE, "")
    t.sent(BIND)
    t.sent(EXECUTE, inert=True)
    assert t.judge(False)[0] is Judgement.REFUSE
    mark = t.sent(SYNC)
    assert t.judge(False)[0] is Judgement.WAIT
    t.ready(mark)
    assert t.judge(False) == (Judgement.DECODE, "")
