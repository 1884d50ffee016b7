"""The admin console on the wire, without sockets: real frontend bytes in, real bytes out.

The console is driven through an in-memory :class:`Channel` and a context holding a real
SQLite approvals store in ``tmp_path``. The client's bytes are built here by hand (not by
the gateway's codec) and the answers are split and read here, so the test checks the
protocol, not the codec against itself.
"""

from __future__ import annotations

import struct

import pytest
from console_fakes import AGENT, DBA, FakeContext, session

from pgguard.admin.commands import HELP_ROWS
from pgguard.admin.console import AdminConsole, run_admin_console
from pgguard.approvals import Approvals
from pgguard.config import ApprovalsConfig
from pgguard.errors import ProtocolViolation
from pgguard.wire.framer import Framer

HELP = "T" + "D" * len(HELP_ROWS) + "C"

# ---------------------------------------------------------------------------- client bytes


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _z(text: str) -> bytes:
    return text.encode() + b"\0"


def query(sql: str) -> bytes:
    return _msg(b"Q", _z(sql))


def parse_(name: str, sql: str) -> bytes:
    return _msg(b"P", _z(name) + _z(sql) + struct.pack("!H", 0))


def bind(portal: str, statement: str, params: tuple[bytes, ...] = ()) -> bytes:
    body = _z(portal) + _z(statement) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return _msg(b"B", body + struct.pack("!H", 0))


def describe(target: str, name: str) -> bytes:
    return _msg(b"D", target.encode() + _z(name))


def execute(portal: str) -> bytes:
    return _msg(b"E", _z(portal) + struct.pack("!I", 0))


def close(target: str, name: str) -> bytes:
    return _msg(b"C", target.encode() + _z(name))


SYNC = _msg(b"S")
FLUSH = _msg(b"H")
TERMINATE = _msg(b"X")


# ---------------------------------------------------------------------------- server bytes

def split(data: bytes) -> list[tuple[str, bytes]]:
    """The backend messages in *data* as (kind, body); fails on a torn message."""
    out, pos = [], 0
    while pos < len(data):
        kind = data[pos:pos + 1].decode()
        (size,) = struct.unpack_from("!I", data, pos + 1)
        out.append((kind, bytes(data[pos + 5:pos + 1 + size])))
        pos += 1 + size
    assert pos == len(data)
    return out


def kinds(data: bytes) -> str:
    return "".join(k for k, _ in split(data))


def row(body: bytes) -> list[str | None]:
    (n,), pos, values = struct.unpack_from("!H", body), 2, []
    for _ in range(n):
        (size,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[pos:pos + size].decode())
            pos += size
    return values


def columns(body: bytes) -> list[str]:
    (n,), pos, names = struct.unpack_from("!H", body), 2, []
    for _ in range(n):
        end = body.index(b"\0", pos)
        names.append(body[pos:end].decode())
        pos = end + 1 + 18  # table oid, column, type oid, size, modifier, format
    return names


def error_fields(body: bytes) -> dict[str, str]:
    return {chunk[:1].decode(): chunk[1:].decode() for chunk in body.split(b"\0") if chunk}


def rows_of(data: bytes) -> list[list[str | None]]:
    return [row(b) for k, b in split(data) if k == "D"]


def tags(data: bytes) -> list[str]:
    return [b.rstrip(b"\0").decode() for k, b in split(data) if k == "C"]


def errors(data: bytes) -> list[dict[str, str]]:
    return [error_fields(b) for k, b in split(data) if k == "E"]


# ---------------------------------------------------------------------------- fakes

