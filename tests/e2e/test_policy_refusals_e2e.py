"""Statements no grant may run, through the gateway: a grant that allows every category
is still refused a change of client_encoding to an encoding that is not ASCII-safe (or
that pgguard cannot read), an UPDATE of pg_settings and COPY … ENCODING of such an
encoding; in the simple, extended, binary and pipeline protocols. Changes that restore the
session's own encoding, and ASCII-safe ones, run."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.usefixtures("app_db")

MODES = ("simple", "extended", "binary", "pipeline")

REFUSED = [
    ("SET client_encoding TO 'SJIS'", "SJIS"),
    ("SET NAMES 'big5'", "BIG5"),
    ("SET SESSION client_encoding = gbk", "GBK"),
    ("SET LOCAL client_encoding TO 'GB-18030'", "GB18030"),
    ("SET \"Client_Encoding\" = 'win949'", "UHC"),
    ("SET client_encoding TO 'johab'", "JOHAB"),
    ("SET client_encoding = 'Shift_JIS_2004'", "SHIFT_JIS_2004"),
    ("SET client_encoding TO 'mskanji!'", "SJIS"),
    ("SET client_encoding TO 'euc_tw'", "EUC_TW"),
    ("SELECT set_config('client_encoding', 'SJIS', false)", "SJIS"),
    ("SELECT set_config('client_encoding', 'big5', true)", "BIG5"),
    ("SELECT pg_catalog.set_config('client_encoding', 'S' || 'JIS', false)", "client_encoding"),
    ("SELECT set_config(lower('CLIENT_ENCODING'), 'SJIS', false)", "client_encoding"),
    ("SELECT * FROM set_config('client_encoding', 'windows950', false)", "BIG5"),
    ("WITH s AS (SELECT set_config('client_encoding', 'SJIS', false)) SELECT * FROM s",
     "SJIS"),
    ("UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
     "client_encoding"),
    ("UPDATE pg_catalog.pg_settings SET setting = 'off' "
     "WHERE name = 'standard_conforming_strings'", "pg_settings"),
    ("COPY accounts TO STDOUT (ENCODING 'SJIS')", "SJIS"),
    ("ALTER ROLE CURRENT_USER SET client_encoding = 'SJIS'", "SJIS"),
]

ALLOWED = [
    "SET client_encoding TO 'UTF8'",
    "SET NAMES 'unicode'",
    "SET client_encoding TO DEFAULT",
    "RESET client_encoding",
    "SET NAMES",
    "RESET ALL",
    "SELECT set_config('client_encoding', 'utf-8', false)",
]


@pytest.fixture(scope="module")
def everything_gw(make_config):
    """A gateway whose group ``everything`` may run every category."""
    from harness.gateway import ThreadGateway
    cfg = make_config()
    cfg["connections"][0]["grants"].append(
        {"groups": ["everything"], **dict.fromkeys(
            ("read", "write", "ddl", "privileged", "txn", "unknown"), "allow")})
    gw = ThreadGateway(cfg).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def superuser_conn(everything_gw, tokens):
    with psycopg.connect(everything_gw.dsn("eve"), password=tokens("eve", ["everything"]),
                         autocommit=True) as conn:
        yield conn


def _run(conn: psycopg.Connection, sql: str, mode: str) -> None:
    if mode == "simple":
        conn.cursor().execute(sql)
    elif mode == "extended":
        try:
            list(conn.cursor().stream(sql))
        except psycopg.ProgrammingError as exc:
            if "didn't produce a result" not in str(exc):
                raise
    elif mode == "binary":
        conn.cursor(binary=True).execute(sql, ())
    else:
        with conn.pipeline():
            conn.execute(sql, ())


def _encoding(pg) -> str:
    return pg.psql("SELECT setting FROM pg_settings WHERE name = 'standard_conforming_strings'"
                   " UNION ALL SELECT rolname || coalesce(array_to_string(setconfig, ','), '') "
                   "FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole",
                   dbname="app")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql,names", REFUSED, ids=[r[0][:50] for r in REFUSED])
def test_refused_whatever_the_grant(superuser_conn, pg, sql, names, mode):
    before = _encoding(pg)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        _run(superuser_conn, sql, mode)
    msg = info.value.diag.message_primary
    assert msg.startswith("pgguard:") and names in msg, msg
    assert superuser_conn.execute("SHOW client_encoding").fetchone()[0] == "UTF8"
    assert superuser_conn.execute("SHOW standard_conforming_strings").fetchone()[0] == "on"
    assert _encoding(pg) == before


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", ALLOWED)
def test_restoring_or_safe_encodings_run(superuser_conn, sql, mode):
    _run(superuser_conn, sql, mode)
    assert superuser_conn.execute("SHOW client_encoding").fetchone()[0] in ("UTF8", "UNICODE")
    superuser_conn.execute("RESET client_encoding")


@pytest.mark.parametrize("mode", MODES)
def test_explain_repeated_analyze_read_only_grant(gateway, tokens, pg, mode):
    """The issue's example: the last ANALYZE wins, so the DELETE is a write."""
    before = pg.psql("SELECT count(*) FROM accounts", dbname="app")
    with psycopg.connect(gateway.dsn("ann"), password=tokens("ann", ["analysts"]),
                         autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            _run(conn, "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM accounts", mode)
        assert info.value.diag.message_primary.startswith("pgguard: write statement")
        # Only planned: allowed, and nothing is deleted either.
        _run(conn, "EXPLAIN (ANALYZE true, ANALYZE off) DELETE FROM accounts", mode)
    assert pg.psql("SELECT count(*) FROM accounts", dbname="app") == before


def test_execute_of_a_statement_prepared_with_parse_cannot_set_the_encoding(superuser_conn):
    """psycopg prepares set_config('client_encoding', $1, …) with Parse (allowed: the
    value comes with Bind); a SQL EXECUTE of that name with a literal is refused by
    policy, also now that the exchange tells policy what Parse defined (the Bind check
    never sees EXECUTE's arguments)."""
    conn = superuser_conn
    conn.execute("SELECT set_config('client_encoding', %s, false)", ["UTF8"], prepare=True)
    name = conn.execute("SELECT name FROM pg_prepared_statements "
                        "WHERE statement LIKE '%client_encoding%'").fetchone()[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        conn.execute(f"EXECUTE {name}('SJIS')")
    assert info.value.diag.message_primary.startswith("pgguard: EXECUTE with parameters")
    assert conn.execute("SHOW client_encoding").fetchone()[0] == "UTF8"


@pytest.mark.parametrize("enc", ["SJIS", "big5"])
def test_a_bound_unsafe_encoding_is_refused(superuser_conn, enc):
    conn = superuser_conn
    try:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT set_config('client_encoding', %s, false)", [enc])
        assert info.value.diag.message_primary.startswith("pgguard:")
    finally:
        conn.execute("RESET client_encoding")
    assert conn.execute("SHOW client_encoding").fetchone()[0] == "UTF8"


def test_a_bound_safe_encoding_runs(superuser_conn):
    conn = superuser_conn
    conn.execute("SELECT set_config('client_encoding', %s, false)", ["utf-8"])
    assert conn.info.parameter_status("client_encoding") == "UTF8"
