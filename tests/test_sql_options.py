"""Option lists as PostgreSQL reads them (pgguard.sql.nodes), and where the classifier and
masking read them (no database: tests/test_policy_options_pg.py runs them on PostgreSQL)."""

from __future__ import annotations

import pytest

from pgguard.masking.plan import CopyOptions, Refused, copy_options
from pgguard.policy import Policy, classify, deny_message
from pgguard.sql.nodes import (
    NO_ARG,
    def_boolean,
    def_elems,
    def_last,
    def_repeated,
    def_string,
    def_values,
    guc_boolean,
)
from pgguard.sql.parse import parse


def _options(sql: str) -> list:
    (body,) = parse(sql).statements[0].node.values()
    return body.get("options") or []


def test_def_elems_in_order_and_last_wins():
    opts = _options("EXPLAIN (ANALYZE false, VERBOSE, ANALYZE 1, FORMAT json) SELECT 1")
    assert [n for n, _ in def_elems(opts)] == ["analyze", "verbose", "analyze", "format"]
    assert def_last(opts, "analyze") == (True, {"Integer": {"ival": 1}})
    assert def_last(opts, "costs") == (False, NO_ARG)
    assert def_values(opts, "verbose") == [NO_ARG]
    assert def_repeated(opts) == {"analyze"}
    assert def_repeated(_options("COPY t TO STDOUT (FORMAT csv)")) == frozenset()


def test_def_elems_refuses_what_is_not_a_defelem():
    with pytest.raises(ValueError):
        def_elems([{"String": {"sval": "x"}}])


@pytest.mark.parametrize("arg,text", [
    ({"String": {"sval": "csv"}}, "csv"), ({"String": {}}, ""),
    ({"Integer": {"ival": 7}}, "7"), ({"Integer": {}}, "0"), ({"Float": {"fval": "1.5"}}, "1.5"),
    ({"Boolean": {"boolval": True}}, "true"), ({"Boolean": {}}, "false"),
    ({"A_Const": {"ival": {"ival": 1}, "location": 3}}, "1"),
    ({"A_Const": {"sval": {"sval": "x"}}}, "x"),
    ({"A_Star": {}}, "*"),
    ({"List": {"items": [{"String": {"sval": "a"}}, {"String": {"sval": "b"}}]}}, "a.b"),
    ({"TypeName": {}}, None), (NO_ARG, None), ({"A_Const": {"isnull": True}}, None),
])
def test_def_string(arg, text):
    assert def_string(arg) == text


@pytest.mark.parametrize("value,result", [
    ("", True), ("true", True), ("TRUE", True), ("on", True), ("'On'", True), ("1", True),
    ("false", False), ("off", False), ("0", False), ("'OFF'", False), ('"false"', False),
    ("yes", None), ("no", None), ("t", None), ("2", None), ("-1", None), ("1.0", None),
    ("'tru'", None), ("''", None),
])
def test_def_boolean(value, result):
    (_, arg), = def_elems(_options(f"EXPLAIN (ANALYZE {value}) SELECT 1"))
    assert def_boolean(arg) is result


@pytest.mark.parametrize("text,result", [
    ("on", True), ("ON", True), ("of", False), ("off", False), ("o", None), ("t", True),
    ("tru", True), ("truex", None), ("y", True), ("ye", True), ("n", False), ("no", False),
    ("non", None), ("1", True), ("0", False), ("01", None), ("", None), (" on", None),
    ("f", False), ("FALSE", False),
])
def test_guc_boolean(text, result):
    assert guc_boolean(text) is result


# --- EXPLAIN ---------------------------------------------------------------------------

@pytest.mark.parametrize("options,runs", [
    ("ANALYZE", True), ("ANALYZE false, ANALYZE true", True), ("ANALYZE true, ANALYZE false", False),
    ("ANALYZE off, VERBOSE, ANALYZE", True), ("ANALYZE, ANALYZE 0", False),
    ("ANALYSE 0, ANALYZE 1", True), ("ANALYZE yes", True), ("ANALYZE no, ANALYZE false", True),
    ("\"ANALYZE\"", True), ("VERBOSE, COSTS off", False), ("ANALYZE 'off'", False),
])
def test_explain_last_analyze_wins(options, runs):
    cls = classify(f"EXPLAIN ({options}) DELETE FROM t")
    assert (cls.category == "write") is runs, cls.statements[0].reason
    assert cls.kind == ("EXPLAIN ANALYZE" if runs else "EXPLAIN")


# --- COPY (masking reads the format) ---------------------------------------------------

