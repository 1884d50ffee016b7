"""psycopg 3's own encoding checks, through the gateway (issue 11, class 1).

The same assertions as psycopg's ``test_query_encode``, ``test_query_badenc``,
``test_error_encoding``, ``test_diag_encoding``, ``test_dump_enc``, ``test_load_enc``,
``test_normalize_encoding`` and ``test_encoding_env_var`` (tests/test_cursor_common.py,
test_errors.py, types/test_string.py, test_connection_info.py in psycopg's repository),
run by a user whose grant allows everything, so only the encoding handling is tested.
Before the fix, latin9 gave ``pgguard: internal error`` or "cannot parse".
"""

from __future__ import annotations

import psycopg
import pytest
from harness.gateway import ThreadGateway
from psycopg import errors as e
from psycopg import pq, sql
from psycopg.adapt import PyFormat

EUR = "\u20ac"
USER = ("psy", ("everything",))
#: Exempt from masking: a DO block's messages are withheld from a masked user (its lineage
#: is unproven), so psycopg's message checks run as this one.
EXEMPT = ("psx", ("exempt",))


@pytest.fixture(scope="module")
def allow_all(make_config, tmp_path_factory):
    """A grant that allows everything, and masking on (a rule on a column these tests do
    not read): the masker's decoding is exercised too, as in the issue's report."""
    from pgguard.net.masker import attach_masking

    key = tmp_path_factory.mktemp("psy") / "hash.key"
    key.write_text("psycopg-encodings-test-key\n")
    cfg = make_config(masking={"hash_key_file": str(key), "exempt_groups": ["exempt"],
                               "rules": [{"columns": ["*.*.card_number"],
                                          "strategy": "partial", "keep": 4}]})
    cfg["connections"][0]["grants"] = [{
        "groups": ["everything", "exempt"], "read": "allow", "write": "allow",
        "ddl": "allow", "privileged": "allow", "txn": "allow", "unknown": "allow"}]
    gw = ThreadGateway(cfg, attach=attach_masking).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def connect(allow_all, tokens):
    made = []

    def make(exempt: bool = False, **kwargs):
        user, groups = EXEMPT if exempt else USER
        conn = psycopg.connect(allow_all.dsn(user), password=tokens(user, groups), **kwargs)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


@pytest.fixture
def conn(connect):
    return connect()


@pytest.mark.parametrize("encoding", ["utf8", "latin9"])
def test_query_encode(conn, encoding):
    conn.execute(f"set client_encoding to {encoding}")
    cur = conn.cursor()
    cur.execute("select '€'")
    (res,) = cur.fetchone()
    assert res == "€"


def test_query_badenc(conn):
    conn.execute("set client_encoding to latin1")
    with pytest.raises(UnicodeEncodeError):
        conn.cursor().execute("select '€'")


@pytest.mark.parametrize("enc", ["utf8", "latin9"])
def test_diag_encoding(connect, enc):
    conn = connect(exempt=True)
    msgs = []
    conn.pgconn.exec_(b"set client_min_messages to notice")
    conn.add_notice_handler(lambda diag: msgs.append(diag.message_primary))
    conn.execute(f"set client_encoding to {enc}")
    cur = conn.cursor()
    cur.execute("do $$begin raise notice 'hello %', chr(8364); end$$ language plpgsql")
    assert msgs == [f"hello {EUR}"]


@pytest.mark.parametrize("enc", ["utf8", "latin9"])
def test_error_encoding(connect, enc):
    conn = connect(exempt=True)
    with conn.transaction():
        conn.execute(f"set client_encoding to {enc}")
    cur = conn.cursor()
    with pytest.raises(e.DatabaseError) as excinfo:
        cur.execute("""
            do $$begin
                execute format('insert into "%s" values (1)', chr(8364));
            end$$ language plpgsql;
            """)
    diag = excinfo.value.diag
    assert diag.message_primary and f'"{EUR}"' in diag.message_primary
    assert diag.sqlstate == "42P01"


@pytest.mark.parametrize("fmt_in", PyFormat)
@pytest.mark.parametrize("encoding", ["utf8", "latin9", "sql_ascii"])
def test_dump_enc(conn, fmt_in, encoding):
    cur = conn.cursor()
    conn.execute(f"set client_encoding to {encoding}")
    (res,) = cur.execute(f"select ascii(%{fmt_in.value})", (EUR,)).fetchone()
    assert res == ord(EUR)


