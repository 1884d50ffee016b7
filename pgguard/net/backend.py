"""The link to PostgreSQL: TCP, TLS per sslmode, and the login (the exchanges are wire.auth)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

import trio

from ..config import ConnectionConfig
from ..errors import ConnectionFailure, GatewayError
from ..wire import codec
from ..wire.auth import CLEARTEXT, UpstreamAuth
from ..wire.framer import NEED_DATA, Framer
from ..wire.messages import (
    PROTOCOL_3_0,
    Authentication,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    NegotiateProtocolVersion,
    NoticeResponse,
    ParameterStatus,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
)

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65536


class UpstreamRefused(ConnectionFailure):
    """PostgreSQL refused the login; carries its fields so the session can relay them."""

    def __init__(self, message: str, fields: dict[str, str]):
        super().__init__(message)
        self.fields = fields


@dataclass
class BackendLink:
    """A logged-in upstream connection, ready for queries."""

    stream: trio.abc.Stream
    process_id: int
    secret_key: int = field(repr=False)
    parameters: dict[str, str]
    # ParameterStatus and NoticeResponse messages of the startup, raw and in order, for the
    # client (it must see the server's own values: server_version, integer_datetimes, ...).
    startup_messages: list[bytes]
    framer: Framer
    tls: bool


def ssl_context(conn: ConnectionConfig) -> ssl.SSLContext | None:
    """The client-side TLS context for *conn*'s sslmode, as libpq interprets it."""
    mode = conn.sslmode
    if mode == "disable":
        return None
    if mode in ("verify-ca", "verify-full") or conn.sslrootcert:
        ctx = ssl.create_default_context(cafile=conn.sslrootcert)
        # libpq: require with a root cert behaves like verify-ca.
        ctx.check_hostname = mode == "verify-full"
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if conn.sslcert and conn.sslkey:
        ctx.load_cert_chain(conn.sslcert, conn.sslkey)
    return ctx


async def _open(conn: ConnectionConfig) -> tuple[trio.abc.Stream, bool]:
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(conn.host, conn.port)
    except OSError as exc:
        raise ConnectionFailure(
            f"cannot reach the database for {conn.name}: {exc.strerror or exc}") from None
    ctx = ssl_context(conn)
    if ctx is None:
        return stream, False
    await stream.send_all(codec.encode_startup(SSLRequest()))
    answer = await stream.receive_some(1)
    if answer == b"S":
        tls = trio.SSLStream(stream, ctx, server_hostname=conn.host, https_compatible=False)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            await stream.aclose()
            raise ConnectionFailure(
                f"TLS to the database for {conn.name} failed: {exc}") from None
        return tls, True
    if answer == b"N":
        if conn.sslmode in ("require", "verify-ca", "verify-full"):
            await stream.aclose()
            raise ConnectionFailure(
                f"the database for {conn.name} does not accept TLS (sslmode={conn.sslmode})")
        return stream, False
    await stream.aclose()
    raise ConnectionFailure(f"the database for {conn.name} answered SSLRequest oddly")


async def receive_message(stream: trio.abc.Stream, framer: Framer):
    """The next whole message from the database, before the pumps run (login, catalog).

    Raises:
        ConnectionFailure: the database closed the connection.
    """
    while True:
        msg = framer.next_message()
        if msg is not NEED_DATA:
            return msg
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise ConnectionFailure("pgguard: the database closed the connection")
        framer.feed(data)


async def connect(conn: ConnectionConfig, user: str, password: str, params: dict[str, str],
                  max_message_size: int) -> BackendLink:
    """Open, encrypt and log into the upstream database for *conn* as *user*.

    Raises:
        ConnectionFailure: unreachable, TLS refused or failed, or login refused.
    """
    with trio.fail_after(conn.connect_timeout_s):
        stream, tls = await _open(conn)
        try:
            return await _login(stream, tls, conn, user, password, params, max_message_size)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise


async def _login(stream: trio.abc.Stream, tls: bool, conn: ConnectionConfig, user: str,
                 password: str, params: dict[str, str], max_size: int) -> BackendLink:
    """Send the StartupMessage, answer the server's authentication requests (the exchanges
    are :mod:`pgguard.wire.auth`) and collect the startup messages until ReadyForQuery."""
    startup = dict(params)
    startup["user"] = user
    startup["database"] = conn.database
    await stream.send_all(codec.encode_startup(StartupMessage(PROTOCOL_3_0, startup)))
    framer = Framer(max_size, backend=True)
    auth = UpstreamAuth(user, password)
    pid = key = 0
    parameters: dict[str, str] = {}
    relayed: list[bytes] = []
    while True:
        msg = await receive_message(stream, framer)
        if isinstance(msg, Authentication):
            step = auth.step(msg)
            if step.send:
                if (auth.method == CLEARTEXT and not tls
                        and conn.host not in ("127.0.0.1", "::1", "localhost")):
                    log.warning("event=upstream_cleartext_password connection=%s", conn.name)
                await stream.send_all(step.send)
        elif isinstance(msg, ParameterStatus):
            parameters[msg.name] = msg.value
            relayed.append(codec.parameter_status(msg.name, msg.value))
        elif isinstance(msg, BackendKeyData):
            pid, key = msg.process_id, msg.secret_key
        elif isinstance(msg, NoticeResponse):
            relayed.append(codec.encode_fields(b"N", msg.fields))
        elif isinstance(msg, NegotiateProtocolVersion):
            continue
        elif isinstance(msg, ErrorResponse):
            text = msg.fields.get("M", "login refused")
            raise UpstreamRefused(f"the database refused the login for {conn.name}: {text}",
                                  msg.fields)
        elif isinstance(msg, ReadyForQuery):
            if not auth.done:
                # Never ready before AuthenticationOk: a server skipping it would skip the
                # SCRAM proof that it knows the password.
                raise ConnectionFailure("the database ended the login without authenticating")
            return BackendLink(stream, pid, key, parameters, relayed, framer, tls)
        else:
            raise ConnectionFailure("the database sent an unexpected message during login")


async def send_cancel(conn: ConnectionConfig, process_id: int, secret_key: int) -> None:
    """Ask PostgreSQL to cancel the query running in backend *process_id*."""
    try:
        with trio.fail_after(conn.connect_timeout_s):
            stream, _ = await _open(conn)
            try:
                await stream.send_all(codec.encode_startup(CancelRequest(process_id, secret_key)))
                # The server closes the connection without answering.
                with trio.move_on_after(2):
                    await stream.receive_some(1)
            finally:
                await trio.aclose_forcefully(stream)
    except (GatewayError, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        log.warning("event=cancel_failed connection=%s error=%s", conn.name, exc)
