"""DataRow, COPY and error rewriting, on values produced by the real PostgreSQL server."""

from __future__ import annotations

import json
import re
import struct

import psycopg
import pytest
from psycopg import pq
from test_masking_fixtures import CFG, load_catalog, make_pii_db

from pgguard.config import MaskingConfig
from pgguard.errors import ProtocolViolation
from pgguard.masking import SessionMasking, hash_token

KEY = b"unit-test-key"


@pytest.fixture()
def dsn(pg):
    return make_pii_db(pg)


@pytest.fixture()
def session(dsn) -> SessionMasking:
    return SessionMasking(CFG, ["analysts"], load_catalog(dsn), hash_key=KEY)


@pytest.fixture()
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


def clear_values(conn) -> list[str]:
    """Every clear value of a masked column in the fixture."""
    rows = conn.execute("SELECT name, email, ssn, card_number, phone, profile::text "
                        "FROM users").fetchall()
    return [v for r in rows for v in r if v]


def fetch_raw(conn, sql: str, fmt: int):
    """(fields, DataRow bodies) as PostgreSQL sends them, in text or binary format."""
    res = conn.pgconn.exec_params(sql.encode(), [], result_format=fmt)
    assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
    fields = [(res.fname(i).decode(), res.ftable(i), res.ftablecol(i), res.ftype(i),
               res.fformat(i)) for i in range(res.nfields)]
    rows = []
    for r in range(res.ntuples):
        body = struct.pack("!h", res.nfields)
        for c in range(res.nfields):
            v = res.get_value(r, c)
            body += b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v
        rows.append(body)
    return fields, rows


def split_row(body: bytes) -> list[bytes | None]:
    (n,) = struct.unpack_from("!h", body, 0)
    pos, out = 2, []
    for _ in range(n):
        (ln,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + ln])
            pos += ln
    assert pos == len(body)
    return out


SELECT_ALL = "SELECT id, name, email, ssn, card_number, phone, profile, created_at FROM users"


def test_text_format_datarow(conn, session):
    fields, rows = fetch_raw(conn, SELECT_ALL + " ORDER BY id", 0)
    masker = session.row_masker(session.plan_result(SELECT_ALL), fields)
    assert not masker.passthrough and masker.masked == (1, 2, 3, 4, 5, 6)
    secrets = clear_values(conn)
    clear = conn.execute(SELECT_ALL + " ORDER BY id").fetchall()
    for body, orig in zip(rows, clear, strict=True):
        out = masker.mask_datarow(body)
        for s in secrets:
            assert s.encode() not in out
        vals = split_row(out)
        assert vals[0] == str(orig[0]).encode()
        assert vals[1] is None                                         # null
        assert vals[2] == hash_token(orig[2], KEY).encode()            # hash
        ssn = vals[3].decode()
        assert ssn == "*" * (len(orig[3]) - 4) + orig[3][-4:]          # partial keep 4
        assert vals[4].decode().endswith(orig[4][-4:]) and vals[4].count(b"*") == len(
            orig[4]) - 4
        assert vals[5] == b"***"                                       # redact
        assert json.loads(vals[6]) == "***"                            # jsonb stays JSON
        assert vals[7] == split_row(body)[7]                           # untouched


def test_binary_format_values_stay_valid_for_postgresql(conn, session):
    fields, rows = fetch_raw(conn, SELECT_ALL + " ORDER BY id", 1)
    masker = session.row_masker(session.plan_result(SELECT_ALL), fields)
    secrets = clear_values(conn)
    for body in rows[:5]:
        out = masker.mask_datarow(body)
        for s in secrets:
            assert s.encode() not in out
        vals = split_row(out)
        assert vals[1] is None
        # The server itself accepts each masked value in binary as a value of its type.
        for i in (2, 3, 4, 5, 6):
            typ = fields[i][3]
            res = conn.pgconn.exec_params(b"SELECT $1::text", [vals[i]], [typ], [1])
            assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
        assert vals[6][:1] == b"\x01" and json.loads(vals[6][1:]) == "***"
        assert vals[7] == split_row(body)[7]


