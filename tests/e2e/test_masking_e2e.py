"""Masking end to end: the red team.

Every query runs through a real gateway with psycopg 3 as a non-exempt user, and the test
asserts that no clear value of a masked column appears anywhere in what the client
receives: rows (text and binary format), COPY output, error and notice text. The clear
values come from the fixture database itself (read directly as the superuser), in the
forms a query could turn them into (case, separators removed, reversed, hex, base64).
The same queries as an exempt user return clear values.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from harness.gateway import APP_PASSWORD_ENV, APP_USER, ThreadGateway
from harness.postgres import skip_unless_server_has
from harness.redteam import (  # noqa: F401 (fixtures)
    CASES,
    CONN,
    DBNAME,
    RULES,
    Client,
    _rollback,
    clear_values,
    needles,
    pii_db,
    run_case,
)

from pgguard.net.masker import attach_masking

pytestmark = pytest.mark.usefixtures("app_db")

EXEMPT = "privacy-officers"


# --- the fixture database and the gateway ---------------------------------------------


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
    from harness.rawclient import RawClient, error_of
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
