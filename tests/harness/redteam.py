"""The masking red team's fixture database, the clear values to look for, its client and its
way to run each query of its corpus (harness/redteam_corpus.py): shared by test_masking_e2e
(through the gateway) and test_recording_e2e (through a recorded gateway)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
import pytest

from harness.attack import RULES, variants  # noqa: F401 (RULES: the same rules as the attack suite)
from harness.gateway import APP_PASSWORD, APP_USER, ThreadGateway
from harness.redteam_corpus import BIN, CASES, COPY, PIPE, PREP, SCRIPT, SS, P, Q  # noqa: F401

FIXTURE = str(resources.files("pgguard").joinpath("demo_data/pii_schema.sql"))
DBNAME = "pgguard_masking_e2e"
CONN = "pii"

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


@pytest.fixture(scope="module")
def needles(clear_values) -> list[str]:
    out: set[str] = set()
    for v in clear_values:
        out |= variants(v)
    return sorted(out, key=len, reverse=True)


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
