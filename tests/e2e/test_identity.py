"""OIDC token checks against a real OpenBao, and a local IdP for what OpenBao won't sign.

OpenBao issues the real tokens (valid, expired, wrong audience, rotated keys). Tokens
OpenBao cannot produce (alg none, HS256 key confusion, nbf in the future, EC keys,
missing claims) are signed here and their keys served by a small local HTTP(S) server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from typing import Any

import jwt
import psycopg
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from harness.openbao import BaoServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgguard.config import IdentityConfig, parse
from pgguard.errors import InvalidToken, NotPermitted
from pgguard.identity import Identity, TokenVerifier

# --- helpers -----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unverified(token: str) -> tuple[dict, dict]:
    return (jwt.get_unverified_header(token),
            jwt.decode(token, options={"verify_signature": False}))


def bao_cfg(bao: BaoServer, **overrides: Any) -> IdentityConfig:
    """The IdentityConfig pgguard builds from bao.identity_config() (through config.parse)."""
    section = dict(bao.identity_config(), fetch_timeout_s=2.0)
    section.update(overrides)
    return parse({"identity": section}).identity


def assert_rejected(excinfo: pytest.ExceptionInfo, cls: type, sqlstate: str, token: str,
                    says: str | None = None, caplog: pytest.LogCaptureFixture | None = None
                    ) -> None:
    """The right class and SQLSTATE, a pgguard: message, and no piece of the token in it
    (nor in any log record)."""
    exc = excinfo.value
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    assert exc.sqlstate == sqlstate
    assert exc.message.startswith("pgguard: ")
    if says is not None:
        assert says in exc.message
    texts = [exc.message, str(exc), repr(exc)]
    if caplog is not None:
        texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert_no_token(text, token)


def assert_no_token(text: str, token: str) -> None:
    if len(token) >= 12:
        windows = {token[i:i + 12] for i in range(len(token) - 11)}
        leaked = [w for w in windows if w in text]
        assert not leaked, f"token piece {leaked[0]!r} leaked into {text!r}"
    elif len(token) >= 4:
        assert token not in text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- a local identity provider --------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


class LocalIdP:
    """Discovery document and JWKS served over HTTP(S) from a thread; counts requests."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self.jwks: dict[str, Any] = {"keys": []}
        self.requests: list[str] = []
        self.delay_s = 0.0
        self.status = 200
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                idp.requests.append(self.path)
                if idp.delay_s:
                    time.sleep(idp.delay_s)
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = {"issuer": idp.issuer, "jwks_uri": idp.jwks_url}
                elif self.path.endswith("/keys"):
                    body = idp.jwks
                else:
                    body = None
                status = idp.status if body is not None else 404
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket,
                                                         server_side=True)
            scheme = "https"
        host, port = self.server.server_address[:2]
        self.issuer = f"{scheme}://localhost:{port}/idp"
        self.jwks_url = f"{self.issuer}/keys"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def publish(self, key: Any, kid: str | None, alg: str | None = None, **extra: Any) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[
            "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        ].to_jwk(key.public_key()))
        if kid is not None:
            jwk["kid"] = kid
        if alg is not None:
            jwk["alg"] = alg
        jwk.update(extra)
        self.jwks["keys"].append(jwk)

    def sign(self, key: Any, kid: str | None, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": "pgguard", "sub": "s-1", "username": "alice",
                   "groups": ["analysts"], "iat": now, "exp": now + 300}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(payload, key, algorithm=alg, headers=headers)

    def cfg(self, **overrides: Any) -> IdentityConfig:
        section = {"issuer": self.issuer, "audience": "pgguard", "user_claim": "username",
                   "groups_claim": "groups", "algorithms": ["RS256", "ES256"],
                   "fetch_timeout_s": 1.0}
        section.update(overrides)
        return parse({"identity": section}).identity

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def idp(rsa_keys) -> LocalIdP:
    server = LocalIdP()
    server.publish(rsa_keys[0], "k1")
    try:
        yield server
    finally:
        server.close()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- OpenBao: real tokens -----------------------------------------------------------------


@pytest.fixture
def verifier(bao_running: BaoServer) -> TokenVerifier:
    return TokenVerifier(bao_cfg(bao_running))


def test_identity_config_is_valid_pgguard_config(bao_running: BaoServer) -> None:
    cfg = bao_cfg(bao_running)
    assert cfg.issuer == bao_running.issuer
    assert cfg.audience == "pgguard"
    assert cfg.algorithms == ("RS256",)
    with urllib.request.urlopen(bao_running.discovery_url, timeout=5) as resp:
        discovery = json.load(resp)
    assert discovery["issuer"] == bao_running.issuer
    assert discovery["jwks_uri"] == bao_running.jwks_url


def test_valid_token_gives_user_and_groups(bao_running: BaoServer,
                                           verifier: TokenVerifier) -> None:
    token = bao_running.issue_token("alice", ["analysts", "engineers"])
    ident = verifier.verify_sync(token, "alice")
    assert isinstance(ident, Identity)
    assert ident.user == "alice"
    assert sorted(ident.groups) == ["analysts", "engineers"]
    assert ident.issuer == bao_running.issuer
    assert ident.subject  # the entity id
    assert ident.expires_at is not None and 200 < ident.expires_at - time.time() <= 301


def test_groups_follow_entity_membership(bao_running: BaoServer,
                                         verifier: TokenVerifier) -> None:
    verifier.verify_sync(bao_running.issue_token("bob", ["dba", "analysts"]), "bob")
    assert verifier.verify_sync(bao_running.issue_token("bob", ["dba"]), "bob").groups == (
        "dba",)
    # OpenBao writes "groups": null for an entity without groups.
    assert verifier.verify_sync(bao_running.issue_token("bob", []), "bob").groups == ()


def test_user_mismatch_is_not_permitted(bao_running: BaoServer, verifier: TokenVerifier,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pgguard.identity")
    token = bao_running.issue_token("alice", ["analysts"])
    with pytest.raises(NotPermitted) as excinfo:
        verifier.verify_sync(token, "mallory")
    assert_rejected(excinfo, NotPermitted, "28000", token, caplog=caplog,
                    says="token user 'alice' does not match the connection user 'mallory'")


def test_expired_token(bao_running: BaoServer, verifier: TokenVerifier) -> None:
    token = bao_running.issue_token("alice", ["analysts"], ttl="1s")
    exp = unverified(token)[1]["exp"]
    deadline = time.monotonic() + 5
    while time.time() <= exp + 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="pgguard: token expired")


def test_leeway_accepts_a_just_expired_token(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", [], ttl="1s")
    exp = unverified(token)[1]["exp"]
    deadline = time.monotonic() + 5
    while time.time() <= exp + 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert TokenVerifier(bao_cfg(bao_running, leeway_s=30)).verify_sync(token, "alice")


def test_wrong_audience(bao_running: BaoServer, verifier: TokenVerifier) -> None:
    token = bao_running.issue_token("alice", ["analysts"], audience="some-other-app")
    assert unverified(token)[1]["aud"] == "some-other-app"
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token,
                    says="token has the wrong audience")


def test_audience_list_accepts_any_of_them(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", [], audience="some-other-app")
    cfg = bao_cfg(bao_running, audience=["pgguard", "some-other-app"])
    assert TokenVerifier(cfg).verify_sync(token, "alice").user == "alice"


def test_wrong_issuer(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", [])
    cfg = bao_cfg(bao_running, issuer="https://idp.example.com/", jwks_url=bao_running.jwks_url)
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(cfg).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="token issuer is wrong")


def test_jwks_url_without_issuer(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", ["analysts"])
    cfg = replace(bao_cfg(bao_running), issuer=None, jwks_url=bao_running.jwks_url)
    assert TokenVerifier(cfg).verify_sync(token, "alice").groups == ("analysts",)


def test_signature_from_another_key(bao_running: BaoServer, verifier: TokenVerifier,
                                    rsa_keys) -> None:
    real = bao_running.issue_token("alice", ["analysts"])
    header, payload = unverified(real)
    forged = jwt.encode(dict(payload, groups=["dba"]), rsa_keys[2], algorithm="RS256",
                        headers={"kid": header["kid"]})
    assert jwt.get_unverified_header(forged)["kid"] == header["kid"]
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(forged, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", forged, says="token signature is invalid")


def test_tampered_payload(bao_running: BaoServer, verifier: TokenVerifier) -> None:
    real = bao_running.issue_token("alice", ["analysts"])
    head, _, sig = real.split(".")
    payload = unverified(real)[1]
    tampered = ".".join([head, b64json(dict(payload, groups=["dba"])), sig])
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(tampered, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", tampered, says="token signature is invalid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none(bao_running: BaoServer, verifier: TokenVerifier, alg: str,
                  signature: str) -> None:
    header, payload = unverified(bao_running.issue_token("alice", ["analysts"]))
    token = ".".join([b64json({"alg": alg, "typ": "JWT", "kid": header["kid"]}),
                      b64json(payload), signature])
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token,
                    says=f"token algorithm '{alg}' is not allowed")
    assert verifier.jwks_fetches == 0  # refused before any key was looked up


@pytest.mark.parametrize("alg,digest", [("HS256", hashlib.sha256), ("HS512", hashlib.sha512)])
def test_hmac_signed_with_the_public_key(bao_running: BaoServer, verifier: TokenVerifier,
                                         alg: str, digest: Any) -> None:
    real = bao_running.issue_token("alice", ["analysts"])
    header, payload = unverified(real)
    with urllib.request.urlopen(bao_running.jwks_url, timeout=5) as resp:
        jwk = next(k for k in json.load(resp)["keys"] if k["kid"] == header["kid"])
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = ".".join([b64json({"alg": alg, "typ": "JWT", "kid": header["kid"]}),
                              b64json(dict(payload, groups=["dba"]))])
    signature = hmac.new(public_pem, signing_input.encode(), digest).digest()
    token = f"{signing_input}.{b64url(signature)}"
    # A verifier that let the header pick HMAC and used the published key as the secret
    # would accept this (pyjwt itself refuses PEM keys as HMAC secrets; we must not rely
    # on that).
    assert jwt.get_unverified_header(token)["kid"] == header["kid"]
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token,
                    says=f"token algorithm '{alg}' is not allowed")
    assert verifier.jwks_fetches == 0


def test_algorithm_outside_the_configured_list(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", [])
    verifier = TokenVerifier(bao_cfg(bao_running, algorithms=["ES256"]))
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token,
                    says="token algorithm 'RS256' is not allowed")


GARBAGE = [
    "",
    "hunter2",
    "not-a-jwt-at-all",
    "a.b",
    "a.b.c",
    "a.b.c.d.e",
    "...",
    "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VybmFtZSI6ImFsaWNlIn0",
    "eyJhbGciOiJSUzI1NiJ9.!!!!.c2ln",
    "bm90IGpzb24.eyJ1c2VybmFtZSI6ImFsaWNlIn0.c2ln",
    b64json(["RS256"]) + "." + b64json({}) + ".c2ln",
    b64json({"alg": 256}) + "." + b64json({}) + ".c2ln",
    b64json({"alg": "RS256", "kid": ["x"]}) + "." + b64json({}) + ".c2ln",
    b64json({"alg": "RS256<script>"}) + "." + b64json({}) + ".c2ln",
    "x" * 20000,
    "eyJ" + "A" * 20000 + ".e30.c2ln",
    "\x00\x01\x02 \u2603 .\u00e9.",
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_not_a_token(bao_running: BaoServer, verifier: TokenVerifier,
                                garbage: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pgguard.identity")
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(garbage, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", garbage, caplog=caplog)
    assert ("password is not a valid token" in excinfo.value.message
            or "is not allowed" in excinfo.value.message)
    assert len(excinfo.value.message) < 100


def test_rotated_key_triggers_one_refresh(bao_running: BaoServer) -> None:
    verifier = TokenVerifier(bao_cfg(bao_running), min_refresh_interval_s=0.0)
    before = bao_running.issue_token("alice", [])
    assert verifier.verify_sync(before, "alice").user == "alice"
    assert verifier.jwks_fetches == 1
    # OpenBao publishes the next key ahead of time: one rotation needs no refresh ...
    bao_running.rotate_key()
    once = bao_running.issue_token("alice", [])
    assert unverified(once)[0]["kid"] != unverified(before)[0]["kid"]
    assert verifier.verify_sync(once, "alice").user == "alice"
    assert verifier.jwks_fetches == 1
    # ... a second one signs with a key we have never seen: exactly one refresh.
    bao_running.rotate_key()
    twice = bao_running.issue_token("alice", [])
    assert verifier.verify_sync(twice, "alice").user == "alice"
    assert verifier.jwks_fetches == 2
    verifier.verify_sync(twice, "alice")
    verifier.verify_sync(before, "alice")  # still published for verification_ttl
    assert verifier.jwks_fetches == 2


async def test_verify_under_trio(bao_running: BaoServer) -> None:
    token = await trio.to_thread.run_sync(bao_running.issue_token, "alice", ["analysts"])
    verifier = TokenVerifier(bao_cfg(bao_running))
    async with trio.open_nursery() as nursery:
        results: list[Identity] = []

        async def one() -> None:
            results.append(await verifier.verify(token, "alice"))

        for _ in range(10):
            nursery.start_soon(one)
    assert [r.user for r in results] == ["alice"] * 10
    assert verifier.jwks_fetches == 1  # concurrent verifications shared one fetch
    with pytest.raises(NotPermitted) as excinfo:
        await verifier.verify(token, "bob")
    assert_rejected(excinfo, NotPermitted, "28000", token)
    with pytest.raises(InvalidToken) as excinfo:
        await verifier.verify("garbage", "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", "garbage")


def test_openbao_down_then_back(tmp_path) -> None:
    """A private server: restarting the session one would disturb other tests."""
    server = BaoServer(str(tmp_path))
    server.start()
    try:
        token = server.issue_token("alice", ["analysts"])
        server.stop()
        verifier = TokenVerifier(bao_cfg(server), min_refresh_interval_s=0.0)
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify_sync(token, "alice")
        assert_rejected(excinfo, InvalidToken, "28P01", token,
                        says="cannot verify token: identity provider unavailable")
        server.start()  # empty again, then re-configured: new signing key
        time.sleep(1.05)  # past the fail-fast window after a failed fetch
        fresh = server.issue_token("alice", ["analysts"])
        assert verifier.verify_sync(fresh, "alice").groups == ("analysts",)
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify_sync(token, "alice")  # its key died with the old server
        assert_rejected(excinfo, InvalidToken, "28P01", token, says="signing key not found")
    finally:
        server.stop()


def test_persistent_openbao_keeps_keys_and_leases_across_restart(tmp_path, pg) -> None:
    server = BaoServer(str(tmp_path), persistent=True)
    server.start()
    try:
        token = server.issue_token("alice", ["analysts"])
        server.enable_database_secrets(pg, {"r": 'CREATE ROLE "{{name}}" LOGIN PASSWORD '
                                                "'{{password}}' VALID UNTIL '{{expiration}}'"},
                                       mount="dbp")
        creds = server.client().secrets.database.generate_credentials("r", mount_point="dbp")
        server.stop()
        verifier = TokenVerifier(bao_cfg(server))
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify_sync(token, "alice")
        assert_rejected(excinfo, InvalidToken, "28P01", token,
                        says="identity provider unavailable")
        server.start()
        time.sleep(1.05)  # past the fail-fast window after a failed fetch
        assert verifier.verify_sync(token, "alice").groups == ("analysts",)
        lease = server.client().sys.read_lease(creds["lease_id"])
        assert lease["data"]["id"] == creds["lease_id"]
        server.disable_database_secrets("dbp")
    finally:
        server.stop()


def test_paused_openbao_times_out_then_recovers(bao_running: BaoServer) -> None:
    token = bao_running.issue_token("alice", ["analysts"])
    verifier = TokenVerifier(bao_cfg(bao_running, fetch_timeout_s=0.5))
    bao_running.pause()
    try:
        started = time.monotonic()
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify_sync(token, "alice")
        assert time.monotonic() - started < 1.5
        assert_rejected(excinfo, InvalidToken, "28P01", token,
                        says="identity provider unavailable")
    finally:
        bao_running.resume()
    time.sleep(1.05)
    assert verifier.verify_sync(token, "alice").user == "alice"


# --- local IdP: tokens OpenBao will not make ---------------------------------------------


def test_local_idp_token_verifies(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", groups=["a", "b"])
    ident = TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert ident == Identity(user="alice", groups=("a", "b"), issuer=idp.issuer,
                             expires_at=float(unverified(token)[1]["exp"]), subject="s-1")


def test_unknown_kid_refreshes_once_and_is_rate_limited(idp: LocalIdP, rsa_keys) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(idp.cfg(), clock=clock)
    verifier.verify_sync(idp.sign(rsa_keys[0], "k1"), "alice")
    assert verifier.jwks_fetches == 1
    assert len(idp.requests) == 2  # discovery + JWKS

    clock.now += 11
    stranger = idp.sign(rsa_keys[1], "k-unknown")
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(stranger, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", stranger, says="signing key not found")
    assert verifier.jwks_fetches == 2  # exactly one refresh for the unknown kid

    for i in range(20):  # a flood of unknown kids inside the interval: no more fetches
        with pytest.raises(InvalidToken):
            verifier.verify_sync(idp.sign(rsa_keys[1], f"junk-{i}"), "alice")
    assert verifier.jwks_fetches == 2
    assert len(idp.requests) == 4

    idp.publish(rsa_keys[1], "k2")  # the IdP rotates
    rotated = idp.sign(rsa_keys[1], "k2")
    with pytest.raises(InvalidToken):
        verifier.verify_sync(rotated, "alice")  # still inside the interval
    clock.now += 10
    assert verifier.verify_sync(rotated, "alice").user == "alice"
    assert verifier.jwks_fetches == 3


def test_known_keys_do_not_wait_for_a_slow_refresh(idp: LocalIdP, rsa_keys) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(idp.cfg(fetch_timeout_s=3), clock=clock)
    good = idp.sign(rsa_keys[0], "k1")
    verifier.verify_sync(good, "alice")
    clock.now += 11
    idp.delay_s = 1.0
    seen = len(idp.requests)
    stranger = threading.Thread(target=lambda: pytest.raises(
        InvalidToken, verifier.verify_sync, idp.sign(rsa_keys[1], "k-unknown"), "alice"))
    stranger.start()
    try:
        deadline = time.monotonic() + 2
        while len(idp.requests) == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(idp.requests) > seen  # the unknown kid's refresh is under way
        started = time.monotonic()
        assert verifier.verify_sync(good, "alice").user == "alice"
        assert time.monotonic() - started < 0.5
    finally:
        stranger.join(timeout=10)


def test_keys_are_cached_for_jwks_cache_s(idp: LocalIdP, rsa_keys) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(idp.cfg(jwks_cache_s=60), clock=clock)
    token = idp.sign(rsa_keys[0], "k1")
    for _ in range(5):
        verifier.verify_sync(token, "alice")
    assert verifier.jwks_fetches == 1
    clock.now += 61
    verifier.verify_sync(token, "alice")
    assert verifier.jwks_fetches == 2
    # A key the IdP withdrew stops working once the cache expires.
    idp.jwks = {"keys": []}
    clock.now += 61
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="signing key not found")


def test_nbf_in_the_future(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", nbf=int(time.time()) + 120)
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="token is not valid yet")
    assert TokenVerifier(idp.cfg(leeway_s=300)).verify_sync(token, "alice").user == "alice"


def test_expired_local_token(idp: LocalIdP, rsa_keys) -> None:
    now = int(time.time())
    token = idp.sign(rsa_keys[0], "k1", iat=now - 100, exp=now - 10)
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="pgguard: token expired")


@pytest.mark.parametrize("claim,says", [
    ("exp", "token has no 'exp' claim"),
    ("aud", "token has the wrong audience"),
    ("iss", "token issuer is wrong"),
    ("username", "token has no 'username' claim"),
])
def test_required_claims(idp: LocalIdP, rsa_keys, claim: str, says: str) -> None:
    token = idp.sign(rsa_keys[0], "k1", **{claim: None})
    assert claim not in unverified(token)[1]
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says=says)


def test_no_audience_configured_accepts_any(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", aud="whatever")
    cfg = replace(idp.cfg(), audience=None)
    assert TokenVerifier(cfg).verify_sync(token, "alice").user == "alice"


@pytest.mark.parametrize("value,groups", [
    ("admins", ("admins",)),
    (["a", "b"], ("a", "b")),
    ([], ()),
    (None, ()),
])
def test_groups_claim_shapes(idp: LocalIdP, rsa_keys, value: Any, groups: tuple) -> None:
    token = idp.sign(rsa_keys[0], "k1", groups=value)
    assert TokenVerifier(idp.cfg()).verify_sync(token, "alice").groups == groups


@pytest.mark.parametrize("value", [["a", 1], {"a": True}, 7])
def test_unreadable_groups_claim_is_refused(idp: LocalIdP, rsa_keys, value: Any) -> None:
    token = idp.sign(rsa_keys[0], "k1", groups=value)
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="claim 'groups'")


def test_nested_claims_keycloak_style(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", username=None, preferred_username="alice",
                     groups=None, realm_access={"roles": ["dba", "analysts"]})
    cfg = idp.cfg(user_claim="preferred_username", groups_claim="realm_access.roles")
    assert TokenVerifier(cfg).verify_sync(token, "alice").groups == ("dba", "analysts")


def test_user_claim_must_be_a_string(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", username=["alice"])
    with pytest.raises(InvalidToken):
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")


def test_hostile_user_claim_is_shown_escaped_and_short(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], "k1", username="eve\r\nFATAL: " + "x" * 500)
    with pytest.raises(NotPermitted) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert "\n" not in excinfo.value.message
    assert len(excinfo.value.message) < 250
    assert_no_token(excinfo.value.message, token)


def test_ec_keys(idp: LocalIdP) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    idp.publish(key, "ec1")
    token = idp.sign(key, "ec1", alg="ES256")
    assert TokenVerifier(idp.cfg()).verify_sync(token, "alice").user == "alice"


def test_key_type_must_match_the_algorithm(idp: LocalIdP, rsa_keys) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    idp.publish(key, "ec1")
    verifier = TokenVerifier(idp.cfg(), min_refresh_interval_s=0.0)
    # An ES256 header naming the RSA key, and an RS256 header naming the EC key.
    es_on_rsa = idp.sign(key, "k1", alg="ES256")
    rs_on_ec = idp.sign(rsa_keys[0], "ec1", alg="RS256")
    for token in (es_on_rsa, rs_on_ec):
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify_sync(token, "alice")
        assert_rejected(excinfo, InvalidToken, "28P01", token, says="signing key not found")


def test_jwk_alg_must_match_the_header(idp: LocalIdP, rsa_keys) -> None:
    idp.publish(rsa_keys[1], "ps-only", alg="PS256")
    token = idp.sign(rsa_keys[1], "ps-only", alg="RS256")
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg(algorithms=["RS256", "PS256"])).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="signing key not found")


def test_encryption_keys_are_not_used(idp: LocalIdP, rsa_keys) -> None:
    idp.publish(rsa_keys[1], "enc", use="enc")
    token = idp.sign(rsa_keys[1], "enc")
    with pytest.raises(InvalidToken):
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")


def test_token_without_kid(idp: LocalIdP, rsa_keys) -> None:
    token = idp.sign(rsa_keys[0], None)
    assert TokenVerifier(idp.cfg()).verify_sync(token, "alice").user == "alice"
    idp.publish(rsa_keys[1], "k2")  # now ambiguous: refuse rather than guess
    with pytest.raises(InvalidToken):
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")


# --- the identity provider misbehaves ----------------------------------------------------


def test_idp_unreachable(rsa_keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgguard.identity")
    port = unused_port()
    cfg = parse({"identity": {"issuer": f"http://127.0.0.1:{port}/idp",
                              "audience": "pgguard", "fetch_timeout_s": 1}}).identity
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, rsa_keys[0],
                       algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(cfg).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, caplog=caplog)
    assert excinfo.value.message == ("pgguard: cannot verify token: "
                                     "identity provider unavailable")
    assert any("jwks_fetch_failed" in r.getMessage() and str(port) in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("status", [500, 404])
def test_idp_http_error(idp: LocalIdP, rsa_keys, status: int) -> None:
    idp.status = status
    token = idp.sign(rsa_keys[0], "k1")
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(token, "alice")
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="identity provider unavailable")


@pytest.mark.parametrize("document", [{"keys": "nope"}, ["keys"], {}])
def test_idp_serves_nonsense(idp: LocalIdP, rsa_keys, document: Any) -> None:
    idp.jwks = document
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg()).verify_sync(idp.sign(rsa_keys[0], "k1"), "alice")
    assert "identity provider unavailable" in excinfo.value.message


def test_idp_too_slow_is_bounded(idp: LocalIdP, rsa_keys) -> None:
    idp.delay_s = 3.0
    token = idp.sign(rsa_keys[0], "k1")
    started = time.monotonic()
    with pytest.raises(InvalidToken) as excinfo:
        TokenVerifier(idp.cfg(fetch_timeout_s=0.5)).verify_sync(token, "alice")
    assert time.monotonic() - started < 1.5
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="identity provider unavailable")


async def test_idp_too_slow_under_trio(idp: LocalIdP, rsa_keys) -> None:
    idp.delay_s = 3.0
    token = idp.sign(rsa_keys[0], "k1")
    started = trio.current_time()
    with pytest.raises(InvalidToken) as excinfo:
        await TokenVerifier(idp.cfg(fetch_timeout_s=0.5)).verify(token, "alice")
    assert trio.current_time() - started < 1.6
    assert_rejected(excinfo, InvalidToken, "28P01", token, says="identity provider unavailable")


def test_failed_fetch_is_not_retried_by_every_login(idp: LocalIdP, rsa_keys) -> None:
    clock = FakeClock()
    idp.status = 503
    verifier = TokenVerifier(idp.cfg(), clock=clock)
    token = idp.sign(rsa_keys[0], "k1")
    for _ in range(10):
        with pytest.raises(InvalidToken):
            verifier.verify_sync(token, "alice")
    assert verifier.jwks_fetches == 1
    idp.status = 200  # the IdP recovers; the next attempt after the pause succeeds
    clock.now += 1.5
    assert verifier.verify_sync(token, "alice").user == "alice"
    assert verifier.jwks_fetches == 2


def test_ca_file_for_an_https_idp(rsa_keys, tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server = LocalIdP(ssl_context=server_ctx)
    try:
        server.publish(rsa_keys[0], "k1")
        token = server.sign(rsa_keys[0], "k1")
        with pytest.raises(InvalidToken) as excinfo:  # an unknown CA is not trusted
            TokenVerifier(server.cfg()).verify_sync(token, "alice")
        assert "identity provider unavailable" in excinfo.value.message
        ca_path = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        cfg = server.cfg(ca_file=str(ca_path))
        assert TokenVerifier(cfg).verify_sync(token, "alice").user == "alice"
    finally:
        server.close()


# --- the harness: OpenBao database secrets --------------------------------------------


def test_bao_database_secrets_issue_real_roles(bao_running: BaoServer, pg) -> None:
    mount = f"db-{uuid.uuid4().hex[:8]}"
    bao_running.enable_database_secrets(pg, {
        "reader": ('CREATE ROLE "{{name}}" WITH LOGIN PASSWORD \'{{password}}\' '
                   "VALID UNTIL '{{expiration}}'; GRANT pg_read_all_data TO \"{{name}}\";"),
    }, default_ttl="1m", max_ttl="5m", mount=mount)
    try:
        creds = bao_running.client().secrets.database.generate_credentials(
            "reader", mount_point=mount)
        user, password = creds["data"]["username"], creds["data"]["password"]
        assert 0 < creds["lease_duration"] <= 60
        with psycopg.connect(pg.dsn(user=user, password=password)) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == user
        bao_running.client().sys.revoke_lease(creds["lease_id"])
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn(user=user, password=password)).close()
        assert pg.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}'") == "0"
    finally:
        # Closes the plugin's connections, or stopping the cluster would wait for them.
        bao_running.disable_database_secrets(mount)