def test_hash_tokens_equal_across_formats_and_views(conn, session):
    sql = "SELECT u.email, c.email FROM users u JOIN user_contacts c USING (id)"
    for fmt in (0, 1):
        fields, rows = fetch_raw(conn, sql, fmt)
        masker = session.row_masker(session.plan_result(sql), fields)
        for body in rows:
            a, b = split_row(masker.mask_datarow(body))
            assert a == b and a.startswith(b"h:")


def test_detectors_scan_clear_text_columns(conn, session):
    sql = "SELECT id, body FROM notes ORDER BY id"
    for fmt in (0, 1):
        fields, rows = fetch_raw(conn, sql, fmt)
        masker = session.row_masker(session.plan_result(sql), fields)
        assert masker.masked == ()
        secrets = clear_values(conn)
        for body in rows:
            out = split_row(masker.mask_datarow(body))[1].decode()
            assert "[iban]" in out or "[card]" in out
            for s in secrets:
                assert s not in out
            assert not re.search(r"\d{3}-\d{2}-\d{4}", out)


def test_detectors_in_json_and_arrays(conn, session):
    sql = ("SELECT n.body::jsonb, ARRAY[n.body], to_jsonb(n.body)::json FROM "
           "(SELECT to_jsonb(body)::text AS body FROM notes) n")
    for fmt in (0, 1):
        fields, rows = fetch_raw(conn, sql, fmt)
        masker = session.row_masker(session.plan_result(sql), fields)
        for body in rows:
            j, arr, js = split_row(masker.mask_datarow(body))
            assert b"@example.com" not in j and b"@example.com" not in js
            raw = j[1:] if fmt == 1 else j
            assert isinstance(json.loads(raw), str)
            assert arr is None or b"@example.com" not in arr


def test_passthrough_when_nothing_to_do(conn, session, dsn):
    fields, rows = fetch_raw(conn, "SELECT id, created_at FROM users", 0)
    plan = session.plan_result("SELECT id, created_at FROM users")
    assert session.row_masker(plan, fields).passthrough      # no text column to scan
    fields, _ = fetch_raw(conn, "SELECT id, body FROM notes", 0)
    no_det = SessionMasking(MaskingConfig(detectors=(), rules=CFG.rules), ["a"],
                            load_catalog(dsn), hash_key=KEY)
    assert no_det.row_masker(no_det.plan_result("SELECT id, body FROM notes"),
                             fields).passthrough
    exempt = SessionMasking(CFG, ["privacy-officers"], load_catalog(dsn), hash_key=KEY)
    f2, rows2 = fetch_raw(conn, SELECT_ALL, 1)
    m = exempt.row_masker(exempt.plan_result(SELECT_ALL), f2)
    assert m.passthrough and m.mask_datarow(rows2[0]) == rows2[0]


def test_catalog_origin_masks_even_when_lineage_says_clear(conn, session):
    fields, rows = fetch_raw(conn, "SELECT ssn FROM users", 0)
    # A plan that predicted a clear column: the RowDescription's table OID wins.
    masker = session.row_masker(session.plan_result("SELECT 'x'"), fields)
    out = split_row(masker.mask_datarow(rows[0]))[0]
    assert out.endswith(split_row(rows[0])[0][-4:]) and out.startswith(b"*****")
    # No plan at all: everything is masked.
    masker = session.row_masker(None, fields)
    assert b"-" not in split_row(masker.mask_datarow(rows[0]))[0]


def test_unknown_relation_oid_fails_closed(session):
    masker = session.row_masker(session.plan_result("SELECT 'x'"),
                                [("x", 999999, 1, 25, 0)])
    body = struct.pack("!hi", 1, 5) + b"hello"
    assert split_row(masker.mask_datarow(body)) == [b"***"]


def test_malformed_datarow(session):
    masker = session.row_masker(None, [("a", 0, 0, 25, 0)])
    with pytest.raises(ProtocolViolation):
        masker.mask_datarow(struct.pack("!h", 2))
    with pytest.raises(ProtocolViolation):
        masker.mask_datarow(struct.pack("!hi", 1, 10) + b"abc")


