"""pgguard.wire.encodings: PostgreSQL's encoding names and which of them pgguard reads
(no database; tests/test_policy_options_pg.py checks the names against PostgreSQL)."""

from __future__ import annotations

import codecs

import pytest

from pgguard.wire import encodings as enc

REFUSED_UNSAFE = {"SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004"}
REFUSED_UNDECODABLE = {"EUC_TW", "MULE_INTERNAL"}


def test_the_table_is_postgres_table():
    assert len(enc.CANONICAL) == 42 and len(set(enc.CANONICAL)) == 42
    assert enc.CANONICAL[0] == "SQL_ASCII" and enc.CANONICAL[6] == "UTF8"
    assert enc.CANONICAL[34] == "KOI8U" and enc.CANONICAL[35] == "SJIS"
    assert enc.CLIENT_ONLY == REFUSED_UNSAFE
    for alias, canonical in enc.ALIASES.items():
        assert alias == enc.clean(alias), alias  # the table holds cleaned names
        assert canonical in enc.CANONICAL
    assert len(enc.ALIASES) == 81  # pg_encname_tbl's entries


@pytest.mark.parametrize("name,canonical", [
    ("UTF8", "UTF8"), ("utf-8", "UTF8"), ("Unicode", "UTF8"), ("UNICODE", "UTF8"),
    ("sjis", "SJIS"), ("Shift_JIS", "SJIS"), ("mskanji", "SJIS"), ("Windows-932", "SJIS"),
    ("sjis!", "SJIS"), ("s j i s", "SJIS"), ("sjéis", "SJIS"), ("latin9", "LATIN9"),
    ("ISO-8859-15", "LATIN9"), ("iso_8859_15", "LATIN9"), ("win1252", "WIN1252"),
    ("koi8", "KOI8R"), ("KOI8-R", "KOI8R"), ("euc_jp", "EUC_JP"), ("EUC-JIS-2004", "EUC_JIS_2004"),
    ("ISO_8859_5", "ISO_8859_5"), ("iso88599", "LATIN5"), ("tcvn5712", "WIN1258"),
    ("alt", "WIN866"), ("win", "WIN1251"), ("SQL_ASCII", "SQL_ASCII"), ("cp936", None),
    ("utf9", None), ("", None), ("-", None), ("ascii", None), ("latin", None),
])
def test_normalize(name, canonical):
    assert enc.normalize(name) == canonical


def test_every_canonical_name_normalizes_to_itself():
    for name in enc.CANONICAL:
        assert enc.normalize(name) == name
        assert enc.normalize(name.lower()) == name


def test_the_refused_sets():
    refused = {n for n in enc.CANONICAL if not enc.is_accepted(n)}
    assert refused == REFUSED_UNSAFE | REFUSED_UNDECODABLE
    assert {n for n in enc.CANONICAL if not enc.is_ascii_safe(n)} == REFUSED_UNSAFE
    assert not enc.is_ascii_safe("no-such-encoding") and not enc.is_accepted("utf9")
    for name in REFUSED_UNSAFE | REFUSED_UNDECODABLE:
        assert name in enc.refusal(name.lower())
    assert "'utf9'" in enc.refusal("utf9")
    assert enc.refusal("x" * 200).count("x") < 80


def test_accepted_encodings_have_a_codec():
    for name in enc.CANONICAL:
        codec = enc.python_codec(name)
        if name in REFUSED_UNDECODABLE:
            assert codec is None
        else:
            assert codec is not None and codecs.lookup(codec), name


def test_sql_ascii_decodes_as_the_server_encoding():
    assert enc.python_codec("SQL_ASCII", "UTF8") == "utf-8"
    assert enc.python_codec("sql_ascii", "LATIN1") == "latin-1"
    assert enc.python_codec("SQL_ASCII", "SQL_ASCII") == "latin-1"
    assert enc.python_codec("SQL_ASCII") == "latin-1"
    assert enc.python_codec("SQL_ASCII", "EUC_TW") == "latin-1"


def _swallows_ascii(codec: str) -> bool:
    """Whether some byte >= 0x80 followed by a printable ASCII byte is one valid character
    (so the ASCII byte is not the character it looks like). Decoded strictly: invalid
    sequences, which PostgreSQL rejects too, say nothing."""
    for lead in range(0x80, 0x100):
        for trail in range(0x20, 0x7F):
            try:
                text = bytes((lead, trail)).decode(codec)
            except UnicodeDecodeError:
                continue
            if chr(trail) not in text:
                return True
    return False


@pytest.mark.parametrize("name", [n for n in enc.CANONICAL if enc.python_codec(n)])
def test_ascii_safety_matches_the_codecs(name):
    """What the table calls ASCII-safe is: no ASCII byte is ever part of a character."""
    codec = enc.python_codec(name)
    assert _swallows_ascii(codec) == (name in REFUSED_UNSAFE), name
