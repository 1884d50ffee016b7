"""Option lists, booleans, settings and encoding names, read as PostgreSQL reads them.

Each case runs on a real PostgreSQL (a throwaway database, in a transaction that is
rolled back) so the test states what PostgreSQL did; the classifier must agree: what
PostgreSQL executed is at least the category of what it did (a DELETE that EXPLAIN ran is
a ``write``). The helpers of :mod:`pgguard.sql.nodes` and :mod:`pgguard.wire.encodings`
are checked value by value against the server's own ``defGetBoolean``, ``parse_bool`` and
``pg_char_to_encoding``.
"""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

import psycopg
import pytest

from pgguard.policy import classify
from pgguard.policy.lists import SEVERITY
from pgguard.sql.nodes import def_boolean, def_elems, guc_boolean
from pgguard.sql.parse import parse
from pgguard.wire import encodings

CORPUS = tomllib.loads((Path(__file__).parents[1] / "corpus" / "options.toml").read_text())["case"]

SETUP = """
CREATE TABLE opt_t (id int PRIMARY KEY, v text);
INSERT INTO opt_t VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE SEQUENCE opt_s;
"""
DATA = "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '') FROM opt_t"
SEQ = "SELECT last_value || ':' || is_called FROM opt_s"
SCHEMA = """SELECT string_agg(c.oid || c.relname || coalesce(c.reloptions::text, ''), ','
                              ORDER BY c.oid)
                   || (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
                   || ':' || (SELECT count(*) FROM pg_proc WHERE proconfig IS NOT NULL)
                   || ':' || (SELECT count(*) FROM pg_publication)
                   || ':' || (SELECT count(*) FROM pg_db_role_setting)
            FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"""
SETTINGS = ("SELECT current_user || ';' || string_agg(name || '=' || setting, ',' ORDER BY name) "
            "FROM pg_settings")
#: What PostgreSQL did -> the least category the classifier must give it. A setting
#: changed by set_config() in a SELECT is a read by design (docs/policy.md); the settings
#: that matter (role, standard_conforming_strings, client_encoding) are pinned by the
#: cases' category and ``refused``.
NEEDS = {"writes": "write", "ddl": "ddl", "sets": "read", "reads": "read", "error": "read"}


#: The role the SET ROLE cases switch to (cluster-wide: created and dropped here).
ROLE = "opt_role"


@pytest.fixture(scope="module")
def optdb(pg):
    """A database of this module's own and the role the cases use, dropped afterwards."""
    name = f"pgguard_opt_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql(f"CREATE ROLE {ROLE}")
    try:
        with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
            conn.execute(SETUP)
            conn.execute(f"GRANT ALL ON opt_t, opt_s TO {ROLE}")
        yield pg.dsn(name)
    finally:
        pg.psql(f"DROP DATABASE {name} WITH (FORCE)")
        pg.psql(f"DROP ROLE {ROLE}")


def _state(conn) -> tuple:
    return tuple(conn.execute(q).fetchone()[0] for q in (DATA, SEQ, SCHEMA, SETTINGS))


def _observe(dsn: str, case: dict) -> str:
    """Run the case on PostgreSQL; say what it did (see tests/corpus/options.toml)."""
    autocommit = bool(case.get("autocommit"))
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        before = _state(conn)
        try:
            if case["sql"].startswith("COPY") and " TO STDOUT" in case["sql"]:
                with conn.cursor().copy(case["sql"]) as copy:
                    for _ in copy:
                        pass
            elif "copy_in" in case:
                with conn.cursor().copy(case["sql"]) as copy:
                    copy.write(case["copy_in"])
            else:
                conn.execute(case["sql"])
        except psycopg.Error:
            if not autocommit:
                conn.rollback()
            return "error"
        after = _state(conn)
        if not autocommit:
            conn.rollback()
            # Sequences are not transactional; the rest must be as it was.
            now = _state(conn)
            assert now[:1] + now[2:] == before[:1] + before[2:], "the case left something behind"
    data, seq, schema, settings = (b != a for b, a in zip(before, after, strict=True))
    if schema:
        return "ddl"
    if data or seq:
        return "writes"
    if settings:
        return "sets"
    return "reads"


def test_corpus_covers_every_kind_that_carries_options():
    kinds = {next(iter(parse(c["sql"]).statements[0].node)) for c in CORPUS}
    assert {"ExplainStmt", "CopyStmt", "VacuumStmt", "ClusterStmt", "ReindexStmt",
            "DeclareCursorStmt", "CreateFunctionStmt", "CreateStmt", "ViewStmt",
            "AlterTableStmt", "VariableSetStmt", "SelectStmt", "UpdateStmt",
            "CreateTableAsStmt"} <= kinds
    assert len({c["sql"] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c["sql"][:60] for c in CORPUS])
