"""max_rows and max_result_bytes through the gateway, seen from psycopg 3: results,
pipelines, simple-protocol multi-statement queries, COPY TO STDOUT and server-side cursors
are cut at the limit, with a notice and a CommandComplete for what the client got."""

from __future__ import annotations

import psycopg
import pytest
from harness.gateway import ThreadGateway

# Imported at collection (not inside a test, while gateway threads run): the recording
# suite's helpers to read the log.
from harness.recording import _session_id, recorded_config, session_records, wait_sessions_ended

pytestmark = pytest.mark.usefixtures("app_db")


@pytest.fixture(scope="module")
def gw(make_config):
    cfg = make_config()
    cfg["connections"][0]["grants"] += [
        {"groups": ["capped"], "read": "allow", "max_rows": 10},
        {"groups": ["bytecap"], "read": "allow", "max_result_bytes": 200},
    ]
    gateway = ThreadGateway(cfg).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def conn(gw, tokens):
    with psycopg.connect(gw.dsn("cap"), password=tokens("cap", ["capped"]),
                         autocommit=True) as c:
        c.notices = []
        c.add_notice_handler(lambda d: c.notices.append(d.message_primary))
        yield c


def test_result_is_cut_at_max_rows(conn):
    cur = conn.execute("SELECT g FROM generate_series(1, 100000) g")
    assert [r[0] for r in cur.fetchall()] == list(range(1, 11))
    assert cur.statusmessage == "SELECT 10" and cur.rowcount == 10
    assert conn.notices == ["pgguard: result truncated at 10 rows"]
    # Under the limit: untouched, and the session is usable.
    cur = conn.execute("SELECT g FROM generate_series(1, 10) g")
    assert len(cur.fetchall()) == 10 and cur.statusmessage == "SELECT 10"
    assert conn.notices == ["pgguard: result truncated at 10 rows"]
    assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (100,)


def test_each_result_of_a_pipeline(conn):
    with conn.pipeline():
        a = conn.execute("SELECT g FROM generate_series(1, 50) g")
        b = conn.execute("SELECT 'x'")
        c = conn.execute("SELECT g FROM generate_series(100, 150) g")
    assert [r[0] for r in a.fetchall()] == list(range(1, 11))
    assert b.fetchall() == [("x",)]
    assert [r[0] for r in c.fetchall()] == list(range(100, 110))
    assert len(conn.notices) == 2


def test_simple_query_with_several_statements(conn):
    cur = psycopg.ClientCursor(conn)
    cur.execute("SELECT g FROM generate_series(1, 30) g; SELECT 1; "
                "SELECT g FROM generate_series(1, 20) g")
    assert len(cur.fetchall()) == 10
    assert cur.nextset() and cur.fetchall() == [(1,)]
    assert cur.nextset() and len(cur.fetchall()) == 10 and cur.statusmessage == "SELECT 10"


def test_copy_to_stdout(conn):
    cur = conn.cursor()
    with cur.copy("COPY (SELECT g FROM generate_series(1, 5000) g) TO STDOUT") as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    assert data.decode().splitlines() == [str(i) for i in range(1, 11)]
    assert cur.rowcount == 10  # from the rewritten "COPY 10" tag
    assert conn.notices == ["pgguard: result truncated at 10 rows"]
    assert conn.execute("SELECT 2").fetchone() == (2,)


def test_server_side_cursor_counts_all_fetches(conn):
    with conn.transaction():
        cur = conn.cursor(name="big")
        cur.execute("SELECT g FROM generate_series(1, 100) g")
        got = cur.fetchmany(4) + cur.fetchmany(4) + cur.fetchmany(4) + cur.fetchmany(4)
        assert [r[0] for r in got] == list(range(1, 11))
        assert cur.fetchall() == []
        cur.close()
        # A new cursor of the same name starts from zero.
        cur = conn.cursor(name="big")
        cur.execute("SELECT g FROM generate_series(1, 5) g")
        assert len(cur.fetchall()) == 5
        cur.close()
    assert conn.notices and all(n == "pgguard: result truncated at 10 rows"
                                for n in conn.notices)


def test_sql_fetch_in_simple_protocol(conn):
    cur = psycopg.ClientCursor(conn)
    cur.execute("BEGIN; DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 100) g")
    cur.execute("FETCH 7 FROM c")
    assert len(cur.fetchall()) == 7
    cur.execute("FETCH 7 FROM c")
    assert [r[0] for r in cur.fetchall()] == [8, 9, 10] and cur.statusmessage == "FETCH 3"
    cur.execute("FETCH ALL FROM c")
    assert cur.fetchall() == [] and cur.statusmessage == "FETCH 0"
    cur.execute("COMMIT")


def test_max_result_bytes(gw, tokens):
    with psycopg.connect(gw.dsn("bytes"), password=tokens("bytes", ["bytecap"]),
                         autocommit=True) as c:
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        # A DataRow of one 50-byte text value is 61 bytes: three fit in 200.
        cur = c.execute("SELECT repeat('x', 50) FROM generate_series(1, 100)")
        assert len(cur.fetchall()) == 3 and cur.statusmessage == "SELECT 3"
        assert notices == ["pgguard: result truncated at 3 rows"]
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_recording_notes_the_truncation(make_config, tokens, tmp_path):
    cfg = recorded_config(make_config, tmp_path)
    cfg["connections"][0]["grants"].append({"groups": ["capped"], "read": "allow",
                                            "max_rows": 10})
    gw = ThreadGateway(cfg).start()
    try:
        with psycopg.connect(gw.dsn("rec"), password=tokens("rec", ["capped"]),
                             autocommit=True) as c:
            sid = _session_id(gw, "rec")
            assert len(c.execute("SELECT g FROM generate_series(1, 500) g").fetchall()) == 10
        wait_sessions_ended(gw)
    finally:
        gw.stop()
    records = session_records(tmp_path / "rec", sid)
    notices = [r for r in records if r["type"] == "notice"]
    assert [n["fields"]["message"] for n in notices] == ["pgguard: result truncated at 10 rows"]
    (result,) = [r["fields"] for r in records
                 if r["type"] == "result" and r["fields"]["row_count"]]
    assert result["row_count"] == 10 and result["command_tag"] == "SELECT 10"
