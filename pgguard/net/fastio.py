"""Byte moving for the pumps with fewer trio layers on plain TCP sockets.

trio's SocketStream yields to the scheduler on every send and receive, even when the
socket is ready (two checkpoints per call). Per relayed query that is four scheduler
round trips, the largest single cost measured in benchmarks/bench_gateway.py. Here a
ready socket is read or written at once; the pump only waits when the kernel says
EAGAIN, and yields every few operations so other sessions are never starved. TLS
streams (trio.SSLStream) keep the ordinary path.
"""

from __future__ import annotations

import socket

import trio

RECEIVE_SIZE = 65536
_YIELD_EVERY = 16


class FastIO:
    """receive/send_all over one stream, taking the fast path when it is a TCP socket."""

    __slots__ = ("stream", "sock", "_ops")

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        sock = None
        if isinstance(stream, trio.SocketStream):
            raw = getattr(stream.socket, "_sock", None)
            if isinstance(raw, socket.socket):
                sock = raw
        self.sock = sock
        self._ops = 0

    async def _fair(self) -> None:
        self._ops += 1
        if self._ops >= _YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        sock = self.sock
        if sock is None:
            return await self.stream.receive_some(max_bytes)
        await self._fair()
        while True:
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            await self.stream.send_all(data)
            return
        await self._fair()
        total = len(data)
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == total:
            return
        view = memoryview(data)
        while sent < total:
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
