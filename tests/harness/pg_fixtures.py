"""pytest fixtures for the throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.postgres import PgCluster, create_cluster


@pytest.fixture(scope="session")
def pg() -> PgCluster:
    """One PostgreSQL cluster for the whole test session (SCRAM on TCP, free port).

    It lives in its own temp dir (not pytest's, which the postgres account running the
    server cannot enter when the tests run as root) and is removed afterwards.
    """
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(os.path.dirname(cluster.datadir), ignore_errors=True)
