"""Exceptions that carry the SQLSTATE a client sees.

Only the session turns these into ErrorResponse messages; anything that is not a
GatewayError reaches a client as XX000 with a generic message, never a traceback.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A failure the client is told about, with its SQLSTATE and severity."""

    sqlstate: str = "XX000"
    severity: str = "ERROR"

    def __init_subclass__(cls, sqlstate: str | None = None, severity: str | None = None,
                          **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if sqlstate is not None:
            cls.sqlstate = sqlstate
        if severity is not None:
            cls.severity = severity

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        if not message.startswith("pgguard:"):
            message = f"pgguard: {message}"
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""

    def __init__(self, key: str, message: str, path: str | None = None):
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{key}: {message}")
        self.key = key
        self.path = path


# Protocol and connection level (FATAL: the connection ends).
class ProtocolViolation(GatewayError, sqlstate="08P01", severity="FATAL"): ...


class ConnectionFailure(GatewayError, sqlstate="08006", severity="FATAL"): ...


class CredentialsUnavailable(ConnectionFailure): ...


class CredentialsExpired(GatewayError, sqlstate="08006", severity="FATAL"): ...


class StartupTimeout(GatewayError, sqlstate="08006", severity="FATAL"): ...


class InvalidToken(GatewayError, sqlstate="28P01", severity="FATAL"): ...


class NotPermitted(GatewayError, sqlstate="28000", severity="FATAL"): ...


class UnknownConnection(GatewayError, sqlstate="3D000", severity="FATAL"): ...


class TLSRequired(GatewayError, sqlstate="28000", severity="FATAL"): ...


# A client_encoding pgguard cannot read statements in (at startup, or reported later).
class EncodingRefused(GatewayError, sqlstate="0A000", severity="FATAL"): ...


class UserBlocked(NotPermitted):
    """The kill switch: a blocked user's new session is refused (28000)."""


class BlocksUnavailable(GatewayError, sqlstate="08004", severity="FATAL"):
    """The block store cannot be read at session start: the session is refused."""


class AdminShutdown(GatewayError, sqlstate="57P01", severity="FATAL"):
    """An operator ended the session (KILL, a block on its user)."""


# Statement level (ERROR: the session stays usable).
class PolicyDenied(GatewayError, sqlstate="42501"): ...


class ApprovalDenied(PolicyDenied): ...


class ApprovalTimeout(GatewayError, sqlstate="57014"): ...


class QueryCanceled(GatewayError, sqlstate="57014"): ...


class FeatureNotSupported(GatewayError, sqlstate="0A000"): ...


# Statement text that does not decode in the session's client_encoding.
class CharacterNotInRepertoire(GatewayError, sqlstate="22021"): ...

class ProgramLimitExceeded(GatewayError, sqlstate="54000"): ...


class AdminCommandError(GatewayError, sqlstate="42601"): ...


class InternalError(GatewayError, sqlstate="XX000"): ...
