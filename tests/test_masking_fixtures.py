"""Shared fixtures of the masking unit tests (imported by the other test_masking_* files),
and checks of pgguard/demo_data/pii_schema.sql itself."""

from __future__ import annotations

import re
from importlib import resources

import psycopg
import pytest

from pgguard.config import MaskingConfig, MaskRule
from pgguard.masking import CATALOG_QUERY, SessionMasking, SqlCatalog
from pgguard.masking.detectors import iban_ok, luhn_ok

FIXTURE = str(resources.files("pgguard").joinpath("demo_data/pii_schema.sql"))
DBNAME = "pgguard_masking_unit"

RULES = (
    MaskRule(columns=("public.users.ssn", "*.*.card_number"), strategy="partial", keep=4),
    MaskRule(columns=("*.email",), strategy="hash"),
    MaskRule(columns=("users.phone",), strategy="redact"),
    MaskRule(columns=("users.profile",), strategy="redact"),
    MaskRule(columns=("users.name",), strategy="null"),
)
CFG = MaskingConfig(exempt_groups=("privacy-officers",), rules=RULES, hash_key_file=None)


_CREATED: dict[str, str] = {}
_CATALOGS: dict[str, SqlCatalog] = {}


def make_pii_db(pg) -> str:
    """Create (once per test session) a database holding pgguard/demo_data/pii_schema.sql plus a few
    objects the tests need; return its DSN."""
    if pg.dsn() in _CREATED:
        return _CREATED[pg.dsn()]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    with open(FIXTURE) as f:
        sql = f.read()
    with psycopg.connect(pg.dsn(DBNAME), autocommit=True) as conn:
        conn.execute(sql)
        conn.execute("""
            CREATE TABLE IF NOT EXISTS public.audit_copy (id int, email text, ssn text);
            CREATE OR REPLACE FUNCTION public.get_ssn(i int) RETURNS text
                LANGUAGE sql AS 'SELECT ssn FROM users WHERE id = i';
            CREATE OR REPLACE FUNCTION public.shout(t text) RETURNS void LANGUAGE plpgsql
                AS $$ BEGIN RAISE NOTICE 'value is %', t; END $$;
            CREATE MATERIALIZED VIEW IF NOT EXISTS public.user_emails AS
                SELECT id, email FROM users;
            CREATE OR REPLACE VIEW public.contact_names AS
                SELECT c.id, c.email_lower FROM user_contacts c;
        """)
    _CREATED[pg.dsn()] = pg.dsn(DBNAME)
    return pg.dsn(DBNAME)


def load_catalog(dsn: str) -> SqlCatalog:
    """The SqlCatalog of the fixture database, loaded with CATALOG_QUERY (cached)."""
    if dsn not in _CATALOGS:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(CATALOG_QUERY).fetchall()
        _CATALOGS[dsn] = SqlCatalog.from_rows(rows)
    return _CATALOGS[dsn]


@pytest.fixture()
def pii_dsn(pg) -> str:
    return make_pii_db(pg)


@pytest.fixture()
def catalog(pii_dsn) -> SqlCatalog:
    return load_catalog(pii_dsn)


@pytest.fixture()
def session(catalog) -> SessionMasking:
    return SessionMasking(CFG, ["analysts"], catalog, hash_key=b"unit-test-key")


def fixture_text() -> str:
    with open(FIXTURE) as f:
        return f.read()


def test_fixture_cards_pass_luhn_and_ibans_pass_mod97():
    text = fixture_text()
    cards = re.findall(r"'((?:\d[ ]?){13,19})'", text)
    assert len(cards) >= 20
    assert all(luhn_ok(c.replace(" ", "")) for c in cards)
    ibans = re.findall(r"account to ([A-Z]{2}[0-9A-Z ]+?)\.", text)
    assert len(ibans) >= 20
    assert all(iban_ok(i.replace(" ", "")) for i in ibans)


def test_fixture_loads_with_enough_users(pii_dsn):
    with psycopg.connect(pii_dsn) as conn:
        n = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        views = conn.execute("SELECT count(*) FROM user_contacts").fetchone()[0]
        notes = conn.execute("SELECT count(*) FROM notes WHERE body ~ '[0-9]{3}-[0-9]{2}-'")
        assert n >= 20 and views == n and notes.fetchone()[0] >= 20


def test_catalog_query_loads_relations_views_functions(catalog):
    users = catalog.resolve_relation("users", None)
    assert [r.schema for r in users] == ["public"]
    assert users[0].column_names() == ["id", "name", "email", "ssn", "card_number", "phone",
                                       "profile", "created_at"]
    view = catalog.resolve_relation("user_contacts", "public")[0]
    assert view.is_view and "users" in view.definition
    assert catalog.is_user_function("get_ssn", None)
    assert not catalog.is_user_function("lower", None)
    assert catalog.resolve_relation("pg_class", None)[0].schema == "pg_catalog"
    assert "public" in catalog.search_path
