"""Issue 11, class 2: option lists read as PostgreSQL reads them (the last option wins).

Each repeated-option form below is first run directly against PostgreSQL, so the test
states what PostgreSQL will actually do with it; the gateway's verdict must match: a
statement PostgreSQL executes is a write for a read-only grant, one it only plans is not.
"""

from __future__ import annotations

import psycopg
import pytest
from harness.attack import MODES, assert_leaks_clear, assert_no_leak

pytestmark = pytest.mark.usefixtures("reset_victims")

STILL_THERE = "SELECT count(*) FROM victims"

# EXPLAIN option lists that make PostgreSQL execute the statement (the last ANALYZE wins;
# ANALYZE with no value is true).
EXECUTES = [
    "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM victims",
    "EXPLAIN (ANALYZE off, ANALYZE on) DELETE FROM victims",
    "EXPLAIN (ANALYZE 0, ANALYZE) DELETE FROM victims",
    "EXPLAIN (ANALYZE 'off', VERBOSE, ANALYZE 'true') DELETE FROM victims",
    "EXPLAIN (ANALYSE false, ANALYZE 1) UPDATE victims SET label = 'x'",
    "EXPLAIN (ANALYZE 'false', BUFFERS, ANALYZE 'On') INSERT INTO victims VALUES (99, 'x')",
    "EXPLAIN (ANALYZE FALSE, COSTS off, ANALYZE TRUE) "
    "WITH d AS (DELETE FROM victims RETURNING 1) SELECT count(*) FROM d",
    "EXPLAIN (ANALYZE off, ANALYZE on, ANALYZE off, ANALYZE) "
    "MERGE INTO victims v USING (SELECT 1 AS id) s ON v.id = s.id WHEN MATCHED THEN DELETE",
    "EXPLAIN (FORMAT json, ANALYZE \"off\", ANALYZE \"on\") DELETE FROM victims",
]
# ... and lists where it only plans (the last ANALYZE is false).
PLANS_ONLY = [
    "EXPLAIN (ANALYZE true, ANALYZE false) DELETE FROM victims",
    "EXPLAIN (ANALYZE, ANALYZE off) DELETE FROM victims",
]

def _direct_runs(attack_db, sql: str) -> bool:
    """Whether PostgreSQL itself executes *sql* (run in a rolled-back transaction)."""
    with psycopg.connect(attack_db.pg.dsn(attack_db.name)) as conn:
        before = conn.execute(STILL_THERE).fetchone()[0]
        before_labels = conn.execute("SELECT string_agg(label, ',' ORDER BY id) "
                                     "FROM victims").fetchone()[0]
        conn.execute(sql)
        after = conn.execute(STILL_THERE).fetchone()[0]
        labels = conn.execute("SELECT string_agg(label, ',' ORDER BY id) "
                              "FROM victims").fetchone()[0]
        conn.rollback()
    return (before, before_labels) != (after, labels)


@pytest.mark.parametrize("sql", EXECUTES)
def test_postgres_executes_when_the_last_analyze_is_true(attack_db, sql):
    assert _direct_runs(attack_db, sql)


@pytest.mark.parametrize("sql", PLANS_ONLY)
def test_postgres_only_plans_when_the_last_analyze_is_false(attack_db, sql):
    assert not _direct_runs(attack_db, sql)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", EXECUTES)
def test_read_only_grant_cannot_run_a_write_under_explain(reader, attack_db, sql, mode):
    before = attack_db.query("SELECT id, label FROM victims ORDER BY id")
    out = reader.run(sql, mode)
    after = attack_db.query("SELECT id, label FROM victims ORDER BY id")
    assert after == before, f"the write ran: {out.rows[:3]}"
    assert out.sqlstate == "42501" and out.message.startswith("pgguard:"), out.texts[:2]


@pytest.mark.parametrize("sql", PLANS_ONLY)
def test_explain_that_only_plans_is_a_read(reader, attack_db, sql):
    """What PostgreSQL only plans is judged as the plain EXPLAIN it is."""
    plain = reader.run("EXPLAIN DELETE FROM victims")
    assert plain.ok, plain.texts[:2]
    out = reader.run(sql)
    assert out.ok, out.texts[:2]
    assert attack_db.value(STILL_THERE) == 5


def test_explain_analyze_forms_that_already_execute_are_refused(reader, attack_db):
    for sql in ["EXPLAIN ANALYZE DELETE FROM victims",
                "EXPLAIN (ANALYZE) DELETE FROM victims",
                "EXPLAIN (ANALYZE true) DELETE FROM victims",
                "EXPLAIN ANALYZE VERBOSE DELETE FROM victims",
                "EXPLAIN (VERBOSE, ANALYZE on, COSTS off) DELETE FROM victims"]:
        out = reader.run(sql)
        assert out.sqlstate == "42501", (sql, out.texts[:2])
    assert attack_db.value(STILL_THERE) == 5


# --- other option-bearing statements -------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "VACUUM (FULL false, FULL true) victims",
    "VACUUM (ANALYZE false, ANALYZE true) victims",
    "ANALYZE (VERBOSE false, VERBOSE true) victims",
])
def test_postgres_accepts_repeated_maintenance_options_and_the_grant_refuses(
        reader, attack_db, sql):
    with psycopg.connect(attack_db.pg.dsn(attack_db.name), autocommit=True) as conn:
        conn.execute(sql)  # PostgreSQL takes repeated options here (last wins)
    out = reader.run(sql)
    assert out.sqlstate == "42501", out.texts[:2]


