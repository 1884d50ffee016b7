"""Result limits (``max_rows``, ``max_result_bytes``) as a sans-IO step of the backend pump.

The pump shows the limiter every backend message of a session with limits; the limiter
says keep it, drop it (``b""``) or send these bytes instead. A result is the DataRows of
one statement execution (from RowDescription, or the first row, to CommandComplete), the
CopyData of a COPY TO STDOUT, and the rows of all the Executes of one portal (an Execute
with a row limit ends in PortalSuspended and the next one continues the same result).
Past a limit rows are drained without being forwarded: PostgreSQL is not cancelled, as a
CancelRequest races with the next statement of the session and could cancel that one
instead (statement_timeout_s bounds how long the drain can take). Before the result's
CommandComplete the client gets a NoticeResponse ``pgguard: result truncated at N rows``,
and the tag's row count is what the client received.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from . import codec
from .exchange import Exchange, Notes, Request
from .messages import (
    COMMAND_COMPLETE,
    COPY_DATA,
    COPY_DONE,
    COPY_OUT_RESPONSE,
    DATA_ROW,
    EMPTY_QUERY_RESPONSE,
    ERROR_RESPONSE,
    EXECUTE,
    PORTAL_SUSPENDED,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
)

__all__ = ["ResultLimiter", "truncated_tag"]

_LAST_NUMBER = re.compile(rb"(\d+)$")
DROP = b""
#: The key of the limiter's entry in a request's (or statement's) notes: per statement,
#: None or (kind, cursor) for a DECLARE CURSOR or FETCH.
LIMITS = "limits"
_MAX_CURSORS = 1024


class ClassifiedStatement(Protocol):
    """What the limiter reads of a classified statement (``policy.StatementInfo``)."""

    @property
    def kind(self) -> str: ...

    @property
    def cursor(self) -> str | None: ...


def truncated_tag(tag: bytes, rows: int) -> bytes:
    """*tag* (``SELECT 1000``, ``COPY 5``, ``FETCH 70``, ``INSERT 0 9``) with its row
    count replaced by *rows*; a tag without a count is returned as is."""
    return _LAST_NUMBER.sub(str(rows).encode(), tag, count=1)


class ResultLimiter:
    """Counts the rows and bytes of the current result and truncates it at a limit.

    Args:
        max_rows: rows per result (None: no limit).
        max_bytes: bytes of DataRow/CopyData messages per result (None: no limit).
    """

    __slots__ = ("max_rows", "max_bytes", "rows", "bytes", "truncated", "truncations",
                 "exchange", "sent", "_fresh", "_cursor", "_cursors")

    def __init__(self, max_rows: int | None, max_bytes: int | None,
                 exchange: Exchange | None = None):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0
        self.truncated = False
        self.truncations = 0   # results truncated in this session (for the log)
        self.sent = 0          # rows of this statement execution the client got (its tag)
        # Which request a row belongs to (FETCHes of one cursor share one count).
        self.exchange = exchange
        self._fresh = True
        self._cursor: str | None = None
        self._cursors: dict[str, tuple[int, int, bool]] = {}

    def _reset(self) -> None:
        if self._cursor is not None:
            if len(self._cursors) >= _MAX_CURSORS:
                self._cursors.pop(next(iter(self._cursors)))
            self._cursors[self._cursor] = (self.rows, self.bytes, self.truncated)
        self.rows = 0
        self.bytes = 0
        self.truncated = False
        self.sent = 0
        self._fresh = True
        self._cursor = None

    @staticmethod
    def note_statements(statements: Iterable[ClassifiedStatement], notes: Notes) -> None:
        """Note in a Query's or Parse's *notes* which statements DECLARE or FETCH a
        cursor (read back when their rows come)."""
        marks = tuple((st.kind, st.cursor) if st.cursor is not None else None
                      for st in statements)
        if any(marks):
            notes[LIMITS] = marks

    def _statement(self, req: Request | None) -> tuple[str, str] | None:
        """The (kind, cursor) of the statement the current result belongs to, if any."""
        if req is None:
            return None
        if req.kind == QUERY:
            marks, index = req.notes.get(LIMITS), req.current
        elif req.kind == EXECUTE and req.portal is not None \
                and req.portal.statement is not None:
            marks, index = req.portal.statement.notes.get(LIMITS), 0
        else:
            return None
        if not marks or index >= len(marks):
            return None
        return marks[index]

    def _start(self, req: Request | None) -> None:
        """The first row of a result: continue the count of the cursor it FETCHes."""
        self._fresh = False
        mark = self._statement(req)
        if mark is not None and mark[0] == "FETCH":
            self._cursor = mark[1]
            self.rows, self.bytes, self.truncated = self._cursors.get(mark[1], (0, 0, False))

    def notice(self) -> bytes:
        """The NoticeResponse telling the client its result was cut."""
        which = "max_rows" if self.max_rows is not None and self.rows >= self.max_rows \
            else "max_result_bytes"
        return codec.notice_response(
            f"pgguard: result truncated at {self.rows} rows",
            severity="WARNING", sqlstate="01000",
            detail=f"the grant's {which} limit; the rest of the result was not sent")

    def on_backend(self, kind: int, buf: bytes | bytearray | memoryview, start: int,
                   end: int, replacement: bytes | None, req: Request | None = None
                   ) -> bytes | None:
        """One backend message, ``buf[start:end]`` (or *replacement* if someone already
        rewrote it), answering *req* (the exchange's answer; None for rows): None to
        forward as is, else the bytes to send (``b""``: drop)."""
        if kind == DATA_ROW or kind == COPY_DATA:
            if self._fresh:
                self._start(self.exchange.head if self.exchange is not None else None)
            if self.truncated:
                return DROP
            size = (end - start) if replacement is None else len(replacement)
            if (self.max_rows is not None and self.rows >= self.max_rows) or \
                    (self.max_bytes is not None and self.bytes + size > self.max_bytes):
                self.truncated = True
                self.truncations += 1
                return DROP
            self.rows += 1
            self.sent += 1
            self.bytes += size
            return replacement
        if kind == COMMAND_COMPLETE:
            mark = self._statement(req)
            if mark is not None and mark[0] == "DECLARE CURSOR":
                self._cursors.pop(mark[1], None)  # a new cursor of that name starts at 0
            elif self._fresh and mark is not None and mark[0] == "FETCH":
                self._start(req)  # a FETCH that returned no rows: its cursor's state
            if not self.truncated:
                self._reset()
                return replacement
            raw = bytes(buf[start + 5:end - 1]) if replacement is None \
                else replacement[5:-1]
            out = self.notice() + codec.command_complete(
                truncated_tag(raw, self.sent).decode("ascii", "replace"))
            self._reset()
            return out
        if kind == PORTAL_SUSPENDED:
            # The portal's next Execute continues this result: keep counting. A cut one
            # tells the client now (its driver may stop asking for more).
            truncated = self.truncated
            self.sent = 0
            if truncated:
                return self.notice() + (bytes(buf[start:end]) if replacement is None
                                        else replacement)
            return replacement
        if kind == COPY_DONE:
            return replacement
        if kind in (ROW_DESCRIPTION, COPY_OUT_RESPONSE, ERROR_RESPONSE, EMPTY_QUERY_RESPONSE,
                    READY_FOR_QUERY):
            # A new result starts, or the statement ended without a CommandComplete.
            self._reset()
        return replacement