# --- fuzz: nothing but InvalidToken / NotPermitted ever leaves the verifier ---------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)
CLAIMS = ["iss", "aud", "exp", "nbf", "iat", "sub", "username", "groups", "jti"]


@pytest.fixture(scope="module")
def fuzz_idp(rsa_keys) -> LocalIdP:
    server = LocalIdP()
    server.publish(rsa_keys[0], "k1")
    try:
        yield server
    finally:
        server.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.dictionaries(st.sampled_from(CLAIMS), json_values, max_size=6),
       header=st.dictionaries(st.sampled_from(["typ", "cty", "crit", "x5u", "jku"]),
                              json_values, max_size=2))
def test_fuzz_signed_claims(fuzz_idp: LocalIdP, rsa_keys, claims: dict, header: dict) -> None:
    verifier = fuzz_verifier(fuzz_idp)
    # PyJWS, not jwt.encode: the latter refuses some malformed claims we want to send.
    # Random claims over a valid token, so every check gets reached, not only the first.
    now = int(time.time())
    payload = {"iss": fuzz_idp.issuer, "aud": "pgguard", "username": "alice",
               "exp": now + 60, **claims}
    token = jwt.PyJWS().encode(json.dumps(payload).encode(), rsa_keys[0], algorithm="RS256",
                               headers=dict(header, kid="k1"))
    try:
        ident = verifier.verify_sync(token, "alice")
    except (InvalidToken, NotPermitted) as exc:
        assert exc.message.startswith("pgguard: ")
        assert_no_token(exc.message, token)
    else:
        assert ident.user == "alice"
        assert all(isinstance(g, str) for g in ident.groups)
        assert ident.expires_at is not None and ident.expires_at > time.time() - 1


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.text(max_size=200),
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                     max_size=40), min_size=1, max_size=5).map(".".join),
    st.tuples(json_values, json_values, st.binary(max_size=40)).map(
        lambda t: f"{b64json(t[0])}.{b64json(t[1])}.{b64url(t[2])}"),
))
def test_fuzz_garbage(fuzz_idp: LocalIdP, token: str) -> None:
    try:
        fuzz_verifier(fuzz_idp).verify_sync(token, "alice")
    except (InvalidToken, NotPermitted) as exc:
        assert exc.message.startswith("pgguard: ")
        assert_no_token(exc.message, token)
    else:
        pytest.fail("garbage verified")


_fuzz_verifiers: dict[str, TokenVerifier] = {}


def fuzz_verifier(server: LocalIdP) -> TokenVerifier:
    # One verifier per IdP: the fuzz cases exercise the checks, not the JWKS fetch.
    if server.issuer not in _fuzz_verifiers:
        _fuzz_verifiers[server.issuer] = TokenVerifier(server.cfg())
    return _fuzz_verifiers[server.issuer]
