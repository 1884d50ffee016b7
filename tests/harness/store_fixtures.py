"""The approvals store (which also holds blocks) in both kinds, for the store-level tests:
SQLite in a temporary folder, and PostgreSQL in a fresh database of the test cluster."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from pgguard.approvals import open_store


@pytest.fixture(scope="module")
def pg_store_dsn(pg) -> str:
    """A fresh database on the test cluster, as a postgresql:// URL."""
    name = f"store_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE DATABASE {name}")
    return f"postgresql://{pg.superuser}:{pg.password}@{pg.host}:{pg.port}/{name}?sslmode=disable"


@pytest.fixture
def pg_dsn(pg_store_dsn) -> str:
    """The module's store database, emptied of pgguard's tables."""
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pgguard_blocks")
        conn.execute("DROP TABLE IF EXISTS pgguard_approvals")
    return pg_store_dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/approvals.db"
    return request.getfixturevalue("pg_dsn")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    s.setup()
    yield s
    s.close()
