"""Issue 11, class 1, session side: statement text is decoded in the client_encoding
PostgreSQL reports, as PostgreSQL decodes it (``pgguard.wire.clienttext``).

* a startup client_encoding that is not ASCII-safe or that pgguard cannot decode is
  refused in every spelling PostgreSQL accepts (parameter, ``options``, PGCLIENTENCODING);
  so is one the role's or database's settings choose (the login's ParameterStatus);
* PostgreSQL reporting such an encoding later (a function calling ``set_config``) ends the
  session at once, and what was pipelined behind it never runs;
* text pipelined behind an encoding change is decoded in the new encoding, or refused in
  an extended-protocol pipeline where the change is not reported yet;
* text that does not decode is refused (22021), never judged;
* non-ASCII statement text needs a UTF8 database (parameters do not).
"""

from __future__ import annotations

import codecs
import logging
import uuid

import psycopg
import pytest
from harness.attack import APPROVER, READER, WRITER, AttackDb, attack_connection
from harness.gateway import APP_USER, ThreadGateway
from rawclient import RawClient, error_of
from test_attack_encodings import SWALLOWERS, _hidden_delete

from pgguard.net.startup import option_settings, split_options
from pgguard.wire import codec, encodings
from pgguard.wire.clienttext import DISPUTED, ClientText, Judgement
from pgguard.wire.messages import (
    BIND,
    EXECUTE,
    PARSE,
    QUERY,
    SYNC,
    DataRow,
    ErrorResponse,
    ParameterStatus,
    ReadyForQuery,
)

pytestmark = pytest.mark.usefixtures("reset_victims")

