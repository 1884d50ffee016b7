"""The admin console's wire, by hand: frontend bytes built here (not by the gateway's codec),
backend answers split and read here, and an in-memory channel to run the console over.
Shared by the console tests (test_admin_console_unit, _ops, _clients, test_blocks)."""

from __future__ import annotations

import struct

from harness.console_fakes import FakeContext
from pgguard.admin.console import run_admin_console
from pgguard.wire.framer import Framer

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


async def converse(ctx: FakeContext, *chunks: bytes) -> bytes:
    """Everything the console sent after its greeting, for a client sending *chunks*."""
    channel = FakeChannel(*chunks)
    await run_admin_console(channel, ctx)
    greeting = split(bytes(channel.sent))
    n = next(i for i, (k, _) in enumerate(greeting) if k == "Z") + 1
    return b"".join(_msg(k.encode(), b) for k, b in greeting[n:])
