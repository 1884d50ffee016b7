"""A second OpenBao server handing out PostgreSQL roles (``vault``), and the helpers of the
tests that take their credentials from it (test_vault, test_console_vault)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from harness.gateway import APP_DB
from harness.openbao import BaoServer

GATEWAY_POLICY = "pgguard-gateway"
POLICY = """
path "database/creds/ro" { capabilities = ["read"] }
path "database/creds/rw" { capabilities = ["read"] }
path "database/creds/nosuch" { capabilities = ["read"] }
path "database/creds/slow" { capabilities = ["read"] }
path "shortdb/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""
RO_SQL = ("CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
          "VALID UNTIL '{{expiration}}' IN ROLE app_reader;")
RW_SQL = ("CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
          "VALID UNTIL '{{expiration}}' IN ROLE app_owner;")
# Issuing takes ~2 s: PostgreSQL sleeps inside the role's creation statements.
SLOW_SQL = RO_SQL + " SELECT pg_sleep(2);"
GRANTS = [
    {"groups": ["analysts"], "vault_role": "ro", "read": "allow", "write": "deny"},
    {"groups": ["engineers"], "vault_role": "rw", "write": "allow"},
    {"groups": ["ghosts"], "vault_role": "nosuch"},  # allowed by policy, no such role
    {"groups": ["outsiders"], "vault_role": "secret"},  # exists, the policy denies it
    {"groups": ["sloths"], "vault_role": "slow"},
]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def can_login(pg, user: str, password: str) -> bool:
    """Whether *user* can log into PostgreSQL directly, bypassing the gateway."""
    try:
        psycopg.connect(host=pg.host, port=pg.port, dbname=APP_DB, user=user,
                        password=password, sslmode="disable", connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def gateway_token(server: BaoServer, ttl: str = "1h") -> str:
    """A Vault token limited to the database mounts and lease renew/revoke."""
    c = server.client()
    c.sys.create_or_update_policy(GATEWAY_POLICY, POLICY)
    return c.auth.token.create(policies=[GATEWAY_POLICY], ttl=ttl,
                               renewable=True)["auth"]["client_token"]


@pytest.fixture(scope="module")
def vault(tmp_path_factory, app_db) -> Iterator[BaoServer]:
    """An OpenBao server handing out PostgreSQL roles: mount ``database`` (1 min leases)
    and ``shortdb`` (1 s leases, 3 s max TTL)."""
    app_db.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                "'app_reader') THEN CREATE ROLE app_reader NOLOGIN; END IF; END $$")
    app_db.psql("GRANT SELECT ON accounts TO app_reader", dbname=APP_DB)
    server = BaoServer(str(tmp_path_factory.mktemp("vault")))
    server.start(configure=False)
    try:
        server.enable_database_secrets(
            app_db, roles={"ro": RO_SQL, "rw": RW_SQL, "secret": RW_SQL, "slow": SLOW_SQL},
            default_ttl="1m", max_ttl="10m")
        server.enable_database_secrets(app_db, roles={"ro": RO_SQL}, default_ttl="1s",
                                       max_ttl="3s", mount="shortdb")
        yield server
    finally:
        server.stop()


@pytest.fixture
def vault_up(vault) -> BaoServer:
    if not vault.running:
        vault.start()
    return vault


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def secrets_seen(caplog) -> Iterator[list[str]]:
    """Secrets a test saw; none of them may appear in any log record (the gateway's, at
    DEBUG, including its shutdown), formatted with tracebacks."""
    caplog.set_level(logging.DEBUG)
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    seen: list[str] = []
    try:
        yield seen
    finally:
        logging.getLogger().removeHandler(handler)
    text = "\n".join(handler.lines)
    for secret in seen:
        assert secret and secret not in text



def vault_connection(make_config, grants) -> dict:
    """The test cluster's 'appdb' connection without static credentials."""
    static = make_config()["connections"][0]
    return {"name": "appdb", "host": static["host"], "port": static["port"],
            "dbname": APP_DB, "sslmode": "disable", "grants": grants}


def leases(gw) -> list[tuple[str, str, str]]:
    """(database user, password, lease id) of every live session in the gateway."""
    return gw.run_sync(lambda: [(s.lease.user, s.lease.password, s.lease.lease_id)
                                for s in gw.gateway.all_sessions if s.lease is not None])


def connect(gw, tokens, user: str = "alice", groups=("analysts",)) -> psycopg.Connection:
    return psycopg.connect(gw.dsn(user), password=tokens(user, list(groups)),
                           autocommit=True)


def current_user(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT current_user").fetchone()[0]
