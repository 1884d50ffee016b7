"""The throwaway PostgreSQL cluster for tests: :mod:`pgguard.embedded.postgres`, plus the
roles the auth tests log in with md5 and cleartext passwords."""

from __future__ import annotations

from pgguard.embedded.postgres import *  # noqa: F403
from pgguard.embedded.postgres import SUPERPASS, PgCluster
from pgguard.embedded.postgres import create_cluster as _create_cluster

#: pg_hba lines the auth tests rely on (roles md5user and pwuser, see test_gateway_auth).
TEST_HBA_LINES = ("host all md5user 127.0.0.1/32 md5",
                  "host all pwuser 127.0.0.1/32 password")


def create_cluster(root: str | None = None, ssl_cert: str | None = None,
                   ssl_key: str | None = None) -> PgCluster:
    """initdb a new cluster with SCRAM auth on TCP (md5/password for the test roles) and
    start it on a free port; the superuser password is ``SUPERPASS``."""
    return _create_cluster(root, ssl_cert, ssl_key, password=SUPERPASS,
                           hba_lines=TEST_HBA_LINES)