def test_classifier_agrees_with_postgres(optdb, case):
    did = _observe(optdb, case)
    with psycopg.connect(optdb) as conn:
        major = conn.info.server_version // 10000
    # What PostgreSQL does can change between versions (`postgres18 = …` in the corpus);
    # the classifier must be at least as strict as what every version does.
    expected = case.get(f"postgres{major}", case["postgres"])
    assert did == expected, f"PostgreSQL {major}: {did}, the corpus says {expected}"
    cls = classify(case["sql"])
    assert cls.category == case["category"], cls.statements[0].reason
    assert SEVERITY[cls.category] >= SEVERITY[NEEDS[did]], (did, cls.category)
    refusal = cls.statements[0].refusal
    assert (refusal is not None) == bool(case.get("refused")), refusal
    if refusal is not None:
        assert not refusal.startswith("pgguard") and refusal[0].isalpha()


# --- booleans ------------------------------------------------------------------------

OPTION_VALUES = ["", "true", "false", "on", "off", "TRUE", "Off", "oN", "1", "0", "2", "-1",
                 "1.0", "0.0", "yes", "no", "t", "f", "'true'", "'off'", "'1'", "'0'",
                 "'yes'", "' on'", "'tru'", "'of'", "\"on\"", "\"ON\"", "'TRUE'", "''"]


def test_def_boolean_is_postgres_defgetboolean(optdb):
    """EXPLAIN (ANALYZE v) DELETE: PostgreSQL deletes, only plans, or rejects v."""
    with psycopg.connect(optdb) as conn:
        for v in OPTION_VALUES:
            sql = f"EXPLAIN (ANALYZE {v}) DELETE FROM opt_t"
            try:
                conn.execute(sql)
                pg = conn.execute("SELECT count(*) FROM opt_t").fetchone()[0] == 0
            except psycopg.Error:
                pg = None
            conn.rollback()
            (_, arg), = def_elems(parse(sql).statements[0].node["ExplainStmt"]["options"])
            assert def_boolean(arg) is pg, (v, pg)


SETTING_VALUES = ["on", "off", "ON", "Of", "o", "of", "off ", " on", "t", "tr", "tru", "true",
                  "truex", "f", "fa", "false", "y", "ye", "yes", "yess", "n", "no", "non",
                  "1", "0", "01", "10", "2", "", "onn", "offf", "TrUe", "NO", "1.0"]


def test_guc_boolean_is_postgres_parse_bool(optdb):
    with psycopg.connect(optdb) as conn:
        for v in SETTING_VALUES:
            try:
                conn.execute("SELECT set_config('enable_seqscan', %s, true)", (v,))
                pg = conn.execute("SHOW enable_seqscan").fetchone()[0] == "on"
            except psycopg.Error:
                pg = None
            conn.rollback()
            assert guc_boolean(v) is pg, (v, pg)


def test_transaction_modes_last_wins_and_are_txn(optdb):
    """BEGIN/START TRANSACTION/SET TRANSACTION apply their modes in order (the last
    wins); the classifier needs none of it: each statement is judged on its own."""
    cases = [("BEGIN READ ONLY, READ WRITE", "off"), ("BEGIN READ WRITE, READ ONLY", "on"),
             ("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE, READ WRITE", "off"),
             ("BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE READ ONLY", "on")]
    with psycopg.connect(optdb, autocommit=True) as conn:
        for sql, read_only in cases:
            conn.execute(sql)
            assert conn.execute("SHOW transaction_read_only").fetchone()[0] == read_only, sql
            conn.execute("ROLLBACK")
            assert classify(sql).category == "txn"
        conn.execute("BEGIN")
        conn.execute("SET TRANSACTION READ ONLY, READ WRITE")
        assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "off"
        conn.execute("ROLLBACK")
    assert classify("SET TRANSACTION READ ONLY, READ WRITE").category == "txn"


# --- encoding names --------------------------------------------------------------------

