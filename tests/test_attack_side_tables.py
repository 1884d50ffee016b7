"""Issue 11, class 8: other sessions' text, and masked data laundered through server state.

``pg_stat_get_backend_activity()`` and friends return other sessions' query texts; a
session that filtered on a clear value leaves it there. Storing masked data where a later
statement or another session reads it (sequences, advisory locks, settings,
``application_name``, notification payloads, large objects, WAL messages, timing, signals,
SQL run from text) is laundering: refused (42501), and the side effect checked directly in
the database. User code (functions, operators, domain checks, views) may store what it is
given: masked arguments are refused too.
"""

from __future__ import annotations

import psycopg
import pytest
from harness.attack import MODES, leaks

SECRET_QUERY = "SELECT id FROM users WHERE name = 'Mallory Kowalski'"

# User code that stores what it is given (a function, an operator, a domain check, a view).
MODULE_SQL = """
CREATE TABLE loot (v text);
CREATE FUNCTION leak(t text) RETURNS text LANGUAGE sql
    AS 'INSERT INTO loot VALUES (t) RETURNING t';
CREATE FUNCTION leak_check(t text) RETURNS boolean LANGUAGE sql
    AS 'INSERT INTO loot VALUES (t) RETURNING true';
CREATE OPERATOR ### (rightarg = text, function = leak);
CREATE DOMAIN checked AS text CHECK (leak_check(VALUE));
CREATE VIEW leaky AS SELECT id, leak(ssn) AS x FROM users;
CREATE TABLE guarded AS SELECT id, email FROM users;
CREATE POLICY snoop ON guarded USING (leak(email) IS NOT NULL);
ALTER TABLE guarded ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
"""


@pytest.fixture(scope="module")
def other_session(attack_db):
    """A direct session of the application (same role as the gateway's) whose last query
    text holds a clear value; it stays open, idle, for the module."""
    conn = psycopg.connect(attack_db.owner_dsn(), autocommit=True)
    conn.execute(SECRET_QUERY).fetchall()
    yield conn
    conn.close()


ACTIVITY = {
    "backend_activity": "SELECT pg_stat_get_backend_activity(s) FROM "
                        "pg_stat_get_backend_idset() s",
    "get_activity": "SELECT query FROM pg_stat_get_activity(NULL)",
    "activity-view-query": "SELECT query FROM pg_stat_activity",
    "activity-view-star": "SELECT * FROM pg_stat_activity",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(ACTIVITY))
def test_other_sessions_query_text_is_not_clear(reader, other_session, needles, name, mode):
    out = reader.run(ACTIVITY[name], mode)
    found = leaks(out.texts, needles)
    assert not found, f"another session's text: {found[:3]}"


def test_the_activity_probe_is_real(attack_db, other_session, needles):
    rows = attack_db.query(ACTIVITY["backend_activity"])
    assert leaks([str(r) for r in rows], needles)


# --- laundering ---------------------------------------------------------------------------


@pytest.fixture
def clean_state(attack_db):
    yield
    attack_db.execute("SELECT setval('attack_seq', 1, false)")


def _code(attack_db) -> int:
    name = attack_db.value("SELECT name FROM users WHERE id = 1")
    return ord(name[0]) * 65536 + ord(name[1]) * 256 + ord(name[2])


PACKED = ("ascii(substr(name, 1, 1)) * 65536 + ascii(substr(name, 2, 1)) * 256 "
          "+ ascii(substr(name, 3, 1))")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", [
    f"SELECT setval('attack_seq', {PACKED}) FROM users WHERE id = 1",
    f"SELECT setval('attack_seq', {PACKED}, true) IS NOT NULL FROM users WHERE id = 1",
])
@pytest.mark.usefixtures("clean_state")
def test_setval_of_masked_data_is_refused(writer, attack_db, sql, mode):
    out = writer.run(sql, mode)
    stored = attack_db.value("SELECT last_value FROM attack_seq")
    assert stored != _code(attack_db), "the masked value is in the sequence"
    assert out.sqlstate == "42501", out.texts[:2]


@pytest.mark.usefixtures("clean_state")
def test_nextval_counts_of_masked_data_are_refused(writer, attack_db):
    out = writer.run("SELECT count(nextval('attack_seq')) > 0 FROM users u, "
                     "generate_series(1, ascii(substr(u.name, 1, 1))) WHERE u.id = 1")
    stored = attack_db.value("SELECT last_value FROM attack_seq")
    assert stored != ord(attack_db.value("SELECT name FROM users WHERE id = 1")[0])
    assert out.sqlstate == "42501", out.texts[:2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", ["pg_advisory_lock", "pg_try_advisory_lock",
                                "pg_advisory_lock_shared"])
