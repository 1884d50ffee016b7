"""PostgreSQL protocol 3.0 messages as frozen dataclasses, named as in PostgreSQL's docs.

Only messages the gateway reads or writes itself get a class; everything else stays a
``Raw(kind, data)`` and is forwarded as the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

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


# --- message kinds: the type byte, by name ---------------------------------------------
# Plain ints, compared against ``kind[0]`` in the pumps' hot loops. Frontend and backend
# reuse some bytes ('D' is Describe one way, DataRow the other), never a name.

# Frontend (client -> server).
QUERY: Final = 0x51                  # 'Q'
PARSE: Final = 0x50                  # 'P'
BIND: Final = 0x42                   # 'B'
DESCRIBE: Final = 0x44               # 'D'
EXECUTE: Final = 0x45                # 'E'
CLOSE: Final = 0x43                  # 'C'
SYNC: Final = 0x53                   # 'S'
FLUSH: Final = 0x48                  # 'H'
FUNCTION_CALL: Final = 0x46          # 'F'
TERMINATE: Final = 0x58              # 'X'
PASSWORD: Final = 0x70               # 'p' (also SASLInitialResponse, SASLResponse)
COPY_FAIL: Final = 0x66              # 'f'

# Both directions.
COPY_DATA: Final = 0x64              # 'd'
COPY_DONE: Final = 0x63              # 'c'

# Backend (server -> client).
AUTHENTICATION: Final = 0x52         # 'R'
BACKEND_KEY_DATA: Final = 0x4B       # 'K'
PARAMETER_STATUS: Final = 0x53       # 'S'
READY_FOR_QUERY: Final = 0x5A        # 'Z'
ERROR_RESPONSE: Final = 0x45         # 'E'
NOTICE_RESPONSE: Final = 0x4E        # 'N'
NOTIFICATION_RESPONSE: Final = 0x41  # 'A'
ROW_DESCRIPTION: Final = 0x54        # 'T'
DATA_ROW: Final = 0x44               # 'D'
COMMAND_COMPLETE: Final = 0x43       # 'C'
EMPTY_QUERY_RESPONSE: Final = 0x49   # 'I'
PARSE_COMPLETE: Final = 0x31         # '1'
BIND_COMPLETE: Final = 0x32          # '2'
CLOSE_COMPLETE: Final = 0x33         # '3'
NO_DATA: Final = 0x6E                # 'n'
PARAMETER_DESCRIPTION: Final = 0x74  # 't'
PORTAL_SUSPENDED: Final = 0x73       # 's'
COPY_IN_RESPONSE: Final = 0x47       # 'G'
COPY_OUT_RESPONSE: Final = 0x48      # 'H'
COPY_BOTH_RESPONSE: Final = 0x57     # 'W'
FUNCTION_CALL_RESPONSE: Final = 0x56  # 'V'
NEGOTIATE_PROTOCOL_VERSION: Final = 0x76  # 'v'


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