def copy_out(conn, sql: str) -> list[bytes]:
    with conn.cursor() as cur, cur.copy(sql) as copy:
        return [bytes(chunk) for chunk in copy]


@pytest.mark.parametrize("opts", ["", "WITH (FORMAT csv)", "WITH (FORMAT csv, HEADER)",
                                  "WITH (FORMAT csv, DELIMITER ';', QUOTE '''')",
                                  "WITH (DELIMITER '|', NULL 'nil')"])
def test_copy_text_and_csv(conn, session, opts):
    sql = f"COPY (SELECT u.id, u.ssn, u.email, n.body, u.name FROM users u " \
          f"JOIN notes n ON n.user_id = u.id ORDER BY n.id) TO STDOUT {opts}"
    chunks = copy_out(conn, sql)
    plan = session.plan_result(sql)
    masker = session.copy_masker(plan, 5, binary=False)
    out = b"".join(masker.feed(c) for c in chunks) + masker.finish()
    secrets = clear_values(conn)
    for s in secrets:
        assert s.encode() not in out, s
    # The masked stream loads back into PostgreSQL with the same options.
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS copy_back "
                 "(id int, ssn text, email text, body text, name text)")
    conn.execute("TRUNCATE copy_back")
    with conn.cursor() as cur, cur.copy(f"COPY copy_back FROM STDIN {opts}") as cp:
        cp.write(out)
    rows = conn.execute("SELECT id, ssn, email, body, name FROM copy_back").fetchall()
    assert len(rows) == len(chunks) - (1 if "HEADER" in opts else 0)
    assert all(r[1].startswith("*") and r[2].startswith("h:") and r[4] is None for r in rows)
    assert any("[iban]" in r[3] for r in rows)