@pytest.mark.parametrize("fmt_out", pq.Format)
@pytest.mark.parametrize("encoding", ["utf8", "latin9"])
@pytest.mark.parametrize("typename", ["text", "varchar", "name", "bpchar"])
def test_load_enc(conn, typename, encoding, fmt_out):
    cur = conn.cursor(binary=fmt_out)
    conn.execute(f"set client_encoding to {encoding}")
    (res,) = cur.execute(f"select chr(%s)::{typename}", [ord(EUR)]).fetchone()
    assert res == EUR
    stmt = sql.SQL("copy (select chr({})) to stdout (format {})").format(
        ord(EUR), sql.SQL(fmt_out.name))
    with cur.copy(stmt) as copy:
        copy.set_types([typename])
        (res,) = copy.read_row()
    assert res == EUR


@pytest.mark.parametrize("enc, out, codec", [
    ("utf8", "UTF8", "utf-8"), ("utf-8", "UTF8", "utf-8"), ("utf_8", "UTF8", "utf-8"),
    ("eucjp", "EUC_JP", "euc_jp"), ("euc-jp", "EUC_JP", "euc_jp"),
    ("latin9", "LATIN9", "iso8859-15"),
])
def test_normalize_encoding(conn, enc, out, codec):
    conn.execute("select set_config('client_encoding', %s, false)", [enc])
    assert conn.info.parameter_status("client_encoding") == out
    assert conn.info.encoding == codec


@pytest.mark.parametrize("enc, out, codec", [
    ("utf8", "UTF8", "utf-8"), ("utf-8", "UTF8", "utf-8"), ("utf_8", "UTF8", "utf-8"),
    ("eucjp", "EUC_JP", "euc_jp"), ("euc-jp", "EUC_JP", "euc_jp"),
])
def test_encoding_env_var(connect, monkeypatch, enc, out, codec):
    monkeypatch.setenv("PGCLIENTENCODING", enc)
    conn = connect()
    assert conn.info.parameter_status("client_encoding") == out
    assert conn.info.encoding == codec


def test_set_encoding_unsupported_is_refused_by_pgguard(conn):
    """psycopg's test_set_encoding_unsupported expects the SET to pass and the next
    query to fail in psycopg; pgguard refuses the SET itself (it cannot decode EUC_TW)."""
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("set client_encoding to EUC_TW")
    assert "pgguard: SET: client_encoding EUC_TW is refused" in str(exc.value)
    assert conn.info.encoding == "utf-8"


# --- ours: the same text as a literal and as a parameter, in every mode -----------------

TEXT = "café crème à 5 € - œuvre"


@pytest.mark.parametrize("how", ["conninfo", "set", "options"])
def test_latin9_literal_and_parameter_in_every_mode(connect, how):
    if how == "conninfo":
        conn = connect(client_encoding="latin9", autocommit=True)
    elif how == "options":
        conn = connect(options="-c client_encoding=latin9", autocommit=True)
    else:
        conn = connect(autocommit=True)
        conn.execute("SET client_encoding TO latin9")
    assert conn.info.encoding == "iso8859-15"
    assert conn.execute(f"SELECT '{TEXT}'").fetchone() == (TEXT,)
    assert conn.execute("SELECT %s::text", [TEXT]).fetchone() == (TEXT,)
    assert conn.cursor(binary=True).execute("SELECT %s::text || '!'", [TEXT]) \
        .fetchone() == (TEXT + "!",)
    assert conn.execute(f"SELECT '{TEXT}' || %s", [TEXT], prepare=True).fetchone() == \
        (TEXT * 2,)
    with pytest.raises(e.InvalidTextRepresentation) as exc:
        conn.execute(f"SELECT '{TEXT}'::int")
    assert TEXT in exc.value.diag.message_primary
    with conn.pipeline():
        cur = conn.execute(f"SELECT '{TEXT}'")  # the first of a pipeline: settled
        cur2 = conn.execute("SELECT %s::text", [TEXT])
    assert cur.fetchone() == (TEXT,) and cur2.fetchone() == (TEXT,)


def test_non_ascii_literal_later_in_an_open_pipeline_is_refused(connect):
    """pgguard's one difference: after a statement that may run user code ran in a
    pipeline with no Sync since, PostgreSQL may read non-ASCII text in another encoding
    than reported (a function can change it): refused, with a message that says to sync."""
    conn = connect(client_encoding="latin9", autocommit=True)
    with pytest.raises(e.FeatureNotSupported) as exc:
        with conn.pipeline():
            conn.execute("SELECT count(*) FROM accounts")
            conn.execute(f"SELECT '{TEXT}'")
    assert "send a Sync first" in str(exc.value)
    with conn.pipeline() as p:
        conn.execute("SELECT count(*) FROM accounts")
        p.sync()
        cur = conn.execute(f"SELECT '{TEXT}'")
    assert cur.fetchone() == (TEXT,)


