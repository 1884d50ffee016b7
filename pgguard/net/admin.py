"""The admin console on the wire: database ``pgguard`` on the gateway.

Commands are parsed and run by :mod:`pgguard.admin`; this module only speaks the
protocol, simple and extended, so psql, psycopg (either cursor) and the DBA prompt work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import __version__, admin
from ..errors import AdminCommandError, FeatureNotSupported, GatewayError
from ..wire import codec
from ..wire.messages import (
    Bind,
    Close,
    Describe,
    Execute,
    Flush,
    Parse,
    Query,
    Sync,
    Terminate,
)

if TYPE_CHECKING:
    from .listener import Gateway
    from .session import ClientSession

log = logging.getLogger(__name__)

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


def _result_bytes(res: admin.AdminResult, describe: bool = True) -> bytes:
    if res.command_tag == "":
        return codec.empty_query_response()
    head = codec.text_row_description(res.columns) if (describe and res.columns) else b""
    rows = b"".join(codec.data_row([None if v is None else v.encode() for v in row])
                    for row in res.rows)
    return head + rows + codec.command_complete(res.command_tag)


def _error_bytes(exc: GatewayError) -> bytes:
    return codec.error_response("ERROR", exc.sqlstate, exc.message, exc.detail, exc.hint)


class AdminConsole:
    """One console connection: reads frames from the session, answers them."""

    def __init__(self, gateway: Gateway, session: ClientSession):
        self.gateway = gateway
        self.session = session
        self.statements: dict[str, str] = {}
        self.portals: dict[str, str] = {}
        self.results: dict[str, admin.AdminResult] = {}
        self.skipping = False

    def _sessions(self) -> list[dict]:
        out = []
        for s in list(self.gateway.all_sessions):
            if s.state != "active":
                continue
            out.append({
                "id": s.session_id, "user": s.user,
                "groups": ",".join(s.identity.groups) if s.identity else "",
                "connection": s.database, "client": s.peer, "started_at": s.started,
                "state": "idle" if s.txn_status == "I" else
                         ("in transaction" if s.txn_status == "T" else "failed transaction"),
            })
        return out

    async def _run(self, sql: str) -> admin.AdminResult:
        if self.gateway.approvals is None:
            raise FeatureNotSupported(
                "pgguard: approvals are not configured on this gateway "
                "([approvals] approver_groups)")
        assert self.session.identity is not None
        result = await admin.execute(sql, self.session.identity, self.gateway.approvals,
                                     self._sessions)
        log.info("event=admin_command user=%s tag=%s", self.session.user, result.command_tag)
        return result

    async def serve(self) -> None:
        session = self.session
        greeting = [codec.authentication(0)]
        greeting += [codec.parameter_status(k, v) for k, v in PARAMETERS]
        greeting.append(codec.backend_key_data(0, session.secret_key))
        greeting.append(codec.ready_for_query("I"))
        await session.send_client(b"".join(greeting))
        session.state = "admin"
        framer = session.client_framer
        while True:
            out: list[bytes] = []
            while (frame := framer.next_frame()) is not None:
                msg = framer.decode(*frame)
                if isinstance(msg, Terminate):
                    if out:
                        await session.send_client(b"".join(out))
                    return
                out.append(await self._handle(msg))
            if out:
                await session.send_client(b"".join(out))
            data = await session._receive_client()
            if not data:
                return
            framer.feed(data)

    async def _handle(self, msg) -> bytes:
        if isinstance(msg, Query):
            try:
                res = await self._run(msg.sql)
                body = _result_bytes(res)
            except GatewayError as exc:
                body = _error_bytes(exc)
            return body + codec.ready_for_query("I")
        if isinstance(msg, Sync):
            self.skipping = False
            self.portals.pop("", None)
            self.results.pop("", None)
            return codec.ready_for_query("I")
        if isinstance(msg, Flush):
            return b""
        if self.skipping:
            return b""
        try:
            return await self._extended(msg)
        except GatewayError as exc:
            self.skipping = True
            return _error_bytes(exc)

    async def _extended(self, msg) -> bytes:
        if isinstance(msg, Parse):
            self.statements[msg.name] = msg.sql
            return PARSE_COMPLETE
        if isinstance(msg, Bind):
            if msg.statement not in self.statements:
                raise AdminCommandError(f"pgguard: unknown prepared statement {msg.statement!r}")
            if msg.params:
                raise AdminCommandError("pgguard: the admin console takes no parameters; "
                                        "write the values in the command")
            self.portals[msg.portal] = self.statements[msg.statement]
            self.results.pop(msg.portal, None)
            return BIND_COMPLETE
        if isinstance(msg, Describe):
            if msg.target == "S":
                # Describing a statement must not run it (APPROVE would decide).
                return NO_PARAMETERS + NO_DATA
            res = await self._portal_result(msg.name)
            if res.columns and res.command_tag:
                return codec.text_row_description(res.columns)
            return NO_DATA
        if isinstance(msg, Execute):
            res = await self._portal_result(msg.name)
            self.results.pop(msg.name, None)
            return _result_bytes(res, describe=False)
        if isinstance(msg, Close):
            (self.statements if msg.target == "S" else self.portals).pop(msg.name, None)
            return CLOSE_COMPLETE
        raise AdminCommandError("pgguard: message not supported by the admin console")

    async def _portal_result(self, portal: str) -> admin.AdminResult:
        if portal not in self.portals:
            raise AdminCommandError(f"pgguard: unknown portal {portal!r}")
        if portal not in self.results:
            self.results[portal] = await self._run(self.portals[portal])
        return self.results[portal]


async def run_admin_console(gateway: Gateway, session: ClientSession) -> None:
    """Serve the admin console to an authenticated *session* until it ends."""
    await AdminConsole(gateway, session).serve()
