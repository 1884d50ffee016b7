"""The admin console's command language and what each command returns."""

from __future__ import annotations

import pytest
import trio
from console_fakes import AGENT, DBA, DBA2, FakeContext, session

from pgguard.admin import (
    APPROVAL_COLUMNS,
    DETAIL_COLUMNS,
    SESSION_COLUMNS,
    Command,
    execute,
    parse,
    quote_literal,
)
from pgguard.approvals import (
    AlreadyDecided,
    Approvals,
    NotAnApprover,
    OwnRequest,
    UnknownRequest,
)
from pgguard.config import ApprovalsConfig
from pgguard.errors import AdminCommandError

PARSES = [
    ("SHOW APPROVALS", Command("show_approvals")),
    ("show approvals;", Command("show_approvals")),
    ("  Show\n\tApprovals  ;  ", Command("show_approvals")),
    ("SHOW APPROVALS ALL", Command("show_approvals", all=True)),
    ("show approvals all;", Command("show_approvals", all=True)),
    ("SHOW APPROVAL 12", Command("show_approval", request_id=12)),
    ("SHOW SESSIONS", Command("show_sessions")),
    ("HELP", Command("help")),
    ("show help;", Command("help")),
    ("APPROVE 7", Command("approve", request_id=7, reason="")),
    ("approve 7 'ok';", Command("approve", request_id=7, reason="ok")),
    ("APPROVE 7 'it''s fine'", Command("approve", request_id=7, reason="it's fine")),
    ("APPROVE 7 ''", Command("approve", request_id=7, reason="")),
    ("APPROVE 7 ''''", Command("approve", request_id=7, reason="'")),
    ("DENY 3 'no\\nway'", Command("deny", request_id=3, reason="no\\nway")),
    ("DENY 3 'line one\nline two'", Command("deny", request_id=3, reason="line one\nline two")),
    ("DENY 3 'émoji ✓'", Command("deny", request_id=3, reason="émoji ✓")),
    ("deny 3 ''');DROP TABLE pgguard_approvals;--'",
     Command("deny", request_id=3, reason="');DROP TABLE pgguard_approvals;--")),
    ("DENY 3 'a;b' ;", Command("deny", request_id=3, reason="a;b")),
    ("-- a comment\nAPPROVE 1 /* inline */ 'x'", Command("approve", request_id=1, reason="x")),
    ("DENY /* a /* nested */ comment */ 2", Command("deny", request_id=2, reason="")),
    ("", Command("empty")),
    ("  ;  ", Command("empty")),
    ("-- only a comment", Command("empty")),
]

REJECTS = [
    ("SELECT 1", "unknown command 'SELECT'"),
    ("SHOW search_path", "unknown SHOW"),
    ("SHOW APPROVALS PENDING", "expected ALL"),
    ("SHOW APPROVAL", "expected a request id"),
    ("SHOW APPROVAL x", "expected a request id"),
    ("APPROVE", "expected a request id"),
    ("APPROVE -1 'x'", "unexpected character"),
    ("APPROVE 0", "out of range"),
    ("APPROVE 99999999999999999999", "out of range"),
    ("APPROVE 1.5", "bad number"),
    ("APPROVE 1x", "bad number"),
    ("APPROVE 1 'unterminated", "unterminated string"),
    ("APPROVE 1 'a' 'b'", "unexpected a string literal after"),
    ("APPROVE 1 'a'b", "after string literal"),
    ("APPROVE 1 reason", "unexpected 'REASON'"),
    ("APPROVE 1 E'\\x41'", "only standard"),
    ("APPROVE 1 $$x$$", "unexpected character"),
    ('APPROVE 1 "x"', "unexpected character"),
    ("APPROVE 1 'x'; DENY 2 'y'", "one command per query"),
    ("APPROVE 1; DROP TABLE pgguard_approvals", "one command per query"),
    ("SHOW APPROVALS;;", "one command per query"),
    ("APPROVE 1 /* unterminated", "unterminated /* comment"),
    ("APPROVE\x001", "NUL"),
    ("x" * 20000, "longer than"),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "message"), REJECTS)