@pytest.mark.parametrize("sql,expected", [
    ("COPY t TO STDOUT", CopyOptions()),
    ("COPY t TO STDOUT CSV HEADER", CopyOptions("csv", ",", '"', '"', "", True)),
    ("COPY t TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', NULL 'n', DELIMITER ';')",
     CopyOptions("csv", ";", "'", "\\", "n", False)),
    ("COPY t TO STDOUT (FORMAT csv, QUOTE 'x')", CopyOptions("csv", ",", "x", "x", "", False)),
    ("COPY BINARY t TO STDOUT", CopyOptions("binary")),
    ("COPY t TO STDOUT WITH BINARY", CopyOptions("binary")),
    ("COPY t TO STDOUT (FORMAT text, HEADER 1, DELIMITER '|')",
     CopyOptions("text", "|", '"', '"', "\\N", True)),
    ("COPY t TO STDOUT (HEADER off, NULL *)", CopyOptions(null="*")),
    ("COPY t TO STDOUT (FORCE_QUOTE *, FORMAT csv)", CopyOptions("csv", ",", '"', '"', "", False)),
])
def test_copy_options(sql, expected):
    assert copy_options(_options(sql)) == expected


@pytest.mark.parametrize("sql", [
    "COPY t TO STDOUT (FORMAT csv, FORMAT binary)",
    "COPY t TO STDOUT (DELIMITER ',', DELIMITER '|')",
    "COPY t TO STDOUT WITH CSV CSV",
    "COPY t TO STDOUT (FORMAT 'CSV')",
    "COPY t TO STDOUT (FORMAT xml)",
    "COPY t TO STDOUT (HEADER 2)",
    "COPY t TO STDOUT (HEADER maybe)",
    "COPY t TO STDOUT (NOSUCH 1)",
    "COPY t TO STDOUT (\"FORMAT\" csv)",
    "COPY t TO STDOUT (ENCODING 'LATIN1')",
])
def test_copy_options_postgres_rejects_are_refused(sql):
    with pytest.raises(Refused):
        copy_options(_options(sql))


# --- settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SET client_encoding TO 'SJIS'", "SET NAMES 'sjis'", "SET LOCAL client_encoding = big5",
    "SET SESSION \"client_encoding\" TO 'GBK'", "SET client_encoding TO 'uhc'",
    "SET client_encoding = 'windows936', 'UTF8'", "SET client_encoding = 6",
    "SET client_encoding TO 'mule_internal'", "SET client_encoding TO 'EUC-TW'",
    "SELECT set_config('client_encoding', 'SJIS', false)",
    "SELECT set_config('CLIENT_ENCODING', 'SJIS', true)",
    "SELECT set_config('client_encoding', 'SJIS' || '', false)",
    "PREPARE p AS SELECT set_config('client_encoding', $1, false)",
    "CREATE FUNCTION f(text) RETURNS text LANGUAGE sql "
    "AS $$SELECT set_config('client_encoding', $1, false)$$",
    "EXPLAIN ANALYZE SELECT set_config('client_encoding', $1, false)",
    "SELECT set_config($1, 'SJIS', false)",
    "SELECT set_config(new_value => 'sjis', setting_name => 'client_encoding', is_local => true)",
    "SELECT set_config('client_encoding', new_value => 'sjis', is_local => true)",
    "SELECT set_config(name, 'x', false) FROM t",
    "SELECT set_config(setting_name => name, new_value => 'x', is_local => false) FROM t",
    "SELECT set_config(nosuch => 'client_encoding', new_value => 'x', is_local => false)",
    "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
    "UPDATE \"PG_SETTINGS\" SET setting = 'x'",
    "WITH u AS (UPDATE pg_catalog.pg_settings SET setting = 'x' RETURNING 1) SELECT 1",
    "COPY t TO STDOUT (ENCODING 'SJIS')", "COPY t FROM STDIN (ENCODING 'big5')",
    "COPY t TO STDOUT (ENCODING 'nosuch')",
    "ALTER ROLE r SET client_encoding = 'SJIS'", "ALTER DATABASE d SET client_encoding TO 'gbk'",
    "ALTER FUNCTION f() SET client_encoding = 'SJIS'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding = 'big5' AS 'SELECT 1'",
    "ALTER SYSTEM SET client_encoding = 'SJIS'",
    "PREPARE p AS SELECT set_config('client_encoding', 'SJIS', false)",
    "SELECT 1; SET NAMES 'SJIS'",
])
def test_refused_whatever_the_grant(sql):
    cls = classify(sql)
    refusal = next(st.refusal for st in cls.statements if st.refusal)
    assert refusal
    policy = Policy(_everything())
    decision = policy.decide(["all"], cls)
    assert decision.action == "deny"
    assert deny_message(decision, "db").startswith("pgguard: ")