def test_advisory_locks_keyed_by_masked_data_are_refused(reader, attack_db, fn, mode):
    out = reader.run(f"SELECT {fn}(ascii(substr(name, 1, 1)), {PACKED}) IS NOT NULL "
                     "FROM users WHERE id = 1", mode)
    locks = reader.run("SELECT classid::int, objid::int FROM pg_locks "
                       "WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
    reader.run("SELECT pg_advisory_unlock_all()")
    assert (_code(attack_db) not in [o for (_, o) in locks.rows]), "key seen in pg_locks"
    assert out.sqlstate == "42501", out.texts[:2]


@pytest.mark.parametrize("mode", MODES)
def test_advisory_lock_by_hashtext_is_refused(reader, mode):
    out = reader.run("SELECT pg_advisory_lock(hashtext(ssn)) IS NOT NULL FROM users "
                     "WHERE id = 1", mode)
    reader.run("SELECT pg_advisory_unlock_all()")
    assert out.sqlstate == "42501", out.texts[:2]


@pytest.mark.parametrize("mode", MODES)
def test_custom_setting_of_masked_data_is_refused(client_factory, needles, mode):
    c = client_factory(("rita", ("readers",)))
    try:
        out = c.run("SELECT set_config('attack.x', name, false) IS NOT NULL FROM users "
                    "WHERE id = 1", mode)
        back = c.run("SHOW attack.x")
        cur = c.run("SELECT current_setting('attack.x', true)")
        assert not leaks(back.texts + cur.texts, needles), back.rows
        assert out.sqlstate == "42501", out.texts[:2]
    finally:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_application_name_of_masked_data_is_refused(client_factory, attack_db, needles, mode):
    c = client_factory(("rita", ("readers",)))
    try:
        out = c.run("SELECT set_config('application_name', name, false) IS NOT NULL "
                    "FROM users WHERE id = 1", mode)
        reported = c.conn.info.parameter_status("application_name") or b""
        seen = attack_db.query("SELECT application_name FROM pg_stat_activity")
        assert not leaks([bytes(reported).decode(), str(seen)], needles), reported
        assert out.sqlstate == "42501", out.texts[:2]
    finally:
        c.close()


@pytest.mark.parametrize("who", ["reader", "writer"])
def test_notify_payload_of_masked_data_is_refused(request, attack_db, needles, who):
    client = request.getfixturevalue(who)
    with psycopg.connect(attack_db.owner_dsn(), autocommit=True) as listener:
        listener.execute("LISTEN attack_ch")
        out = client.run("SELECT pg_notify('attack_ch', name) FROM users WHERE id = 1")
        client.run("SELECT pg_notify('attack_ch', ssn) FROM users WHERE id = 2", "extended")
        got = [n.payload for n in listener.notifies(timeout=0.5)]
    assert not leaks(got, needles), got
    assert out.sqlstate == "42501", out.texts[:2]


# --- more of the class: other sessions' state, every sink, user code (masking.functions) --

MASKED = "pgguard: masking"


OTHER_SESSIONS = {
    "qualified": "SELECT pg_catalog.pg_stat_get_backend_activity(s) "
                 "FROM pg_stat_get_backend_idset() s",
    "lateral": "SELECT a FROM pg_stat_get_backend_idset() s, "
               "LATERAL pg_stat_get_backend_activity(s) a",
    "wrapped": "SELECT upper(pg_stat_get_backend_activity(s)) || '' "
               "FROM pg_stat_get_backend_idset() s",
    "aggregated": "SELECT string_agg(pg_stat_get_backend_activity(s), ',') "
                  "FROM pg_stat_get_backend_idset() s",
    "json": "SELECT to_jsonb(a) FROM pg_stat_get_activity(NULL) a",
    "cte": "WITH q AS (SELECT pg_stat_get_backend_activity(s) t FROM "
           "pg_stat_get_backend_idset() s) SELECT array_agg(t) FROM q",
    "array": "SELECT ARRAY(SELECT query FROM pg_stat_activity)",
    "locks": "SELECT * FROM pg_locks",
    "row": "SELECT (a).* FROM (SELECT pg_stat_get_activity(NULL) a) x",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(OTHER_SESSIONS))
def test_other_sessions_state_is_masked_in_every_shape(reader, other_session, needles, name,
                                                       mode):
    out = reader.run(OTHER_SESSIONS[name], mode)
    assert not leaks(out.texts, needles), f"another session's text via {name}"


@pytest.mark.parametrize("name", ["qualified", "lateral", "aggregated", "json", "array"])
def test_the_exempt_user_sees_other_sessions_text(officer, other_session, needles, name):
    out = officer.run(OTHER_SESSIONS[name])
    assert out.ok and leaks(out.texts, needles), out.texts[:3]


@pytest.fixture
def empty_loot(attack_db):
    attack_db.execute("DELETE FROM loot")
    yield
    attack_db.execute("DELETE FROM loot")


SINKS = [
    "SELECT lo_from_bytea(0, convert_to(name, 'UTF8')) FROM users WHERE id = 1",
    "SELECT lo_create(ascii(substr(ssn, 1, 1)) + 900000) FROM users WHERE id = 1",
    "SELECT pg_logical_emit_message(false, 'attack', ssn) FROM users WHERE id = 1",
    "SELECT setseed(ascii(substr(ssn, 1, 1)) / 1000.0) FROM users WHERE id = 1",
    "SELECT pg_sleep(length(ssn) * 0) FROM users WHERE id = 1",
    "SELECT pg_notify('attack_ch', format('%s', email)) FROM users WHERE id = 1",
    "SELECT set_config('attack.y', (SELECT phone FROM users WHERE id = 1), false)",
    "SELECT * FROM set_config('attack.y', (SELECT card_number FROM users LIMIT 1), false)",
    "SELECT pg_catalog.set_config('attack.y', profile::text, true) FROM users LIMIT 1",
    "SELECT pg_advisory_xact_lock(hashtext(email)) FROM users WHERE id = 1",
    "SELECT pg_try_advisory_lock_shared(length(ssn)) FROM users WHERE id = 1",
    "SELECT pg_terminate_backend(ascii(substr(ssn, 1, 1)) + 4000000) FROM users WHERE id = 1",
    "SELECT query_to_xml('SELECT set_config(''attack.y'', ' || quote_literal(ssn) || "
    "', false)', false, false, '') FROM users WHERE id = 1",
    "SELECT 1 FROM users WHERE id = 1 AND set_config('attack.y', name, false) IS NOT NULL",
    "SELECT pg_notify('attack_ch', (SELECT query FROM pg_stat_activity LIMIT 1))",
    "SELECT set_config('attack.y', pg_stat_get_backend_activity(1), false)",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", SINKS, ids=[s[7:50] for s in SINKS])
def test_every_sink_refuses_masked_or_untraced_data(writer, attack_db, needles, sql, mode):
    out = writer.run(sql, mode)
    # refused by masking, or before it by policy (privileged functions): not by PostgreSQL
    assert out.sqlstate == "42501" and out.message.startswith("pgguard:"), out.texts[:2]
    lobs = attack_db.value("SELECT count(*) FROM pg_largeobject_metadata")
    assert lobs == 0, "a large object was created"
    back = writer.run("SELECT current_setting('attack.y', true)")
    assert not leaks(back.texts, needles)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", [
    "SELECT leak(ssn) FROM users WHERE id = 1",
    "SELECT public.leak(email) FROM users WHERE id = 1",
    "SELECT ### name FROM users WHERE id = 1",
    "SELECT id FROM users WHERE ### ssn IS NOT NULL",
    "SELECT ssn::checked FROM users WHERE id = 1",
    "SELECT CAST(phone AS checked) IS NULL FROM users WHERE id = 1",
    "SELECT x FROM leaky WHERE id = 1",
    "SELECT id FROM leaky",
    # a row-level security policy runs on every row read
    "SELECT id FROM guarded",
    "SELECT count(*) FROM guarded",
])
@pytest.mark.usefixtures("empty_loot")
def test_user_code_given_masked_data_is_refused(writer, attack_db, needles, sql, mode):
    out = writer.run(sql, mode)
    stored = [v for (v,) in attack_db.query("SELECT v FROM loot")]
    assert not leaks(stored, needles), "user code stored a clear value"
    assert out.sqlstate == "42501" and MASKED in out.message, out.texts[:2]