def test_copy_split_across_messages(conn, session):
    sql = "COPY (SELECT ssn, body FROM users u JOIN notes n ON n.user_id = u.id) TO STDOUT " \
          "WITH (FORMAT csv)"
    data = b"".join(copy_out(conn, sql))
    whole = session.copy_masker(session.plan_result(sql), 2)
    expected = whole.feed(data) + whole.finish()
    pieces = session.copy_masker(session.plan_result(sql), 2)
    out = b"".join(pieces.feed(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out + pieces.finish() == expected


def test_copy_binary(conn, session):
    sql = "COPY (SELECT u.id, ssn, body FROM users u JOIN notes n ON n.user_id = u.id) " \
          "TO STDOUT WITH (FORMAT binary)"
    chunks = copy_out(conn, sql)
    masker = session.copy_masker(session.plan_result(sql), 3, binary=True)
    out = b"".join(masker.feed(c) for c in chunks) + masker.finish()
    for s in clear_values(conn):
        assert s.encode() not in out
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS bin_back (id int, ssn text, body text)")
    conn.execute("TRUNCATE bin_back")
    with conn.cursor() as cur, cur.copy("COPY bin_back FROM STDIN WITH (FORMAT binary)") as cp:
        cp.write(out)
    rows = conn.execute("SELECT id, ssn, body FROM bin_back").fetchall()
    assert rows and all(r[1] is None for r in rows)        # binary COPY: masked -> NULL
    assert any(r[2] is None for r in rows)                 # detector hit -> NULL
    assert all(r[0] is not None for r in rows)


def test_copy_table_passthrough_for_clear_table(conn, session, dsn):
    exempt = SessionMasking(CFG, ["privacy-officers"], load_catalog(dsn), hash_key=KEY)
    sql = "COPY users TO STDOUT"
    assert exempt.copy_masker(exempt.plan_result(sql), 8).passthrough
    assert not session.copy_masker(session.plan_result(sql), 8).passthrough


def server_error(conn, sql: str) -> dict[str, str]:
    res = conn.pgconn.exec_(sql.encode())
    assert res.status == pq.ExecStatus.FATAL_ERROR
    out = {}
    for code, name in (("M", pq.DiagnosticField.MESSAGE_PRIMARY),
                       ("D", pq.DiagnosticField.MESSAGE_DETAIL),
                       ("W", pq.DiagnosticField.CONTEXT), ("C", pq.DiagnosticField.SQLSTATE)):
        v = res.error_field(name)
        if v is not None:
            out[code] = v.decode()
    return out


@pytest.mark.parametrize("sql", [
    "SELECT ssn::int FROM users WHERE id = 1",
    "SELECT email::date FROM users WHERE id = 1",
    "SELECT (profile->>'tax_id')::numeric FROM users WHERE id = 1",
    "SELECT name::jsonb FROM users WHERE id = 1",
    "INSERT INTO users (id, name, email, ssn) SELECT 99, name, email, ssn FROM users "
    "WHERE id = 1",
])
def test_error_fields_never_echo_masked_values(conn, session, sql):
    fields = server_error(conn, sql)
    secrets = clear_values(conn) + [s.split()[0] for s in clear_values(conn)]
    assert any(s in " ".join(fields.values()) for s in secrets), fields   # it did echo
    plan = session.plan_result(sql)
    out = session.mask_error_fields(fields, plan)
    text = " ".join(out.values())
    for s in secrets:
        assert s not in text, (s, out)
    assert out["C"] == fields["C"]


def test_error_fields_are_withheld_for_a_statement_reading_masked_data(session):
    plan = session.plan_result("SELECT ssn FROM users")
    fields = {"S": "ERROR", "V": "ERROR", "C": "23505",
              "M": 'column "ssn" of relation "users" is of type "integer": "123-45-6789"',
              "D": "Key (email)=(alice@example.com) already exists.", "H": "h", "P": "8",
              "W": "SQL function", "s": "public", "t": "users", "c": "ssn", "d": "int4",
              "n": "users_email_key", "F": "nbtinsert.c", "L": "666", "R": "_bt_check"}
    out = session.mask_error_fields(fields, plan)
    assert out == {"S": "ERROR", "V": "ERROR", "C": "23505",
                   "M": "pgguard: unique_violation (23505) withheld: the statement reads "
                        "masked data"}


def test_error_fields_of_a_clean_statement_are_scanned_by_the_detectors(session):
    clean = session.plan_result("SELECT 1")
    fields = {"S": "ERROR", "C": "42P01", "M": 'relation "nope" does not exist, '
              'mail bob@example.com', "D": "call 415-555-2671", "P": "15"}
    out = session.mask_error_fields(fields, clean)
    assert out == {"S": "ERROR", "C": "42P01", "M": 'relation "nope" does not exist, '
                   'mail [email]', "D": "call [phone]", "P": "15"}


def test_errors_of_no_known_statement_are_withheld(session):
    out = session.mask_error_fields({"S": "FATAL", "V": "FATAL", "C": "57P01",
                                     "M": "terminating connection", "R": "x"}, None)
    assert out == {"S": "FATAL", "V": "FATAL", "C": "57P01",
                   "M": "pgguard: admin_shutdown (57P01) withheld: the statement reads "
                        "masked data"}


def test_notice_from_user_function_is_withheld(conn, session):
    notices = []
    # The Diagnostic is only valid inside the handler: copy its fields there.
    conn.add_notice_handler(lambda d: notices.append(
        {"M": d.message_primary, "C": d.sqlstate, "W": d.context or ""}))
    # (A user function given a masked column is refused: its code may store it.)
    sql = "SELECT shout('Alice') FROM users WHERE id = 1"
    conn.execute(sql)
    assert notices and "Alice" in notices[0]["M"]
    fields = notices[0]
    out = session.mask_error_fields(fields, session.plan_result(sql))
    assert out["M"] == ("pgguard: successful_completion (00000) withheld: the statement "
                        "reads masked data")
    assert "Alice" not in " ".join(out.values()) and set(out) == {"M", "C"}


def test_detectors_only_sessions_scan_errors_of_writes(dsn):
    detectors_only = SessionMasking(MaskingConfig(rules=(), hash_key_file=None),
                                    ["analysts"], load_catalog(dsn), hash_key=KEY)
    plan = detectors_only.plan_result("INSERT INTO users (id) VALUES (1)")
    fields = {"S": "ERROR", "C": "23505", "M": "duplicate key value violates unique "
              "constraint \"users_pkey\"", "D": "Key (id)=(1) already exists."}
    assert detectors_only.mask_error_fields(fields, plan) == fields
