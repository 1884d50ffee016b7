"""Guardrails through the gateway, seen from psycopg 3: read_only, the timeouts,
max_session_s and max_statements_per_minute (docs/guardrails.md)."""

from __future__ import annotations

import time

import psycopg
import pytest
from harness.gateway import ThreadGateway
from harness.rawclient import RawClient

from pgguard import policy

pytestmark = pytest.mark.usefixtures("app_db")

RUNAWAY = ("WITH RECURSIVE t(n) AS (SELECT 1 UNION SELECT n + 1 FROM t) "
           "SEARCH DEPTH FIRST BY n SET ord SELECT count(*) FROM t")


@pytest.fixture(scope="module")
def gw(make_config):
    cfg = make_config()
    cfg["connections"][0]["grants"] += [
        # An agent: reads only (read_only by default), one second per statement.
        {"groups": ["agents"], "read": "allow", "write": "deny", "ddl": "deny",
         "statement_timeout_s": 1, "idle_in_transaction_timeout_s": 30},
        {"groups": ["bursty"], "read": "allow", "write": "deny", "ddl": "deny",
         "max_statements_per_minute": 5},
        {"groups": ["brief"], "read": "allow", "max_session_s": 1.5},
        # Writes allowed but read_only forced: the strictest of the user's grants wins.
        {"groups": ["strict"], "write": "allow", "read_only": True},
    ]
    gateway = ThreadGateway(cfg).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _connect(gw, tokens, user, groups, **kw):
    return psycopg.connect(gw.dsn(user), password=tokens(user, groups), autocommit=True,
                           **kw)


def _show(conn, name):
    return conn.execute(f"SHOW {name}").fetchone()[0]


# --- read_only ----------------------------------------------------------------------

LIFT_READ_ONLY = [
    "SET default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO false",
    "SET LOCAL default_transaction_read_only = 0",
    "SET transaction_read_only = off",
    "BEGIN READ WRITE",
    "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "START TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT set_config('DEFAULT_TRANSACTION_READ_ONLY', 'no', false)",
]


def test_read_only_session_runs_read_only_upstream(gw, tokens):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        assert _show(conn, "default_transaction_read_only") == "on"
        assert _show(conn, "transaction_read_only") == "on"


@pytest.mark.parametrize("sql", LIFT_READ_ONLY)
def test_lifting_read_only_is_refused(gw, tokens, sql):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute(sql)
        assert "read-only" in info.value.diag.message_primary
        assert _show(conn, "default_transaction_read_only") == "on"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_lifting_read_only_with_a_parameter_is_refused(gw, tokens):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT set_config('default_transaction_read_only', %s, false)",
                         ("off",))
        assert _show(conn, "default_transaction_read_only") == "on"


@pytest.mark.parametrize("sql", ["RESET default_transaction_read_only", "RESET ALL",
                                 "DISCARD ALL", "SET default_transaction_read_only = on",
                                 "SET default_transaction_read_only TO DEFAULT",
                                 "BEGIN READ ONLY"])
def test_resets_restore_the_startup_value(gw, tokens, sql):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        conn.execute(sql)
        # The value given at startup is the session's reset value in PostgreSQL.
        assert _show(conn, "default_transaction_read_only") == "on"
        assert _show(conn, "statement_timeout") == "1s"
        assert _show(conn, "transaction_read_only") == "on"


@pytest.mark.parametrize("options", ["-c default_transaction_read_only=off",
                                     "--default-transaction-read-only=0",
                                     "-c statement_timeout=0",
                                     "-cstatement_timeout=5min"])
def test_startup_options_lifting_a_guardrail_are_fatal(gw, tokens, options):
    with pytest.raises(psycopg.OperationalError) as info:
        _connect(gw, tokens, "agent", ["agents"], options=options)
    assert "pgguard: the startup parameter would" in str(info.value)


def test_startup_parameter_lifting_read_only_is_fatal(gw, tokens):
    # libpq sends no arbitrary startup parameters: use the raw protocol.
    c = RawClient(gw.port)
    try:
        msgs = c.login("agent", tokens("agent", ["agents"]),
                       default_transaction_read_only="off")
    finally:
        c.close()
    errors = [m for m in msgs if getattr(m, "sqlstate", None)]
    assert errors and errors[0].sqlstate == "42501"
    assert "read-only" in errors[0].message


def test_strictest_grant_wins(gw, tokens):
    with _connect(gw, tokens, "mixed", ["strict", "engineers"]) as conn:
        assert _show(conn, "default_transaction_read_only") == "on"