def test_parse_rejects(text, message):
    with pytest.raises(AdminCommandError) as exc:
        parse(text)
    assert exc.value.sqlstate == "42601"
    assert exc.value.message.startswith("pgguard:")
    assert message in exc.value.message


@pytest.mark.parametrize("reason", ["", "x", "it's", "''", "'); DROP TABLE t; --",
                                    "back\\slash", "multi\nline", "ünï ✓", "a" * 500])
def test_quote_literal_round_trips(reason):
    assert parse(f"DENY 5 {quote_literal(reason)}").reason == reason


def test_quote_literal_refuses_nul():
    with pytest.raises(ValueError):
        quote_literal("a\x00b")


# ---------------------------------------------------------------------------- execute

async def run(text, who, approvals, live=()):
    return await execute(text, FakeContext(who, approvals, live=list(live)))


@pytest.fixture
async def approvals(tmp_path):
    cfg = ApprovalsConfig(store=f"sqlite:///{tmp_path}/a.db", approver_groups=("dba",),
                          timeout_s=5, poll_interval_s=0.05)
    svc = Approvals(cfg, "gw1")
    await svc.start()
    yield svc
    svc.close()


async def held(approvals, user="agent-bob", sql="ALTER TABLE t ADD COLUMN c int"):
    return await approvals.submit(user=user, groups=["engineers"], connection="appdb",
                                  category="ddl", kind="AlterTableStmt",
                                  reason="ddl = review", sql=sql, params=["x", None])


async def test_show_approvals_lists_pending(approvals):
    one, two = await held(approvals), await held(approvals, user="agent-eve")
    res = await run("SHOW APPROVALS", DBA, approvals)
    assert res.columns == APPROVAL_COLUMNS and res.command_tag == "SHOW"
    assert [r[0] for r in res.rows] == [str(one.id), str(two.id)]
    row = dict(zip(res.columns, res.rows[0], strict=True))
    assert row["status"] == "pending" and row["user"] == "agent-bob"
    assert row["groups"] == "engineers" and row["connection"] == "appdb"
    assert row["category"] == "ddl" and row["reason"] == "ddl = review"
    assert row["sql"] == "ALTER TABLE t ADD COLUMN c int"
    assert row["params"] == '["x", null]'
    assert all(isinstance(v, str | None) for r in res.rows for v in r)
    await run(f"APPROVE {one.id}", DBA, approvals)
    assert [r[0] for r in (await run("SHOW APPROVALS", DBA, approvals)).rows] == [
        str(two.id)]
    everything = await run("show approvals all;", DBA, approvals)
    assert [(r[0], r[1]) for r in everything.rows] == [(str(one.id), "approved"),
                                                        (str(two.id), "pending")]


async def test_show_approval_detail(approvals):
    req = await held(approvals)
    await run(f"DENY {req.id} 'not now'", DBA, approvals)
    res = await run(f"SHOW APPROVAL {req.id}", DBA, approvals)
    assert res.columns == DETAIL_COLUMNS and len(res.rows) == 1
    row = dict(zip(res.columns, res.rows[0], strict=True))
    assert row["status"] == "denied" and row["decided_by"] == "alice"
    assert row["decision_reason"] == "not now" and row["gateway"] == "gw1"
    assert row["decided_at"] is not None
    with pytest.raises(UnknownRequest):
        await run("SHOW APPROVAL 999", DBA, approvals)


