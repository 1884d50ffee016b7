"""Statement control through the gateway, seen from psycopg 3 and from the raw protocol."""

from __future__ import annotations

import psycopg
import pytest
from harness.rawclient import RawClient

from pgguard.wire import codec
from pgguard.wire.messages import (
    CommandComplete,
    DataRow,
    ErrorResponse,
    ReadyForQuery,
)

pytestmark = pytest.mark.usefixtures("app_db")

REFUSED = [
    ("DROP TABLE accounts", "ddl", "DROP TABLE"),
    ("INSERT INTO accounts VALUES (1000, 'x', 1)", "write", "INSERT"),
    ("COPY accounts TO PROGRAM 'cat > /tmp/pgguard-exfil'", "privileged", "COPY"),
    ("SET ROLE postgres", "privileged", "SET ROLE"),
    ("UPDATE accounts SET balance = 0", "write", "UPDATE"),
    ("WITH d AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM d", "write", ""),
    ("SELECT nextval('pgguard_seq')", "write", ""),
    ("SELECT pg_read_file('/etc/passwd')", "privileged", ""),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE accounts'; END $$", "privileged", "DO"),
    ("SELECT * FROM accounts FOR UPDATE", "write", ""),
    ("dRoP/**/TaBlE accounts", "ddl", "DROP TABLE"),
    ("TRUNCATE accounts", "ddl", "TRUNCATE"),
]


@pytest.fixture
def analyst(gateway, tokens):
    with psycopg.connect(gateway.dsn("ann"), password=tokens("ann", ["analysts"]),
                         autocommit=True) as conn:
        yield conn


def _count(pg) -> str:
    return pg.psql("SELECT count(*) || ':' || sum(balance) FROM accounts", dbname="app")


@pytest.mark.parametrize("sql,category,kind", REFUSED, ids=[r[0][:30] for r in REFUSED])
def test_read_only_grant_is_refused_extended(analyst, pg, sql, category, kind):
    before = _count(pg)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        analyst.execute(sql)
    msg = info.value.diag.message_primary
    assert msg.startswith(f"pgguard: {category} statement"), msg
    assert kind in msg
    assert _count(pg) == before
    # The session stays usable, as after any SQL error.
    assert analyst.execute("SELECT count(*) FROM accounts").fetchone()[0] >= 100


def test_read_is_allowed(analyst):
    assert analyst.execute("SELECT owner FROM accounts WHERE id = %s", (2,)).fetchone() == \
        ("owner2",)


def test_refusal_in_pipeline_keeps_order(analyst, pg):
    before = _count(pg)
    results = []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with analyst.pipeline():
            results.append(analyst.execute("SELECT 1"))
            analyst.execute("DROP TABLE accounts")
            analyst.execute("SELECT 2")
    assert results[0].fetchone() == (1,)
    assert _count(pg) == before
    assert analyst.execute("SELECT 3").fetchone() == (3,)


def test_refusal_fails_the_transaction_like_postgres(gateway, tokens, pg):
    with psycopg.connect(gateway.dsn("ann"), password=tokens("ann", ["analysts"])) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _simple(client: RawClient, sql: str) -> list:
    client.send(codec.query(sql))
    return client.until(ReadyForQuery)


@pytest.fixture
def raw_analyst(gateway, tokens):
    c = RawClient(gateway.port)
    assert isinstance(c.login("ann", tokens("ann", ["analysts"]))[-1], ReadyForQuery)
    yield c
    c.close()


def test_multi_statement_smuggling_refuses_the_whole_message(raw_analyst, pg):
    before = _count(pg)
    msgs = _simple(raw_analyst, "SELECT 1; DROP TABLE accounts")
    errs = [m for m in msgs if isinstance(m, ErrorResponse)]
    assert len(errs) == 1 and errs[0].sqlstate == "42501"
    assert "DROP TABLE" in errs[0].message
    # Nothing of the message ran: not even the SELECT.
    assert not any(isinstance(m, DataRow) for m in msgs)
    assert _count(pg) == before


def test_commit_out_of_read_only_transaction(raw_analyst, pg):
    before = _count(pg)
    msgs = _simple(raw_analyst, "BEGIN READ ONLY; COMMIT; UPDATE accounts SET balance = 0")
    assert any(isinstance(m, ErrorResponse) and m.sqlstate == "42501" for m in msgs)
    assert _count(pg) == before