def test_write_past_the_classifier_fails_in_postgres(gw, tokens, monkeypatch):
    """The backstop: with policy switched off in-process, PostgreSQL refuses the write."""
    def allow(self, groups, cls):
        return policy.Decision("allow", cls.category, cls.kind, "", None)
    monkeypatch.setattr(policy.Policy, "decide", allow)
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as info:
            conn.execute("UPDATE accounts SET balance = 0")
        assert info.value.sqlstate == "25006"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE guardrail_escape (x int)")
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] >= 100


# --- statement_timeout_s / idle_in_transaction_timeout_s -------------------------------

def test_runaway_recursive_query_is_stopped(gw, tokens):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        assert _show(conn, "statement_timeout") == "1s"
        assert _show(conn, "idle_in_transaction_session_timeout") == "30s"
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute(RUNAWAY)
        assert info.value.sqlstate == "57014"
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] >= 100


RAISE_TIMEOUT = [
    "SET statement_timeout = 0",
    "SET statement_timeout = '5min'",
    "SET statement_timeout TO 3000",
    "SET SESSION statement_timeout = '1h'",
    "SET statement_timeout = '1.5s'",
    "SET statement_timeout = '0x7fffffff'",
    "SET statement_timeout = '100us'",   # rounds to 0: disabled
    "SELECT set_config('statement_timeout', '3000', false)",
    "SELECT set_config('statement_timeout', '0', true)",
    "SELECT set_config('statement_timeout', 2000::text, false)",
    "SET idle_in_transaction_session_timeout = 0",
    "SET idle_in_transaction_session_timeout = '1min'",
    "SELECT set_config('idle_in_transaction_session_timeout', '1d', false)",
    "SELECT set_config(current_setting('application_name'), '0', false)",
]


@pytest.mark.parametrize("sql", RAISE_TIMEOUT)
def test_raising_a_timeout_is_refused(gw, tokens, sql):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)
        assert _show(conn, "statement_timeout") == "1s"
        assert _show(conn, "idle_in_transaction_session_timeout") == "30s"


def test_raising_in_a_transaction_is_refused(gw, tokens):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("ROLLBACK")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT set_config('statement_timeout', %s, false)", ("0",))
        assert _show(conn, "statement_timeout") == "1s"


@pytest.mark.parametrize("sql,shown", [
    ("SET statement_timeout = '500ms'", "500ms"),
    ("SET statement_timeout = 200", "200ms"),
    ("SET statement_timeout = '1s'", "1s"),
    ("SELECT set_config('statement_timeout', '250', false)", "250ms"),
    ("RESET statement_timeout", "1s"),
])
def test_lowering_a_timeout_works(gw, tokens, sql, shown):
    with _connect(gw, tokens, "agent", ["agents"]) as conn:
        conn.execute(sql)
        assert _show(conn, "statement_timeout") == shown


def test_lowering_at_startup_works(gw, tokens):
    with _connect(gw, tokens, "agent", ["agents"],
                  options="-c statement_timeout=200") as conn:
        assert _show(conn, "statement_timeout") == "200ms"
        conn.execute("RESET statement_timeout")
        assert _show(conn, "statement_timeout") == "200ms"


# --- max_session_s ----------------------------------------------------------------------

def test_session_time_limit(gw, tokens):
    conn = _connect(gw, tokens, "brief", ["brief"])
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(2.0)
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        assert "pgguard: session time limit reached" in str(info.value)
    finally:
        conn.close()


# --- max_statements_per_minute ------------------------------------------------------------

def test_rate_limit_across_sessions(gw, tokens):
    with _connect(gw, tokens, "burst", ["bursty"]) as a, \
            _connect(gw, tokens, "burst", ["bursty"]) as b:
        for conn in (a, b, a, b, a):
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as info:
            b.execute("SELECT 1")
        assert info.value.sqlstate == "53400"
        assert info.value.diag.message_primary.startswith("pgguard: rate limit")
        # Usable, and in order inside a pipeline.
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            with a.pipeline():
                a.execute("SELECT 2")
        assert not a.closed and not b.closed


def test_rate_limit_counts_executes_of_a_prepared_statement(gw, tokens):
    """A driver's prepared statement runs as Bind/Execute only: those count too."""
    with _connect(gw, tokens, "burst2", ["bursty"]) as conn:
        for _ in range(5):
            assert conn.execute("SELECT 1", prepare=True).fetchone() == (1,)
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            conn.execute("SELECT 1", prepare=True)
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            conn.execute("SELECT 2")


def test_rate_limit_counts_each_statement_of_a_simple_query(gw, tokens):
    with _connect(gw, tokens, "burst3", ["bursty"]) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT 1; SELECT 2; SELECT 3; SELECT 4")
        cur.execute("SELECT 5")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            cur.execute("SELECT 6")
