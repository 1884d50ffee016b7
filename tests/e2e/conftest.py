"""Fixtures of the real components the end-to-end tests run against: a throwaway PostgreSQL,
OpenBao, the gateway, the attack databases. pytest takes ``pytest_plugins`` only from the
root conftest, so they are imported here; tests/unit never loads them."""

from harness.attack import *  # noqa: F401,F403
from harness.bao_fixtures import *  # noqa: F401,F403
from harness.gateway_fixtures import *  # noqa: F401,F403
from harness.pg_fixtures import *  # noqa: F401,F403
from harness.store_fixtures import *  # noqa: F401,F403