@pytest.mark.parametrize("sql", [
    "SET client_encoding TO 'UTF8'", "SET NAMES 'latin9'", "SET client_encoding TO DEFAULT",
    "RESET client_encoding", "SET NAMES", "RESET ALL", "DISCARD ALL",
    "SET client_encoding TO 'EUC_JP'", "SET client_encoding = 'WIN1252'",
    "SELECT set_config('client_encoding', 'utf-8', false)",
    "SELECT set_config('client_encoding', NULL, false)",
    "SELECT set_config('search_path', 'public', false)",
    "SELECT current_setting('client_encoding')", "SHOW client_encoding",
    "COPY t TO STDOUT (ENCODING 'LATIN1')", "UPDATE my_settings SET setting = 'SJIS'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding FROM CURRENT AS 'SELECT 1'",
    "ALTER ROLE r RESET client_encoding",
    "EXPLAIN UPDATE pg_settings SET setting = 'x'",
])
def test_not_refused(sql):
    assert all(st.refusal is None for st in classify(sql).statements)


def test_a_bound_client_encoding_is_left_to_the_bind():
    """psycopg's set_client_encoding(): the value comes with Bind; the session checks it."""
    st = classify("select set_config('client_encoding', $1, false)").statements[0]
    assert st.refusal is None and st.encoding_params == (1,) and st.category == "read"
    st = classify("SELECT set_config('search_path', $1, false), "
                  "set_config('client_encoding', $2, true)").statements[0]
    assert st.encoding_params == (2,)
    assert classify("SELECT set_config('search_path', $1, false)").statements[0] \
        .encoding_params == ()


def test_execute_with_parameters_of_an_unknown_statement_is_refused():
    """A statement prepared with Parse is not in the SQL-level map: its EXECUTE may feed
    set_config('client_encoding', $1, …) a value the session never sees in a Bind."""
    from pgguard.policy import remember_prepared
    prepared: dict = {}
    remember_prepared(prepared, classify("PREPARE q(text) AS SELECT length($1)"))
    for sql in ("EXECUTE z('SJIS')", "EXPLAIN ANALYZE EXECUTE z('SJIS')",
                "CREATE TABLE x AS EXECUTE z('SJIS')"):
        assert classify(sql, prepared).statements[0].refusal, sql
        assert classify(sql).statements[0].refusal, sql
    for sql in ("EXECUTE q('SJIS')", "EXECUTE z", "EXPLAIN ANALYZE EXECUTE q('x')"):
        assert classify(sql, prepared).statements[0].refusal is None, sql


def test_execute_of_a_refused_prepare_is_refused():
    from pgguard.policy import remember_prepared
    prepared: dict = {}
    remember_prepared(prepared, classify("PREPARE p AS SELECT set_config('client_encoding', "
                                         "'SJIS', false)"))
    st = classify("EXECUTE p", prepared).statements[0]
    assert st.refusal and "SJIS" in st.refusal


@pytest.mark.parametrize("sql,category", [
    ("SET standard_conforming_strings = tru", "txn"),
    ("SET standard_conforming_strings = 'ON'", "txn"),
    ("SET standard_conforming_strings = 1", "txn"),
    ("SET standard_conforming_strings = of", "privileged"),
    ("SET standard_conforming_strings = o", "privileged"),
    ("SET standard_conforming_strings = on, off", "privileged"),
    ("SET standard_conforming_strings TO DEFAULT", "privileged"),
    ("SELECT set_config('standard_conforming_strings', 'yes', false)", "read"),
    ("SELECT set_config('standard_conforming_strings', 'n', false)", "privileged"),
    ("SELECT set_config(setting_name => 'role', new_value => 'x', is_local => false)",
     "privileged"),
])
def test_parser_and_role_settings(sql, category):
    assert classify(sql).category == category


@pytest.mark.parametrize("sql,category", [
    ("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$SELECT pg_read_file('x')$$",
     "privileged"),
    ("CREATE FUNCTION f() RETURNS text LANGUAGE 'SQL' AS $$SELECT pg_read_file('x')$$",
     "privileged"),
    ("CREATE FUNCTION f() RETURNS text AS $$SELECT pg_read_file('x')$$ LANGUAGE plpgsql "
     "LANGUAGE sql", "privileged"),
    ("CREATE FUNCTION f() RETURNS text AS $$SELECT pg_read_file('x')$$", "privileged"),
    ("CREATE FUNCTION f() RETURNS text AS $$SELECT pg_read_file('x')$$ AS $$SELECT 1$$ "
     "LANGUAGE sql", "privileged"),
    ("CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$BEGIN RETURN "
     "pg_read_file('x'); END$$", "ddl"),
])
def test_function_bodies(sql, category):
    assert classify(sql).category == category


def _everything():
    from pgguard.config import ConnectionConfig, GrantConfig
    grant = GrantConfig(groups=("all",), actions=dict.fromkeys(
        ("read", "write", "ddl", "privileged", "txn", "unknown"), "allow"))
    return ConnectionConfig(name="db", host="h", port=5432, dbname="d", grants=(grant,))
