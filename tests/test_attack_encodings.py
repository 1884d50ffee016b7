"""Issue 11, class 1: the gateway and PostgreSQL must read the same statement.

In the encodings that are not ASCII-safe (SJIS, BIG5, GBK, GB18030, JOHAB: a second byte
may be 0x5C) a two-byte character swallows the backslash that, read as UTF-8, escapes a
quote: a statement hidden in what the gateway takes for a string literal runs. The fix
refuses those encodings (UHC too) with a ``pgguard:`` error at startup and on
SET/set_config (0A000, feature not supported); single-byte and EUC encodings keep
working, non-ASCII text round-tripping through the gateway, never an internal error.
"""

from __future__ import annotations

import psycopg
import pytest
from harness.attack import (
    ENGINEER,
    EXTENDED,
    MODES,
    OFFICER,
    READER,
    SIMPLE,
    WRITER,
    assert_leaks_clear,
    assert_no_leak,
)
from rawclient import RawClient, error_of

from pgguard.wire import codec
from pgguard.wire.messages import ErrorResponse, ParameterStatus, ReadyForQuery

pytestmark = pytest.mark.usefixtures("reset_victims")

#: PostgreSQL encoding -> Python codec, for the encodings with 0x5C as a second byte.
#: (JOHAB and UHC are refused too, but PostgreSQL's own JOHAB check rejects a 0x5C second
#: byte and UHC has none.)
CODECS = {"SJIS": "shift_jis", "BIG5": "big5", "GBK": "gbk", "GB18030": "gb18030"}


def swallower(pycodec: str) -> str:
    """Text whose bytes in *pycodec* are, read as UTF-8, one valid character followed by a
    backslash, while *pycodec* pairs that character's last byte with the backslash."""
    for cp in range(0x3000, 0xA000):
        raw = chr(cp).encode("utf-8") + b"\\"
        try:
            text = raw.decode(pycodec)
        except UnicodeDecodeError:
            continue
        if "\\" not in text and text.encode(pycodec) == raw:
            return text
    raise AssertionError(pycodec)


SWALLOWERS = {enc: swallower(py) for enc, py in CODECS.items()}
#: Client encodings whose second bytes overlap ASCII: refused.
UNSAFE = (*SWALLOWERS, "JOHAB", "UHC")



def _hidden_delete(ch: str, mode: str, quote: str = "E'") -> str:
    """SQL PostgreSQL reads (in the encoding of *ch*) as a read followed by a DELETE, and
    the gateway (reading UTF-8, where the backslash escapes the quote) as one read."""
    if mode == SIMPLE:
        return f"SELECT {quote}{ch}'; DELETE FROM victims; --'"
    # One statement (the extended protocol takes no more): the DELETE in a CTE.
    return (f"WITH q(a) AS (SELECT {quote}{ch}'), d AS (DELETE FROM victims RETURNING 1) "
            f"SELECT count(*) FROM d --') SELECT a FROM q")


def _victims(attack_db) -> list:
    return attack_db.query("SELECT id, label FROM victims ORDER BY id")


def _open(client_factory, who, **conninfo):
    """A client, or the psycopg error of a refused startup (which must be pgguard's)."""
    try:
        return client_factory(who, **conninfo), None
    except psycopg.OperationalError as exc:
        return None, exc


# --- refused at startup and on SET ---------------------------------------------------------


@pytest.mark.parametrize("via", ["client_encoding", "options"])
@pytest.mark.parametrize("enc", UNSAFE)
def test_startup_with_an_unsafe_encoding_is_refused(attack_gw, tokens, enc, via):
    params = {"client_encoding": enc} if via == "client_encoding" else \
        {"options": f"-c client_encoding={enc}"}
    c = RawClient(attack_gw.port)
    try:
        msgs = c.login(READER[0], tokens(*READER), "pii", **params)
    finally:
        c.close()
    err = error_of(msgs)
    assert err is not None, f"logged in with client_encoding {enc}"
    assert err.sqlstate == "0A000" and err.message.startswith("pgguard:"), err


SET_FORMS = {
    "set": "SET client_encoding TO '{enc}'",
    "set-names": "SET NAMES '{enc}'",
    "set-session": "SET SESSION client_encoding = {enc}",
    "set_config": "SELECT set_config('client_encoding', '{enc}', false)",
}


