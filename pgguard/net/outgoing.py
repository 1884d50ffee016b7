"""The pumps' helpers: batching what goes out, and the error that ended a relay.

Moved out of session.py (its size limit) unchanged.
"""

from __future__ import annotations

import trio

from ..errors import GatewayError


class Outgoing:
    """What a pump sends next: runs of untouched frames (slices of the receive buffer,
    copied once) and replacement bytes, in order."""

    __slots__ = ("buf", "parts", "start", "end")

    def __init__(self, buf: bytearray):
        self.buf = buf
        self.parts: list[bytes] = []
        self.start = -1
        self.end = -1

    def keep(self, start: int, end: int) -> None:
        if self.start < 0:
            self.start = start
        elif self.end != start:
            self._close_run()
            self.start = start
        self.end = end

    def put(self, data: bytes) -> None:
        self._close_run()
        if data:
            self.parts.append(data)

    def _close_run(self) -> None:
        if self.start >= 0:
            self.parts.append(bytes(self.buf[self.start:self.end]))
            self.start = -1

    def take(self) -> bytes:
        """Everything collected so far, as one bytes object (b"" when nothing)."""
        self._close_run()
        parts, self.parts = self.parts, []
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that ended a pump: a GatewayError if any, else the first other one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                walk(e)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, GatewayError):
            return exc
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return leaves[0]
