"""pytest fixtures for a running gateway in front of the test cluster."""

from __future__ import annotations

import pytest

from harness.gateway import ThreadGateway, base_config, prepare_app_database


@pytest.fixture(scope="session")
def app_db(pg):
    """The application database 'app' and its owner role, created once."""
    prepare_app_database(pg)
    return pg


@pytest.fixture(scope="session")
def tokens(bao):
    """issue(user, groups) -> a real OpenBao-signed OIDC token, cached per (user, groups)."""
    cache: dict = {}

    def issue(user: str, groups=("owners",)) -> str:
        key = (user, tuple(groups))
        if key not in cache:
            cache[key] = bao.issue_token(user, list(groups), ttl="30m")
        return cache[key]

    return issue


@pytest.fixture(scope="session")
def make_config(app_db, bao):
    """make_config(**sections) -> a config dict for the test cluster and OpenBao IdP."""
    def make(**sections):
        return base_config(app_db, bao.identity_config(), **sections)
    return make


@pytest.fixture(scope="session")
def gateway(make_config):
    """One gateway (static credentials) shared by the tests that only need to connect."""
    gw = ThreadGateway(make_config()).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def start_gateway(make_config):
    """start_gateway(cfg_dict=None, attach=None) -> a fresh ThreadGateway, stopped after."""
    started = []

    def start(cfg_dict=None, attach=None):
        gw = ThreadGateway(cfg_dict or make_config(), attach=attach).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