class FakeChannel:
    """A client that sends *chunks* in order, then hangs up; records what it received."""

    def __init__(self, *chunks: bytes):
        self.framer = Framer()
        self.chunks = list(chunks)
        self.sent = bytearray()
        self.sends = 0

    async def receive(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def send(self, data: bytes) -> None:
        self.sends += 1
        self.sent += data


def Context(identity, approvals, live=(), **kw) -> FakeContext:  # noqa: N802 - reads as a type
    return FakeContext(identity, approvals, live=list(live), **kw)


@pytest.fixture
async def approvals(tmp_path):
    cfg = ApprovalsConfig(store=f"sqlite:///{tmp_path}/a.db", approver_groups=("dba",),
                          timeout_s=5, poll_interval_s=0.05)
    svc = Approvals(cfg, "gw-unit")
    await svc.start()
    yield svc
    svc.close()


async def held(approvals: Approvals, user: str = "agent-bob"):
    return await approvals.submit(user=user, groups=["engineers"], connection="appdb",
                                  category="ddl", kind="AlterTableStmt",
                                  reason="ddl = review", sql="ALTER TABLE t ADD c int",
                                  params=["x", None])


async def converse(ctx: Context, *chunks: bytes) -> bytes:
    """Everything the console sent after its greeting, for a client sending *chunks*."""
    channel = FakeChannel(*chunks)
    await run_admin_console(channel, ctx)
    greeting = split(bytes(channel.sent))
    n = next(i for i, (k, _) in enumerate(greeting) if k == "Z") + 1
    return b"".join(_msg(k.encode(), b) for k, b in greeting[n:])


# ---------------------------------------------------------------------------- tests

async def test_greeting_then_end_of_stream(approvals):
    channel = FakeChannel()
    await AdminConsole(channel, Context(DBA, approvals)).serve()
    msgs = split(bytes(channel.sent))
    assert [k for k, _ in msgs][0] == "R" and msgs[0][1] == struct.pack("!I", 0)
    params = dict(b[:-1].decode().split("\0", 1) for k, b in msgs if k == "S")
    assert params["server_encoding"] == "UTF8" and "admin console" in params["server_version"]
    assert [b for k, b in msgs if k == "K"] == [struct.pack("!II", 0, 424242)]
    assert msgs[-1] == ("Z", b"I")


async def test_simple_query_show_approvals(approvals):
    one, two = await held(approvals), await held(approvals, user="agent-eve")
    out = await converse(Context(DBA, approvals), query("SHOW APPROVALS;") + TERMINATE)
    assert kinds(out) == "TDDCZ"
    head = next(b for k, b in split(out) if k == "T")
    assert columns(head)[:2] == ["id", "status"]
    assert [r[:2] for r in rows_of(out)] == [[str(one.id), "pending"], [str(two.id), "pending"]]
    assert rows_of(out)[0][columns(head).index("params")] == '["x", null]'
    assert tags(out) == ["SHOW"]


async def test_non_approver_sees_only_own_requests(approvals):
    mine, _theirs = await held(approvals), await held(approvals, user="agent-eve")
    out = await converse(Context(AGENT, approvals), query("show approvals"))
    assert [r[0] for r in rows_of(out)] == [str(mine.id)]


async def test_simple_query_error_then_ready(approvals):
    out = await converse(Context(DBA, approvals),
                         query("DROP TABLE pgguard_approvals") + query("HELP"))
    assert kinds(out) == "EZ" + HELP + "Z"
    assert errors(out)[0]["C"] == "42601"
    assert errors(out)[0]["S"] == "ERROR"


async def test_empty_query(approvals):
    out = await converse(Context(DBA, approvals), query("  ; -- nothing"))
    assert kinds(out) == "IZ"


async def test_extended_approve(approvals):
    req = await held(approvals)
    sql = f"APPROVE {req.id} 'looks fine'"
    out = await converse(Context(DBA, approvals),
                         parse_("", sql) + bind("", "") + describe("P", "") + execute("")
                         + SYNC)
    assert kinds(out) == "12TDCZ"
    assert rows_of(out) == [[str(req.id), "approved", "agent-bob", "alice", "looks fine"]]
    assert tags(out) == ["APPROVE"]
    assert (await approvals.get(req.id)).status == "approved"


async def test_describe_statement_does_not_run_it(approvals):
    req = await held(approvals)
    out = await converse(Context(DBA, approvals),
                         parse_("s1", f"DENY {req.id}") + describe("S", "s1") + SYNC
                         + close("S", "s1") + SYNC)
    assert kinds(out) == "1tnZ3Z"
    assert (await approvals.get(req.id)).pending


async def test_portal_runs_once_for_describe_and_execute(approvals):
    req = await held(approvals)
    # Describe then Execute of one portal must decide once, not twice (the second would
    # fail with AlreadyDecided).
    out = await converse(Context(DBA, approvals),
                         parse_("", f"DENY {req.id} 'no'") + bind("p", "") + describe("P", "p")
                         + execute("p") + SYNC)
    assert kinds(out) == "12TDCZ"
    assert rows_of(out)[0][1] == "denied"


async def test_error_skips_to_sync(approvals):
    req = await held(approvals)
    out = await converse(
        Context(DBA, approvals),
        parse_("", "SHOW APPROVALS") + bind("", "missing") + describe("P", "") + execute("")
        + parse_("", f"APPROVE {req.id}") + bind("", "") + execute("") + FLUSH + SYNC
        + query("SHOW APPROVAL " + str(req.id)))
    assert kinds(out) == "1EZTDCZ"
    assert errors(out)[0]["C"] == "42601" and "missing" in errors(out)[0]["M"]
    # Nothing between the error and Sync ran: the request is still pending.
    assert rows_of(out)[0][1] == "pending"
    assert (await approvals.get(req.id)).pending


async def test_command_error_in_execute_skips_to_sync(approvals):
    out = await converse(Context(DBA, approvals),
                         parse_("", "APPROVE 999") + bind("", "") + execute("")
                         + execute("") + SYNC + parse_("", "HELP") + bind("", "")
                         + execute("") + SYNC)
    assert kinds(out) == "12EZ12" + HELP[1:] + "Z"
    assert errors(out)[0]["C"] == "42704"


async def test_bind_with_parameters_is_refused(approvals):
    out = await converse(Context(DBA, approvals),
                         parse_("", "APPROVE 1") + bind("", "", (b"1",)) + SYNC)
    assert kinds(out) == "1EZ"
    assert "no parameters" in errors(out)[0]["M"]


async def test_terminate_ends_the_console(approvals):
    channel = FakeChannel(query("HELP") + TERMINATE + query("SHOW APPROVALS"),
                          query("SHOW APPROVALS"))
    await run_admin_console(channel, Context(DBA, approvals))
    assert kinds(bytes(channel.sent)).endswith("CZ")
    assert tags(bytes(channel.sent)) == ["SHOW"]  # only HELP was answered
    assert len(channel.chunks) == 1  # and nothing more was read


async def test_bytes_split_anywhere_give_the_same_answers(approvals):
    await held(approvals)
    conversation = (query("SHOW APPROVALS") + parse_("", "HELP") + bind("", "")
                    + describe("P", "") + execute("") + SYNC + TERMINATE)
    whole = await converse(Context(DBA, approvals), conversation)
    trickled = await converse(Context(DBA, approvals),
                              *[conversation[i:i + 1] for i in range(len(conversation))])
    assert trickled == whole
    assert kinds(whole) == "TDCZ12" + HELP + "Z"


async def test_approvals_not_configured(approvals):
    out = await converse(Context(DBA, None), query("SHOW APPROVALS"))
    assert kinds(out) == "EZ"
    assert errors(out)[0]["C"] == "0A000"


async def test_show_sessions_uses_the_context(approvals):
    live = [session("a1", "agent-bob", client="127.0.0.1:5000"),
            session("b2", "agent-eve", client="127.0.0.1:5001")]
    out = await converse(Context(DBA, approvals, live=live), query("SHOW SESSIONS"))
    assert [r[0] for r in rows_of(out)] == ["a1", "b2"]
    out = await converse(Context(AGENT, approvals, live=live), query("SHOW SESSIONS"))
    assert [r[0] for r in rows_of(out)] == ["a1"]


async def test_frames_read_during_startup_are_answered(approvals):
    # The session may have read the first query together with the startup packet.
    channel = FakeChannel()
    channel.framer.feed(query("HELP"))
    await run_admin_console(channel, Context(DBA, approvals))
    assert tags(bytes(channel.sent)) == ["SHOW"]


async def test_malformed_length_is_a_protocol_violation(approvals):
    channel = FakeChannel(b"Q\0\0\0\1")
    with pytest.raises(ProtocolViolation):
        await run_admin_console(channel, Context(DBA, approvals))
