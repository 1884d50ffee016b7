"""Refused messages replaced by markers that fail in PostgreSQL, and their errors rewritten.

A refused statement is not dropped: it is replaced by one that fails in PostgreSQL's
parser (a marker name nothing can define), and the marker's error is rewritten to
pgguard's on the way back. That keeps every pipelined response in order and fails an open
transaction exactly as PostgreSQL would, without the refused text reaching the database.
Pure code over bytes: the session sends what it returns and shows it every ErrorResponse.
"""

from __future__ import annotations

import secrets
from collections import deque

from ..errors import GatewayError
from ..wire import codec
from ..wire.messages import EXECUTE, PARSE, Bind, FunctionCall, Parse, Query


class Refusals:
    """The markers sent for one session's refused messages, oldest first."""

    def __init__(self) -> None:
        # (marker, the ErrorResponse the client gets instead of the marker's error)
        self.pending: deque[tuple[bytes, bytes]] = deque()

    def __bool__(self) -> bool:
        return bool(self.pending)

    def _marker(self, exc: GatewayError, encoding: str) -> str:
        marker = f"pgguard_refused_{secrets.token_hex(6)}"
        self.pending.append((marker.encode(), codec.error_response(
            "ERROR", exc.sqlstate, exc.message, exc.detail, exc.hint, encoding=encoding)))
        return marker

    def statement(self, kind: int, msg: Query | Parse | FunctionCall, exc: GatewayError,
                  encoding: str) -> tuple[bytes, Query | Parse]:
        """The stand-in for a refused Query, Parse, Execute or FunctionCall.

        Returns:
            The bytes to send and the message they are.
        """
        marker = self._marker(exc, encoding)
        if kind == PARSE:
            assert isinstance(msg, Parse)
            return codec.parse(msg.name, marker, encoding=encoding), Parse(msg.name, marker, ())
        if kind == EXECUTE:
            # Named after the marker: its failure leaves the client's statements alone.
            return codec.parse(marker, marker, encoding=encoding), Parse(marker, marker, ())
        # FunctionCall has no SQL to replace: run the marker as a simple query instead.
        return codec.query(marker), Query(marker)

    def bind(self, msg: Bind, exc: GatewayError, encoding: str) -> tuple[bytes, Bind]:
        """The stand-in for a refused Bind: a Bind of a statement that does not exist, which
        PostgreSQL fails (and skips to Sync) before it touches the portal."""
        marker = self._marker(exc, encoding)
        return (codec.bind(msg.portal, marker, encoding=encoding),
                Bind(msg.portal, marker, (), (), ()))

    def rewritten(self, buf: bytes | bytearray, start: int, end: int) -> bytes | None:
        """pgguard's error for a marker's ErrorResponse at ``buf[start:end]``, else None.

        Refusals answer in order, but one can be skipped by the server (a pipeline that
        failed earlier ignores everything up to Sync, the marker too): markers older than
        the one that matched were skipped and are dropped.
        """
        for i, (marker, rewritten) in enumerate(self.pending):
            if buf.find(marker, start, end) >= 0:
                for _ in range(i + 1):
                    self.pending.popleft()
                return rewritten
        return None
