"""Real drivers through the gateway: they must not notice it is there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time

import psycopg
import psycopg2
import pytest
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER
from psycopg import pq
from psycopg.rows import dict_row

pytestmark = pytest.mark.usefixtures("app_db")


@pytest.fixture
def owner(gateway, tokens):
    """A psycopg connection through the gateway as alice (group owners)."""
    with psycopg.connect(gateway.dsn("alice"), password=tokens("alice", ["owners"])) as conn:
        yield conn


def test_text_and_binary_results(owner):
    row = owner.execute("SELECT 42::int, 'héllo'::text, 1.5::numeric, now()::date, "
                        "'{1,2}'::int[], NULL::text").fetchone()
    assert row[0] == 42 and row[1] == "héllo" and float(row[2]) == 1.5 and row[4] == [1, 2]
    assert row[5] is None
    cur = owner.cursor(binary=True)
    cur.execute("SELECT 42::int8, 'bin'::text, '\\x00ff'::bytea, ARRAY[1.5,2.5]::float8[]")
    assert cur.fetchone() == (42, "bin", b"\x00\xff", [1.5, 2.5])
    assert cur.pgresult.fformat(0) == pq.Format.BINARY


def test_backend_pid_matches_pg_stat_activity(owner, pg):
    pid = owner.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pid == owner.info.backend_pid
    user = pg.psql(f"SELECT usename FROM pg_stat_activity WHERE pid = {pid}")
    assert user == APP_USER


def test_parameter_status_passes_through(owner):
    assert owner.info.parameter_status("server_version")
    owner.execute("SET application_name = 'skill-x'")
    assert owner.info.parameter_status("application_name") == "skill-x"


def test_extended_protocol_with_parameters(owner):
    cur = owner.execute("SELECT owner, balance FROM accounts WHERE id = %s", (7,))
    assert cur.fetchone() == ("owner7", 70)
    owner.execute("SELECT %s::text", ("x",), prepare=True)
    for i in range(6):  # psycopg prepares server-side after 5 executions
        assert owner.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1


def test_pipeline_mode(owner):
    with owner.pipeline():
        c1 = owner.execute("SELECT 1")
        c2 = owner.execute("SELECT %s::text", ("two",))
        c3 = owner.execute("SELECT count(*) FROM accounts")
    assert c1.fetchone() == (1,) and c2.fetchone() == ("two",) and c3.fetchone() == (100,)


def test_pipeline_error_recovers(owner):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with owner.pipeline():
            owner.execute("SELECT 1")
            owner.execute("SELECT 1/0")
            owner.execute("SELECT 2")
    owner.rollback()
    assert owner.execute("SELECT 3").fetchone() == (3,)


def test_copy_in_and_out(owner):
    owner.execute("CREATE TEMP TABLE t_copy (a int, b text)")
    with owner.cursor().copy("COPY t_copy FROM STDIN") as copy:
        for i in range(1000):
            copy.write_row((i, f"row {i}"))
    assert owner.execute("SELECT count(*), sum(a) FROM t_copy").fetchone() == (1000, 499500)
    out = []
    with owner.cursor().copy("COPY (SELECT a, b FROM t_copy ORDER BY a) TO STDOUT") as copy:
        for row in copy.rows():
            out.append(row)
    assert len(out) == 1000 and out[3] == ("3", "row 3")
    with owner.cursor().copy("COPY t_copy TO STDOUT (FORMAT binary)") as copy:
        copy.set_types(["int4", "text"])
        assert sum(1 for _ in copy.rows()) == 1000


def test_server_side_cursor(owner):
    with owner.transaction():
        cur = owner.cursor(name="big")
        cur.itersize = 7
        cur.execute("SELECT g FROM generate_series(1, 50) g")
        assert [r[0] for r in cur] == list(range(1, 51))


def test_listen_notify(gateway, tokens, owner):
    owner.autocommit = True
    owner.execute("LISTEN chan_pgguard")
    with psycopg.connect(gateway.dsn("bob"), password=tokens("bob", ["owners"]),
                         autocommit=True) as other:
        other.execute("NOTIFY chan_pgguard, 'hello'")
    got = next(owner.notifies(timeout=5, stop_after=1))
    assert got.channel == "chan_pgguard" and got.payload == "hello"


def test_notice_passes_through(owner):
    notices = []
    owner.add_notice_handler(lambda d: notices.append(d.message_primary))
    owner.execute("CREATE TEMP TABLE IF NOT EXISTS t_notice (a int)")
    owner.execute("CREATE TEMP TABLE IF NOT EXISTS t_notice (a int)")
    assert notices == ['relation "t_notice" already exists, skipping']


def test_cancel_pg_sleep(owner):
    # cancel_safe: the blocking PQcancel holds the GIL, and this gateway runs in a thread
    # of the test process.
    timer = threading.Timer(0.5, lambda: owner.cancel_safe(timeout=10))
    timer.start()
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        owner.execute("SELECT pg_sleep(20)")
    assert time.monotonic() - started < 10
    timer.join()
    owner.rollback()
    assert owner.execute("SELECT 1").fetchone() == (1,)


def test_cancel_needs_the_clients_own_key(gateway, tokens, owner):
    """A CancelRequest with the right pid but another session's key cancels nothing."""
    from harness.rawclient import RawClient

    from pgguard.wire import codec
    from pgguard.wire.messages import CancelRequest

    other = RawClient(gateway.port)
    other.login("bob", tokens("bob", ["owners"]))
    assert other.key is not None
    pid = owner.info.backend_pid

    def forged_cancel():
        time.sleep(0.3)
        c = RawClient(gateway.port)
        c.send(codec.encode_startup(CancelRequest(pid, other.key.secret_key)))
        c.receive()
        c.close()

    t = threading.Thread(target=forged_cancel)
    t.start()
    assert owner.execute("SELECT pg_sleep(1.0), 'done'").fetchone()[1] == "done"
    t.join()
    other.close()