@pytest.mark.parametrize("form", SET_FORMS)
@pytest.mark.parametrize("enc", UNSAFE)
def test_switching_to_an_unsafe_encoding_is_refused(client_factory, enc, form):
    c = client_factory(READER)
    try:
        out = c.run(SET_FORMS[form].format(enc=enc))
        # The policy refuses it (42501 today; 0A000 once the session maps refusals to it).
        assert out.sqlstate in ("0A000", "42501"), out.texts[:2]
        assert out.message.startswith("pgguard:") and enc in out.message, out.texts[:2]
        assert c.run("SHOW client_encoding").rows == [("UTF8",)]
    finally:
        c.close()


def test_switching_to_an_unsafe_encoding_in_the_extended_protocol_is_refused_too(
        attack_gw, tokens):
    """Parse of SET client_encoding: refused, and the session is not left in SJIS."""
    c = RawClient(attack_gw.port)
    try:
        assert error_of(c.login(READER[0], tokens(*READER), "pii")) is None
        c.send(codec.parse("", "SET client_encoding TO 'SJIS'") + codec.bind("", "")
               + codec.execute("", 0) + codec.sync())
        msgs = c.until(ReadyForQuery)
    finally:
        c.close()
    statuses = [m for m in msgs if isinstance(m, ParameterStatus)
                and m.name == "client_encoding"]
    errs = [m for m in msgs if isinstance(m, ErrorResponse)]
    assert errs and errs[0].message.startswith("pgguard:"), msgs
    assert not statuses


# --- a statement hidden in a literal never runs -------------------------------------------


def _attack(client_factory, attack_db, who, enc, channel, sql, mode, before):
    refused = False
    conninfo = {"client_encoding": enc} if channel in ("startup", "scs") else {}
    if channel == "scs":
        conninfo["options"] = "-c standard_conforming_strings=off"
    c, err = _open(client_factory, who, **conninfo)
    if err is not None:
        assert "pgguard:" in str(err), err
        refused = True
    else:
        try:
            if channel == "set":
                out = c.run(f"SET client_encoding TO '{enc}'")
                refused = not out.ok
                assert out.ok or out.message.startswith("pgguard:"), out.texts[:2]
            if channel == "scs":
                assert c.run("SHOW standard_conforming_strings").rows == [("off",)]
            out = c.run(sql, mode)
            refused = refused or (not out.ok and out.message.startswith("pgguard:"))
        finally:
            c.close()
    return refused


@pytest.mark.parametrize("mode", MODES)
# SET is refused by the policy, a startup client_encoding by the session.
@pytest.mark.parametrize("channel", ["startup", "set"])
@pytest.mark.parametrize("enc", SWALLOWERS)
def test_read_only_grant_cannot_delete_through_a_swallowed_backslash(
        client_factory, attack_db, enc, channel, mode):
    before = _victims(attack_db)
    refused = _attack(client_factory, attack_db, READER, enc, channel,
                      _hidden_delete(SWALLOWERS[enc], mode), mode, before)
    assert _victims(attack_db) == before, "the hidden DELETE ran"
    assert refused, "no pgguard: refusal"


@pytest.mark.parametrize("mode", [SIMPLE, EXTENDED])
def test_hidden_delete_in_a_plain_literal_with_standard_conforming_strings_off_at_startup(
        client_factory, attack_db, mode):
    before = _victims(attack_db)
    refused = _attack(client_factory, attack_db, READER, "SJIS", "scs",
                      _hidden_delete(SWALLOWERS["SJIS"], mode, quote="'"), mode, before)
    assert _victims(attack_db) == before, "the hidden DELETE ran"
    # Today: refused as unparseable (a backslash with standard_conforming_strings off).
    assert refused


def _comment(attack_db) -> str | None:
    return attack_db.value("SELECT obj_description('victims'::regclass, 'pg_class')")


@pytest.mark.parametrize("enc", ["SJIS", "GBK"])
def test_ddl_deny_grant_cannot_comment_through_a_swallowed_backslash(
        client_factory, attack_db, enc):
    ch = SWALLOWERS[enc]
    try:
        refused = _attack(client_factory, attack_db, WRITER, enc, "startup",
                          f"SELECT E'{ch}'; COMMENT ON TABLE victims IS $$pwned$$; --'",
                          SIMPLE, None)
        assert _comment(attack_db) is None, "the hidden COMMENT ran"
        assert refused
    finally:
        attack_db.execute("COMMENT ON TABLE victims IS NULL")


