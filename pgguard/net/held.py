"""Waiting for a human while watching the client (issue 11, class 3).

While a statement is held its session's frontend pump is blocked: without this, a client
that closes its socket, is killed, or sends Terminate would leave the request pending,
and an approval would then run it. Here the client is read during the wait; its bytes are
kept, in order, for after the decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ..errors import ProtocolViolation
from ..wire.framer import Framer
from ..wire.messages import TERMINATE
from .guard import Verdict

RECEIVE_SIZE = 65536


class HeldSession(Protocol):
    """What :func:`wait_watching_client` needs of a session."""

    client_framer: Framer
    end_reason: str

    async def receive_client(self) -> bytes: ...


def terminates(framer: Framer) -> bool:
    """Whether the frames buffered in *framer* (consumed) include a Terminate."""
    while (frame := framer.next_frame()) is not None:
        if frame[0][0] == TERMINATE:
            return True
    return False


async def wait_watching_client(session: HeldSession,
                               wait: Callable[[Verdict], Awaitable[Verdict]],
                               verdict: Verdict) -> Verdict | None:
    """``wait(verdict)`` (the guard's approval wait) while reading the client.

    At end of stream or a Terminate (also one already buffered after the held message)
    the wait is cancelled, which withdraws the request at once, and None is returned:
    the session ends and nothing held runs. Otherwise the verdict, with the bytes the
    client sent meanwhile appended to its framer *in place* (not fed: the offsets of the
    frames the pump is handling stay valid).

    Raises:
        ProtocolViolation: a malformed frame, or more than a message's limit, while held.
    """
    framer = session.client_framer
    peek = Framer(framer.max_size)
    peek.feed(framer.buf[framer.pos:])
    if terminates(peek):
        session.end_reason = "client terminated while held"
        return None
    early: list[bytes] = []
    limit = framer.max_size + RECEIVE_SIZE
    size = 0
    result: Verdict | None = None

    async def watch(cancel: trio.CancelScope) -> None:
        nonlocal size
        while True:
            data = await session.receive_client()
            if not data:
                session.end_reason = "client disconnected while held"
                break
            early.append(data)
            size += len(data)
            if size > limit:
                raise ProtocolViolation("pgguard: too much data sent while a statement is "
                                        "held for approval")
            peek.feed(data)
            if terminates(peek):
                session.end_reason = "client terminated while held"
                break
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        result = await wait(verdict)
        nursery.cancel_scope.cancel()
    if result is None:
        return None
    for data in early:
        framer.buf += data
    return result
