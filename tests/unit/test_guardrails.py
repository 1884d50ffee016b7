"""Guardrails without sockets: config keys, the strictest limits, time units as
PostgreSQL reads them, statement refusals, startup settings and the rate window."""

from __future__ import annotations

import pytest

from pgguard import policy
from pgguard.config import GrantConfig, parse
from pgguard.errors import ConfigError
from pgguard.policy import guardrails
from pgguard.policy.guardrails import Limits, RateWindow, limits_for, parse_time_ms


@pytest.mark.parametrize("text,ms", [
    ("5min", 300000), ("3000", 3000), ("1h", 3600000), ("1d", 86400000), ("0x10", 16),
    ("010", 8), ("1.5s", 1500), (" 5 s ", 5000), ("1e3", 1000), ("100us", 0), ("0", 0),
    ("-1", -1), ("250ms", 250),
])
def test_time_units(text, ms):
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["5 S", "abc", "5 minutes", "", "1 h x"])
def test_time_units_postgres_rejects(text):
    assert parse_time_ms(text) is None


def test_strictest_over_grants():
    a = GrantConfig(("a",), actions={"write": "allow"}, statement_timeout_s=10,
                    max_rows=100)
    b = GrantConfig(("b",), actions={"write": "deny", "ddl": "deny"},
                    statement_timeout_s=2.5, max_result_bytes=1000)
    lim = limits_for([a, b])
    assert lim.read_only  # b: write, ddl and privileged deny
    assert lim.statement_timeout_ms == 2500 and lim.max_rows == 100
    assert lim.max_result_bytes == 1000 and lim.max_session_s is None
    assert not limits_for([a]).read_only
    assert not GrantConfig(("c",), actions={"write": "deny", "ddl": "deny"},
                           read_only=False).is_read_only


LIMITS = Limits(read_only=True, statement_timeout_ms=1000,
                idle_in_transaction_timeout_ms=30000)


@pytest.mark.parametrize("sql", [
    "SET default_transaction_read_only = off", "BEGIN READ WRITE",
    "START TRANSACTION READ WRITE", "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SELECT set_config('transaction_read_only', 'off', false)",
    "SELECT set_config('default_transaction_read_only', $1, false)",
    "SET statement_timeout = 0", "SET LOCAL statement_timeout = '2s'",
    "SELECT set_config('statement_timeout', $1, false)",
    "SELECT set_config(current_user, '0', false)",
    "SELECT 1; SET idle_in_transaction_session_timeout = '1h'",
    "PREPARE p AS SELECT set_config('statement_timeout', '0', false)",
])
def test_lifting_statements(sql):
    assert guardrails.refusal(policy.classify(sql), LIMITS) is not None


@pytest.mark.parametrize("sql", [
    "SET default_transaction_read_only = on", "BEGIN READ ONLY", "BEGIN", "RESET ALL",
    "RESET statement_timeout", "DISCARD ALL", "SET statement_timeout = 500",
    "SET statement_timeout TO DEFAULT", "SELECT set_config('work_mem', '8MB', false)",
    "SET statement_timeout = 'nonsense'",  # PostgreSQL refuses it itself
])
def test_harmless_statements(sql):
    assert guardrails.refusal(policy.classify(sql), LIMITS) is None


def test_no_limits_refuse_nothing():
    assert guardrails.refusal(policy.classify("SET statement_timeout = 0"), Limits()) is None


def test_startup_settings():
    out = guardrails.startup_settings({"application_name": "x"}, [], LIMITS)
    assert out == {"default_transaction_read_only": "on", "statement_timeout": "1000",
                   "idle_in_transaction_session_timeout": "30000"}
    opts = guardrails.options_settings("-c statement_timeout=200 --work-mem=8MB")
    assert opts == [("statement_timeout", "200"), ("work_mem", "8MB")]
    assert guardrails.startup_settings({}, opts, LIMITS)["statement_timeout"] == "200"
    for params, options in (({"statement_timeout": "0"}, []),
                            ({}, [("default_transaction_read_only", "off")]),
                            ({"idle_in_transaction_session_timeout": "1h"}, [])):
        with pytest.raises(guardrails.GuardrailRefused) as info:
            guardrails.startup_settings(params, options, LIMITS)
        assert info.value.sqlstate == "42501" and info.value.severity == "FATAL"


def test_rate_window():
    w = RateWindow()
    assert all(w.allow("u", 3, t) for t in (0.0, 1.0, 2.0))
    assert not w.allow("u", 3, 3.0)
    assert w.allow("v", 3, 3.0)            # per user
    assert w.allow("u", 3, 60.5)           # the first one left the window
    assert not w.allow("u", 3, 60.6, count=2)


def _grant_cfg(**keys):
    return {"identity": {"issuer": "https://idp.example/"},
            "connections": [{"name": "db", "user": "u", "password_env": "X",
                             "grants": [{"groups": ["g"], **keys}]}]}


@pytest.mark.parametrize("key,value", [
    ("read_only", "yes"), ("statement_timeout_s", 0), ("statement_timeout_s", -1),
    ("idle_in_transaction_timeout_s", 10**7), ("max_session_s", 0),
    ("max_statements_per_minute", 1.5), ("max_rows", 0), ("max_result_bytes", -5),
])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        parse(_grant_cfg(**{key: value}))
    assert f"connections[0].grants[0].{key}" in str(info.value)


def test_config_keys_load():
    cfg = parse(_grant_cfg(read_only=True, statement_timeout_s=5, max_rows=10,
                               max_statements_per_minute=60, max_session_s=3600,
                               max_result_bytes=1 << 20, idle_in_transaction_timeout_s=30))
    g = cfg.connections[0].grants[0]
    assert g.read_only and g.statement_timeout_s == 5.0 and g.max_rows == 10
