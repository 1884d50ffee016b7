"""Checks of pgguard/demo_data/pii_schema.sql itself and of the masking tests' fixture
database (tests/harness/masking_db.py)."""

from __future__ import annotations

import re

import psycopg
from harness.masking_db import FIXTURE, catalog, pii_dsn  # noqa: F401 (fixtures)

from pgguard.masking.detectors import iban_ok, luhn_ok


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
