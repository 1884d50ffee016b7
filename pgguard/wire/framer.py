"""Incremental framing of PostgreSQL messages from any chunking of the byte stream.

No I/O: ``feed()`` bytes in, ``next_frame()`` / ``next_message()`` out, or NEED_DATA.
Lengths are checked against the configured maximum before anything is buffered beyond
the header, so a client cannot make the gateway hold a gigabyte it announced.
"""

from __future__ import annotations

import struct
from typing import Final

from .. import _speedups
from ..errors import ProtocolViolation
from .codec import (
    ProtocolError,
    bind_names,
    decode_backend,
    decode_frontend,
    decode_startup,
)
from .messages import Bind, Message, StartupPacket


class NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

_U32 = struct.Struct("!I")
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

# The header walk, compiled when built (pgguard._speedups), else its pure-Python twin.
# Module globals so tests can run the framer over either one.
_next_frame = _speedups.next_frame
_datarow_run_end = _speedups.datarow_run_end
_FrameError = _speedups.FrameError


class Framer:
    """Splits a byte stream of typed messages (type byte + Int32 length) into frames.

    A frame is ``(kind, start, end)``: offsets into :attr:`buf` of the whole message,
    header included, so the caller can forward ``buf[start:end]`` untouched.
    Frames stay valid until the next :meth:`feed`.

    :attr:`encoding` is the Python codec strings are decoded in: the session sets it to
    the client_encoding PostgreSQL reports (see :mod:`pgguard.wire.clienttext`).
    """

    __slots__ = ("buf", "pos", "max_size", "_backend", "encoding")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, backend: bool = False,
                 encoding: str = "utf-8"):
        self.buf = bytearray()
        self.pos = 0
        self.max_size = max_size
        self._backend = backend
        self.encoding = encoding

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.pos:
            # Compact once per feed rather than once per message.
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet returned as frames."""
        return len(self.buf) - self.pos

    def next_frame(self) -> tuple[bytes, int, int] | None:
        """The next complete frame, or None when more bytes are needed.

        Raises:
            ProtocolViolation: the length word is impossible or over the limit.
        """
        try:
            frame = _next_frame(self.buf, self.pos, self.max_size)
        except _FrameError as exc:
            raise ProtocolViolation(
                f"message {exc.kind!r} claims {exc.size} bytes (limit {self.max_size})"
            ) from None
        if frame is not None:
            self.pos = frame[2]
        return frame

    def datarow_run(self, end: int) -> int:
        """Extend a DataRow frame ending at *end* over the complete DataRows after it.

        Call right after :meth:`next_frame` returned a DataRow ``(kind, start, end)``: the
        frames up to the returned offset are consumed, so ``buf[start:returned]`` is the
        whole run, forwarded as one slice. Anything else (another kind, an incomplete or
        malformed frame) is left for :meth:`next_frame`.
        """
        if end != self.pos:
            return end
        end = self.pos = _datarow_run_end(self.buf, end, self.max_size)
        return end

    def next_message(self) -> Message | NeedData:
        """Decode the next complete message.

        Raises:
            ProtocolViolation: the message is malformed or oversized.
        """
        frame = self.next_frame()
        if frame is None:
            return NEED_DATA
        kind, start, end = frame
        return self.decode(kind, start, end)

    def decode(self, kind: bytes, start: int, end: int) -> Message:
        try:
            if self._backend:
                return decode_backend(kind, self.buf, start, end, self.encoding)
            return decode_frontend(kind, self.buf, start, end, self.encoding)
        except ProtocolError as exc:
            raise ProtocolViolation(f"malformed {kind!r} message: {exc}") from None

    def decode_bind_names(self, start: int, end: int) -> Bind:
        """The Bind at *start* with its names only (see :func:`codec.bind_names`).

        Raises:
            ProtocolViolation: the names are malformed.
        """
        try:
            return bind_names(self.buf, start, end, self.encoding)
        except ProtocolError as exc:
            raise ProtocolViolation(f"malformed b'B' message: {exc}") from None


class StartupFramer:
    """Frames the untyped packets a client sends before authentication."""

    __slots__ = ("buf", "max_size")

    def __init__(self, max_size: int = 10000):
        self.buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data

    def next_packet(self) -> StartupPacket | NeedData:
        """Decode the next startup packet.

        Raises:
            ProtocolViolation: malformed, oversized or unsupported protocol.
        """
        if len(self.buf) < 4:
            return NEED_DATA
        (size,) = _U32.unpack_from(self.buf, 0)
        if size < 8 or size > self.max_size:
            raise ProtocolViolation(f"invalid startup packet length {size}")
        if len(self.buf) < size:
            return NEED_DATA
        try:
            packet = decode_startup(self.buf, 0, size)
        except ProtocolError as exc:
            raise ProtocolViolation(f"invalid startup packet: {exc}") from None
        del self.buf[:size]
        return packet

    def take_rest(self) -> bytes:
        """Bytes received after the last packet (typed messages that followed early)."""
        rest = bytes(self.buf)
        self.buf.clear()
        return rest
