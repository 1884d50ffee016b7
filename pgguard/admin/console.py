"""The admin console on the wire: database ``pgguard`` on the gateway.

Commands are parsed and run by :mod:`.commands`; this module only speaks the protocol,
simple and extended, so psql, psycopg (either cursor) and the DBA prompt work. It meets
the gateway through two small Protocols, :class:`Channel` (bytes in and out, and the
framer the session already fed) and :class:`ConsoleContext` (who is connected, typed
snapshots of sessions, servers, leases and stats, and the few actions the commands take;
defined in :mod:`.context` and re-exported here), so it knows nothing of sessions or
sockets and runs in unit tests over an in-memory channel.

The console is the server here, but the protocol's state (prepared statements and portals,
bound when the console confirms them and forgotten at the end of the transaction; skipping
to Sync after an error) is the same one every session keeps: :class:`~pgguard.wire.exchange.
Exchange` tracks it, fed with each client message and each answer the console writes.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .. import __version__
from ..errors import AdminCommandError, GatewayError
from ..wire import codec
from ..wire import messages as m
from ..wire.exchange import Exchange, Request
from ..wire.messages import (
    Bind,
    Close,
    CommandComplete,
    Describe,
    Execute,
    Flush,
    Message,
    Parse,
    Query,
    ReadyForQuery,
    Sync,
    Terminate,
)
from .commands import AdminResult, execute
from .context import (
    ConsoleContext,
    LeaseView,
    ServerView,
    SessionView,
    StatsView,
)

__all__ = ["AdminConsole", "Channel", "ConsoleContext", "Frames", "LeaseView", "ServerView",
           "SessionView", "StatsView", "run_admin_console"]

log = logging.getLogger(__name__)


class Frames(Protocol):
    """Splits the client's byte stream into frames (the session's :class:`Framer`)."""

    def feed(self, data: bytes) -> None: ...

    def next_frame(self) -> tuple[bytes, int, int] | None: ...

    def decode(self, kind: bytes, start: int, end: int) -> Message: ...


class Channel(Protocol):
    """The console's connection to its client."""

    @property
    def framer(self) -> Frames:
        """Where client frames come from; it may already hold bytes read during startup."""
        ...

    async def receive(self) -> bytes:
        """The next bytes from the client; ``b""`` at end of stream."""
        ...

    async def send(self, data: bytes) -> None:
        """Send *data* to the client, whole."""
        ...


