"""The client side of PostgreSQL's authentication exchange, as sans-IO steps.

The gateway logs into PostgreSQL with SCRAM-SHA-256, MD5 or a cleartext password, whichever
the server asks for. :class:`UpstreamAuth` is fed each ``Authentication`` message the server
sends and answers with the bytes to send back and whether the login is authenticated; it never
touches a socket, so every exchange is testable in memory (``tests/unit/test_wire_auth.py`` runs it
against scramp's own server side).

SCRAM is mutual: the server's final message carries a signature only a server that knows the
password can compute, and an exchange whose signature is missing or wrong is refused, also
when the server skips it and claims success (``AuthenticationOk``) early.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import scramp

from ..errors import ConnectionFailure, ProtocolViolation
from . import codec
from .messages import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    Authentication,
)

SCRAM_SHA_256 = "SCRAM-SHA-256"

#: What :attr:`UpstreamAuth.method` says once the server has chosen.
CLEARTEXT = "cleartext"
MD5 = "md5"
SCRAM = "scram-sha-256"
#: The server let us in without asking for a password (``trust`` in pg_hba.conf).
TRUST = "trust"


@dataclass(frozen=True, slots=True)
class AuthStep:
    """What to do after one ``Authentication`` message.

    Attributes:
        send: the whole message to send to the server; empty when there is nothing to send.
        done: the server accepted the login (``AuthenticationOk``); ParameterStatus,
            BackendKeyData and ReadyForQuery follow.
    """

    send: bytes = b""
    done: bool = False


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """PostgreSQL's MD5 answer: ``"md5" + md5(md5(password + user).hex + salt).hex``.

    Args:
        user: the login user (PostgreSQL salts the inner hash with it).
        password: the user's password.
        salt: the 4 bytes from AuthenticationMD5Password.

    Returns:
        The 35-byte hash, without the terminating NUL of the PasswordMessage.
    """
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


class UpstreamAuth:
    """One login's authentication, from the first ``Authentication`` message to
    ``AuthenticationOk``.

    Args:
        user: the database user the StartupMessage named.
        password: its password (never logged, never in an error message).

    Attributes:
        method: None until the server asks for something, then :data:`CLEARTEXT`,
            :data:`MD5`, :data:`SCRAM` or :data:`TRUST`.
        done: the server accepted the login.
    """

    def __init__(self, user: str, password: str):
        self._user = user
        self._password = password
        self._scram: scramp.ScramClient | None = None
        # The codes the server may send next: the exchange is a fixed sequence per method.
        self._expect: frozenset[int] = frozenset(
            (AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL))
        self.method: str | None = None
        self.done = False

    def __repr__(self) -> str:
        return f"UpstreamAuth(user={self._user!r}, method={self.method!r}, done={self.done})"

    def step(self, msg: Authentication) -> AuthStep:
        """Answer the server's ``Authentication`` message *msg*.

        Returns:
            The bytes to send and whether the login is authenticated.

        Raises:
            ConnectionFailure: the server asks for a method pgguard does not speak, sends a
                request out of order, or fails to prove it knows the password (SCRAM).
            ProtocolViolation: the request is malformed.
        """
        code = msg.code
        if code not in _KNOWN:
            raise ConnectionFailure(
                f"the database asked for an unsupported authentication ({code})")
        if self.done or code not in self._expect:
            if code == AUTH_OK and self.method == SCRAM and not self.done:
                # Success claimed before the server signature was checked.
                raise ConnectionFailure(
                    "the database failed to prove it knows the password (SCRAM)")
            raise ConnectionFailure(
                f"the database sent an unexpected authentication request ({code})")
        if code == AUTH_OK:
            self.method = self.method or TRUST
            self.done = True
            self._expect = frozenset()
            return AuthStep(done=True)
        if code == AUTH_CLEARTEXT:
            self.method = CLEARTEXT
            self._expect = frozenset((AUTH_OK,))
            return AuthStep(codec.password_message(self._password.encode() + b"\0"))
        if code == AUTH_MD5:
            if len(msg.data) != 4:
                raise ProtocolViolation("AuthenticationMD5Password without a 4-byte salt")
            self.method = MD5
            self._expect = frozenset((AUTH_OK,))
            return AuthStep(codec.password_message(
                md5_password(self._user, self._password, msg.data) + b"\0"))
        if code == AUTH_SASL:
            return self._scram_start(msg.data)
        if code == AUTH_SASL_CONTINUE:
            return self._scram_continue(msg.data)
        return self._scram_final(msg.data)

    # --- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------------

    def _scram_start(self, data: bytes) -> AuthStep:
        mechs = [m.decode("utf-8", "replace") for m in data.split(b"\0") if m]
        if SCRAM_SHA_256 not in mechs:
            raise ConnectionFailure(f"the database offers no supported SASL "
                                    f"mechanism ({', '.join(mechs)})")
        self.method = SCRAM
        self._scram = scramp.ScramClient([SCRAM_SHA_256], self._user, self._password)
        first = self._scram.get_client_first().encode()
        self._expect = frozenset((AUTH_SASL_CONTINUE,))
        return AuthStep(codec.sasl_initial_response(SCRAM_SHA_256, first))

    def _scram_continue(self, data: bytes) -> AuthStep:
        assert self._scram is not None
        try:
            self._scram.set_server_first(_text(data))
            final = self._scram.get_client_final().encode()
        except scramp.ScramException as exc:
            raise ConnectionFailure(f"SCRAM with the database failed: {exc}") from None
        self._expect = frozenset((AUTH_SASL_FINAL,))
        return AuthStep(codec.password_message(final))

    def _scram_final(self, data: bytes) -> AuthStep:
        assert self._scram is not None
        try:
            # Checks the server signature (v=) against the one the password gives.
            self._scram.set_server_final(_text(data))
        except scramp.ScramException:
            raise ConnectionFailure(
                "the database failed to prove it knows the password (SCRAM)") from None
        self._scram = None
        self._expect = frozenset((AUTH_OK,))
        return AuthStep()


_KNOWN = frozenset((AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE,
                    AUTH_SASL_FINAL))


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("a SCRAM message from the database is not UTF-8") from None