NAME_VARIANTS = ["unicode", "UNICODE", "Unicode", "utf-8", "UTF_8", "utf8", "u t f 8",
                 "sjis", "SJIS", "Shift_JIS", "shift-jis", "mskanji", "MS_Kanji", "win932",
                 "Windows-932", "sjis!", "s-j-i-s", "latin9", "Latin-9", "ISO-8859-15",
                 "iso_8859_15", "iso885915", "win1252", "Windows-1252", "cp1252", "koi8r",
                 "KOI8-R", "koi8", "koi8_u", "euc_jp", "EUC-JP", "eucjp", "euc_jis_2004",
                 "shift_jis_2004", "big5", "Big-5", "win950", "gbk", "cp936", "win936",
                 "gb18030", "GB-18030", "uhc", "win949", "johab", "mule_internal",
                 "MULE-INTERNAL", "euc_tw", "EUC-TW", "euc_cn", "euc_kr", "sql_ascii",
                 "SQL-ASCII", "ascii", "abc", "tcvn", "TCVN-5712", "vscii", "alt", "win",
                 "WIN866", "win874", "iso-8859-5", "ISO_8859_8", "iso88599", "latin10",
                 "LATIN_1", "latin", "utf9", "", "  ", "-", "é", "sjïs", "sjéis", "ut8", "utf16",
                 "windows", "x" * 70, "sjis" + "!" * 70]


def _pg_names(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT pg_encoding_to_char(i) FROM generate_series(0, 60) i").fetchall() if r[0]]


def test_canonical_names_are_postgres_own(optdb):
    with psycopg.connect(optdb) as conn:
        assert tuple(_pg_names(conn)) == encodings.CANONICAL


def test_normalize_is_pg_char_to_encoding(optdb):
    """For every canonical name, alias and variant: pgguard finds the encoding PostgreSQL
    finds, or PostgreSQL finds none."""
    names = [*encodings.CANONICAL, *encodings.ALIASES, *NAME_VARIANTS]
    with psycopg.connect(optdb) as conn:
        rows = conn.execute(
            "SELECT n, pg_encoding_to_char(pg_char_to_encoding(n)) FROM unnest(%s::text[]) n",
            (names,)).fetchall()
    for name, pg in rows:
        ours = encodings.normalize(name)
        if pg:
            assert ours == pg, name
        else:
            # PostgreSQL knows no such encoding: nothing is set. pgguard may still have
            # found one (a name of 64 bytes or more), and judges by it: stricter.
            assert ours is None or len(name.encode()) >= 64, name


#: Sets client_encoding in a subtransaction that is then undone, so the client never
#: switches (psycopg has no codec for some): what PostgreSQL reports, or its error.
TRY_ENCODING = """
CREATE FUNCTION pg_temp.try_encoding(n text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE shown text; detail text;
BEGIN
    BEGIN
        PERFORM set_config('client_encoding', n, true);
        shown := current_setting('client_encoding');
        RAISE EXCEPTION USING ERRCODE = 'P0099';
    EXCEPTION
        WHEN SQLSTATE 'P0099' THEN RETURN shown;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            RETURN 'error: ' || SQLERRM || ' ' || detail;
    END;
END $$"""


def test_set_client_encoding_reports_what_normalize_says(optdb):
    """SET client_encoding with every name: PostgreSQL reports (SHOW, ParameterStatus)
    the canonical name normalize() gives, or "UNICODE" for that exact spelling."""
    names = [*encodings.CANONICAL, *encodings.ALIASES, *NAME_VARIANTS]
    with psycopg.connect(optdb) as conn:
        conn.execute(TRY_ENCODING)
        rows = conn.execute("SELECT n, pg_temp.try_encoding(n) FROM unnest(%s::text[]) n",
                            (names,)).fetchall()
        assert conn.execute("SHOW client_encoding").fetchone()[0] == "UTF8"
        conn.rollback()
    accepted = 0
    for name, shown in rows:
        if shown.startswith("error: "):
            # Unknown to PostgreSQL, or no conversion to the server's UTF8 (MULE_INTERNAL).
            assert encodings.normalize(name) is None or "conversion" in shown.lower() \
                or len(name.encode()) >= 64, (name, shown)
            continue
        accepted += 1
        assert shown == ("UNICODE" if name == "UNICODE" else encodings.normalize(name)), name
        assert encodings.normalize(shown) == encodings.normalize(name)
    assert accepted > 100


def test_postgres_accepts_the_encodings_pgguard_refuses(optdb):
    """Every refused encoding is one a client could really switch to."""
    with psycopg.connect(optdb) as conn:
        for name in sorted(encodings.NOT_ASCII_SAFE):
            conn.execute("SELECT set_config('client_encoding', %s, true)", (name,))
            assert conn.execute("SHOW client_encoding").fetchone()[0] == name
            conn.rollback()
