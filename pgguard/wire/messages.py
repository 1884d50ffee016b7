"""PostgreSQL protocol 3.0 messages as frozen dataclasses, named as in PostgreSQL's docs.

Only messages the gateway reads or writes itself get a class; everything else stays a
``Raw(kind, data)`` and is forwarded as the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# Authentication request codes (the Int32 after 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


# --- startup phase (no type byte) -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    process_id: int
    secret_key: int = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartupMessage:
    version: int
    params: dict[str, str]

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF


# --- frontend ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Query:
    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Describe:
    target: str  # 'S' statement or 'P' portal
    name: str


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True)
class Close:
    target: str
    name: str


@dataclass(frozen=True, slots=True)
class Sync:
    pass


@dataclass(frozen=True, slots=True)
class Flush:
    pass


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """'p': password, SASLInitialResponse or SASLResponse; the phase says which."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    function_oid: int


# --- backend ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Authentication:
    code: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    process_id: int
    secret_key: int = field(repr=False)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str  # 'I' idle, 'T' in transaction, 'E' failed transaction


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    fields: dict[str, str]

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[FieldDescription, ...]


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str


@dataclass(frozen=True, slots=True)
class CopyResponse:
    kind: str  # 'G' CopyIn, 'H' CopyOut, 'W' CopyBoth
    format: int
    column_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Raw:
    """Any message the gateway does not need to look inside."""

    kind: bytes
    data: bytes


Message = (
    Query | Parse | Bind | Describe | Execute | Close | Sync | Flush | Terminate
    | PasswordMessage | FunctionCall | Authentication | BackendKeyData | ParameterStatus
    | ReadyForQuery | ErrorResponse | NoticeResponse | RowDescription | DataRow
    | CommandComplete | CopyResponse | NegotiateProtocolVersion | Raw
)
StartupPacket = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage
