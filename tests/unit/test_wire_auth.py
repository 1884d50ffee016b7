"""pgguard.wire.auth: the upstream login exchanges, in memory (no sockets, no server).

SCRAM runs against scramp's own server side (``ScramMechanism.make_server``), so the client
proof and the server signature are checked by an independent implementation.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from scramp import ScramException, ScramMechanism

from pgguard.errors import ConnectionFailure, ProtocolViolation
from pgguard.wire.auth import CLEARTEXT, MD5, SCRAM, TRUST, AuthStep, UpstreamAuth, md5_password
from pgguard.wire.messages import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    Authentication,
)

USER = "alice"
PASSWORD = "correct horse battery staple"
SASL_OFFER = b"SCRAM-SHA-256\0\0"


def password_body(frame: bytes) -> bytes:
    """The body of one PasswordMessage frame (``p``, Int32 length, body)."""
    kind, size = struct.unpack_from("!cI", frame)
    assert kind == b"p" and size == len(frame) - 1
    return frame[5:]


def sasl_initial(frame: bytes) -> tuple[str, bytes]:
    """(mechanism, client-first-message) of a SASLInitialResponse frame."""
    body = password_body(frame)
    mech, _, rest = body.partition(b"\0")
    (n,) = struct.unpack_from("!i", rest)
    assert n == len(rest) - 4
    return mech.decode(), rest[4:]


def scram_server(password: str, server_key_password: str | None = None):
    """scramp's server for *password*; with *server_key_password*, a server that verifies
    the client with *password*'s stored key but signs with another password's server key
    (it does not know the real one)."""
    mech = ScramMechanism("SCRAM-SHA-256")
    salt, stored_key, server_key, iterations = mech.make_auth_info(password,
                                                                   iteration_count=4096)
    if server_key_password is not None:
        _, _, server_key, _ = mech.make_auth_info(server_key_password, salt=salt,
                                                  iteration_count=iterations)
    return mech.make_server(lambda user: (salt, stored_key, server_key, iterations))


def scram_until_final(auth: UpstreamAuth, server) -> None:
    """Run SASL and SASLContinue: after it the server has seen the client's proof."""
    step = auth.step(Authentication(AUTH_SASL, SASL_OFFER))
    assert not step.done
    mech, first = sasl_initial(step.send)
    assert mech == "SCRAM-SHA-256"
    server.set_client_first(first.decode())
    step = auth.step(Authentication(AUTH_SASL_CONTINUE, server.get_server_first().encode()))
    assert not step.done
    server.set_client_final(password_body(step.send).decode())


# --- SCRAM-SHA-256 ---------------------------------------------------------------------


def test_scram_against_scramps_server():
    server = scram_server(PASSWORD)
    auth = UpstreamAuth(USER, PASSWORD)
    scram_until_final(auth, server)
    assert auth.step(Authentication(AUTH_SASL_FINAL, server.get_server_final().encode())) \
        == AuthStep()
    assert not auth.done
    assert auth.step(Authentication(AUTH_OK)) == AuthStep(done=True)
    assert auth.done and auth.method == SCRAM


def test_scram_wrong_password_is_rejected():
    server = scram_server("another password")
    auth = UpstreamAuth(USER, PASSWORD)
    with pytest.raises(ScramException, match="invalid-proof"):
        scram_until_final(auth, server)  # the server refuses the client's proof
    # ... and says so in its final message (PostgreSQL sends an ErrorResponse instead).
    with pytest.raises(ConnectionFailure, match="failed to prove") as exc:
        auth.step(Authentication(AUTH_SASL_FINAL, server.get_server_final().encode()))
    assert exc.value.sqlstate == "08006"
    assert PASSWORD not in str(exc.value)
    assert not auth.done


def test_scram_wrong_server_signature_is_rejected():
    # The server accepts the client's proof but cannot sign: it lacks the server key.
    server = scram_server(PASSWORD, server_key_password="not the password")
    auth = UpstreamAuth(USER, PASSWORD)
    scram_until_final(auth, server)
    with pytest.raises(ConnectionFailure, match="failed to prove it knows the password"):
        auth.step(Authentication(AUTH_SASL_FINAL, server.get_server_final().encode()))
    assert not auth.done


def test_scram_tampered_server_signature_is_rejected():
    server = scram_server(PASSWORD)
    auth = UpstreamAuth(USER, PASSWORD)
    scram_until_final(auth, server)
    final = server.get_server_final()
    assert final.startswith("v=")
    forged = "v=" + ("A" if final[2] != "A" else "B") + final[3:]
    with pytest.raises(ConnectionFailure, match="failed to prove"):
        auth.step(Authentication(AUTH_SASL_FINAL, forged.encode()))