def test_client_key_is_the_gateways_own(owner, pg):
    """The secret a client gets is not PostgreSQL's: it cannot be used to cancel directly."""
    from harness.rawclient import RawClient

    # The gateway's BackendKeyData carries the real pid: pg_cancel_backend semantics hold.
    assert owner.info.backend_pid == owner.execute("SELECT pg_backend_pid()").fetchone()[0]
    c = RawClient(pg.port)
    c.close()


def test_transactions_and_errors(owner):
    with pytest.raises(psycopg.errors.UndefinedTable):
        owner.execute("SELECT * FROM no_such_table")
    owner.rollback()
    with owner.transaction():
        owner.execute("UPDATE accounts SET balance = balance WHERE id = 1")
    assert owner.execute("SELECT 1").fetchone() == (1,)


def test_dict_rows_many_columns(owner):
    cur = owner.cursor(row_factory=dict_row)
    cur.execute("SELECT * FROM accounts ORDER BY id LIMIT 3")
    assert [r["id"] for r in cur.fetchall()] == [1, 2, 3]


def test_large_result(owner):
    rows = owner.execute("SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g").fetchall()
    assert len(rows) == 20000 and rows[-1][0] == 20000


def test_psycopg2(gateway, tokens):
    conn = psycopg2.connect(gateway.dsn("carol"), password=tokens("carol", ["owners"]))
    try:
        cur = conn.cursor()
        cur.execute("SELECT owner FROM accounts WHERE id = %s", (3,))
        assert cur.fetchone() == ("owner3",)
        named = conn.cursor("named_cur")
        named.execute("SELECT g FROM generate_series(1, 10) g")
        assert len(named.fetchall()) == 10
        conn.rollback()
    finally:
        conn.close()


def test_asyncpg_prepared_and_binary(gateway, tokens):
    import asyncpg

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=gateway.port, user="dave",
                                     database="appdb", password=tokens("dave", ["owners"]),
                                     ssl=False, timeout=10)
        try:
            stmt = await conn.prepare("SELECT id, owner, balance, now() AS ts, "
                                      "ARRAY[id, id * 2] AS arr FROM accounts WHERE id = $1")
            row = await stmt.fetchrow(5)
            assert row["owner"] == "owner5" and row["arr"] == [5, 10]
            assert await conn.fetchval("SELECT $1::jsonb ->> 'a'", '{"a": "b"}') == "b"
            vals = await conn.fetch("SELECT g::int8, g::float8, g::text FROM "
                                    "generate_series(1, 100) g")
            assert len(vals) == 100 and vals[99][0] == 100
            await conn.execute("CREATE TEMP TABLE ap (a int)")
            await conn.copy_records_to_table("ap", records=[(i,) for i in range(50)])
            assert await conn.fetchval("SELECT count(*) FROM ap") == 50
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _pg_tool(pg, name: str) -> str:
    return os.path.join(pg.bindir, name)


def test_psql(gateway, tokens, pg):
    env = dict(os.environ, PGPASSWORD=tokens("erin", ["owners"]), PGCONNECT_TIMEOUT="10")
    res = subprocess.run(
        [_pg_tool(pg, "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(gateway.port),
         "-U", "erin", "-d", "appdb", "-c", "SELECT count(*) FROM accounts",
         "-c", "\\d accounts"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "100"
    assert "balance" in res.stdout


@pytest.fixture(scope="module")
def pgbench_tables(pg):
    env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
    res = subprocess.run([_pg_tool(pg, "pgbench"), "-i", "-s", "1", "-q", "-h", pg.host,
                          "-p", str(pg.port), "-U", APP_USER, APP_DB],
                         capture_output=True, text=True, env=env, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(gateway, tokens, pg, pgbench_tables, mode):
    env = dict(os.environ, PGPASSWORD=tokens("frank", ["owners"]), PGCONNECT_TIMEOUT="10")
    res = subprocess.run(
        [_pg_tool(pg, "pgbench"), "-n", "-M", mode, "-c", "2", "-t", "50", "-h", "127.0.0.1",
         "-p", str(gateway.port), "-U", "frank", "appdb"],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert "number of transactions actually processed: 100/100" in res.stdout