# --- pipelines: what ran before non-ASCII text without a Sync (policy.inert) -----------


@pytest.mark.parametrize("encoding", ["utf8", "latin9"])
def test_pipeline_of_a_transaction_takes_non_ascii_text(connect, encoding):
    """psycopg opens the pipeline of a non-autocommit connection with BEGIN, unsynced:
    BEGIN runs no user code, so the encoding is still the reported one (refused before)."""
    conn = connect(client_encoding=encoding)
    with conn.pipeline():
        cur = conn.execute(f"SELECT '{TEXT}'")
        cur2 = conn.execute("SELECT %s", [TEXT])
        cur3 = conn.execute(f"SELECT '{TEXT}' AS again")
    assert cur.fetchone() == (TEXT,) and cur2.fetchone() == (TEXT,)
    assert cur3.fetchone() == (TEXT,)
    conn.rollback()


@pytest.mark.parametrize("encoding", ["utf8", "latin9"])
def test_pipeline_non_ascii_after_constant_selects(connect, encoding):
    """SELECTs of constants and of parameters of built-in types, in both formats, then a
    non-ASCII literal in the same unsynced pipeline (refused before)."""
    conn = connect(client_encoding=encoding, autocommit=True)
    with conn.pipeline():
        conn.execute("SELECT 1, 'a', NULL")
        conn.execute("SELECT %s, %s", [TEXT, 42])
        conn.cursor(binary=True).execute("SELECT %s", [7])
        conn.execute("VALUES (1, %s)", ["x"])
        cur = conn.execute(f"SELECT '{TEXT}'")
        cur2 = conn.cursor(binary=True).execute(f"SELECT '{TEXT}', %s", [TEXT])
    assert cur.fetchone() == (TEXT,) and cur2.fetchone() == (TEXT, TEXT)


@pytest.fixture
def encoding_changer(connect):
    """A session with pg_temp.enc() that sets client_encoding to LATIN1, and a domain
    pg_temp.enc_dom whose check calls it (both gone with the session)."""
    conn = connect(autocommit=True)
    conn.execute("CREATE FUNCTION pg_temp.enc() RETURNS boolean LANGUAGE sql AS "
                 "$$ SELECT set_config('client_encoding', 'LATIN1', false) IS NOT NULL $$")
    conn.execute("CREATE DOMAIN pg_temp.enc_dom AS text CHECK (pg_temp.enc())")
    return conn


@pytest.mark.parametrize("first", [
    "SELECT pg_temp.enc()",
    "SELECT set_config('client_encoding', 'LATIN1', false)",
    "SET client_encoding TO LATIN1",
    "SELECT 1 FROM accounts LIMIT 1",
    "SELECT 'x'::pg_temp.enc_dom",
    "SELECT 1 WHERE pg_temp.enc()",
    "VALUES (pg_temp.enc())",
    "SELECT (SELECT pg_temp.enc())",
    "DO $$ BEGIN PERFORM pg_temp.enc(); END $$",
    "RESET ALL",
    "DISCARD ALL",
    "ROLLBACK",
])
def test_pipeline_non_ascii_after_what_may_change_the_encoding(encoding_changer, first):
    """Anything outside the inert shapes still needs a Sync before non-ASCII text: each of
    these may change client_encoding unreported (a function, a domain check, SET, RESET,
    ROLLBACK of a SET)."""
    conn = encoding_changer
    with pytest.raises(e.FeatureNotSupported) as exc:
        with conn.pipeline():
            conn.execute(first)
            conn.execute(f"SELECT '{TEXT}'")
    assert "send a Sync first" in str(exc.value)


def test_pipeline_non_ascii_after_a_parameter_of_a_user_type(encoding_changer):
    """``SELECT $1`` is inert only with a built-in parameter type: a domain's check runs
    at Bind (here it sets client_encoding to LATIN1)."""
    from psycopg.adapt import Dumper
    from psycopg.types import TypeInfo

    conn = encoding_changer
    info = TypeInfo.fetch(conn, "pg_temp.enc_dom")
    assert info is not None

    class EncDom(str):
        pass

    class EncDomDumper(Dumper):
        oid = info.oid

        def dump(self, obj):
            return obj.encode()

    conn.adapters.register_dumper(EncDom, EncDomDumper)
    with pytest.raises(e.FeatureNotSupported) as exc:
        with conn.pipeline():
            conn.execute("SELECT %s", [EncDom("x")])
            conn.execute(f"SELECT '{TEXT}'")
    assert "send a Sync first" in str(exc.value)
    assert conn.execute("SHOW client_encoding").fetchone() == ("UTF8",)
