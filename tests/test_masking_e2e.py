"""Masking end to end: the red team.

Every query runs through a real gateway with psycopg 3 as a non-exempt user, and the test
asserts that no clear value of a masked column appears anywhere in what the client
receives: rows (text and binary format), COPY output, error and notice text. The clear
values come from the fixture database itself (read directly as the superuser), in the
forms a query could turn them into (case, separators removed, reversed, hex, base64).
The same queries as an exempt user return clear values.
"""

from __future__ import annotations

import base64
import re
from importlib import resources
from typing import Any

import psycopg
import pytest
from harness.gateway import APP_PASSWORD, APP_PASSWORD_ENV, APP_USER, ThreadGateway
from harness.postgres import skip_unless_server_has

from pgguard.net.masker import attach_masking

pytestmark = pytest.mark.usefixtures("app_db")

FIXTURE = str(resources.files("pgguard").joinpath("demo_data/pii_schema.sql"))
DBNAME = "pgguard_masking_e2e"
CONN = "pii"
EXEMPT = "privacy-officers"

RULES = [
    {"columns": ["public.users.ssn", "*.*.card_number"], "strategy": "partial", "keep": 4},
    {"columns": ["*.email"], "strategy": "hash"},
    {"columns": ["users.phone", "users.profile"], "strategy": "redact"},
    {"columns": ["users.name"], "strategy": "null"},
]

EXTRA_SQL = """
CREATE TABLE accounts_ext (id int PRIMARY KEY, user_id int REFERENCES users (id),
                           label text, balance numeric);
INSERT INTO accounts_ext SELECT id, id, 'acct-' || id, id * 100 FROM users;
CREATE TABLE email_aliases (email text, user_id int);
INSERT INTO email_aliases SELECT email, id FROM users WHERE id <= 5;
CREATE FUNCTION get_ssn(i int) RETURNS text LANGUAGE sql AS 'SELECT ssn FROM users WHERE id = i';
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN RAISE NOTICE 'value is %', t; RETURN 'ok'; END $$;
CREATE VIEW user_ssn AS SELECT id, ssn AS tax_number FROM users;
CREATE MATERIALIZED VIEW user_emails AS SELECT id, email FROM users;
"""


# --- the fixture database and the gateway ---------------------------------------------


def _owner_dsn(pg) -> str:
    return (f"host={pg.host} port={pg.port} dbname={DBNAME} user={APP_USER} "
            f"password={APP_PASSWORD} sslmode=disable")


