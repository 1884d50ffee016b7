"""pytest fixtures for the throwaway PostgreSQL cluster."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster, throwaway_cluster


@pytest.fixture(scope="session")
def pg() -> PgCluster:
    """One PostgreSQL cluster for the whole test session (SCRAM on TCP, free port).

    It lives in its own temp dir (not pytest's, which the postgres account running the
    server cannot enter when the tests run as root) and is removed afterwards. The server
    is the one ``PGGUARD_TEST_PG`` picks (harness.postgres).
    """
    with throwaway_cluster() as cluster:
        yield cluster
