"""The link to PostgreSQL: TCP, TLS per sslmode, and SCRAM-SHA-256 / MD5 / cleartext login."""

from __future__ import annotations

import hashlib
import logging
import ssl
from dataclasses import dataclass, field

import scramp
import trio

from ..config import ConnectionConfig
from ..errors import ConnectionFailure, GatewayError
from ..wire import codec
from ..wire.framer import NEED_DATA, Framer
from ..wire.messages import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
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


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"


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


async def _login(stream, tls, conn, user, password, params, max_size) -> BackendLink:
    startup = dict(params)
    startup["user"] = user
    startup["database"] = conn.database
    await stream.send_all(codec.encode_startup(StartupMessage(PROTOCOL_3_0, startup)))
    framer = Framer(max_size, backend=True)
    scram: scramp.ScramClient | None = None
    pid = key = 0
    parameters: dict[str, str] = {}
    relayed: list[bytes] = []
    while True:
        msg = await receive_message(stream, framer)
        if isinstance(msg, Authentication):
            if msg.code == AUTH_OK:
                continue
            if msg.code == AUTH_CLEARTEXT:
                if not tls and conn.host not in ("127.0.0.1", "::1", "localhost"):
                    log.warning("event=upstream_cleartext_password connection=%s", conn.name)
                await stream.send_all(codec.password_message(password.encode() + b"\0"))
            elif msg.code == AUTH_MD5:
                await stream.send_all(codec.password_message(
                    md5_password(user, password, msg.data[:4])))
            elif msg.code == AUTH_SASL:
                mechs = [m.decode() for m in msg.data.split(b"\0") if m]
                if "SCRAM-SHA-256" not in mechs:
                    raise ConnectionFailure(f"the database offers no supported SASL "
                                            f"mechanism ({', '.join(mechs)})")
                scram = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
                first = scram.get_client_first().encode()
                await stream.send_all(codec.sasl_initial_response("SCRAM-SHA-256", first))
            elif msg.code == AUTH_SASL_CONTINUE and scram is not None:
                try:
                    scram.set_server_first(msg.data.decode())
                except scramp.ScramException as exc:
                    raise ConnectionFailure(f"SCRAM with the database failed: {exc}") from None
                await stream.send_all(codec.password_message(scram.get_client_final().encode()))
            elif msg.code == AUTH_SASL_FINAL and scram is not None:
                try:
                    scram.set_server_final(msg.data.decode())
                except scramp.ScramException:
                    raise ConnectionFailure(
                        "the database failed to prove it knows the password (SCRAM)") from None
            else:
                raise ConnectionFailure(
                    f"the database asked for an unsupported authentication ({msg.code})")
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
