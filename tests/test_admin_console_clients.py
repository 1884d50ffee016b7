"""Real clients at the console: psql and psycopg against the console over TCP.

The gateway's own wiring of the console is the lead's (after the net restructuring); here
a minimal trio server answers the startup packet (no TLS, no password) and hands the
socket to :func:`run_admin_console` with the typed fake context, so each command is
checked with the clients operators use.
"""

from __future__ import annotations

import os
import shutil
import struct

import psycopg
import pytest
import trio
from console_fakes import DBA, FakeContext
from test_admin_console_ops import ctx

from pgguard.admin.console import run_admin_console
from pgguard.approvals import Blocks
from pgguard.config import ApprovalsConfig
from pgguard.wire.framer import Framer

PSQL = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
SSL_REQUEST = 80877103


class SocketChannel:
    def __init__(self, stream: trio.SocketStream, framer: Framer):
        self.stream = stream
        self.framer = framer

    async def receive(self) -> bytes:
        try:
            return await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


async def _read(stream: trio.SocketStream, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


async def _serve_one(stream: trio.SocketStream, context: FakeContext) -> None:
    buf = bytearray()
    try:
        while True:
            (size,) = struct.unpack("!I", await _read(stream, buf, 4))
            body = await _read(stream, buf, size - 4)
            if struct.unpack("!I", body[:4])[0] == SSL_REQUEST:
                await stream.send_all(b"N")
                continue
            break
        framer = Framer()
        framer.feed(bytes(buf))
        await run_admin_console(SocketChannel(stream, framer), context)
    except (EOFError, trio.BrokenResourceError):
        pass
    finally:
        await stream.aclose()


@pytest.fixture
async def console(tmp_path, nursery):
    blocks = Blocks.open(ApprovalsConfig(store=f"sqlite:///{tmp_path}/a.db"), "gw-clients")
    await blocks.start()
    context = ctx(DBA, blocks=blocks)
    listeners = await nursery.start(
        lambda task_status: trio.serve_tcp(lambda s: _serve_one(s, context), 0,
                                           host="127.0.0.1", task_status=task_status))
    port = listeners[0].socket.getsockname()[1]
    yield context, f"host=127.0.0.1 port={port} dbname=pgguard user=alice sslmode=disable"
    blocks.close()


async def psql(dsn: str, *commands: str) -> str:
    args = [PSQL, dsn, "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        args += ["-c", c]
    with trio.fail_after(30):
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


PSQL_COMMANDS = [
    ("HELP;", "SHOW STATS|"),
    ("show stats;", "appdb|2|7|40|3|5|1200|9000|250000|12.346|500.000"),
    ("SHOW SESSIONS;", "a1|agent-bob|engineers|appdb|127.0.0.1:50000|active|SELECT 1|"
                       "2026-12-03T17:00:00+00:00|2026-12-03T17:00:05+00:00|"),
    ("show servers;", "a1|appdb|4242|db.internal:5432|v-oidc-readonly-x1|active|t|"),
    ("SHOW LEASES;", "database/creds/readonly/AbCd…UvWx|vault|readonly|"),
    ("show config;", "admin.groups|[\"dba\", \"sre\"]"),
    ("Show Version;", "pgguard|"),
    ("reload;", "reloaded /etc/pgguard/pgguard.toml"),
    ("BLOCK USER 'agent-eve' 'runaway';", "agent-eve|runaway|alice|"),
    ("BLOCK USER 'agent-eve' 'runaway'; show blocks;", "agent-eve|runaway|alice|"),
    ("BLOCK USER 'agent-eve' 'runaway'; unblock user 'agent-eve';", "|gw-clients|alice|"),
    ("KILL a1 'loop';", "a1|killed"),
]


@pytest.mark.skipif(not os.path.exists(PSQL), reason="psql not installed")
@pytest.mark.parametrize(("command", "expected"), PSQL_COMMANDS)
async def test_psql_runs_each_command(console, command, expected):
    context, dsn = console
    # "A; B" is two -c options: psql sends each as its own Query.
    out = await psql(dsn, *[c.strip() + ";" for c in command.split(";") if c.strip()])
    assert expected in out, out
    if command.startswith("KILL"):
        assert context.killed == [("a1", "killed by alice from the admin console: loop")]


async def test_psql_reports_errors(console):
    _, dsn = console
    args = [PSQL, dsn, "-X", "-c", "APPROVE 1"]
    with trio.fail_after(30):
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode != 0
    assert b"approvals are not configured" in done.stderr


def _psycopg(dsn: str, sql: str, prepared: bool = False) -> list[tuple]:
    # psycopg's execute() is the extended protocol (Parse/Bind/Describe/Execute/Sync);
    # prepare=True names the statement, as a pooled application would.
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.cursor()
        cur.execute(sql, prepare=prepared)
        return cur.fetchall()


async def test_psycopg_runs_operator_commands(console):
    context, dsn = console
    with trio.fail_after(30):
        stats = await trio.to_thread.run_sync(_psycopg, dsn, "SHOW STATS")
        assert stats[0][:3] == ("appdb", "2", "7")
        blocked = await trio.to_thread.run_sync(_psycopg, dsn,
                                                "BLOCK USER 'agent-bob' 'runaway'", True)
        assert blocked[0][0] == "agent-bob"
        assert context.blocked == [("agent-bob", "runaway")]
        version = await trio.to_thread.run_sync(_psycopg, dsn, "show version;")
        assert version[0][0] == "pgguard"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await trio.to_thread.run_sync(_psycopg, dsn, "BLOCK USER 'alice' 'me'")
