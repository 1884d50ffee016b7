"""pytest fixtures for the throwaway PostgreSQL cluster."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster, create_cluster


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> PgCluster:
    """One PostgreSQL cluster for the whole test session (SCRAM on TCP, free port)."""
    cluster = create_cluster(str(tmp_path_factory.mktemp("pg")))
    try:
        yield cluster
    finally:
        cluster.stop()