@pytest.fixture(scope="module")
def pii_db(pg, app_db):
    """pgguard/demo_data/pii_schema.sql in its own database, owned by the gateway's login role."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBNAME} OWNER {APP_USER}")
    with open(FIXTURE) as f:
        schema = f.read()
    with psycopg.connect(_owner_dsn(pg), autocommit=True) as conn:
        conn.execute(schema)
        conn.execute(EXTRA_SQL)
    return pg


@pytest.fixture(scope="module")
def clear_values(pii_db) -> list[str]:
    """Every clear value of a masked column, read directly (not through the gateway)."""
    with psycopg.connect(pii_db.dsn(DBNAME)) as conn:
        rows = conn.execute("SELECT name, email, ssn, card_number, phone, profile::text "
                            "FROM users").fetchall()
        profile_bits = conn.execute(
            "SELECT DISTINCT v FROM users, LATERAL (SELECT profile->>'address' "
            "UNION ALL SELECT profile->>'tax_id' UNION ALL SELECT c->>'value' "
            "FROM jsonb_array_elements(profile->'contacts') c) AS x(v)").fetchall()
    values: set[str] = set()
    for row in rows:
        values.update(v for v in row if v)
    values.update(v for (v,) in profile_bits if v)
    return sorted(values)


def _variants(value: str) -> set[str]:
    """Forms a query could turn a clear value into without the gateway noticing."""
    out = {value, value.lower(), value.upper(), value[::-1]}
    for sep in ("-", " ", "(", ")", "+"):
        out |= {v.replace(sep, "") for v in list(out)}
    raw = value.encode()
    out |= {raw.hex(), base64.b64encode(raw).decode(), value.replace(" ", "%20")}
    # Short fragments are not evidence (a partial mask keeps the last four characters).
    return {v for v in out if len(v) >= 8}


@pytest.fixture(scope="module")
def needles(clear_values) -> list[str]:
    out: set[str] = set()
    for v in clear_values:
        out |= _variants(v)
    return sorted(out, key=len, reverse=True)


@pytest.fixture(scope="module")
def gw(make_config, pii_db, tmp_path_factory):
    """One gateway for the whole module: connection 'pii' with masking rules."""
    key = tmp_path_factory.mktemp("mask") / "hash.key"
    key.write_text("e2e-test-hash-key\n")
    conn = {
        "name": CONN, "host": pii_db.host, "port": pii_db.port, "dbname": DBNAME,
        "sslmode": "disable", "user": APP_USER, "password_env": APP_PASSWORD_ENV,
        "grants": [
            {"groups": ["readers"], "read": "allow", "write": "deny", "ddl": "deny"},
            {"groups": ["writers"], "read": "allow", "write": "allow", "ddl": "allow",
             "txn": "allow"},
            {"groups": [EXEMPT], "read": "allow", "write": "deny", "ddl": "deny"},
        ],
    }
    cfg = make_config(connections=[conn], masking={
        "exempt_groups": [EXEMPT],
        "hash_key_file": str(key),
        "rules": RULES,
    })
    gateway = ThreadGateway(cfg, attach=attach_masking).start()
    try:
        yield gateway
    finally:
        gateway.stop()


class Client:
    """A psycopg connection through the gateway that keeps everything it received."""

    def __init__(self, gw: ThreadGateway, user: str, token: str):
        self.conn = psycopg.connect(gw.dsn(user, dbname=CONN), password=token,
                                    autocommit=True)
        self.seen: list[str] = []
        self.notices: list[str] = []
        self.conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        text = " | ".join(str(getattr(diag, f) or "") for f in (
            "message_primary", "message_detail", "message_hint", "context",
            "internal_query"))
        self.notices.append(text)
        self.seen.append(text)

    def keep(self, obj: Any) -> None:
        if isinstance(obj, bytes | bytearray | memoryview):
            self.seen.append(bytes(obj).decode("utf-8", "replace"))
        else:
            self.seen.append(repr(obj))
            self.seen.append(str(obj))

    def error(self, exc: psycopg.Error) -> None:
        self.seen.append(str(exc))
        diag = exc.diag
        for f in ("message_primary", "message_detail", "message_hint", "context",
                  "internal_query", "statement_position"):
            self.seen.append(str(getattr(diag, f, "") or ""))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def reader(gw, tokens):
    c = Client(gw, "rita", tokens("rita", ["readers"]))
    yield c
    c.close()


@pytest.fixture(scope="module")
def writer(gw, tokens):
    c = Client(gw, "walt", tokens("walt", ["writers"]))
    yield c
    c.close()


@pytest.fixture(scope="module")
def officer(gw, tokens):
    c = Client(gw, "olga", tokens("olga", [EXEMPT]))
    yield c
    c.close()


def leaks(texts: list[str], needles: list[str]) -> list[str]:
    blob = "\n".join(texts)
    low = blob.lower()
    return [n for n in needles if n in blob or n.lower() in low]


# --- the red-team corpus ----------------------------------------------------------------
#
# (mode, sql, params, expect): mode says how the client sends it; expect is "ok" (must
# succeed for the masked user and, as the exempt user, show clear values), "ok-" (must
# succeed; carries no clear value even unmasked), "err" (must fail), "any".

Q, P, BIN, PREP, COPY, SS, SCRIPT, PIPE = "q", "p", "bin", "prep", "copy", "ss", "script", "pipe"

CASES: list[tuple[str, Any, tuple | None, str]] = [
    # plain columns, aliases, casts
    (Q, "SELECT * FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users", None, "ok"),
    (Q, "SELECT ssn AS x FROM users", None, "ok"),
    (Q, 'SELECT u.ssn AS "tax id", u.email e FROM users u', None, "ok"),
    (Q, "SELECT ssn::varchar(20) FROM users", None, "ok"),
    (Q, "SELECT CAST(card_number AS text) FROM users", None, "ok"),
    (Q, "SELECT ssn COLLATE \"C\" FROM users", None, "ok"),
    (Q, "TABLE users", None, "ok"),
    (Q, "SELECT * FROM users TABLESAMPLE SYSTEM (100)", None, "ok"),
    (Q, "SELECT ssn FROM users LIMIT 1 OFFSET 3", None, "ok"),
    (Q, "SELECT * FROM users WHERE email = 'alice.anderson@example.com'", None, "ok"),
    (Q, "SELECT id, ssn FROM users WHERE ssn LIKE '4%'", None, "ok"),
    # expressions and functions
    (Q, "SELECT ssn || '' FROM users", None, "ok"),
    (Q, "SELECT upper(email) FROM users", None, "ok"),
    (Q, "SELECT lower(email), initcap(name) FROM users", None, "ok"),
    (Q, "SELECT 'ssn: ' || ssn FROM users", None, "ok"),
    (Q, "SELECT concat(name, ' ', ssn) FROM users", None, "ok"),
    (Q, "SELECT concat_ws(',', email, phone) FROM users", None, "ok"),
    (Q, "SELECT substr(ssn, 1, 20) FROM users", None, "ok"),
    (Q, "SELECT substring(card_number from 1 for 30) FROM users", None, "ok"),
    (Q, "SELECT left(email, 100), right(ssn, 11) FROM users", None, "ok"),
    (Q, "SELECT replace(ssn, '-', '') FROM users", None, "ok"),
    (Q, "SELECT reverse(ssn) FROM users", None, "ok"),
    (Q, "SELECT format('%s/%s', ssn, email) FROM users", None, "ok"),
    (Q, "SELECT format('%I', ssn) FROM users", None, "ok"),
    (Q, "SELECT encode(ssn::bytea, 'hex') FROM users", None, "ok"),
    (Q, "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM users", None, "ok"),
    (Q, "SELECT md5(ssn), length(ssn), pg_typeof(ssn) FROM users", None, "ok-"),
    (Q, "SELECT CASE WHEN id > 0 THEN ssn END FROM users", None, "ok"),
    (Q, "SELECT coalesce(card_number, ssn) FROM users", None, "ok"),
    (Q, "SELECT nullif(ssn, 'x') FROM users", None, "ok"),
    (Q, "SELECT greatest(ssn, email) FROM users", None, "ok"),
    (Q, "SELECT regexp_replace(email, '@', ' at ') FROM users", None, "any"),
    (Q, "SELECT overlay(ssn placing '' from 1 for 0) FROM users", None, "ok"),
    (Q, "SELECT quote_literal(ssn), quote_ident(email) FROM users", None, "ok"),
    (Q, "SELECT to_char(id, '999') || ssn FROM users", None, "ok"),
    (Q, "SELECT translate(ssn, '-', '') FROM users", None, "ok"),
    (Q, "SELECT xmlelement(name x, ssn) FROM users", None, "ok"),
    (Q, "SELECT array[ssn, email] FROM users", None, "ok"),
    (Q, "SELECT row(ssn, email) FROM users", None, "ok"),
    # set-returning functions over masked data: the client counts the rows, so refused
    (Q, "SELECT unnest(array[ssn, email]) FROM users", None, "err"),
    # subqueries, CTEs, set operations
    (Q, "SELECT (SELECT ssn FROM users WHERE id = 1)", None, "ok"),
    (Q, "SELECT id, (SELECT email FROM users u2 WHERE u2.id = u.id) FROM users u", None, "ok"),
    (Q, "SELECT * FROM (SELECT ssn, email FROM users) s", None, "ok"),
    (Q, "SELECT x FROM (SELECT ssn FROM users) s(x)", None, "ok"),
    (Q, "SELECT ARRAY(SELECT ssn FROM users)", None, "ok"),
    (Q, "SELECT id FROM users WHERE ssn IN (SELECT ssn FROM users)", None, "ok-"),
    (Q, "VALUES ((SELECT ssn FROM users LIMIT 1))", None, "ok"),
    (Q, "WITH t AS (SELECT ssn FROM users) SELECT * FROM t", None, "ok"),
    (Q, "WITH t(a) AS (SELECT email FROM users) SELECT upper(a) FROM t", None, "ok"),
    (Q, "WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM users WHERE id = 1 UNION ALL "
        "SELECT n + 1, s FROM r WHERE n < 3) SELECT * FROM r", None, "ok"),
    (Q, "WITH a AS (SELECT id, phone FROM users), b AS (SELECT * FROM a) SELECT * FROM b",
     None, "ok"),
    (Q, "SELECT ssn FROM users UNION SELECT email FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users UNION ALL SELECT 'x'", None, "ok"),
    (Q, "SELECT 'x' UNION ALL SELECT ssn FROM users", None, "ok"),
    (Q, "SELECT email FROM users INTERSECT SELECT email FROM email_aliases", None, "ok"),
    (Q, "SELECT email FROM users EXCEPT SELECT 'nobody'", None, "ok"),
    (Q, "SELECT email FROM email_aliases", None, "ok"),
    # views
    (Q, "SELECT * FROM user_contacts", None, "ok"),
    (Q, "SELECT email_lower FROM user_contacts", None, "ok"),
    (Q, "SELECT * FROM user_ssn", None, "ok"),
    (Q, "SELECT tax_number || '' FROM user_ssn", None, "ok"),
    (Q, "SELECT * FROM user_emails", None, "ok"),
    (Q, "SELECT c FROM user_contacts c", None, "ok"),
    # whole rows, JSON, aggregates
    (Q, "SELECT u FROM users u", None, "ok"),
    (Q, "SELECT u::text FROM users u", None, "ok"),
    (Q, "SELECT (u.*)::text FROM users u", None, "ok"),
    (Q, "SELECT (u).ssn FROM users u", None, "ok"),
    (Q, "SELECT row_to_json(u) FROM users u", None, "ok"),
    (Q, "SELECT to_jsonb(u) FROM users u", None, "ok"),
    (Q, "SELECT to_json(u.*) FROM users u", None, "ok"),
    (Q, "SELECT json_build_object('s', ssn) FROM users", None, "ok"),
    (Q, "SELECT jsonb_build_array(email, phone) FROM users", None, "ok"),
    (Q, "SELECT string_agg(ssn, ',') FROM users", None, "ok"),
    (Q, "SELECT array_agg(email) FROM users", None, "ok"),
    (Q, "SELECT json_agg(card_number) FROM users", None, "ok"),
    (Q, "SELECT jsonb_agg(u) FROM users u", None, "ok"),
    (Q, "SELECT json_object_agg(id, ssn) FROM users", None, "ok"),
    (Q, "SELECT min(ssn), max(email) FROM users", None, "ok"),
    (Q, "SELECT array_to_string(array_agg(phone), ';') FROM users", None, "ok"),
    (Q, "SELECT (array_agg(ssn))[1] FROM users", None, "ok"),
    (Q, "SELECT email, count(*) FROM users GROUP BY email", None, "ok"),
    (Q, "SELECT DISTINCT ssn FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users ORDER BY ssn", None, "ok"),
    (Q, "SELECT row_number() OVER (ORDER BY id), ssn FROM users", None, "ok"),
    (Q, "SELECT lag(ssn) OVER (ORDER BY id) FROM users", None, "ok"),
    # the JSON column
    (Q, "SELECT profile FROM users", None, "ok"),
    (Q, "SELECT profile->>'address' FROM users", None, "ok"),
    (Q, "SELECT profile->'contacts' FROM users", None, "ok"),
    (Q, "SELECT jsonb_pretty(profile) FROM users", None, "ok"),
    (Q, "SELECT jsonb_extract_path(profile, 'contacts') FROM users", None, "ok"),
    (Q, "SELECT jsonb_path_query(profile, '$.contacts[*].value') FROM users", None, "err"),
    (Q, "SELECT c->>'value' FROM users, LATERAL jsonb_array_elements(profile->'contacts') c",
     None, "err"),
    (Q, "SELECT c.value FROM users u CROSS JOIN LATERAL "
        "jsonb_array_elements(u.profile->'contacts') AS c", None, "err"),
    (Q, "SELECT e.key, e.value FROM users u, LATERAL jsonb_each_text(u.profile) e", None,
     "err"),
    (Q, "SELECT * FROM ROWS FROM (jsonb_array_elements((SELECT profile->'contacts' "
        "FROM users WHERE id = 1)))", None, "err"),
    (Q, "SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM users", None, "ok"),
    (Q, "SELECT u.id, count(g) FROM users u, LATERAL generate_series(1, ascii(u.email)) g "
        "GROUP BY 1", None, "any"),
    (Q, "SELECT id FROM users LIMIT (SELECT ascii(ssn) FROM users WHERE id = 1)", None,
     "any"),
    (Q, "SELECT (jsonb_populate_record(null::users, to_jsonb(u))).ssn FROM users u", None,
     "ok"),
    # t.*, joins, LATERAL
    (Q, "SELECT t.* FROM users t", None, "ok"),
    (Q, "SELECT t.*, n.* FROM users t JOIN notes n ON n.user_id = t.id", None, "ok"),
    (Q, "SELECT x.s FROM users u, LATERAL (SELECT u.ssn AS s) x", None, "ok"),
    (Q, "SELECT * FROM users u JOIN accounts_ext a ON a.user_id = u.id", None, "ok"),
    (Q, "SELECT a.label, u.email FROM accounts_ext a LEFT JOIN users u USING (id)", None,
     "ok"),
    (Q, "SELECT * FROM users NATURAL JOIN accounts_ext", None, "ok"),
    # free text with PII in a column no rule names: the detectors
    (Q, "SELECT * FROM notes", None, "ok"),
    (Q, "SELECT upper(body) FROM notes", None, "ok"),
    (Q, "SELECT n.body, u.email FROM notes n JOIN users u ON u.id = n.user_id", None, "ok"),
    # opaque functions and notices
    (Q, "SELECT get_ssn(1)", None, "ok"),
    (Q, "SELECT get_ssn(id) FROM users", None, "ok"),
    # a user function given a masked column may store it: refused
    (Q, "SELECT shout(ssn) FROM users WHERE id = 1", None, "err"),
    (Q, "SELECT shout(email) FROM users", None, "err"),
    # casts that fail echo the value in the error
    (Q, "SELECT ssn::int FROM users", None, "err"),
    (Q, "SELECT email::int FROM users", None, "err"),
    (Q, "SELECT card_number::numeric FROM users", None, "err"),
    (Q, "SELECT ssn::date FROM users", None, "err"),
    (Q, "SELECT (ssn || 'x')::jsonb FROM users", None, "any"),
    (Q, "SELECT ('\"' || ssn)::jsonb FROM users", None, "err"),
    (Q, "SELECT profile->>'address' || '}' FROM users WHERE (profile->>'address')::int > 0",
     None, "err"),
    (Q, "SELECT to_number(ssn, 'x') FROM users", None, "any"),
    # several statements in one Query
    (Q, "SELECT 1; SELECT ssn FROM users; SELECT email FROM users", None, "ok"),
    (Q, "EXPLAIN (VERBOSE) SELECT ssn FROM users", None, "ok-"),
    # extended protocol with parameters
    (P, "SELECT ssn FROM users WHERE id = %s", (1,), "ok"),
    (P, "SELECT email, %s::text FROM users", ("x",), "ok"),
    (P, "SELECT * FROM users WHERE id > %s", (0,), "ok"),
    (P, "SELECT format('%%s', ssn) FROM users WHERE id = %s", (2,), "ok"),
    (P, "SELECT row_to_json(u) FROM users u WHERE id = %s", (3,), "ok"),
    (P, "SELECT ssn::int FROM users WHERE id = %s", (1,), "err"),
    (P, "SELECT body FROM notes WHERE user_id = %s", (1,), "ok"),
    # binary format
    (BIN, "SELECT * FROM users", None, "ok"),
    (BIN, "SELECT ssn, email, card_number, phone, profile FROM users", None, "ok"),
    (BIN, "SELECT u FROM users u", None, "ok"),
    (BIN, "SELECT array_agg(ssn) FROM users", None, "ok"),
    (BIN, "SELECT to_jsonb(u) FROM users u", None, "ok"),
    (BIN, "SELECT body FROM notes", None, "ok"),
    # prepared statements executed many times (protocol level)
    (PREP, "SELECT ssn, email FROM users WHERE id = %s", (4,), "ok"),
    (PREP, "SELECT * FROM user_contacts WHERE id > %s", (0,), "ok"),
    # SQL PREPARE / EXECUTE
    (SCRIPT, ["PREPARE s1 AS SELECT ssn, email FROM users", "EXECUTE s1", "EXECUTE s1",
              "DEALLOCATE s1"], None, "ok"),
    (SCRIPT, ["PREPARE s2(int) AS SELECT row_to_json(u) FROM users u WHERE id = $1",
              "EXECUTE s2(3)", "DEALLOCATE s2"], None, "ok"),
    # SQL cursors fetched in pieces, text and binary
    (SCRIPT, ["BEGIN", "DECLARE c1 CURSOR FOR SELECT ssn, email FROM users",
              "FETCH 3 FROM c1", "FETCH 5 FROM c1", "MOVE 2 IN c1", "FETCH ALL FROM c1",
              "CLOSE c1", "COMMIT"], None, "ok"),
    (SCRIPT, ["BEGIN", "DECLARE c2 BINARY CURSOR FOR SELECT ssn, profile FROM users",
              "FETCH 4 FROM c2", "FETCH ALL FROM c2", "COMMIT"], None, "ok"),
    (SCRIPT, ["BEGIN", "DECLARE c3 CURSOR FOR SELECT u FROM users u", "FETCH 2 FROM c3",
              "FETCH NEXT FROM c3", "FETCH ALL FROM c3", "COMMIT"], None, "ok"),
    # server-side cursors through psycopg (extended protocol, fetched in pieces)
    (SS, "SELECT * FROM users", None, "ok"),
    (SS, "SELECT ssn, body FROM users JOIN notes ON notes.user_id = users.id", None, "ok"),
    # COPY TO STDOUT
    (COPY, "COPY users TO STDOUT", None, "ok"),
    (COPY, "COPY users (ssn, email) TO STDOUT WITH (FORMAT csv, HEADER)", None, "ok"),
    (COPY, "COPY (SELECT * FROM users) TO STDOUT WITH (FORMAT binary)", None, "ok"),
    (COPY, "COPY (SELECT row_to_json(u) FROM users u) TO STDOUT", None, "ok"),
    (COPY, "COPY notes TO STDOUT (FORMAT csv)", None, "ok"),
    (COPY, "COPY (SELECT ssn, phone FROM users) TO STDOUT WITH (DELIMITER '|')", None, "ok"),
    (COPY, "COPY (SELECT * FROM user_contacts) TO STDOUT (FORMAT csv, FORCE_QUOTE *)", None,
     "ok"),
    # pipeline mode
    (PIPE, ["SELECT ssn FROM users WHERE id = %s", "SELECT email FROM users",
            "SELECT row_to_json(u) FROM users u", "SELECT phone FROM users"], (1,), "ok"),
    (PIPE, ["SELECT ssn FROM users WHERE id = %s", "SELECT email::int FROM users",
            "SELECT row_to_json(u) FROM users u"], (1,), "err"),
]


def _rollback(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def run_case(client: Client, mode: str, sql: Any, params: tuple | None) -> bool:
    """Run one case; keep everything received. Returns True when nothing failed."""
    conn = client.conn
    ok = True
    try:
        if mode == Q:
            cur = conn.cursor()
            cur.execute(sql)
            while True:
                if cur.description is not None:
                    client.keep(cur.fetchall())
                if not cur.nextset():
                    break
        elif mode == P:
            client.keep(conn.execute(sql, params).fetchall())
        elif mode == BIN:
            client.keep(conn.cursor(binary=True).execute(sql).fetchall())
        elif mode == PREP:
            for _ in range(3):
                client.keep(conn.execute(sql, params, prepare=True).fetchall())
        elif mode == SCRIPT:
            for stmt in sql:
                cur = conn.execute(stmt)
                if cur.description is not None:
                    client.keep(cur.fetchall())
        elif mode == SS:
            with conn.transaction(), conn.cursor(name="red_team") as cur:
                cur.itersize = 4
                cur.execute(sql)
                while rows := cur.fetchmany(3):
                    client.keep(rows)
        elif mode == COPY:
            with conn.cursor().copy(sql) as copy:
                for data in copy:
                    client.keep(data)
        elif mode == PIPE:
            with conn.pipeline():
                curs = [conn.execute(s, params if "%s" in s else None) for s in sql]
            for cur in curs:
                client.keep(cur.fetchall())
    except psycopg.Error as exc:
        client.error(exc)
        ok = False
        if mode == PIPE:
            # Results of the statements before the failing one are still there.
            for cur in locals().get("curs", []):
                try:
                    client.keep(cur.fetchall())
                except psycopg.Error:
                    pass
    finally:
        _rollback(conn)
    return ok


def _case_id(case) -> str:
    mode, sql, _, _ = case
    text = sql if isinstance(sql, str) else " ; ".join(sql)
    return f"{mode}:{re.sub(r'[^a-zA-Z0-9]+', '_', text)[:60]}"


def _skip_xml_without_libxml(sql) -> None:
    if "xml" in (sql if isinstance(sql, str) else " ".join(sql)).lower():
        skip_unless_server_has("xml")


def test_corpus_is_big_enough():
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_no_clear_value_reaches_a_masked_user(reader, needles, case):
    mode, sql, params, expect = case
    _skip_xml_without_libxml(sql)
    reader.seen.clear()
    ok = run_case(reader, mode, sql, params)
    found = leaks(reader.seen, needles)
    assert not found, f"clear values leaked: {found[:5]}\n{reader.seen[:3]}"
    if expect in ("ok", "ok-"):
        assert ok, f"expected success: {reader.seen[-6:]}"
        assert "".join(reader.seen), "nothing received"
    elif expect == "err":
        assert not ok


@pytest.mark.parametrize("case", [c for c in CASES if c[3] in ("ok", "err")],
                         ids=[_case_id(c) for c in CASES if c[3] in ("ok", "err")])
def test_exempt_user_sees_clear_values(officer, needles, case):
    mode, sql, params, _ = case
    _skip_xml_without_libxml(sql)
    officer.seen.clear()
    run_case(officer, mode, sql, params)
    assert leaks(officer.seen, needles), f"no clear value for the exempt user: " \
                                         f"{officer.seen[:3]}"


# --- strategies ---------------------------------------------------------------------------


def test_hash_gives_equal_tokens_for_equal_inputs_and_joins_work(reader, officer):
    rows = reader.conn.execute(
        "SELECT u.id, u.email, a.email FROM users u "
        "JOIN email_aliases a ON a.user_id = u.id ORDER BY u.id").fetchall()
    assert len(rows) == 5
    assert all(r[1] == r[2] and r[1].startswith("h:") and len(r[1]) == 18 for r in rows)
    assert len({r[1] for r in rows}) == 5
    # The client can join on the tokens it was given: same token, same person.
    tokens = dict(reader.conn.execute("SELECT id, email FROM users").fetchall())
    aliases = reader.conn.execute("SELECT user_id, email FROM email_aliases").fetchall()
    assert all(tokens[uid] == tok for uid, tok in aliases)
    # Binary format gives the same tokens as text format.
    binary = dict(reader.conn.cursor(binary=True).execute(
        "SELECT id, email FROM users").fetchall())
    assert binary == tokens
    clear = dict(officer.conn.execute("SELECT id, email FROM users").fetchall())
    assert "@" in clear[1] and clear[1] != tokens[1]


def test_partial_keeps_exactly_keep_characters(reader, officer):
    masked = dict(reader.conn.execute("SELECT id, ssn FROM users").fetchall())
    clear = dict(officer.conn.execute("SELECT id, ssn FROM users").fetchall())
    for uid, value in clear.items():
        assert masked[uid] == "*" * (len(value) - 4) + value[-4:]
    cards = reader.conn.execute("SELECT card_number FROM users").fetchall()
    assert all(c[:-4] == "*" * (len(c) - 4) for (c,) in cards)


def test_null_and_redact_strategies(reader):
    row = reader.conn.execute("SELECT name, phone, profile FROM users WHERE id = 1").fetchone()
    assert row == (None, "***", "***")


# --- writes, refusals, errors and notices -------------------------------------------------


def test_returning_is_masked(writer, needles):
    writer.seen.clear()
    with writer.conn.transaction(force_rollback=True):
        rows = writer.conn.execute(
            "UPDATE users SET created_at = created_at WHERE id <= 3 "
            "RETURNING id, ssn, email, to_jsonb(users)").fetchall()
        writer.keep(rows)
        note = writer.conn.execute(
            "INSERT INTO notes (user_id, body) VALUES (1, 'see ' || %s) "
            "RETURNING body, (SELECT ssn FROM users WHERE id = 1)", ("x",)).fetchall()
        writer.keep(note)
        deleted = writer.conn.execute("DELETE FROM email_aliases WHERE user_id = 2 "
                                      "RETURNING *").fetchall()
        writer.keep(deleted)
        cte = writer.conn.execute("WITH d AS (UPDATE users SET created_at = created_at "
                                  "WHERE id = 4 RETURNING *) SELECT * FROM d").fetchall()
        writer.keep(cte)
    assert len(rows) == 3 and rows[0][1].endswith("7468") and rows[0][1].startswith("***")
    assert note[0][1].startswith("*") and deleted[0][0].startswith("h:")
    assert not leaks(writer.seen, needles)


@pytest.mark.parametrize("sql", [
    "CREATE TABLE stolen AS SELECT ssn FROM users",
    "SELECT ssn INTO stolen FROM users",
    "INSERT INTO notes (user_id, body) SELECT id, ssn FROM users",
    "UPDATE notes SET body = (SELECT ssn FROM users WHERE id = 1)",
    "SELECT pg_notify('c', ssn) FROM users",
])
def test_storing_masked_values_elsewhere_is_refused(writer, sql):
    with pytest.raises(psycopg.Error) as info:
        writer.conn.execute(sql)
    assert info.value.sqlstate == "42501"
    assert "pgguard: masking" in str(info.value)
    _rollback(writer.conn)


def test_constraint_errors_do_not_echo_values(writer, needles):
    writer.seen.clear()
    for sql in ["UPDATE users SET email = (SELECT email FROM users WHERE id = 2) WHERE id = 1",
                "UPDATE users SET email = lower(email) || '' WHERE id = 2",
                "INSERT INTO users (id, name, email, ssn) VALUES (1, 'x', 'x@example.org', 'y')",
                "UPDATE users SET ssn = NULL WHERE id = 3"]:
        try:
            writer.conn.execute(sql)
        except psycopg.Error as exc:
            writer.error(exc)
        _rollback(writer.conn)
    assert not leaks(writer.seen, needles)
    assert any("violates" in s or "pgguard" in s for s in writer.seen)


def test_notices_raised_with_masked_values_are_withheld(reader, needles):
    reader.seen.clear()
    reader.notices.clear()
    # A user function given masked columns is refused before it runs (it may store them).
    with pytest.raises(psycopg.Error) as info:
        reader.conn.execute("SELECT shout(ssn), shout(email) FROM users WHERE id <= 2")
    assert info.value.sqlstate == "42501"
    _rollback(reader.conn)
    reader.conn.execute("SELECT shout('x') FROM users WHERE id <= 2").fetchall()
    assert len(reader.notices) == 2
    assert not leaks(reader.notices, needles)


def test_exempt_user_gets_clear_notices(officer):
    officer.notices.clear()
    officer.conn.execute("SELECT shout(ssn) FROM users WHERE id = 1").fetchall()
    assert any("432-29-7468" in n for n in officer.notices)


# --- the catalog follows DDL --------------------------------------------------------------


def test_views_created_in_the_session_are_planned_with_the_new_catalog(writer, needles):
    c = writer.conn
    writer.seen.clear()
    try:
        c.execute("CREATE VIEW v_labels AS SELECT id, label FROM accounts_ext")
        assert c.execute("SELECT label FROM v_labels WHERE id = 1").fetchone() == ("acct-1",)
        # Same name, new definition: the column now carries SSNs.
        c.execute("CREATE OR REPLACE VIEW v_labels AS SELECT id, ssn AS label FROM users")
        (value,) = c.execute("SELECT label FROM v_labels WHERE id = 1").fetchone()
        assert value == "*******7468"
        # DDL and a read in one Query: the read is masked as unproven.
        cur = c.execute("CREATE OR REPLACE VIEW v_labels AS SELECT id, email AS label "
                        "FROM users; SELECT label FROM v_labels")
        cur.nextset()
        writer.keep(cur.fetchall())
        writer.keep(c.execute("SELECT * FROM v_labels").fetchall())
    finally:
        c.execute("DROP VIEW IF EXISTS v_labels")
    assert not leaks(writer.seen, needles)


def test_masking_sessions_observe_results_and_others_keep_the_raw_path(gw, reader, officer):
    def guards():
        return {s.user: (s.guard.observes_results, s.guard.masking is not None)
                for s in gw.gateway.all_sessions if s.guard is not None}
    state = gw.run_sync(guards)
    assert state["rita"] == (True, True)
    assert state["olga"] == (False, False)


def test_unreadable_hash_key_is_a_config_error(tmp_path):
    from pgguard.config import MaskingConfig, MaskRule
    from pgguard.errors import ConfigError
    from pgguard.net.masker import MaskingHub

    cfg = MaskingConfig(hash_key_file=str(tmp_path / "missing.key"),
                        rules=(MaskRule(columns=("users.ssn",), strategy="hash"),))
    with pytest.raises(ConfigError) as info:
        MaskingHub(cfg)
    assert "masking.hash_key_file" in str(info.value)
    # Without [masking] nothing is active and no key is read.
    assert not MaskingHub(MaskingConfig()).active


# --- the extended protocol as drivers other than psycopg use it ---------------------------


def _raw(gw, tokens):
    from rawclient import RawClient, error_of
    c = RawClient(gw.port)
    msgs = c.login("rita", tokens("rita", ["readers"]), CONN)
    assert error_of(msgs) is None, msgs
    return c


def _messages_until_ready(c) -> list:
    from pgguard.wire.messages import ReadyForQuery
    return c.until(ReadyForQuery)


def _texts(msgs) -> list[str]:
    out = []
    for m in msgs:
        for v in getattr(m, "values", ()) or ():
            if v is not None:
                out.append(v.decode("utf-8", "replace"))
        out.extend(getattr(m, "fields", {}).values() if isinstance(
            getattr(m, "fields", None), dict) else [])
    return out


def test_portal_nobody_described_is_masked_across_row_limited_executes(gw, tokens, needles):
    """Bind and Execute with a row limit, no Describe: the gateway describes the portal
    itself (and keeps that answer from the client)."""
    from pgguard.wire import codec
    from pgguard.wire.messages import DataRow, RowDescription
    c = _raw(gw, tokens)
    try:
        c.send(codec.parse("s1", "SELECT id, ssn, email FROM users ORDER BY id")
               + codec.bind("p1", "s1", result_formats=[1])
               + codec.execute("p1", 5) + codec.execute("p1", 0) + codec.sync())
        msgs = _messages_until_ready(c)
    finally:
        c.close()
    kinds = [type(m).__name__ for m in msgs]
    assert not any(isinstance(m, RowDescription) for m in msgs), kinds
    rows = [m for m in msgs if isinstance(m, DataRow)]
    assert len(rows) == 24 and "Raw" in kinds  # PortalSuspended after the first five
    assert rows[0].values[1] == b"*******7468" and rows[0].values[2].startswith(b"h:")
    assert not leaks(_texts(msgs), needles)


def test_statement_described_then_bound_with_binary_result_formats(gw, tokens, needles):
    """Describe S answers with format 0; the real formats come from Bind (asyncpg)."""
    from pgguard.wire import codec
    from pgguard.wire.messages import DataRow
    c = _raw(gw, tokens)
    try:
        c.send(codec.parse("s2", "SELECT id, profile, ssn FROM users WHERE id = $1", [23])
               + codec.describe("S", "s2") + codec.sync())
        _messages_until_ready(c)
        c.send(codec.bind("", "s2", [b"1"], result_formats=[1, 1, 0]) + codec.execute("", 0)
               + codec.sync())
        msgs = _messages_until_ready(c)
    finally:
        c.close()
    (row,) = [m for m in msgs if isinstance(m, DataRow)]
    assert row.values[0] == b"\x00\x00\x00\x01"        # int4, binary, clear
    assert row.values[1] == b'\x01"***"'               # jsonb, binary: version byte + JSON
    assert row.values[2] == b"*******7468"
    assert not leaks(_texts(msgs), needles)


def test_results_after_an_extended_protocol_error_are_masked(gw, tokens, needles):
    """After an error PostgreSQL skips to Sync; the gateway must skip the same messages."""
    from pgguard.wire import codec
    from pgguard.wire.messages import DataRow, ErrorResponse
    c = _raw(gw, tokens)
    try:
        c.send(codec.parse("", "SELECT ssn::int FROM users") + codec.bind("", "")
               + codec.describe("P", "") + codec.execute("", 0)
               + codec.parse("", "SELECT 1") + codec.bind("", "") + codec.execute("", 0)
               + codec.sync()
               + codec.parse("", "SELECT 'x', ssn, email FROM users") + codec.bind("", "")
               + codec.describe("P", "") + codec.execute("", 0) + codec.sync())
        msgs = _messages_until_ready(c) + _messages_until_ready(c)
        c.send(codec.query("PREPARE sq AS SELECT email, ssn FROM users"))
        _messages_until_ready(c)
        c.send(codec.bind("", "sq") + codec.execute("", 0) + codec.sync())
        bound = _messages_until_ready(c)
    finally:
        c.close()
    assert sum(isinstance(m, ErrorResponse) for m in msgs) == 1
    rows = [m for m in msgs if isinstance(m, DataRow)]
    assert len(rows) == 24 and rows[0].values[1] == b"*******7468"
    bound_rows = [m for m in bound if isinstance(m, DataRow)]
    assert len(bound_rows) == 24 and bound_rows[0].values[0].startswith(b"h:")
    assert not leaks(_texts(msgs + bound), needles)


def test_asyncpg_prepared_statements_and_cursor_prefetch(gw, tokens, needles):
    import asyncio

    import asyncpg

    async def main() -> list[str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user="rita",
                                     database=CONN, password=tokens("rita", ["readers"]),
                                     ssl=False, timeout=10)
        seen: list[str] = []
        try:
            stmt = await conn.prepare("SELECT id, ssn, email, profile FROM users u "
                                      "WHERE id > $1 ORDER BY id")
            for _ in range(3):
                seen += [repr(tuple(r)) for r in await stmt.fetch(0)]
            async with conn.transaction():
                async for r in conn.cursor("SELECT ssn, card_number, body FROM users "
                                           "JOIN notes ON notes.user_id = users.id",
                                           prefetch=4):
                    seen.append(repr(tuple(r)))
            first = await conn.fetchrow("SELECT ssn FROM users WHERE id = 1")
            assert first["ssn"] == "*******7468"
        finally:
            await conn.close()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(seen) == 3 * 24 + 29
    assert not leaks(seen, needles)


def test_ddl_cannot_turn_a_planned_clear_column_into_a_secret(writer, needles):
    """Statements planned before DDL that redefines a view must not trust the old plan:
    a later statement in the same Query, and a statement prepared before the DDL."""
    c = writer.conn
    writer.seen.clear()
    try:
        c.execute("CREATE VIEW v_swap AS SELECT id, label FROM accounts_ext")
        assert c.execute("SELECT label FROM v_swap WHERE id = 1").fetchone() == ("acct-1",)
        c.execute("SELECT upper(label) FROM v_swap WHERE id = %s", (1,), prepare=True)
        # name: no detector recognizes a person's name, only the rule (null) protects it.
        cur = c.execute("CREATE OR REPLACE VIEW v_swap AS SELECT id, name AS label FROM users;"
                        "SELECT label, upper(label) FROM v_swap")
        cur.nextset()
        writer.keep(cur.fetchall())
        for _ in range(2):
            writer.keep(c.execute("SELECT upper(label) FROM v_swap WHERE id = %s", (1,),
                                  prepare=True).fetchall())
        with c.pipeline():
            c.execute("CREATE OR REPLACE VIEW v_swap AS SELECT id, reverse(name) AS label "
                      "FROM users")
            p = c.execute("SELECT label || '' FROM v_swap")
        writer.keep(p.fetchall())
    finally:
        c.execute("DROP VIEW IF EXISTS v_swap")
    assert not leaks(writer.seen, needles), writer.seen


def test_notification_payloads_are_withheld_and_copy_in_still_works(reader, writer):
    reader.conn.execute("LISTEN pii_channel")
    try:
        writer.conn.execute("NOTIFY pii_channel, 'ssn 432-29-7468'")
        got = list(reader.conn.notifies(timeout=5, stop_after=1))
    finally:
        reader.conn.execute("UNLISTEN pii_channel")
    assert len(got) == 1 and got[0].channel == "pii_channel" and got[0].payload == "***"
    # COPY FROM STDIN goes through the same answer tracking.
    with writer.conn.transaction(force_rollback=True):
        with writer.conn.cursor().copy("COPY notes (user_id, body) FROM STDIN") as copy:
            copy.write_row((1, "copied in"))
        (n,) = writer.conn.execute("SELECT count(*) FROM notes WHERE body = 'copied in'"
                                   ).fetchone()
        assert n == 1
        assert writer.conn.execute("SELECT ssn FROM users WHERE id = 1").fetchone() == \
            ("*******7468",)


def test_asyncpg_composite_column_introspection(gw, tokens, needles):
    """asyncpg introspects a composite column's type with a query reading
    current_setting('jit'): the setting must come back clear, the row masked."""
    import asyncio

    import asyncpg

    async def main() -> tuple[list, str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user="rita",
                                     database=CONN, password=tokens("rita", ["readers"]),
                                     ssl=False, timeout=10)
        try:
            rows = await conn.fetch("SELECT u FROM users u ORDER BY id")
            jit = await conn.fetchval("SELECT current_setting('jit')")
        finally:
            await conn.close()
        return rows, jit

    rows, jit = asyncio.run(asyncio.wait_for(main(), 30))
    assert jit in ("on", "off")
    assert len(rows) == 24 and all(r["u"] is None for r in rows), rows[:2]
    assert not leaks([repr(tuple(r)) for r in rows], needles)