@pytest.mark.parametrize("enc", ["BIG5", "GB18030"])
def test_ddl_review_grant_cannot_truncate_without_approval(client_factory, attack_db, enc):
    before = _victims(attack_db)
    refused = _attack(client_factory, attack_db, ENGINEER, enc, "startup",
                      f"SELECT E'{SWALLOWERS[enc]}'; TRUNCATE victims; --'", SIMPLE, before)
    assert _victims(attack_db) == before, "the hidden TRUNCATE ran unapproved"
    assert refused


def test_the_same_bytes_in_utf8_are_refused_as_the_write_they_are(reader, attack_db):
    """Control: without the encoding trick the DELETE is seen and refused."""
    before = _victims(attack_db)
    for mode in MODES:
        out = reader.run(_hidden_delete(SWALLOWERS["SJIS"], mode), mode)
        assert out.sqlstate == "42501", (mode, out.texts[:2])
    assert _victims(attack_db) == before


# --- ASCII-safe encodings work ---------------------------------------------------------------

TEXTS = {"LATIN9": "café crème à 5 € - œuvre", "EUC_JP": "日本語のテキスト、カタカナ",
         "LATIN1": "naïve façade ÿ", "WIN1252": "smart ‘quotes’ € …"}


def _enc_params():
    return list(TEXTS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("enc", _enc_params())
def test_non_ascii_text_round_trips(client_factory, enc, mode):
    text = TEXTS[enc]
    c = client_factory(READER, client_encoding=enc)
    try:
        assert c.run("SHOW client_encoding").rows == [(enc,)]
        out = c.run(f"SELECT '{text}' AS t, length('{text}')", mode)
        assert out.ok, out.texts[:2]
        assert out.rows == [(text, len(text))]
        if mode != SIMPLE:
            out = c.run("SELECT %s::text || '!'", mode, (text,))
            assert out.rows == [(text + "!",)], out.texts[:2]
    finally:
        c.close()


@pytest.mark.parametrize("enc", _enc_params())
def test_non_ascii_error_text_and_masking_under_other_encodings(client_factory, needles, enc):
    text = TEXTS[enc]
    c = client_factory(READER, client_encoding=enc)
    clear = client_factory(OFFICER, client_encoding=enc)
    try:
        out = c.run(f"SELECT '{text}'::int")
        assert out.sqlstate == "22P02" and text in out.message, out.texts[:2]
        assert "internal error" not in " ".join(out.texts)
        masked = c.run(f"SELECT ssn, email, '{text}' FROM users ORDER BY id")
        assert masked.ok and masked.rows[0][0] == "*******7468" and masked.rows[0][2] == text
        assert_no_leak(masked, needles)
        assert_leaks_clear(clear.run("SELECT ssn, email FROM users"), needles)
    finally:
        c.close()
        clear.close()


@pytest.mark.parametrize("enc", _enc_params())
def test_switching_to_an_ascii_safe_encoding_with_set_works(client_factory, enc):
    text = TEXTS[enc]
    c = client_factory(READER)
    try:
        assert c.run(f"SET client_encoding TO '{enc}'").ok
        out = c.run(f"SELECT '{text}'")
        assert out.rows == [(text,)], out.texts[:2]
    finally:
        c.close()


@pytest.mark.parametrize("enc", _enc_params())
def test_writes_of_non_ascii_text_reach_the_database_intact(client_factory, attack_db, enc):
    text = TEXTS[enc]
    c = client_factory(WRITER, client_encoding=enc)
    try:
        out = c.run("UPDATE victims SET label = %s WHERE id = 1", EXTENDED, (text,))
        assert out.ok, out.texts[:2]
        out = c.run(f"UPDATE victims SET label = label || '{text}' WHERE id = 2")
        assert out.ok, out.texts[:2]
    finally:
        c.close()
    assert attack_db.query("SELECT label FROM victims WHERE id <= 2 ORDER BY id") == \
        [(text,), ("v2" + text,)]
