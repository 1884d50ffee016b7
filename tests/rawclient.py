"""A tiny blocking protocol client built on pgguard's own codec, for tests that need to
see exact ErrorResponse fields or send bytes no driver would send."""

from __future__ import annotations

import socket
import ssl
import struct

from pgguard.wire import codec
from pgguard.wire.framer import NEED_DATA, Framer
from pgguard.wire.messages import (
    PROTOCOL_3_0,
    Authentication,
    BackendKeyData,
    ErrorResponse,
    ReadyForQuery,
    StartupMessage,
)


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.framer = Framer(backend=True)
        self.key: BackendKeyData | None = None

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self):
        """The next backend message, or None when the server closed the connection."""
        while True:
            msg = self.framer.next_message()
            if msg is not NEED_DATA:
                return msg
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.framer.feed(data)

    def until(self, cls):
        """Messages up to and including the first of type *cls* (or the close)."""
        seen = []
        while True:
            msg = self.receive()
            seen.append(msg)
            if msg is None or isinstance(msg, cls):
                return seen

    def login(self, user: str, password: str, database: str = "appdb",
              **params: str) -> list:
        """Startup + cleartext password; returns every message until ReadyForQuery/close."""
        p = {"user": user, "database": database, **params}
        self.send(codec.encode_startup(StartupMessage(PROTOCOL_3_0, p)))
        first = self.receive()
        if not isinstance(first, Authentication):
            return [first]
        self.send(codec.password_message(password.encode() + b"\0"))
        msgs = [first] + self.until((ReadyForQuery, ErrorResponse))
        for m in msgs:
            if isinstance(m, BackendKeyData):
                self.key = m
        return msgs


def error_of(msgs: list) -> ErrorResponse | None:
    for m in msgs:
        if isinstance(m, ErrorResponse):
            return m
    return None


def fatal_for(port: int, user: str, token: str, database: str = "appdb") -> ErrorResponse:
    c = RawClient(port)
    try:
        err = error_of(c.login(user, token, database))
    finally:
        c.close()
    assert err is not None, "expected the gateway to refuse the login"
    return err


def tls_client_socket(port: int, ca_file: str, host: str = "127.0.0.1") -> ssl.SSLSocket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(struct.pack("!II", 8, 80877103))
    assert sock.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx.wrap_socket(sock, server_hostname=host)
