"""The adversarial suite's harness (issue 11): a PII database per test module, a masking
gateway in front of it, psycopg clients that run one statement in any protocol mode and
keep everything they received, and the clear values an attack is trying to get out.

Listed in ``tests/conftest.py`` ``pytest_plugins``; the ``tests/test_attack_*.py`` files
use only what is here.
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

import pgguard
from harness.gateway import APP_PASSWORD, APP_PASSWORD_ENV, APP_USER, ThreadGateway

#: The fixture schema shipped with the package (fixtures/pii_schema.sql is a duplicate).
SCHEMA = os.path.join(os.path.dirname(pgguard.__file__), "demo_data", "pii_schema.sql")
CONN = "pii"

# Groups of the attack gateway's connection. READERS is the read-only grant; WRITERS may
# write but not run DDL (ddl-deny); ENGINEERS may write and their DDL waits for approval;
# CAUTIOUS users' writes wait for approval too; OFFICERS are exempt from masking (read
# only); DBAS approve.
READERS, WRITERS, ENGINEERS, CAUTIOUS, OFFICERS, DBAS = (
    "readers", "writers", "engineers", "cautious", "privacy-officers", "dba")
#: user name and groups of each role, as (user, groups).
READER = ("rita", (READERS,))
WRITER = ("walt", (WRITERS,))
ENGINEER = ("eddie", (ENGINEERS,))
CAREFUL = ("carl", (CAUTIOUS,))
OFFICER = ("olga", (OFFICERS,))
APPROVER = ("alice", (DBAS,))

RULES = [
    {"columns": ["public.users.ssn", "*.*.card_number"], "strategy": "partial", "keep": 4},
    {"columns": ["*.email"], "strategy": "hash"},
    {"columns": ["users.phone", "users.profile"], "strategy": "redact"},
    {"columns": ["users.name"], "strategy": "null"},
]

#: Objects the attacks aim at, next to the fixture schema. ``victims`` is what writes
#: and DDL try to change; ``big`` is there for XML/TABLESAMPLE row shapes.
EXTRA_SQL = """
CREATE TABLE victims (id int PRIMARY KEY, label text);
INSERT INTO victims SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE SEQUENCE attack_seq;
"""

#: Protocol modes every applicable attack runs in.
SIMPLE, EXTENDED, BINARY, PIPELINE = "simple", "extended", "binary", "pipeline"
MODES = (SIMPLE, EXTENDED, BINARY, PIPELINE)


# --- the database -----------------------------------------------------------------------


@dataclass
class AttackDb:
    """The module's PII database (a fresh copy of the fixture schema), read directly."""

    pg: Any
    name: str

    def owner_dsn(self) -> str:
        return (f"host={self.pg.host} port={self.pg.port} dbname={self.name} "
                f"user={APP_USER} password={APP_PASSWORD} sslmode=disable")

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        """Rows of *sql* run directly as the superuser (not through the gateway)."""
        with psycopg.connect(self.pg.dsn(self.name), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def value(self, sql: str, params: Any = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def execute(self, sql: str, params: Any = None) -> None:
        with psycopg.connect(self.owner_dsn(), autocommit=True) as conn:
            conn.execute(sql, params)


@pytest.fixture(scope="module")
def attack_db(request, pg, app_db) -> AttackDb:
    """fixtures' pii_schema.sql (the package copy) plus EXTRA_SQL in a database of this
    module's own, owned by the gateway's login role; dropped afterwards."""
    mod = request.module.__name__.rsplit(".", 1)[-1]
    name = f"atk_{mod.removeprefix('test_attack_')}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")
    db = AttackDb(pg, name)
    with open(SCHEMA) as f:
        schema = f.read()
    with psycopg.connect(db.owner_dsn(), autocommit=True) as conn:
        conn.execute(schema)
        conn.execute(EXTRA_SQL)
        conn.execute(getattr(request.module, "MODULE_SQL", ""))
    try:
        yield db
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def clear_values_of(db: AttackDb) -> list[str]:
    """Every clear value of a masked column (and the PII bits inside ``profile``)."""
    rows = db.query("SELECT name, email, ssn, card_number, phone, profile::text FROM users")
    bits = db.query(
        "SELECT DISTINCT v FROM users, LATERAL (SELECT profile->>'address' "
        "UNION ALL SELECT profile->>'tax_id' UNION ALL SELECT c->>'value' "
        "FROM jsonb_array_elements(profile->'contacts') c) AS x(v)")
    values: set[str] = set()
    for row in rows:
        values.update(v for v in row if v)
    values.update(v for (v,) in bits if v)
    return sorted(values)


def variants(value: str) -> set[str]:
    """Forms a query could turn a clear value into without the gateway noticing."""
    out = {value, value.lower(), value.upper(), value[::-1]}
    for sep in ("-", " ", "(", ")", "+", "."):
        out |= {v.replace(sep, "") for v in list(out)}
    raw = value.encode()
    out |= {raw.hex(), base64.b64encode(raw).decode(), value.replace(" ", "%20")}
    # Short fragments are not evidence (a partial mask keeps the last four characters).
    return {v for v in out if len(v) >= 8}


@pytest.fixture(scope="module")
def clear_values(attack_db) -> list[str]:
    return clear_values_of(attack_db)


@pytest.fixture(scope="module")
def needles(clear_values) -> list[str]:
    out: set[str] = set()
    for v in clear_values:
        out |= variants(v)
    return sorted(out, key=len, reverse=True)


def leaks(texts: list[str], needles: list[str]) -> list[str]:
    """The needles found (case-insensitively) in *texts*."""
    low = "\n".join(texts).lower()
    return [n for n in needles if n.lower() in low]


# --- the gateway ------------------------------------------------------------------------


def attack_connection(db: AttackDb) -> dict[str, Any]:
    return {
        "name": CONN, "host": db.pg.host, "port": db.pg.port, "dbname": db.name,
        "sslmode": "disable", "user": APP_USER, "password_env": APP_PASSWORD_ENV,
        "grants": [
            {"groups": [READERS], "read": "allow", "write": "deny", "ddl": "deny"},
            {"groups": [WRITERS], "read": "allow", "write": "allow", "ddl": "deny"},
            {"groups": [ENGINEERS], "read": "allow", "write": "allow", "ddl": "review"},
            {"groups": [CAUTIOUS], "read": "allow", "write": "review", "ddl": "review"},
            {"groups": [OFFICERS], "read": "allow", "write": "deny", "ddl": "deny"},
        ],
    }


@pytest.fixture(scope="module")
def make_attack_gateway(make_config, attack_db, tmp_path_factory):
    """make_attack_gateway(**masking) -> a started masking gateway on this module's
    database (approvals in a SQLite store, approver group ``dba``); stopped after the
    module. *masking* overrides keys of the ``[masking]`` section (deny_predicates...)."""
    from pgguard.net.masker import attach_masking

    started: list[ThreadGateway] = []

    def make(**masking: Any) -> ThreadGateway:
        tmp = tmp_path_factory.mktemp("attack")
        key = tmp / "hash.key"
        key.write_text("attack-test-hash-key\n")
        section = {"exempt_groups": [OFFICERS], "hash_key_file": str(key), "rules": RULES}
        section.update(masking)
        cfg = make_config(connections=[attack_connection(attack_db)], masking=section,
                          approvals={"approver_groups": [DBAS], "timeout_s": 8,
                                     "poll_interval_s": 0.1,
                                     "store": f"sqlite:///{tmp}/approvals.db"})
        gw = ThreadGateway(cfg, attach=attach_masking).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
        if gw.gateway is not None and gw.gateway.approvals is not None:
            gw.gateway.approvals.close()


@pytest.fixture(scope="module")
def attack_gw(make_attack_gateway) -> ThreadGateway:
    """The module's default attack gateway (deny_predicates off)."""
    return make_attack_gateway()


# --- clients ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one statement gave the client."""

    rows: list = field(default_factory=list)
    error: psycopg.Error | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def sqlstate(self) -> str | None:
        return None if self.error is None else self.error.sqlstate

    @property
    def message(self) -> str:
        return "" if self.error is None else (self.error.diag.message_primary or "")


def diag_texts(diag: Any) -> list[str]:
    return [str(getattr(diag, f, "") or "") for f in (
        "message_primary", "message_detail", "message_hint", "context", "internal_query",
        "statement_position", "internal_position")]


class AttackClient:
    """A psycopg connection through the gateway that runs statements in a given protocol
    mode and keeps every text it received (rows, errors, notices)."""

    def __init__(self, gw: ThreadGateway, who: tuple[str, tuple[str, ...]], tokens,
                 autocommit: bool = True, **conninfo: Any):
        user, groups = who
        self.user = user
        self.conn = psycopg.connect(gw.dsn(user, dbname=CONN), password=tokens(user, groups),
                                    autocommit=autocommit, **conninfo)
        self.notices: list[str] = []
        self.conn.add_notice_handler(self._notice)

    def _notice(self, diag: Any) -> None:
        self.notices.append(" | ".join(diag_texts(diag)))

    def run(self, sql: str, mode: str = SIMPLE, params: Any = None) -> Outcome:
        """Run one statement in *mode*; never raises a psycopg.Error (it is in the
        outcome). A failed transaction is rolled back afterwards."""
        out = Outcome()
        conn = self.conn
        self.notices.clear()
        try:
            if mode == SIMPLE:
                assert params is None, "the simple protocol takes no parameters"
                cur = conn.cursor()
                cur.execute(sql)
                while True:
                    if cur.description is not None:
                        out.rows.extend(cur.fetchall())
                    if not cur.nextset():
                        break
            elif mode == EXTENDED and params is not None:
                cur = conn.cursor()
                cur.execute(sql, params, prepare=False)
                if cur.description is not None:
                    out.rows.extend(cur.fetchall())
            elif mode == EXTENDED:
                # stream() uses Parse/Bind/Execute without parameters too; it complains
                # about a statement that returns no rows after running it.
                try:
                    out.rows.extend(conn.cursor().stream(sql))
                except psycopg.ProgrammingError as exc:
                    if "didn't produce a result" not in str(exc):
                        raise
            elif mode == BINARY:
                cur = conn.cursor(binary=True)
                cur.execute(sql, params)
                if cur.description is not None:
                    out.rows.extend(cur.fetchall())
            elif mode == PIPELINE:
                with conn.pipeline():
                    cur = conn.execute(sql, params)
                if cur.description is not None:
                    out.rows.extend(cur.fetchall())
            elif mode == "prepared":
                for _ in range(2):
                    cur = conn.execute(sql, params, prepare=True)
                    if cur.description is not None:
                        out.rows.extend(cur.fetchall())
            else:
                raise ValueError(mode)
        except psycopg.Error as exc:
            out.error = exc
            out.texts.append(str(exc))
            out.texts.extend(diag_texts(exc.diag))
        finally:
            if not conn.closed and conn.autocommit and \
                    conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        out.texts.extend(_row_texts(out.rows))
        out.texts.extend(self.notices)
        return out

    def close(self) -> None:
        self.conn.close()


def _row_texts(rows: list) -> list[str]:
    out = []
    for row in rows:
        for v in row:
            if isinstance(v, bytes | bytearray | memoryview):
                b = bytes(v)
                out.append(b.decode("utf-8", "replace"))
                out.append(b.hex())
            else:
                out.append(str(v))
    return out


@pytest.fixture(scope="module")
def client_factory(attack_gw, tokens):
    """client_factory(who, gw=None, **conninfo) -> an AttackClient, closed after the
    module."""
    made: list[AttackClient] = []

    def make(who, gw: ThreadGateway | None = None, **conninfo: Any) -> AttackClient:
        c = AttackClient(gw or attack_gw, who, tokens, **conninfo)
        made.append(c)
        return c

    yield make
    for c in made:
        if not c.conn.closed:
            c.close()


@pytest.fixture(scope="module")
def reader(client_factory) -> AttackClient:
    """A non-exempt, read-only user."""
    return client_factory(READER)


@pytest.fixture(scope="module")
def officer(client_factory) -> AttackClient:
    """An exempt user: the same attacks show clear values (the probe is real)."""
    return client_factory(OFFICER)


@pytest.fixture(scope="module")
def writer(client_factory) -> AttackClient:
    """A non-exempt user who may write (DDL denied)."""
    return client_factory(WRITER)


def assert_no_leak(out: Outcome, needles: list[str]) -> None:
    found = leaks(out.texts, needles)
    assert not found, f"clear values reached the client: {found[:4]} in {out.texts[:6]}"


def assert_leaks_clear(out: Outcome, needles: list[str]) -> None:
    """For the exempt user: the probe does carry clear values."""
    assert leaks(out.texts, needles), f"no clear value for the exempt user: {out.texts[:6]}"


@pytest.fixture
def reset_victims(attack_db):
    """Put ``victims`` back (five rows, labels v1..v5) after the test."""
    yield
    attack_db.execute("DELETE FROM victims; INSERT INTO victims SELECT g, 'v' || g "
                      "FROM generate_series(1, 5) g")
