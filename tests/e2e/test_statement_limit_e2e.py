"""listen.max_statement_bytes through the gateway: a larger Query or Parse is refused
before it is parsed (SQLSTATE 54000, a ``pgguard:`` message), the session goes on, and a
statement at the limit runs; the default holds a 1M-element IN list."""

from __future__ import annotations

import psycopg
import pytest

from pgguard import config

pytestmark = pytest.mark.usefixtures("app_db")

LIMIT = 4096


@pytest.fixture(scope="module")
def small_gw(make_config):
    from harness.gateway import ThreadGateway
    cfg = make_config()
    cfg["listen"]["max_statement_bytes"] = LIMIT
    gw = ThreadGateway(cfg).start()
    try:
        yield gw
    finally:
        gw.stop()


def _in_list(nbytes: int) -> str:
    head = "SELECT count(*) FROM accounts WHERE id IN ("
    items = []
    size = len(head) + 1
    i = 0
    while size + len(str(i)) + 1 <= nbytes:
        items.append(str(i))
        size += len(str(i)) + 1
        i += 1
    sql = head + ",".join(items) + ")"
    return sql + " " * (nbytes - len(sql))


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "extended"])
def test_larger_statement_refused_up_front(small_gw, tokens, prepare):
    with psycopg.connect(small_gw.dsn("ann"), password=tokens("ann", ["analysts"]),
                         autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute(_in_list(LIMIT + 1), prepare=prepare)
        msg = info.value.diag.message_primary
        assert msg.startswith("pgguard:") and "listen.max_statement_bytes" in msg
        assert str(LIMIT) in msg
        # At the limit: analysed and run; the session is fine.
        assert conn.execute(_in_list(LIMIT), prepare=prepare).fetchone()[0] >= 0
        # Multibyte text counts in bytes.
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT '" + "é" * (LIMIT // 2) + "'", prepare=prepare)


def test_default_holds_a_million_element_in_list():
    # SELECT … WHERE aid IN (1, …, 1000000) is 6.9 MB.
    assert config.ListenConfig().max_statement_bytes >= 7_000_000


def _cfg(listen: dict) -> config.Config:
    return config.parse({
        "listen": listen,
        "identity": {"issuer": "https://idp.example/"},
        "connections": [{"name": "appdb", "user": "dev", "password_env": "X",
                         "grants": [{"groups": ["g"], "read": "allow"}]}],
    })


def test_config_key():
    assert _cfg({}).listen.max_statement_bytes == 16 * 1024 * 1024
    assert _cfg({"max_statement_bytes": 1000}).listen.max_statement_bytes == 1000
    with pytest.raises(config.ConfigError, match="max_statement_bytes"):
        _cfg({"max_statement_bytes": 0})
