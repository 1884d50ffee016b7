"""The console's operator commands (issue 13) and kill switch (issue 14), on the wire.

As in test_admin_console_unit: real frontend bytes through an in-memory channel, a typed
fake of the gateway's context (tests/console_fakes.py) and real stores in ``tmp_path``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from console_fakes import AGENT, DBA, SRE, T0, FakeContext, Who, make_config, session
from test_admin_console_unit import (
    SYNC,
    TERMINATE,
    bind,
    columns,
    converse,
    describe,
    errors,
    execute,
    kinds,
    parse_,
    query,
    rows_of,
    split,
    tags,
)

from pgguard.admin import (
    BLOCK_COLUMNS,
    HELP_ROWS,
    LEASE_COLUMNS,
    SERVER_COLUMNS,
    SESSION_COLUMNS,
    STATS_COLUMNS,
    Command,
    LeaseView,
    ServerView,
    StatsView,
    parse,
    short_lease_id,
)
from pgguard.approvals import Approvals, Blocks
from pgguard.config import ApprovalsConfig
from pgguard.errors import AdminCommandError, ConfigError

LEASE_ID = "database/creds/readonly/AbCdEfGhIjKlMnOpQrStUvWx"
OPERATOR_COMMANDS = ["SHOW STATS", "SHOW SERVERS", "SHOW LEASES", "SHOW CONFIG", "RELOAD",
                     "KILL a1", "BLOCK USER 'agent-eve' 'runaway'", "UNBLOCK USER 'agent-eve'",
                     "SHOW BLOCKS"]


@pytest.fixture
async def blocks(tmp_path):
    svc = Blocks.open(ApprovalsConfig(store=f"sqlite:///{tmp_path}/a.db"), "gw-unit")
    await svc.start()
    yield svc
    svc.close()


@pytest.fixture
async def approvals(tmp_path):
    cfg = ApprovalsConfig(store=f"sqlite:///{tmp_path}/a.db", approver_groups=("dba",),
                          timeout_s=5, poll_interval_s=0.05)
    svc = Approvals(cfg, "gw-unit")
    await svc.start()
    yield svc
    svc.close()


def ctx(who: Who = DBA, **kw) -> FakeContext:
    """A gateway without [approvals] unless the test passes them."""
    kw.setdefault("live", [session("a1", "agent-bob", "active", statement="SELECT 1",
                                   statement_started_at=T0 + timedelta(seconds=5)),
                           session("b2", "agent-eve")])
    kw.setdefault("upstream", [ServerView("a1", "appdb", 4242, "db.internal:5432",
                                          "v-oidc-readonly-x1", "active", T0, tls=True)])
    kw.setdefault("held_leases", [LeaseView(LEASE_ID, "vault", "readonly", "appdb",
                                            "v-oidc-readonly-x1", ("a1", "b2"),
                                            T0 + timedelta(hours=1), True)])
    kw.setdefault("counters", [StatsView("appdb", 2, 7, 40, 3, 5, 1200, 9000, 250000,
                                         0.0123456, 0.5), StatsView("other", 0, 0, 0, 0, 0,
                                                                    0, 0, 0, None, None)])
    return FakeContext(who, **kw)


def one_error(out: bytes) -> dict[str, str]:
    assert kinds(out) == "EZ", kinds(out)
    return errors(out)[0]


def table(out: bytes) -> list[dict[str, str | None]]:
    head = next(b for k, b in split(out) if k == "T")
    return [dict(zip(columns(head), r, strict=True)) for r in rows_of(out)]


# ---------------------------------------------------------------------------- grammar

PARSES = [
    ("show stats;", Command("show_stats")),
    ("SHOW SERVERS", Command("show_servers")),
    ("Show Leases ;", Command("show_leases")),
    ("show config", Command("show_config")),
    ("SHOW VERSION;", Command("show_version")),
    ("show blocks", Command("show_blocks")),
    ("SHOW BLOCKS ALL;", Command("show_blocks", all=True)),
    ("reload;", Command("reload")),
    ("KILL 1a2b3c4d5e6f7a8b", Command("kill", target="1a2b3c4d5e6f7a8b", reason="")),
    ("kill abcDEF 'runaway';", Command("kill", target="abcDEF", reason="runaway")),
    ("KILL '0x-odd id'", Command("kill", target="0x-odd id", reason="")),
    ("KILL 1234", Command("kill", target="1234", reason="")),
    ("block user 'agent-bob' 'loops';", Command("block", target="agent-bob", reason="loops")),
    ("BLOCK USER Bob_1 'it''s looping'", Command("block", target="Bob_1",
                                                 reason="it's looping")),
    ("UNBLOCK USER 'agent-bob';", Command("unblock", target="agent-bob")),
]

REJECTS = [
    ("SHOW STATS ALL", "unexpected 'ALL'"),
    ("RELOAD now", "unexpected 'NOW'"),
    ("KILL", "expected a session id"),
    ("KILL a1 'x' 'y'", "unexpected a string literal"),
    ("BLOCK 'agent-bob' 'x'", "expected USER"),
    ("BLOCK USER 'agent-bob'", "expected a reason"),
    ("BLOCK USER '' 'x'", "a user name must be"),
    ("BLOCK USER 'b' 'x'; DROP TABLE pgguard_blocks", "one command per query"),
    ("UNBLOCK USER", "expected a user name"),
    ("UNBLOCK USER 'a' 'b'", "unexpected a string literal"),
    ("SHOW POOLS", "unknown SHOW 'POOLS'"),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse_operator_commands(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "message"), REJECTS)
def test_parse_rejects_operator_commands(text, message):
    with pytest.raises(AdminCommandError) as exc:
        parse(text)
    assert exc.value.sqlstate == "42601" and message in exc.value.message


def test_short_lease_id_never_shows_it_whole():
    assert short_lease_id(LEASE_ID) == "database/creds/readonly/AbCd…UvWx"
    assert short_lease_id("abcdefghijkl") == "…kl"
    assert short_lease_id("") == ""
    for lease in (LEASE_ID, "x/yz", "abcdefghijklmnopq", "ab"):
        assert short_lease_id(lease) != lease and "…" in short_lease_id(lease)


# ---------------------------------------------------------------------------- without approvals

async def test_console_works_without_approvals():
    # No [approvals]: the operator commands run; only the approval commands refuse.
    out = await converse(ctx(), query("HELP;") + query("show stats;") + query("SHOW VERSION"))
    assert tags(out) == ["SHOW", "SHOW", "SHOW"]
    assert not errors(out)
    for text in ("SHOW APPROVALS", "SHOW APPROVAL 1", "APPROVE 1 'x'", "deny 1;"):
        err = one_error(await converse(ctx(), query(text)))
        assert err["C"] == "0A000" and "approvals are not configured" in err["M"]


async def test_help_lists_every_command():
    out = await converse(ctx(AGENT), query("help;"))
    listed = [r[0] for r in rows_of(out)]
    assert listed == [c for c, _ in HELP_ROWS]
    for word in ("SHOW STATS", "SHOW SESSIONS", "SHOW SERVERS", "SHOW LEASES", "SHOW CONFIG",
                 "SHOW VERSION", "RELOAD", "KILL", "BLOCK USER", "UNBLOCK USER",
                 "SHOW BLOCKS", "SHOW APPROVALS", "APPROVE", "DENY", "HELP"):
        assert any(c.startswith(word) for c in listed), word


# ---------------------------------------------------------------------------- SHOW …

async def test_show_stats():
    out = await converse(ctx(), query("SHOW STATS;"))
    assert kinds(out) == "TDDCZ"
    rows = table(out)
    assert list(rows[0]) == STATS_COLUMNS
    assert rows[0] == {"connection": "appdb", "sessions": "2", "sessions_total": "7",
                       "allowed": "40", "held": "3", "refused": "5", "rows": "1200",
                       "bytes_received": "9000", "bytes_sent": "250000", "mean_ms": "12.346",
                       "p99_ms": "500.000"}
    assert rows[1]["mean_ms"] is None and rows[1]["p99_ms"] is None


async def test_show_sessions_states_and_iso_times():
    long_sql = "SELECT " + "x, " * 200 + "1"
    live = [session("a1", "agent-bob", "active", statement=long_sql,
                    statement_started_at=T0 + timedelta(seconds=5)),
            session("h1", "agent-bob", "held", statement="DELETE FROM t", request_id=9),
            session("t1", "agent-eve", "idle in transaction", groups=("engineers", "oncall"))]
    out = await converse(ctx(live=live), query("show sessions;"))
    rows = table(out)
    assert list(rows[0]) == SESSION_COLUMNS
    assert [(r["id"], r["state"]) for r in rows] == [
        ("a1", "active"), ("h1", "held"), ("t1", "idle in transaction")]
    assert rows[0]["started_at"] == "2026-12-03T17:00:00+00:00"
    assert rows[0]["statement_started_at"] == "2026-12-03T17:00:05+00:00"
    assert rows[0]["statement"].endswith("…") and len(rows[0]["statement"]) == 201
    assert rows[1]["request"] == "9" and rows[2]["statement"] is None
    assert rows[2]["groups"] == "engineers, oncall"


async def test_show_sessions_who_sees_what(approvals):
    live = [session("a1", "agent-bob"), session("b2", "agent-eve")]
    # An operator who is not an approver, an approver who is not an operator, and a user.
    admin_only = make_config(admin_groups=("sre",))
    for who, cfg, seen in ((SRE, admin_only, ["a1", "b2"]), (DBA, admin_only, ["a1", "b2"]),
                           (AGENT, admin_only, ["a1"])):
        out = await converse(ctx(who, approvals=approvals, live=live, config=cfg),
                             query("SHOW SESSIONS"))
        assert [r[0] for r in rows_of(out)] == seen, who


async def test_show_servers():
    out = await converse(ctx(), query("SHOW SERVERS"))
    rows = table(out)
    assert list(rows[0]) == SERVER_COLUMNS
    assert rows == [{"session": "a1", "connection": "appdb", "backend_pid": "4242",
                     "server": "db.internal:5432", "user": "v-oidc-readonly-x1",
                     "state": "active", "tls": "t",
                     "connected_at": "2026-12-03T17:00:00+00:00"}]


async def test_show_leases_never_shows_a_lease_id_whole():
    out = await converse(ctx(), query("show leases;"))
    rows = table(out)
    assert list(rows[0]) == LEASE_COLUMNS
    assert rows[0]["lease"] == "database/creds/readonly/AbCd…UvWx"
    assert rows[0]["sessions"] == "a1, b2" and rows[0]["renewable"] == "t"
    assert rows[0]["expires_at"] == "2026-12-03T18:00:00+00:00"
    assert LEASE_ID.encode() not in out and b"AbCdEfGhIjKlMnOpQrStUvWx" not in out


async def test_show_config_elides_secrets():
    out = await converse(ctx(), query("SHOW CONFIG;"))
    assert b"s3cret" not in out
    values = {r["key"]: r["value"] for r in table(out)}
    assert values["config_file"] == "/etc/pgguard/pgguard.toml"
    assert values["admin.groups"] == '["dba", "sre"]'
    assert values["approvals.approver_groups"] == '["dba"]'
    assert values["approvals.store"] == ("postgresql://pgguard:(elided)@db.example.com"
                                         "/approvals?sslmode=require&password=(elided)")
    assert values["connections[0].name"] == "appdb"
    assert values["connections[0].password_env"] == "APPDB_PASSWORD"  # a name, not a secret
    assert values["connections[0].grants[0].write"] == "deny"
    assert values["connections[0].grants[0].ddl"] == "review"  # the default, in effect
    assert values["connections[0].grants[0].groups"] == '["engineers"]'
    assert values["listen.allow_plaintext"] == "false"
    assert values["vault.url"] is None


async def test_show_version():
    out = await converse(ctx(AGENT), query("show version"))
    versions = {r[0]: r[1] for r in rows_of(out)}
    assert versions["pgguard"] and versions["python"] and versions["trio"]


# ---------------------------------------------------------------------------- actions

async def test_reload():
    context = ctx()
    out = await converse(context, query("RELOAD;"))
    assert tags(out) == ["RELOAD"] and context.reloads == 1
    assert rows_of(out) == [["reloaded /etc/pgguard/pgguard.toml: 1 connections"]]
    context.reload_error = ConfigError("listen.port", "must be between 0 and 65535",
                                       "/etc/pgguard/pgguard.toml")
    err = one_error(await converse(context, query("reload")))
    assert err["C"] == "F0000" and "listen.port" in err["M"] and "nothing changed" in err["M"]


async def test_kill():
    context = ctx(live=[session("1a2b3c4d5e6f7a8b", "agent-bob"), session("b2", "agent-eve")])
    out = await converse(context, query("KILL 1a2b3c4d5e6f7a8b 'runaway loop';"))
    assert tags(out) == ["KILL"] and rows_of(out) == [["1a2b3c4d5e6f7a8b", "killed"]]
    assert context.killed == [("1a2b3c4d5e6f7a8b",
                               "killed by alice from the admin console: runaway loop")]
    out = await converse(context, query("kill b2"))
    assert context.killed[-1] == ("b2", "killed by alice from the admin console")
    err = one_error(await converse(context, query("KILL b2")))
    assert err["C"] == "42704" and "b2" in err["M"]


async def test_kill_over_the_extended_protocol():
    # psycopg's default: Parse, Bind, Describe portal, Execute, Sync.
    context = ctx()
    out = await converse(context, parse_("", "KILL a1") + bind("", "") + describe("P", "")
                         + execute("") + SYNC + TERMINATE)
    assert kinds(out) == "12TDCZ" and tags(out) == ["KILL"]
    assert [sid for sid, _ in context.killed] == ["a1"]  # once, not per Describe/Execute


async def test_block_unblock_show_blocks(blocks):
    context = ctx(blocks=blocks, live=[session("a1", "agent-bob"), session("a2", "agent-bob"),
                                       session("b2", "agent-eve")])
    out = await converse(context, query("BLOCK USER 'agent-bob' 'runaway loop';"))
    assert tags(out) == ["BLOCK"]
    row = table(out)[0]
    assert (row["user"], row["reason"], row["blocked_by"], row["new"], row["sessions_ended"]) \
        == ("agent-bob", "runaway loop", "alice", "t", "2")
    assert row["message"] == "pgguard: user 'agent-bob' is blocked: runaway loop"
    assert context.blocked == [("agent-bob", "runaway loop")]
    assert [s.id for s in context.live] == ["b2"]
    assert await blocks.is_blocked("agent-bob") == "runaway loop"
    # Blocking again keeps the first block and still ends what is left.
    out = await converse(context, query("block user 'agent-bob' 'again'"))
    assert table(out)[0]["new"] == "f" and table(out)[0]["reason"] == "runaway loop"
    out = await converse(context, query("SHOW BLOCKS;"))
    rows = table(out)
    assert list(rows[0]) == BLOCK_COLUMNS
    assert [(r["user"], r["reason"], r["gateway"]) for r in rows] == [
        ("agent-bob", "runaway loop", "gw-unit")]
    out = await converse(context, query("UNBLOCK USER 'agent-bob';"))
    assert tags(out) == ["UNBLOCK"] and table(out)[0]["unblocked_by"] == "alice"
    assert await blocks.is_blocked("agent-bob") is None
    assert rows_of(await converse(context, query("SHOW BLOCKS"))) == []
    history = table(await converse(context, query("SHOW BLOCKS ALL")))
    assert [(r["user"], r["unblocked_by"]) for r in history] == [("agent-bob", "alice")]
    err = one_error(await converse(context, query("UNBLOCK USER 'agent-bob'")))
    assert err["C"] == "42704"


async def test_block_reason_is_data(blocks):
    evil = "x'); DROP TABLE pgguard_blocks; --"
    context = ctx(blocks=blocks)
    quoted = evil.replace("'", "''")
    out = await converse(context, query(f"BLOCK USER '{quoted}' '{quoted}'"))
    assert tags(out) == ["BLOCK"]
    assert await blocks.is_blocked(evil) == evil
    assert context.blocked == [(evil, evil)]


async def test_block_yourself_is_refused(blocks):
    err = one_error(await converse(ctx(blocks=blocks), query("BLOCK USER 'alice' 'oops'")))
    assert err["C"] == "42501"
    assert await blocks.is_blocked("alice") is None


async def test_blocks_need_a_store():
    for text in ("BLOCK USER 'agent-bob' 'x'", "UNBLOCK USER 'agent-bob'", "SHOW BLOCKS"):
        err = one_error(await converse(ctx(blocks=None), query(text)))
        assert err["C"] == "0A000" and "store" in err["M"]


# ---------------------------------------------------------------------------- permissions

@pytest.mark.parametrize("text", OPERATOR_COMMANDS)
async def test_operator_commands_refuse_others(text, blocks):
    context = ctx(AGENT, blocks=blocks)
    err = one_error(await converse(context, query(text)))
    assert err["C"] == "42501" and "[admin] group" in err["M"]
    assert context.killed == [] and context.blocked == [] and context.reloads == 0
    assert await blocks.is_blocked("agent-eve") is None


@pytest.mark.parametrize("text", OPERATOR_COMMANDS)
async def test_operator_commands_for_admin_groups(text, blocks):
    # sre is in [admin] groups but not an approver.
    context = ctx(SRE, blocks=blocks)
    if text.startswith("UNBLOCK"):
        await blocks.block("agent-eve", "runaway", "carol")
    out = await converse(context, query(text.lower() + ";"))
    assert not errors(out), errors(out)
    assert kinds(out).endswith("CZ")


async def test_approver_outside_admin_groups(approvals, blocks):
    cfg = make_config(admin_groups=("sre",))
    req = await approvals.submit(user="agent-bob", groups=["engineers"], connection="appdb",
                                 category="ddl", kind="AlterTableStmt", reason="ddl = review",
                                 sql="ALTER TABLE t ADD c int")
    context = ctx(DBA, approvals=approvals, blocks=blocks, config=cfg)
    assert one_error(await converse(context, query("SHOW STATS")))["C"] == "42501"
    out = await converse(context, query(f"APPROVE {req.id} 'ok';"))
    assert tags(out) == ["APPROVE"]
    # And an operator who is not an approver cannot decide.
    other = await approvals.submit(user="agent-bob", groups=["engineers"], connection="appdb",
                                   category="ddl", kind="AlterTableStmt", reason="r",
                                   sql="ALTER TABLE t ADD d int")
    context = ctx(SRE, approvals=approvals, config=cfg)
    assert one_error(await converse(context, query(f"APPROVE {other.id}")))["C"] == "42501"


async def test_empty_admin_groups_let_nobody(blocks):
    context = ctx(DBA, blocks=blocks, config=make_config(admin_groups=()))
    err = one_error(await converse(context, query("SHOW STATS")))
    assert err["C"] == "42501" and "none configured" in err["M"]