PARAMETERS = (
    ("server_version", f"15.0 (pgguard {__version__} admin console)"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("DateStyle", "ISO, MDY"),
    ("integer_datetimes", "on"),
    ("TimeZone", "UTC"),
    ("application_name", ""),
)

PARSE_COMPLETE = codec.message(b"1")
BIND_COMPLETE = codec.message(b"2")
CLOSE_COMPLETE = codec.message(b"3")
NO_DATA = codec.message(b"n")
NO_PARAMETERS = codec.message(b"t", b"\0\0")


def _result_bytes(res: AdminResult, describe: bool = True) -> bytes:
    if res.command_tag == "":
        return codec.empty_query_response()
    head = codec.text_row_description(res.columns) if (describe and res.columns) else b""
    rows = b"".join(codec.data_row([None if v is None else v.encode() for v in row])
                    for row in res.rows)
    return head + rows + codec.command_complete(res.command_tag)


def _error_bytes(exc: GatewayError) -> bytes:
    return codec.error_response("ERROR", exc.sqlstate, exc.message, exc.detail, exc.hint)


class AdminConsole:
    """One console connection: reads frames from the channel, answers them.

    Args:
        channel: the client connection, already authenticated.
        context: the connected user and the gateway's services.
    """

    def __init__(self, channel: Channel, context: ConsoleContext):
        self.channel = channel
        self.context = context
        self.exchange = Exchange()

    async def _run(self, sql: str) -> AdminResult:
        result = await execute(sql, self.context)
        log.info("event=admin_command user=%s tag=%s", self.context.identity.user,
                 result.command_tag)
        return result

    async def serve(self) -> None:
        """Greet the client, then answer its messages until Terminate or end of stream."""
        channel = self.channel
        greeting = [codec.authentication(0)]
        greeting += [codec.parameter_status(k, v) for k, v in PARAMETERS]
        greeting.append(codec.backend_key_data(0, self.context.secret_key))
        greeting.append(codec.ready_for_query("I"))
        await channel.send(b"".join(greeting))
        framer = channel.framer
        while True:
            out: list[bytes] = []
            while (frame := framer.next_frame()) is not None:
                msg = framer.decode(*frame)
                if isinstance(msg, Terminate):
                    if out:
                        await channel.send(b"".join(out))
                    return
                out.append(await self._handle(msg))
            if out:
                await channel.send(b"".join(out))
            data = await channel.receive()
            if not data:
                return
            framer.feed(data)

    def _answered(self, kind: int, msg: Message | None = None) -> None:
        self.exchange.server_sent(kind, msg)

    async def _handle(self, msg: Message) -> bytes:
        if isinstance(msg, Flush):
            return b""
        req = self.exchange.client_sent(msg, {})
        if req is None:
            return b""  # discarded up to Sync after an error, as PostgreSQL does
        if isinstance(msg, Sync):
            self._answered(m.READY_FOR_QUERY, ReadyForQuery("I"))
            return codec.ready_for_query("I")
        if isinstance(msg, Query):
            try:
                res = await self._run(msg.sql)
                body = _result_bytes(res)
                self._completed(res)
            except GatewayError as exc:
                body = _error_bytes(exc)
                self._answered(m.ERROR_RESPONSE)
            self._answered(m.READY_FOR_QUERY, ReadyForQuery("I"))
            return body + codec.ready_for_query("I")
        try:
            return await self._extended(msg, req)
        except GatewayError as exc:
            self._answered(m.ERROR_RESPONSE)  # the exchange now skips to Sync
            return _error_bytes(exc)

    def _completed(self, res: AdminResult) -> None:
        if res.command_tag:
            self._answered(m.COMMAND_COMPLETE, CommandComplete(res.command_tag))
        else:
            self._answered(m.EMPTY_QUERY_RESPONSE)

    async def _extended(self, msg: Message, req: Request) -> bytes:
        if isinstance(msg, Parse):
            req.notes["sql"] = msg.sql
            self._answered(m.PARSE_COMPLETE)
            return PARSE_COMPLETE
        if isinstance(msg, Bind):
            if req.statement is None:
                raise AdminCommandError(f"pgguard: unknown prepared statement {msg.statement!r}")
            if msg.params:
                raise AdminCommandError("pgguard: the admin console takes no parameters; "
                                        "write the values in the command")
            req.notes["sql"] = req.statement.notes["sql"]
            self._answered(m.BIND_COMPLETE)
            return BIND_COMPLETE
        if isinstance(msg, Describe):
            if msg.target == "S":
                if req.statement is None:
                    raise AdminCommandError(f"pgguard: unknown prepared statement {msg.name!r}")
                # Describing a statement must not run it (APPROVE would decide).
                self._answered(m.NO_DATA)
                return NO_PARAMETERS + NO_DATA
            res = await self._portal_result(req)
            if res.columns and res.command_tag:
                self._answered(m.ROW_DESCRIPTION)
                return codec.text_row_description(res.columns)
            self._answered(m.NO_DATA)
            return NO_DATA
        if isinstance(msg, Execute):
            res = await self._portal_result(req)
            assert req.portal is not None
            req.portal.notes.pop("result", None)
            self._completed(res)
            return _result_bytes(res, describe=False)
        if isinstance(msg, Close):
            self._answered(m.CLOSE_COMPLETE)
            return CLOSE_COMPLETE
        raise AdminCommandError("pgguard: message not supported by the admin console")

    async def _portal_result(self, req: Request) -> AdminResult:
        """The portal's result, run once for its Describe and Execute together."""
        portal = req.portal
        if portal is None:
            raise AdminCommandError(f"pgguard: unknown portal {req.name!r}")
        if "result" not in portal.notes:
            portal.notes["result"] = await self._run(portal.notes["sql"])
        return portal.notes["result"]


async def run_admin_console(channel: Channel, context: ConsoleContext) -> None:
    """Serve the admin console over an authenticated *channel* until it ends."""
    await AdminConsole(channel, context).serve()
