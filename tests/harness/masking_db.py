"""The masking tests' fixture database: pgguard/demo_data/pii_schema.sql loaded once per
PostgreSQL server, and its SqlCatalog (checked by test_masking_fixtures, used by
test_masking_lineage and test_masking_rewrite)."""

from __future__ import annotations

from importlib import resources

import psycopg
import pytest

from pgguard.config import MaskingConfig, MaskRule
from pgguard.masking import CATALOG_QUERY, SqlCatalog

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