MODULE_SQL = """
CREATE FUNCTION enc_switch(e text) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT set_config('client_encoding', e, false) $$;
CREATE FUNCTION try_convert(b bytea, enc text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN convert_from(b, enc);
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""


def _login(gw, tokens, who=READER, **params):
    c = RawClient(gw.port)
    msgs = c.login(who[0], tokens(*who), "pii", **params)
    return c, msgs


def _refused_at_startup(gw, tokens, **params) -> ErrorResponse:
    c, msgs = _login(gw, tokens, **params)
    c.close()
    err = error_of(msgs)
    assert err is not None, f"logged in with {params}"
    return err


def _victims(attack_db) -> list:
    return attack_db.query("SELECT id, label FROM victims ORDER BY id")


# --- startup --------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"client_encoding": "Shift_JIS"}, {"client_encoding": "mskanji"},
    {"client_encoding": "Windows-932"}, {"client_encoding": "win950"},
    {"client_encoding": "gb-18030"}, {"client_encoding": "uhc"},
    {"client_encoding": "JOHAB"}, {"client_encoding": "shift_jis_2004"},
    {"client_encoding": "EUC_TW"}, {"client_encoding": "mule_internal"},
    {"client_encoding": "utf9"},
    {"options": "-c client_encoding=SJIS"}, {"options": "-cclient_encoding=sjis"},
    {"options": "--client-encoding=Shift_JIS"}, {"options": "--client_encoding=BIG5"},
    {"options": "-c client_encoding=S\\JIS"},
    {"options": "-c client_encoding=UTF8 -c client_encoding=GBK"},
    {"options": "-c client_encoding=GBK", "client_encoding": "UTF8"},
    {"options": "-c client_encoding=UTF8", "client_encoding": "GB18030"},
])
def test_startup_encodings_pgguard_cannot_read_are_refused(attack_gw, tokens, params):
    err = _refused_at_startup(attack_gw, tokens, **params)
    assert err.sqlstate == "0A000" and err.message.startswith("pgguard: client_encoding"), err
    assert err.fields.get("S") == "FATAL"


@pytest.mark.parametrize("value,shown,text", [
    ("latin-9", "LATIN9", "é€"), ("ISO_8859_15", "LATIN9", "é€"),
    ("euc-jp", "EUC_JP", "日本語"), ("Windows-1252", "WIN1252", "é€…"),
    ("koi8", "KOI8R", "Жук"), ("utf_8", "UTF8", "é€"), ("EUC_KR", "EUC_KR", "한국어"),
    ("euc_cn", "EUC_CN", "中文"), ("WIN1251", "WIN1251", "Жук"),
])
def test_startup_encodings_in_any_spelling_postgres_accepts(client_factory, value, shown,
                                                             text):
    c = client_factory(READER, client_encoding=value)
    try:
        assert c.run("SHOW client_encoding").rows == [(shown,)]
        for mode in ("simple", "extended", "binary", "pipeline"):
            out = c.run(f"SELECT '{text}', length('{text}')", mode)
            assert out.rows == [(text, len(text))], (mode, out.texts[:2])
    finally:
        c.close()


def test_a_disputed_character_is_refused(client_factory):
    """EUC_JP A1C1: Python reads U+301C, PostgreSQL U+FF5E."""
    c = client_factory(READER, client_encoding="EUC_JP")
    try:
        out = c.run("SELECT '\u301c'")
        assert out.sqlstate == "22021" and "reads differently" in out.message, out.texts[:2]
        assert c.run("SELECT '日本'").rows == [("日本",)]
    finally:
        c.close()


def test_startup_options_encoding_is_followed(attack_gw, tokens):
    c, msgs = _login(attack_gw, tokens, options="-c client_encoding=latin9")
    try:
        assert error_of(msgs) is None
        assert [m.value for m in msgs if isinstance(m, ParameterStatus)
                and m.name == "client_encoding"] == ["LATIN9"]
        c.send(codec.query("SELECT 'caf\xe9 \u20ac' AS t", encoding="iso8859_15"))
        rows = [m for m in c.until(ReadyForQuery) if isinstance(m, DataRow)]
        assert rows[0].values == ("café €".encode("iso8859_15"),)
    finally:
        c.close()


@pytest.mark.parametrize("env,ok", [("SJIS", False), ("BIG5", False), ("eucjp", True),
                                    ("latin9", True)])
def test_pgclientencoding_arrives_as_the_startup_parameter(attack_gw, tokens, monkeypatch,
                                                          env, ok):
    monkeypatch.setenv("PGCLIENTENCODING", env)
    user, groups = READER
    try:
        conn = psycopg.connect(attack_gw.dsn(user, dbname="pii"),
                               password=tokens(user, groups), autocommit=True)
    except psycopg.OperationalError as exc:
        assert not ok and "pgguard: client_encoding" in str(exc), exc
        return
    with conn:
        assert ok, "logged in with PGCLIENTENCODING=" + env
        assert conn.execute("SELECT 'é'").fetchone() == ("é",)


@pytest.mark.parametrize("value,ok", [("SJIS", False), ("LATIN9", True)])
def test_an_encoding_the_role_settings_choose_is_checked_at_login(
        attack_gw, attack_db, tokens, value, ok):
    """ALTER ROLE … SET client_encoding: the client asked for nothing, PostgreSQL reports
    what it chose, and that is what counts."""
    attack_db.query(f"ALTER ROLE {APP_USER} IN DATABASE {attack_db.name} "
                    f"SET client_encoding = '{value}'")
    try:
        c, msgs = _login(attack_gw, tokens)
        try:
            err = error_of(msgs)
            if not ok:
                assert err is not None and err.sqlstate == "0A000", msgs
                assert value in err.message
                return
            assert err is None, err
            c.send(codec.query("SELECT 'caf\xe9'", encoding="iso8859_15"))
            rows = [m for m in c.until(ReadyForQuery) if isinstance(m, DataRow)]
            assert rows[0].values == (b"caf\xe9",)
        finally:
            c.close()
    finally:
        attack_db.query(f"ALTER ROLE {APP_USER} IN DATABASE {attack_db.name} "
                        "RESET client_encoding")


# --- the backstop -----------------------------------------------------------------------


def test_a_reported_unsafe_encoding_ends_the_session(client_factory, caplog):
    c = client_factory(READER)
    with caplog.at_level(logging.WARNING, logger="pgguard.net.session"):
        out = c.run("SELECT enc_switch('SJIS')")
    assert out.sqlstate == "0A000" and "SJIS" in out.message, out.texts[:2]
    assert c.conn.closed or c.run("SELECT 1").error is not None
    assert any("event=client_encoding_refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("enc", sorted(SWALLOWERS))
def test_statements_pipelined_behind_a_reported_unsafe_encoding_never_run(
        attack_gw, attack_db, tokens, enc):
    """Simple protocol: the second Query waits for the first's ReadyForQuery, whose
    ParameterStatus ends the session before the hidden DELETE is read."""
    before = _victims(attack_db)
    pycodec = {"SJIS": "shift_jis", "BIG5": "big5", "GBK": "gbk", "GB18030": "gb18030"}[enc]
    hidden = _hidden_delete(SWALLOWERS[enc], "simple").encode(pycodec)
    c, msgs = _login(attack_gw, tokens)
    try:
        assert error_of(msgs) is None
        c.send(codec.query(f"SELECT enc_switch('{enc}')")
               + codec.message(b"Q", hidden + b"\0"))
        seen = c.until(type(None))
    finally:
        c.close()
    errs = [m for m in seen if isinstance(m, ErrorResponse)]
    assert errs and errs[-1].sqlstate == "0A000" and errs[-1].fields.get("S") == "FATAL"
    assert not any(isinstance(m, ParameterStatus) and m.value == enc for m in seen)
    assert _victims(attack_db) == before


def test_non_ascii_text_in_an_open_pipeline_after_a_statement_ran_is_refused(
        attack_gw, attack_db, tokens):
    """Extended protocol, no Sync between: PostgreSQL reads the second Parse in SJIS but
    reports the change only at Sync; the gateway refuses the text it cannot know."""
    before = _victims(attack_db)
    hidden = _hidden_delete(SWALLOWERS["SJIS"], "extended").encode("shift_jis")
    c, msgs = _login(attack_gw, tokens)
    try:
        assert error_of(msgs) is None
        c.send(codec.parse("", "SELECT enc_switch($1)") + codec.bind("", "", [b"SJIS"])
               + codec.execute("") + codec.message(b"P", b"\0" + hidden + b"\0\0\0")
               + codec.bind("", "") + codec.execute("") + codec.sync())
        seen = c.until(ReadyForQuery)
        c.send(codec.query("SHOW client_encoding"))
        after = c.until(ReadyForQuery)
    finally:
        c.close()
    errs = [m for m in seen if isinstance(m, ErrorResponse)]
    assert errs and errs[0].message.startswith("pgguard:") and "pipeline" in errs[0].message
    assert _victims(attack_db) == before
    # The refusal failed the implicit transaction: PostgreSQL undid the set_config.
    assert [m.values for m in after if isinstance(m, DataRow)] == [(b"UTF8",)]


# --- set_config('client_encoding', $1): the value comes with the Bind ---------------------


@pytest.mark.parametrize("value", ["SJIS", "big-5", "Windows-936", "mule_internal", "euc-tw"])
@pytest.mark.parametrize("mode", ["extended", "binary", "pipeline", "prepared"])
def test_an_unsafe_encoding_bound_to_set_config_is_refused(client_factory, value, mode):
    c = client_factory(READER)
    try:
        out = c.run("SELECT set_config('client_encoding', %s, false)", mode, (value,))
        assert out.sqlstate == "0A000" and out.message.startswith("pgguard: client_encoding"), \
            out.texts[:2]
        assert c.run("SHOW client_encoding").rows == [("UTF8",)]
        assert c.run("SELECT set_config('client_encoding', %s, false)", mode,
                     ("latin9",)).ok
        assert c.run("SHOW client_encoding").rows == [("LATIN9",)]
        # Not an encoding name: PostgreSQL refuses it.
        out = c.run("SELECT set_config('client_encoding', %s, false)", mode, ("nope",))
        assert out.sqlstate == "22023", out.texts[:2]
    finally:
        c.close()


def test_what_is_pipelined_behind_a_refused_bind_never_runs(attack_gw, attack_db, tokens):
    before = _victims(attack_db)
    hidden = _hidden_delete(SWALLOWERS["SJIS"], "extended").encode("shift_jis")
    c, msgs = _login(attack_gw, tokens)
    try:
        assert error_of(msgs) is None
        c.send(codec.parse("s", "SELECT set_config('client_encoding', $1, false)")
               + codec.sync())
        assert error_of(c.until(ReadyForQuery)) is None
        c.send(codec.bind("", "s", [b"SJIS"]) + codec.execute("")
               + codec.message(b"P", b"\0" + hidden + b"\0\0\0")
               + codec.bind("", "") + codec.execute("") + codec.sync())
        seen = c.until(ReadyForQuery)
    finally:
        c.close()
    errs = [m for m in seen if isinstance(m, ErrorResponse)]
    assert len(errs) == 1 and errs[0].sqlstate == "0A000" and "SJIS" in errs[0].message
    assert not any(isinstance(m, ParameterStatus) for m in seen)
    assert _victims(attack_db) == before


# --- changes are followed ---------------------------------------------------------------


def test_text_pipelined_behind_a_set_is_decoded_in_the_new_encoding(attack_gw, tokens):
    c, msgs = _login(attack_gw, tokens)
    try:
        assert error_of(msgs) is None
        c.send(codec.query("SET client_encoding TO 'LATIN9'")
               + codec.query("SELECT 'caf\xe9 \u20ac', length('\u20ac')", encoding="iso8859_15")
               + codec.query("SET client_encoding TO 'UTF8'")
               + codec.query("SELECT 'caf\xe9 \u20ac', length('\u20ac')"))
        seen = c.until(ReadyForQuery) + c.until(ReadyForQuery) + c.until(ReadyForQuery) \
            + c.until(ReadyForQuery)
    finally:
        c.close()
    assert error_of(seen) is None, error_of(seen)
    rows = [m.values for m in seen if isinstance(m, DataRow)]
    assert rows == [("café €".encode("iso8859_15"), b"1"), ("café €".encode(), b"1")]


def test_psycopg_set_config_with_a_parameter_is_followed(client_factory):
    c = client_factory(READER)
    try:
        c.conn.execute("SELECT set_config('client_encoding', %s, false)", ["latin9"])
        assert c.conn.info.encoding == "iso8859-15"
        assert c.conn.execute("SELECT %s || '€'", ["é"]).fetchone() == ("é€",)
        assert c.conn.execute("SELECT 'é' || '€'").fetchone() == ("é€",)
    finally:
        c.close()


# --- text that does not decode ------------------------------------------------------------


@pytest.mark.parametrize("enc,raw", [("UTF8", b"\xff"), ("UTF8", b"\xc3"),
                                     ("EUC_JP", b"\xa1"), ("WIN1252", b"\x81")])
def test_text_that_does_not_decode_is_refused_not_judged(attack_gw, tokens, enc, raw):
    c, msgs = _login(attack_gw, tokens, client_encoding=enc)
    try:
        assert error_of(msgs) is None
        c.send(codec.message(b"Q", b"SELECT '" + raw + b"'; DELETE FROM victims\0"))
        simple = c.until(ReadyForQuery)
        c.send(codec.message(b"P", b"\0SELECT '" + raw + b"'\0\0\0") + codec.bind("", "")
               + codec.execute("") + codec.sync())
        extended = c.until(ReadyForQuery)
        c.send(codec.query("SELECT 1"))
        after = c.until(ReadyForQuery)
    finally:
        c.close()
    for seen in (simple, extended):
        err = error_of(seen)
        assert err is not None and err.sqlstate == "22021", seen
        assert err.message.startswith("pgguard: invalid byte sequence for encoding " + enc)
    assert error_of(after) is None and any(isinstance(m, DataRow) for m in after)


# --- the admin console -------------------------------------------------------------------


@pytest.mark.parametrize("enc", ["latin9", "EUC_JP", "SQL_ASCII"])
def test_the_admin_console_answers_in_utf8(attack_gw, tokens, enc):
    user, groups = APPROVER
    with psycopg.connect(attack_gw.dsn(user, dbname="pgguard"), password=tokens(user, groups),
                         autocommit=True, client_encoding=enc,
                         cursor_factory=psycopg.ClientCursor) as conn:
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.encoding == "utf-8"
        assert conn.execute("SHOW APPROVALS").description is not None


# --- the database's encoding ------------------------------------------------------------


@pytest.fixture(scope="module")
def latin1_gw(attack_db, make_config):
    name = f"atk_latin1_{uuid.uuid4().hex[:6]}"
    attack_db.query(f"CREATE DATABASE {name} OWNER {APP_USER} ENCODING 'LATIN1' "
                    "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    db = AttackDb(attack_db.pg, name)
    db.execute("CREATE TABLE victims (id int PRIMARY KEY, label text)")
    gw = ThreadGateway(make_config(connections=[attack_connection(db)])).start()
    try:
        yield gw
    finally:
        gw.stop()
        attack_db.query(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("client", ["UTF8", "LATIN1", "SQL_ASCII"])
def test_non_ascii_statement_text_needs_a_utf8_database(latin1_gw, tokens, client):
    user, groups = WRITER
    with psycopg.connect(latin1_gw.dsn(user, dbname="pii"), password=tokens(user, groups),
                         autocommit=True, client_encoding=client) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
            conn.execute("SELECT 'é'".encode("latin-1" if client == "LATIN1" else "utf-8"))
        assert "needs a UTF8 database" in str(exc.value)
        if client != "SQL_ASCII":  # psycopg sends SQL_ASCII parameters as bytes of UTF-8
            assert conn.execute("SELECT %s::text", ["é"]).fetchone() == ("é",)
        assert conn.execute("SELECT 'ascii'").fetchone()[0] in ("ascii", b"ascii")


# --- units: the options parser and the decoding state ----------------------------------------


@pytest.mark.parametrize("options", [
    "-c application_name=a\\ b", "--application-name=x\\\\y", "-capplication_name=z",
    "  -c   application_name=spaced  ", "-c application_name=a -c application_name=b",
])
def test_options_are_split_as_postgres_splits_them(attack_db, options):
    """What option_settings reads is what PostgreSQL applied (the last setting wins)."""
    expected = option_settings(options)[-1][1]
    with psycopg.connect(attack_db.owner_dsn(), options=options) as conn:
        assert conn.execute("SHOW application_name").fetchone() == (expected,)


def test_split_options():
    assert split_options("-c a=b\\ c  --d-e=f\\") == ["-c", "a=b c", "--d-e=f"]
    assert option_settings("--client-encoding=x -cTimeZone=UTC") == [
        ("client_encoding", "x"), ("TimeZone", "UTC")]
    for bad in ("-B 10", "-c", "--", "-c role=x", "-c client_encoding", "foo"):
        with pytest.raises(Exception, match="not allowed"):
            option_settings(bad)


def test_client_text_decodes_non_ascii_only_when_settled():
    t = ClientText("UTF8")
    assert t.report("latin-9") is None and t.codec == "iso8859_15"
    assert t.judge(False)[0] is Judgement.DECODE
    mark = t.sent(QUERY)                    # a Query outside a pipeline: RFQ is owed
    assert t.judge(True)[0] is Judgement.DECODE
    assert t.judge(False)[0] is Judgement.WAIT
    t.ready(mark)
    assert t.judge(False)[0] is Judgement.DECODE
    t.sent(PARSE)
    t.sent(BIND)
    t.sent(EXECUTE)                         # ran, no Sync yet
    assert t.judge(False)[0] is Judgement.REFUSE
    t.sent(QUERY)                           # in a pipeline: may be discarded unanswered
    assert t.judge(False)[0] is Judgement.REFUSE
    mark = t.sent(SYNC)
    assert t.judge(False)[0] is Judgement.WAIT
    t.ready(mark)
    assert t.judge(False)[0] is Judgement.DECODE
    assert t.report("SJIS") is not None and t.codec == "iso8859_15"


def test_client_text_sql_ascii_and_other_databases():
    t = ClientText("UTF8")
    assert t.report("SQL_ASCII") is None and t.codec == "utf-8"
    t = ClientText("LATIN1")
    assert t.report("UTF8") is None
    assert t.judge(True)[0] is Judgement.DECODE
    judgement, why = t.judge(False)
    assert judgement is Judgement.REFUSE and "LATIN1" in why


# --- the codecs decode as PostgreSQL converts ------------------------------------------------


def _pairs(leads: range, trails: range, prefix: bytes = b"") -> list[bytes]:
    return [prefix + bytes((a, b)) for a in leads for b in trails]


def _samples(name: str) -> list[bytes]:
    if name in ("EUC_JP", "EUC_JIS_2004"):
        return (_pairs(range(0xA1, 0xFF), range(0xA1, 0xFF))
                + [bytes((0x8E, b)) for b in range(0xA1, 0xE0)]
                + _pairs(range(0xA1, 0xFF), range(0xA1, 0xFF), b"\x8f"))
    if name in ("EUC_CN", "EUC_KR"):
        return _pairs(range(0xA1, 0xFF), range(0xA1, 0xFF))
    return [bytes((b,)) for b in range(0x80, 0x100)]


@pytest.mark.parametrize("name", [n for n in encodings.CANONICAL
                                  if encodings.is_accepted(n) and n not in ("UTF8",
                                                                            "SQL_ASCII")])
def test_each_codec_reads_non_ascii_bytes_as_postgres_converts_them(attack_db, name):
    """Every character Python's codec reads where PostgreSQL reads another (or that it
    reads as ASCII) is refused by ``ClientText.unreadable``, and DISPUTED lists exactly
    those. Where only PostgreSQL reads a character, pgguard refuses the text (22021);
    where only Python does, PostgreSQL rejects the statement: neither runs a statement
    read two ways."""
    pycodec = encodings.python_codec(name)
    samples = _samples(name)
    theirs = dict(attack_db.query(
        "SELECT b, try_convert(b, %s) FROM unnest(%s::bytea[]) b", (name, samples)))
    text = ClientText("UTF8")
    assert text.report(name) is None
    differ = set()
    for raw in samples:
        try:
            ours = codecs.decode(raw, pycodec)
        except UnicodeDecodeError:
            continue
        pg = theirs[raw]
        if any(ord(ch) < 0x80 for ch in ours):
            assert text.unreadable(b"x" + raw, "x" + ours) is not None, (raw, ours, pg)
        elif pg is not None and pg != ours:
            differ.add(ours)
        else:
            assert text.unreadable(b"x" + raw, "x" + ours) is None, (raw, ours, pg)
    assert differ == set(DISPUTED.get(name, "")), "".join(sorted(differ)).encode(
        "unicode_escape")
    for ch in differ:
        assert text.unreadable(ch.encode(pycodec), ch) is not None, ch


# --- recording ------------------------------------------------------------------------------


def test_recording_keeps_latin9_text_and_a_refused_undecodable_statement(
        make_config, tokens, tmp_path):
    from pathlib import Path

    from test_recording_e2e import _session_id, recorded_config, session_records

    cfg = recorded_config(make_config, tmp_path)
    gw = ThreadGateway(cfg).start()
    try:
        user = "rhea"
        conn = psycopg.connect(gw.dsn(user), password=tokens(user, ["owners"]),
                               autocommit=True, client_encoding="latin9")
        with conn:
            assert conn.execute("SELECT 'café €' AS \"é\"").fetchone() == ("café €",)
            sid = _session_id(gw, user)
            conn.execute("SET client_encoding TO 'UTF8'")
            with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
                conn.execute(b"SELECT '\xff'")
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        gw.stop()
    recs = session_records(Path(cfg["recording"]["dir"]), sid)
    statements = [r["fields"]["sql"] for r in recs if r["type"] == "statement"]
    assert "SELECT 'café €' AS \"é\"" in statements
    assert "SELECT '\ufffd'" in statements
    results = [r["fields"] for r in recs if r["type"] == "result"]
    assert any(f.get("columns", [[None]])[0][0] == "é" and f.get("rows") == [["café €"]]
               for f in results), results[:3]
    assert recs[-1]["type"] == "session_end"