def test_review_without_approvals_is_refused_with_reason(gateway, tokens, pg):
    """Engineers' ddl is 'review'; with no approvers configured it cannot run."""
    with psycopg.connect(gateway.dsn("eng"), password=tokens("eng", ["engineers"]),
                         autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="requires approval"):
            conn.execute("ALTER TABLE accounts ADD COLUMN sneaky int")
        # Writes are allowed for engineers.
        conn.execute("UPDATE accounts SET balance = balance WHERE id = 1")
    assert "sneaky" not in pg.psql("SELECT string_agg(attname, ',') FROM pg_attribute "
                                   "WHERE attrelid = 'accounts'::regclass", dbname="app")


def test_sql_prepare_execute_is_judged_by_the_body(raw_analyst, pg):
    msgs = _simple(raw_analyst, "PREPARE p1 AS SELECT count(*) FROM accounts")
    assert any(isinstance(m, CommandComplete) for m in msgs)
    msgs = _simple(raw_analyst, "EXECUTE p1")
    assert any(isinstance(m, DataRow) for m in msgs)
    msgs = _simple(raw_analyst, "PREPARE p2 AS DELETE FROM accounts")
    assert any(isinstance(m, ErrorResponse) and m.sqlstate == "42501" for m in msgs)
    msgs = _simple(raw_analyst, "EXECUTE p2")
    assert any(isinstance(m, ErrorResponse) for m in msgs)
    assert int(pg.psql("SELECT count(*) FROM accounts", dbname="app")) >= 100


def test_unparseable_is_refused_as_unknown(raw_analyst):
    msgs = _simple(raw_analyst, "SELEC 1 FROM")
    err = next(m for m in msgs if isinstance(m, ErrorResponse))
    assert err.sqlstate == "42501" and "unknown" in err.message


def test_extended_refused_parse_never_reaches_the_database(raw_analyst, pg):
    """Parse of a refused statement, then Bind/Execute: error at Parse, Sync realigns."""
    before = _count(pg)
    raw_analyst.send(codec.parse("s1", "DELETE FROM accounts") + codec.bind("", "s1")
                     + codec.execute("") + codec.sync()
                     + codec.parse("", "SELECT 7") + codec.bind("", "") + codec.execute("")
                     + codec.sync())
    first = raw_analyst.until(ReadyForQuery)
    second = raw_analyst.until(ReadyForQuery)
    assert [type(m).__name__ for m in first] == ["ErrorResponse", "ReadyForQuery"]
    assert first[0].sqlstate == "42501"
    assert any(isinstance(m, DataRow) and m.values == (b"7",) for m in second)
    assert _count(pg) == before


def test_refusal_skipped_by_an_earlier_pipeline_error_does_not_confuse_later_ones(
        raw_analyst):
    """A refused Parse that PostgreSQL skips (after an earlier error) leaves no stale
    rewrite behind: the next refusal still gets pgguard's 42501."""
    raw_analyst.send(codec.parse("", "SELECT 1/0") + codec.bind("", "") + codec.execute("")
                     + codec.parse("", "DELETE FROM accounts") + codec.bind("", "")
                     + codec.execute("") + codec.sync())
    first = raw_analyst.until(ReadyForQuery)
    assert [m.sqlstate for m in first if isinstance(m, ErrorResponse)] == ["22012"]
    msgs = _simple(raw_analyst, "DROP TABLE accounts")
    errs = [m for m in msgs if isinstance(m, ErrorResponse)]
    assert len(errs) == 1 and errs[0].sqlstate == "42501", errs


def _function_call(oid: int) -> bytes:
    import struct
    # FunctionCall: oid, no argument formats, no arguments, text result.
    return codec.message(b"F", struct.pack("!IhhH", oid, 0, 0, 0))


def test_function_call_fastpath_relayed_when_unknown_is_allowed(gateway, tokens, pg):
    from pgguard.wire.messages import Raw
    oid = int(pg.psql("SELECT 'pg_backend_pid'::regproc::oid"))
    c = RawClient(gateway.port)
    try:
        c.login("olive", tokens("olive", ["owners"]))  # owners allow 'unknown'
        c.send(_function_call(oid))
        msgs = c.until(ReadyForQuery)
    finally:
        c.close()
    reply = next(m for m in msgs if isinstance(m, Raw) and m.kind == b"V")
    assert int(reply.data[4:]) == c.key.process_id


def test_function_call_fastpath_refused_as_unknown(raw_analyst, pg):
    oid = int(pg.psql("SELECT 'pg_terminate_backend'::regproc::oid"))
    raw_analyst.send(_function_call(oid))
    msgs = raw_analyst.until(ReadyForQuery)
    err = next(m for m in msgs if isinstance(m, ErrorResponse))
    assert err.sqlstate == "42501" and "unknown" in err.message