def test_scram_success_without_the_server_signature_is_refused():
    server = scram_server(PASSWORD)
    auth = UpstreamAuth(USER, PASSWORD)
    scram_until_final(auth, server)
    with pytest.raises(ConnectionFailure, match="failed to prove"):
        auth.step(Authentication(AUTH_OK))  # skips SASLFinal
    assert not auth.done


def test_scram_foreign_nonce_is_refused():
    auth = UpstreamAuth(USER, PASSWORD)
    auth.step(Authentication(AUTH_SASL, SASL_OFFER))
    with pytest.raises(ConnectionFailure, match="SCRAM with the database failed"):
        auth.step(Authentication(AUTH_SASL_CONTINUE, b"r=someoneelse,s=c2FsdA==,i=4096"))


def test_scram_not_utf8_is_a_protocol_violation():
    auth = UpstreamAuth(USER, PASSWORD)
    auth.step(Authentication(AUTH_SASL, SASL_OFFER))
    with pytest.raises(ProtocolViolation):
        auth.step(Authentication(AUTH_SASL_CONTINUE, b"r=\xff\xfe"))


def test_sasl_without_scram_sha_256_is_refused():
    auth = UpstreamAuth(USER, PASSWORD)
    with pytest.raises(ConnectionFailure, match=r"no supported SASL mechanism "
                                                r"\(SCRAM-SHA-256-PLUS\)"):
        auth.step(Authentication(AUTH_SASL, b"SCRAM-SHA-256-PLUS\0\0"))


# --- MD5, cleartext, trust -------------------------------------------------------------


def test_md5_matches_postgresqls_formula():
    salt = b"\x9a\x01\xff\x10"
    inner = hashlib.md5((PASSWORD + USER).encode()).hexdigest()
    expected = b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()
    assert md5_password(USER, PASSWORD, salt) == expected
    assert len(expected) == 35
    auth = UpstreamAuth(USER, PASSWORD)
    step = auth.step(Authentication(AUTH_MD5, salt))
    assert step == AuthStep(b"p" + struct.pack("!I", 4 + 36) + expected + b"\0")
    assert auth.method == MD5 and not auth.done
    assert auth.step(Authentication(AUTH_OK)).done


def test_md5_without_a_four_byte_salt_is_a_protocol_violation():
    with pytest.raises(ProtocolViolation):
        UpstreamAuth(USER, PASSWORD).step(Authentication(AUTH_MD5, b"\x01\x02"))


def test_cleartext():
    auth = UpstreamAuth(USER, PASSWORD)
    step = auth.step(Authentication(AUTH_CLEARTEXT))
    assert password_body(step.send) == PASSWORD.encode() + b"\0"
    assert auth.method == CLEARTEXT and not step.done
    assert auth.step(Authentication(AUTH_OK)) == AuthStep(done=True)


def test_trust_sends_nothing():
    auth = UpstreamAuth(USER, PASSWORD)
    assert auth.step(Authentication(AUTH_OK)) == AuthStep(done=True)
    assert auth.method == TRUST and auth.done


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [2, 6, 7, 8, 9, 13, 99])  # Kerberos, SCM, GSS, SSPI, ...
def test_unknown_method_is_refused(code: int):
    with pytest.raises(ConnectionFailure, match=rf"unsupported authentication \({code}\)"):
        UpstreamAuth(USER, PASSWORD).step(Authentication(code))


@pytest.mark.parametrize("first, then", [
    (None, AUTH_SASL_CONTINUE),  # SCRAM steps before SASL
    (None, AUTH_SASL_FINAL),
    (AUTH_CLEARTEXT, AUTH_MD5),  # a second method after a password was sent
    (AUTH_MD5, AUTH_SASL),
    (AUTH_OK, AUTH_CLEARTEXT),  # anything after AuthenticationOk
    (AUTH_OK, AUTH_OK),
])
def test_requests_out_of_order_are_refused(first: int | None, then: int):
    auth = UpstreamAuth(USER, PASSWORD)
    data = {AUTH_MD5: b"salt", AUTH_SASL: SASL_OFFER}
    if first is not None:
        auth.step(Authentication(first, data.get(first, b"")))
    with pytest.raises(ConnectionFailure, match="unexpected authentication request"):
        auth.step(Authentication(then, data.get(then, b"")))


def test_the_password_is_not_in_the_repr():
    assert PASSWORD not in repr(UpstreamAuth(USER, PASSWORD))