async def test_approve_and_deny_results(approvals):
    a, d = await held(approvals), await held(approvals)
    res = await run(f"APPROVE {a.id} 'go'", DBA, approvals)
    assert res.command_tag == "APPROVE"
    assert res.rows == [(str(a.id), "approved", "agent-bob", "alice", "go")]
    res = await run(f"deny {d.id} 'it''s Friday';", DBA2, approvals)
    assert res.command_tag == "DENY"
    assert res.rows == [(str(d.id), "denied", "agent-bob", "carol", "it's Friday")]


async def test_refusals(approvals):
    req = await held(approvals)
    own = await held(approvals, user="alice")
    with pytest.raises(NotAnApprover) as exc:
        await run(f"APPROVE {req.id} 'me'", AGENT, approvals)
    assert exc.value.sqlstate == "42501"
    with pytest.raises(OwnRequest) as exc:
        await run(f"APPROVE {own.id} 'mine'", DBA, approvals)
    assert exc.value.sqlstate == "42501"
    await run(f"APPROVE {req.id}", DBA, approvals)
    with pytest.raises(AlreadyDecided) as exc:
        await run(f"DENY {req.id} 'changed my mind'", DBA2, approvals)
    assert exc.value.sqlstate == "55000"
    with pytest.raises(UnknownRequest):
        await run("APPROVE 4242", DBA, approvals)
    with pytest.raises(AdminCommandError):
        await run("DROP TABLE pgguard_approvals", DBA, approvals)
    assert (await approvals.get(own.id)).status == "pending"
    assert (await approvals.get(req.id)).decided_by == "alice"


async def test_injection_through_reason_is_stored_verbatim(approvals):
    req = await held(approvals)
    evil = "'); DROP TABLE pgguard_approvals; --"
    res = await run(f"DENY {req.id} {quote_literal(evil)}", DBA, approvals)
    assert res.rows[0][4] == evil
    # The table still exists and still works.
    assert (await approvals.get(req.id)).decision_reason == evil
    assert (await held(approvals)).id > req.id


async def test_non_approver_sees_only_own_requests(approvals):
    mine = await held(approvals, user="agent-bob")
    theirs = await held(approvals, user="agent-eve")
    res = await run("SHOW APPROVALS", AGENT, approvals)
    assert [r[0] for r in res.rows] == [str(mine.id)]
    assert (await run(f"SHOW APPROVAL {mine.id}", AGENT, approvals)).rows
    with pytest.raises(NotAnApprover):
        await run(f"SHOW APPROVAL {theirs.id}", AGENT, approvals)


async def test_show_sessions(approvals):
    rows = [session("s1", "agent-bob", "held", statement="ALTER TABLE t ADD c int",
                    request_id=3),
            session("s2", "agent-eve", groups=())]
    res = await run("SHOW SESSIONS", DBA, approvals, live=rows)
    assert res.columns == SESSION_COLUMNS
    assert res.rows[0] == ("s1", "agent-bob", "engineers", "appdb", "127.0.0.1:50000",
                           "held", "ALTER TABLE t ADD c int", "2026-12-03T17:00:00+00:00",
                           None, "3")
    assert res.rows[1][-1] is None and res.rows[1][2] == ""
    res = await run("SHOW SESSIONS", AGENT, approvals, live=rows)
    assert [r[0] for r in res.rows] == ["s1"]
    res = await run("SHOW SESSIONS", DBA, approvals)
    assert res.columns == SESSION_COLUMNS and res.rows == []


async def test_empty_and_help(approvals):
    assert (await run(";", DBA, approvals)).command_tag == ""
    res = await run("HELP", AGENT, approvals)
    assert res.columns == ["command", "description"]
    assert any(r[0].startswith("APPROVE") for r in res.rows)


async def test_console_decision_releases_waiter(approvals):
    req = await held(approvals)
    out = []

    async def wait():
        out.append(await approvals.wait(req.id, timeout_s=5))

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(wait)
            await trio.sleep(0.1)
            await run(f"DENY {req.id} 'nope'", DBA, approvals)
    assert out[0].status == "denied"
    assert "nope" in out[0].error().message