@pytest.mark.usefixtures("empty_loot")
def test_the_user_code_probes_are_real(attack_db, needles):
    """Run directly, the same user code stores clear values."""
    with psycopg.connect(attack_db.owner_dsn(), autocommit=True) as conn:
        conn.execute("SELECT id FROM guarded").fetchall()
        conn.execute("SELECT ### name FROM users WHERE id = 1").fetchall()
    stored = [v for (v,) in attack_db.query("SELECT v FROM loot")]
    assert len(leaks(stored, needles)) >= 2


@pytest.mark.usefixtures("empty_loot")
def test_user_code_on_clear_data_runs_and_is_unproven(writer, attack_db):
    out = writer.run("SELECT leak(label), ### label FROM victims WHERE id = 1")
    assert out.ok, out.texts[:2]
    assert out.rows and all(v != "v1" for v in out.rows[0])
    assert attack_db.value("SELECT count(*) FROM loot") == 2


@pytest.mark.usefixtures("empty_loot")
def test_the_exempt_user_may_run_user_code(officer, attack_db):
    out = officer.run("SELECT ### ssn IS NOT NULL FROM users WHERE id = 1")
    # read-only grant: the INSERT inside the operator fails, or it runs; masking does not
    # refuse an exempt user
    assert MASKED not in out.message
