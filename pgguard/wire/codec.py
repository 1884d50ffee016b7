"""Decode message bodies and encode the messages the gateway writes itself.

Pure functions over bytes. Decoders take the buffer and offsets so the caller never has
to copy a body it only wants to forward; every malformed body raises ProtocolViolation.

Strings are decoded in the session's client encoding as a Python codec name
(``pgguard.wire.encodings.python_codec`` of the ``client_encoding`` PostgreSQL reports;
UTF-8 until then), with ``surrogateescape``: a byte that is invalid in the encoding
becomes a lone surrogate U+DC80..U+DCFF, so the text always re-encodes to the very bytes
that came in and :func:`escaped` tells that it did not decode (no Python codec produces
such a surrogate from valid input). Callers never judge such a text: PostgreSQL rejects it
or, worse, reads it otherwise.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from .messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    Authentication,
    BackendKeyData,
    Bind,
    CancelRequest,
    Close,
    CommandComplete,
    CopyResponse,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FunctionCall,
    GSSENCRequest,
    Message,
    NegotiateProtocolVersion,
    NoticeResponse,
    ParameterStatus,
    Parse,
    PasswordMessage,
    Query,
    Raw,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    StartupPacket,
    Sync,
    Terminate,
)


class ProtocolError(ValueError):
    """A message that does not follow the protocol (wrapped by the parser)."""


I16 = struct.Struct("!h")
U16 = struct.Struct("!H")
I32 = struct.Struct("!i")
U32 = struct.Struct("!I")
I32x2 = struct.Struct("!ii")
HEADER = struct.Struct("!cI")
FIELD = struct.Struct("!IhIhih")


UTF8 = "utf-8"
_ESCAPED = re.compile("[\udc80-\udcff]")


def escaped(text: str) -> bool:
    """True when *text* holds bytes its decoding could not read (``surrogateescape``)."""
    return _ESCAPED.search(text) is not None


def encode_text(text: str, encoding: str = UTF8) -> bytes:
    """*text* in *encoding*: the original bytes of a decoded string, and ``?`` for what
    *encoding* cannot represent (pgguard's own messages to a client in LATIN9, say)."""
    try:
        return text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode(encoding, "replace")


class _Reader:
    """Cursor over one message body; every read checks bounds."""

    __slots__ = ("buf", "pos", "end", "encoding")

    def __init__(self, buf: bytes | bytearray, start: int, end: int, encoding: str = UTF8):
        self.buf = buf
        self.pos = start
        self.end = end
        self.encoding = encoding

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise ProtocolError("message body too short")

    def int16(self) -> int:
        self._need(2)
        (v,) = I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def uint16(self) -> int:
        self._need(2)
        (v,) = U16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        self._need(4)
        (v,) = I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def uint32(self) -> int:
        self._need(4)
        (v,) = U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def byte(self) -> int:
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def bytes(self, n: int) -> bytes:
        self._need(n)
        v = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return v

    def cstring(self) -> str:
        idx = self.buf.find(b"\0", self.pos, self.end)
        if idx < 0:
            raise ProtocolError("unterminated string")
        raw = bytes(self.buf[self.pos:idx])
        self.pos = idx + 1
        return raw.decode(self.encoding, "surrogateescape")

    def rest(self) -> bytes:
        v = bytes(self.buf[self.pos:self.end])
        self.pos = self.end
        return v

    def done(self) -> None:
        if self.pos != self.end:
            raise ProtocolError("trailing bytes in message")


def _fields(r: _Reader) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        code = r.byte()
        if code == 0:
            break
        fields[chr(code)] = r.cstring()
    r.done()
    return fields


# --- startup ----------------------------------------------------------------------------

def decode_startup(buf: bytes | bytearray, start: int, end: int) -> StartupPacket:
    """Decode a startup-phase packet; *start* points at its length word."""
    r = _Reader(buf, start + 4, end)
    code = r.uint32()
    if code == SSL_REQUEST_CODE:
        r.done()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.done()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = r.int32()
        key = r.int32()
        r.done()
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        params[name] = r.cstring()
    r.done()
    return StartupMessage(code, params)


# --- regular messages -------------------------------------------------------------------

def _d_query(r: _Reader) -> Query:
    sql = r.cstring()
    r.done()
    return Query(sql)


def _d_parse(r: _Reader) -> Parse:
    name = r.cstring()
    sql = r.cstring()
    n = r.int16()
    if n < 0:
        raise ProtocolError("negative parameter count")
    types = tuple(r.uint32() for _ in range(n))
    r.done()
    return Parse(name, sql, types)


def _d_bind(r: _Reader) -> Bind:
    portal = r.cstring()
    stmt = r.cstring()
    nf = r.int16()
    if nf < 0:
        raise ProtocolError("negative format count")
    formats = tuple(r.int16() for _ in range(nf))
    np = r.int16()
    if np < 0:
        raise ProtocolError("negative parameter count")
    params: list[bytes | None] = []
    for _ in range(np):
        size = r.int32()
        params.append(None if size == -1 else r.bytes(size))
    nr = r.int16()
    if nr < 0:
        raise ProtocolError("negative result format count")
    rformats = tuple(r.int16() for _ in range(nr))
    r.done()
    return Bind(portal, stmt, formats, tuple(params), rformats)


def _d_describe(r: _Reader) -> Describe:
    target = chr(r.byte())
    if target not in "SP":
        raise ProtocolError("Describe target must be S or P")
    name = r.cstring()
    r.done()
    return Describe(target, name)


def _d_close(r: _Reader) -> Close:
    target = chr(r.byte())
    if target not in "SP":
        raise ProtocolError("Close target must be S or P")
    name = r.cstring()
    r.done()
    return Close(target, name)


def _d_execute(r: _Reader) -> Execute:
    portal = r.cstring()
    max_rows = r.int32()
    r.done()
    return Execute(portal, max_rows)


def _d_empty(cls):
    def decode(r: _Reader):
        r.done()
        return cls()
    return decode


def _d_password(r: _Reader) -> PasswordMessage:
    return PasswordMessage(r.rest())


def _d_function_call(r: _Reader) -> FunctionCall:
    oid = r.uint32()
    r.rest()
    return FunctionCall(oid)


FRONTEND_DECODERS = {
    b"Q": _d_query,
    b"P": _d_parse,
    b"B": _d_bind,
    b"D": _d_describe,
    b"E": _d_execute,
    b"C": _d_close,
    b"S": _d_empty(Sync),
    b"H": _d_empty(Flush),
    b"X": _d_empty(Terminate),
    b"p": _d_password,
    b"F": _d_function_call,
}


def _d_auth(r: _Reader) -> Authentication:
    code = r.int32()
    return Authentication(code, r.rest())


def _d_key(r: _Reader) -> BackendKeyData:
    pid = r.int32()
    key = r.int32()
    r.done()
    return BackendKeyData(pid, key)


def _d_param_status(r: _Reader) -> ParameterStatus:
    name = r.cstring()
    value = r.cstring()
    r.done()
    return ParameterStatus(name, value)


def _d_ready(r: _Reader) -> ReadyForQuery:
    status = chr(r.byte())
    r.done()
    if status not in "ITE":
        raise ProtocolError("bad transaction status")
    return ReadyForQuery(status)


def _d_error(r: _Reader) -> ErrorResponse:
    return ErrorResponse(_fields(r))


def _d_notice(r: _Reader) -> NoticeResponse:
    return NoticeResponse(_fields(r))


def _d_row_description(r: _Reader) -> RowDescription:
    n = r.int16()
    if n < 0:
        raise ProtocolError("negative field count")
    fields = []
    for _ in range(n):
        name = r.cstring()
        r._need(FIELD.size)
        vals = FIELD.unpack_from(r.buf, r.pos)
        r.pos += FIELD.size
        fields.append(FieldDescription(name, *vals))
    r.done()
    return RowDescription(tuple(fields))


def _d_data_row(r: _Reader) -> DataRow:
    n = r.int16()
    if n < 0:
        raise ProtocolError("negative column count")
    values: list[bytes | None] = []
    for _ in range(n):
        size = r.int32()
        if size < -1:
            raise ProtocolError("bad column length")
        values.append(None if size == -1 else r.bytes(size))
    r.done()
    return DataRow(tuple(values))


def _d_command_complete(r: _Reader) -> CommandComplete:
    tag = r.cstring()
    r.done()
    return CommandComplete(tag)


def _d_copy_response(kind: bytes):
    def decode(r: _Reader) -> CopyResponse:
        fmt = r.byte()
        n = r.int16()
        if n < 0:
            raise ProtocolError("negative column count")
        formats = tuple(r.int16() for _ in range(n))
        r.done()
        return CopyResponse(kind.decode(), fmt, formats)
    return decode


def _d_negotiate(r: _Reader) -> NegotiateProtocolVersion:
    minor = r.int32()
    n = r.int32()
    if n < 0:
        raise ProtocolError("negative option count")
    opts = tuple(r.cstring() for _ in range(n))
    r.done()
    return NegotiateProtocolVersion(minor, opts)


BACKEND_DECODERS = {
    b"R": _d_auth,
    b"K": _d_key,
    b"S": _d_param_status,
    b"Z": _d_ready,
    b"E": _d_error,
    b"N": _d_notice,
    b"T": _d_row_description,
    b"D": _d_data_row,
    b"C": _d_command_complete,
    b"G": _d_copy_response(b"G"),
    b"H": _d_copy_response(b"H"),
    b"W": _d_copy_response(b"W"),
    b"v": _d_negotiate,
}


def decode(kind: bytes, buf: bytes | bytearray | memoryview, start: int, end: int,
           decoders: dict, encoding: str = UTF8) -> Message:
    """Decode the message whose header starts at *start* and which ends at *end*, its
    strings in the Python codec *encoding*."""
    fn = decoders.get(kind)
    if fn is None:
        return Raw(kind, bytes(buf[start + 5:end]))
    return fn(_Reader(buf, start + 5, end, encoding))


def decode_frontend(kind: bytes, buf, start: int, end: int, encoding: str = UTF8) -> Message:
    return decode(kind, buf, start, end, FRONTEND_DECODERS, encoding)


def decode_backend(kind: bytes, buf, start: int, end: int, encoding: str = UTF8) -> Message:
    return decode(kind, buf, start, end, BACKEND_DECODERS, encoding)


def text_span(kind: bytes, buf, start: int, end: int) -> tuple[int, int]:
    """The offsets of the strings of the Query or Parse at *start*: the statement text,
    and for a Parse its name before it (not the parameter type OIDs after). A malformed
    message gives its whole body (its decoding raises)."""
    if kind == b"P":
        first = buf.find(b"\0", start + 5, end)
        second = buf.find(b"\0", first + 1, end) if first >= 0 else -1
        if second >= 0:
            return start + 5, second
    return start + 5, max(start + 5, end - 1)


def bind_names(buf, start: int, end: int, encoding: str = UTF8) -> Bind:
    """The portal and statement names of the Bind at *start*, without its parameters
    (what the protocol state needs when nobody reads the values).

    Raises:
        ProtocolError: the names are not terminated inside the message.
    """
    r = _Reader(buf, start + 5, end, encoding)
    portal = r.cstring()
    return Bind(portal, r.cstring(), (), (), ())


# --- encoders ---------------------------------------------------------------------------

def _cstr(s: str, encoding: str = UTF8) -> bytes:
    b = encode_text(s, encoding)
    if b"\0" in b:
        raise ValueError("string contains NUL")
    return b + b"\0"


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + U32.pack(len(body) + 4) + body


def startup_packet(code: int, body: bytes = b"") -> bytes:
    return U32.pack(len(body) + 8) + U32.pack(code) + body


def encode_startup(msg: StartupPacket) -> bytes:
    if isinstance(msg, SSLRequest):
        return startup_packet(SSL_REQUEST_CODE)
    if isinstance(msg, GSSENCRequest):
        return startup_packet(GSSENC_REQUEST_CODE)
    if isinstance(msg, CancelRequest):
        return startup_packet(CANCEL_REQUEST_CODE, I32x2.pack(msg.process_id, msg.secret_key))
    body = b"".join(_cstr(k) + _cstr(v) for k, v in msg.params.items()) + b"\0"
    return startup_packet(msg.version, body)


def _field_bytes(fields: dict[str, str], encoding: str = UTF8) -> bytes:
    return b"".join(k.encode() + _cstr(v.replace("\0", ""), encoding)
                    for k, v in fields.items()) + b"\0"


def error_fields(severity: str, sqlstate: str, text: str, detail: str | None = None,
                 hint: str | None = None) -> dict[str, str]:
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": text}
    if detail:
        fields["D"] = detail
    if hint:
        fields["H"] = hint
    return fields


def error_response(severity: str, sqlstate: str, text: str, detail: str | None = None,
                   hint: str | None = None, encoding: str = UTF8) -> bytes:
    return message(b"E", _field_bytes(error_fields(severity, sqlstate, text, detail, hint),
                                      encoding))


def notice_response(text: str, severity: str = "NOTICE", sqlstate: str = "00000",
                    detail: str | None = None, encoding: str = UTF8) -> bytes:
    return message(b"N", _field_bytes(error_fields(severity, sqlstate, text, detail),
                                      encoding))


def encode_fields(kind: bytes, fields: dict[str, str], encoding: str = UTF8) -> bytes:
    """An ErrorResponse or NoticeResponse of *fields*, in *encoding* (the one they were
    decoded in, when they are PostgreSQL's)."""
    return message(kind, _field_bytes(fields, encoding))


def authentication(code: int, data: bytes = b"") -> bytes:
    return message(b"R", I32.pack(code) + data)


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", I32x2.pack(pid, secret))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def row_description(fields: Iterable[FieldDescription]) -> bytes:
    parts = []
    fields = list(fields)
    for f in fields:
        parts.append(_cstr(f.name) + FIELD.pack(f.table_oid, f.column, f.type_oid, f.type_size,
                                                f.type_modifier, f.format))
    return message(b"T", I16.pack(len(fields)) + b"".join(parts))


def text_row_description(names: Iterable[str]) -> bytes:
    """RowDescription for all-text columns (type text, OID 25), as the admin console uses."""
    return row_description(FieldDescription(n, 0, 0, 25, -1, -1, 0) for n in names)


def data_row(values: Iterable[bytes | None]) -> bytes:
    values = list(values)
    parts = [I16.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(I32.pack(-1))
        else:
            parts.append(I32.pack(len(v)))
            parts.append(v)
    return message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def empty_query_response() -> bytes:
    return message(b"I")


def negotiate_protocol_version(newest_minor: int, unrecognized: Iterable[str]) -> bytes:
    opts = list(unrecognized)
    return message(b"v", I32.pack(newest_minor) + I32.pack(len(opts))
                   + b"".join(_cstr(o) for o in opts))


def query(sql: str, encoding: str = UTF8) -> bytes:
    return message(b"Q", _cstr(sql, encoding))


def parse(name: str, sql: str, param_types: Iterable[int] = (), encoding: str = UTF8) -> bytes:
    types = list(param_types)
    return message(b"P", _cstr(name, encoding) + _cstr(sql, encoding) + I16.pack(len(types))
                   + b"".join(U32.pack(t) for t in types))


def bind(portal: str, statement: str, params: Iterable[bytes | None] = (),
         param_formats: Iterable[int] = (), result_formats: Iterable[int] = (),
         encoding: str = UTF8) -> bytes:
    pf = list(param_formats)
    ps = list(params)
    rf = list(result_formats)
    body = [_cstr(portal, encoding), _cstr(statement, encoding), I16.pack(len(pf))]
    body += [I16.pack(f) for f in pf]
    body.append(I16.pack(len(ps)))
    for p in ps:
        body.append(I32.pack(-1) if p is None else I32.pack(len(p)) + p)
    body.append(I16.pack(len(rf)))
    body += [I16.pack(f) for f in rf]
    return message(b"B", b"".join(body))


def describe(target: str, name: str, encoding: str = UTF8) -> bytes:
    return message(b"D", target.encode() + _cstr(name, encoding))


def execute(portal: str, max_rows: int = 0, encoding: str = UTF8) -> bytes:
    return message(b"E", _cstr(portal, encoding) + I32.pack(max_rows))


def close(target: str, name: str, encoding: str = UTF8) -> bytes:
    return message(b"C", target.encode() + _cstr(name, encoding))


def sync() -> bytes:
    return b"S\0\0\0\4"


def flush() -> bytes:
    return b"H\0\0\0\4"


def terminate() -> bytes:
    return b"X\0\0\0\4"


def password_message(data: bytes) -> bytes:
    return message(b"p", data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", _cstr(mechanism) + I32.pack(len(data)) + data)


def encode_frontend(msg: Message) -> bytes:
    """Serialise a frontend message (used by tests for round trips)."""
    match msg:
        case Query(sql):
            return query(sql)
        case Parse(name, sql, types):
            return parse(name, sql, types)
        case Bind(portal, stmt, pf, params, rf):
            return bind(portal, stmt, params, pf, rf)
        case Describe(target, name):
            return describe(target, name)
        case Execute(portal, max_rows):
            return execute(portal, max_rows)
        case Close(target, name):
            return close(target, name)
        case Sync():
            return sync()
        case Flush():
            return flush()
        case Terminate():
            return terminate()
        case PasswordMessage(data):
            return password_message(data)
        case Raw(kind, data):
            return message(kind, data)
    raise TypeError(f"cannot encode {type(msg).__name__}")


def encode_backend(msg: Message) -> bytes:
    """Serialise a backend message."""
    match msg:
        case Authentication(code, data):
            return authentication(code, data)
        case BackendKeyData(pid, key):
            return backend_key_data(pid, key)
        case ParameterStatus(name, value):
            return parameter_status(name, value)
        case ReadyForQuery(status):
            return ready_for_query(status)
        case ErrorResponse(fields):
            return encode_fields(b"E", fields)
        case NoticeResponse(fields):
            return encode_fields(b"N", fields)
        case RowDescription(fields):
            return row_description(fields)
        case DataRow(values):
            return data_row(values)
        case CommandComplete(tag):
            return command_complete(tag)
        case CopyResponse(kind, fmt, formats):
            return message(kind.encode(), bytes([fmt]) + I16.pack(len(formats))
                           + b"".join(I16.pack(f) for f in formats))
        case NegotiateProtocolVersion(minor, opts):
            return negotiate_protocol_version(minor, opts)
        case Raw(kind, data):
            return message(kind, data)
    raise TypeError(f"cannot encode {type(msg).__name__}")