COPY_REPEATED = [
    "COPY (SELECT id, ssn, email FROM users) TO STDOUT (FORMAT binary, FORMAT text)",
    "COPY (SELECT id, ssn, email FROM users) TO STDOUT (FORMAT csv, FORMAT binary)",
    "COPY users (ssn, email) TO STDOUT (DELIMITER ',', DELIMITER '|')",
    "COPY users TO STDOUT (FORMAT csv, QUOTE '''', QUOTE '\"')",
    "COPY users TO STDOUT (FORMAT csv, HEADER false, HEADER true)",
    "COPY users TO STDOUT WITH CSV CSV",
]


@pytest.mark.parametrize("sql", COPY_REPEATED)
def test_postgres_refuses_repeated_copy_options(attack_db, sql):
    with psycopg.connect(attack_db.pg.dsn(attack_db.name)) as conn, \
            pytest.raises(psycopg.errors.SyntaxError, match="conflicting or redundant"):
        with conn.cursor().copy(sql):
            pass


def _copy(client, sql: str) -> tuple[list[str], psycopg.Error | None]:
    texts: list[str] = []
    try:
        with client.conn.cursor().copy(sql) as copy:
            for data in copy:
                texts.append(bytes(data).decode("utf-8", "replace"))
    except psycopg.Error as exc:
        texts += [str(exc), exc.diag.message_detail or "", exc.diag.context or ""]
        return texts, exc
    return texts, None


@pytest.mark.parametrize("sql", COPY_REPEATED)
def test_repeated_copy_options_leak_nothing(reader, needles, sql):
    from harness.attack import Outcome
    texts, err = _copy(reader, sql)
    assert err is not None
    assert_no_leak(Outcome(texts=texts), needles)


@pytest.mark.parametrize("sql", [
    "COPY (SELECT id, ssn, email FROM users) TO STDOUT (FORMAT csv, DELIMITER '|')",
    "COPY (SELECT id, ssn, email FROM users) TO STDOUT (FORMAT text, NULL 'x', "
    "DELIMITER ';')",
    "COPY users (ssn, email) TO STDOUT (FORMAT binary)",
    "COPY users TO STDOUT (FORMAT csv, QUOTE '''', FORCE_QUOTE *)",
    "COPY users TO STDOUT WITH BINARY",
    "COPY users TO STDOUT WITH CSV HEADER QUOTE AS '-' ESCAPE AS '*'",
])
def test_copy_options_mask_the_format_postgres_writes(reader, officer, needles, sql):
    from harness.attack import Outcome
    texts, err = _copy(reader, sql)
    assert err is None, texts[-3:]
    assert_no_leak(Outcome(texts=texts), needles)
    clear, err = _copy(officer, sql)
    assert err is None
    assert_leaks_clear(Outcome(texts=clear), needles)


# --- generated option lists -----------------------------------------------------------------

_VALUES = ["", " true", " false", " on", " off", " 1", " 0", " 'true'", " 'off'", " TRUE",
           " yes", " 2"]
_NOISE = ["VERBOSE", "COSTS off", "FORMAT text", "SETTINGS", "SUMMARY false", "BUFFERS"]


def _option_lists(n: int) -> list[str]:
    import random
    rnd = random.Random(11)
    out = []
    for _ in range(n):
        items = [f"ANALYZE{rnd.choice(_VALUES)}" for _ in range(rnd.randint(1, 4))]
        for _ in range(rnd.randint(0, 2)):
            items.insert(rnd.randint(0, len(items)), rnd.choice(_NOISE))
        out.append(", ".join(items))
    return out


@pytest.mark.parametrize("options", _option_lists(40))
def test_generated_explain_option_lists_agree_with_postgres(reader, attack_db, options):
    """Whatever the list, the read-only grant is refused exactly when PostgreSQL would
    run the DELETE (or the list is one PostgreSQL rejects), and nothing is deleted."""
    sql = f"EXPLAIN ({options}) DELETE FROM victims"
    try:
        runs = _direct_runs(attack_db, sql)
        rejected = False
    except psycopg.Error:
        runs, rejected = False, True
    out = reader.run(sql)
    assert attack_db.value(STILL_THERE) == 5
    if runs:
        assert out.sqlstate == "42501" and out.message.startswith("pgguard:"), out.texts[:2]
    elif rejected:
        assert not out.ok
    else:
        assert out.ok, out.texts[:2]


@pytest.mark.parametrize("sql", [
    "COPY users TO STDOUT (ENCODING 'LATIN1')",
    "COPY (SELECT ssn, email FROM users) TO STDOUT (FORMAT csv, ENCODING 'WIN1252')",
    "COPY users TO STDOUT (ENCODING 'SJIS')",
    "COPY users TO STDOUT (FORMAT csv, FORMAT text, ENCODING 'UTF8')",
])
def test_copy_in_another_encoding_is_refused_under_masking(reader, officer, needles, sql):
    """The masker splits and decodes rows in the session's client_encoding: a COPY that
    converts them to another one is refused; an exempt user gets them as PostgreSQL
    writes them (an encoding that is not ASCII-safe is refused for everyone)."""
    from harness.attack import Outcome
    texts, err = _copy(reader, sql)
    assert err is not None and str(err).startswith("pgguard:"), texts[-3:]
    assert_no_leak(Outcome(texts=texts), needles)
    clear, err = _copy(officer, sql)
    if "SJIS" in sql:
        assert err is not None and "SJIS" in str(err)
    elif "FORMAT text" not in sql:
        assert err is None, clear[-3:]
