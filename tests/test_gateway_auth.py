"""Who may connect: OIDC tokens at the door, TLS on the client side, grants per group."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import time

import jwt
import psycopg
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from rawclient import RawClient, error_of, fatal_for

from pgguard.net.session import is_loopback

pytestmark = pytest.mark.usefixtures("app_db")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(header))),
            json.loads(base64.urlsafe_b64decode(pad(payload))))


def _assert_refused(err, sqlstate: str, fragment: str, token: str) -> None:
    assert err.fields["S"] == "FATAL"
    assert err.sqlstate == sqlstate, err.fields
    assert err.message.startswith("pgguard:")
    assert fragment in err.message, err.message
    for field in err.fields.values():
        assert token[:20] not in field and token[-20:] not in field


def test_valid_token_connects_and_sees_its_groups(gateway, tokens):
    with psycopg.connect(gateway.dsn("alice"), password=tokens("alice", ["owners"])) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_expired_token(gateway, bao):
    token = bao.issue_token("exp-user", ["owners"], ttl="1s")
    time.sleep(2.2)
    _assert_refused(fatal_for(gateway.port, "exp-user", token), "28P01", "expired", token)


def test_wrong_audience(gateway, bao):
    token = bao.issue_token("aud-user", ["owners"], audience="someone-else")
    _assert_refused(fatal_for(gateway.port, "aud-user", token), "28P01", "audience", token)


def test_wrongly_signed_token(gateway, tokens):
    good = tokens("sig-user", ["owners"])
    header, payload = _parts(good)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(payload, key, algorithm="RS256", headers={"kid": header["kid"]})
    _assert_refused(fatal_for(gateway.port, "sig-user", forged), "28P01", "signature", forged)


def test_alg_none_token(gateway, tokens):
    good = tokens("none-user", ["owners"])
    header, payload = _parts(good)
    forged = (_b64(json.dumps({"alg": "none", "typ": "JWT", "kid": header["kid"]}).encode())
              + "." + _b64(json.dumps(payload).encode()) + ".")
    _assert_refused(fatal_for(gateway.port, "none-user", forged), "28P01", "none", forged)


def test_hs256_key_confusion(gateway, tokens, bao):
    """HS256 'signed' with the issuer's public key must not pass as RS256."""
    import urllib.request
    good = tokens("hs-user", ["owners"])
    header, payload = _parts(good)
    with urllib.request.urlopen(bao.jwks_url, timeout=10) as r:
        jwks = json.load(r)
    pem = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwks["keys"][0])).public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization",
                            fromlist=["Encoding"]).Encoding.PEM,
        format=__import__("cryptography.hazmat.primitives.serialization",
                          fromlist=["PublicFormat"]).PublicFormat.SubjectPublicKeyInfo)
    signing = f"{_b64(json.dumps({'alg': 'HS256', 'kid': header['kid']}).encode())}." \
              f"{_b64(json.dumps(payload).encode())}"
    import hashlib
    import hmac
    sig = _b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())
    forged = f"{signing}.{sig}"
    _assert_refused(fatal_for(gateway.port, "hs-user", forged), "28P01", "HS256", forged)


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "x" * 5000,
                                     "eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "\u00ff\u00fe"])
def test_garbage_tokens(gateway, garbage):
    c = RawClient(gateway.port)
    try:
        err = error_of(c.login("garbage-user", garbage))
    finally:
        c.close()
    assert err is not None and err.sqlstate == "28P01" and err.fields["S"] == "FATAL"
    assert err.message.startswith("pgguard:")


def test_user_must_match_token(gateway, tokens):
    token = tokens("alice", ["owners"])
    err = fatal_for(gateway.port, "mallory", token)
    _assert_refused(err, "28000", "does not match", token)


def test_user_without_grant_cannot_connect(gateway, tokens):
    token = tokens("nogrant", ["interns"])
    err = fatal_for(gateway.port, "nogrant", token)
    _assert_refused(err, "28000", "no grant", token)


def test_unknown_connection(gateway, tokens):
    token = tokens("alice", ["owners"])
    err = fatal_for(gateway.port, "alice", token, database="nosuchdb")
    assert err.sqlstate == "3D000" and "nosuchdb" in err.message


def test_psycopg_sees_a_clear_error(gateway, bao):
    token = bao.issue_token("exp2", ["owners"], ttl="1s")
    time.sleep(2.2)
    with pytest.raises(psycopg.OperationalError, match="pgguard: token expired"):
        psycopg.connect(gateway.dsn("exp2"), password=token)


def test_role_changing_startup_parameters_are_refused(gateway, tokens):
    c = RawClient(gateway.port)
    try:
        msgs = c.login("alice", tokens("alice", ["owners"]), options="-c role=postgres")
    finally:
        c.close()
    err = error_of(msgs)
    assert err is not None and err.sqlstate == "42501" and "role" in err.message


def test_gssenc_request_is_declined(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(struct.pack("!II", 8, 80877104))
        assert s.recv(1) == b"N"


def test_bytes_after_sslrequest_drop_the_client(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(struct.pack("!II", 8, 80877103) + b"Q\0\0\0\x0dSELECT 1\0")
        data = s.recv(1000)
        # Either nothing, or an error; never 'S' followed by a TLS handshake.
        assert data == b"" or data[:1] == b"E"


def test_no_tls_answers_n(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        assert s.recv(1) == b"N"


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("10.0.0.1") and not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.20")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    paths = {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


def test_client_tls(start_gateway, make_config, tokens, tls_files):
    cfg = make_config(listen={"tls_cert": tls_files["cert"], "tls_key": tls_files["key"]})
    gw = start_gateway(cfg)
    dsn = gw.dsn("alice").replace("sslmode=disable", "") + \
        f" sslmode=verify-full sslrootcert={tls_files['ca']}"
    with psycopg.connect(dsn, password=tokens("alice", ["owners"])) as c:
        assert c.info.pgconn.ssl_in_use
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_tls_connection_refuses_bytes_smuggled_before_handshake(start_gateway, make_config,
                                                                tls_files):
    cfg = make_config(listen={"tls_cert": tls_files["cert"], "tls_key": tls_files["key"]})
    gw = start_gateway(cfg)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(struct.pack("!II", 8, 80877103) + struct.pack("!II", 8, 80877103))
        assert s.recv(1) in (b"", b"E")


@pytest.fixture(scope="module")
def tls_pg(tls_files):
    """A second cluster that speaks TLS with a certificate for 127.0.0.1."""
    from harness.gateway import APP_PASSWORD, APP_USER
    from harness.postgres import skip_unless_server_has, throwaway_cluster
    skip_unless_server_has("ssl")
    # Stopped and its folder removed afterwards (it used to stay in /tmp, 46 MB a run).
    with throwaway_cluster(ssl_cert=tls_files["cert"], ssl_key=tls_files["key"]) as cluster:
        cluster.psql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
        cluster.psql(f"CREATE DATABASE app OWNER {APP_USER}")
        cluster.psql("SET password_encryption = 'md5'; "
                     "CREATE ROLE md5user LOGIN PASSWORD 'md5pw'")
        cluster.psql("CREATE ROLE pwuser LOGIN PASSWORD 'pwpw'")
        yield cluster


def _conn(pg, **over):
    base = {"name": "appdb", "host": "127.0.0.1", "port": pg.port, "dbname": "app",
            "sslmode": "disable", "user": "app_owner",
            "password_env": "PGGUARD_TEST_APP_PASSWORD",
            "grants": [{"groups": ["owners"], "write": "allow", "ddl": "allow"}]}
    base.update(over)
    return [base]


def test_upstream_verify_full(start_gateway, make_config, tokens, tls_pg, tls_files):
    gw = start_gateway(make_config(connections=_conn(
        tls_pg, sslmode="verify-full", sslrootcert=tls_files["ca"])))
    with psycopg.connect(gw.dsn("alice"), password=tokens("alice", ["owners"])) as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                         ).fetchone() == (True,)


def test_upstream_verify_full_rejects_wrong_ca(start_gateway, make_config, tokens, tls_pg,
                                               tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    gw = start_gateway(make_config(connections=_conn(
        tls_pg, sslmode="verify-full", sslrootcert=str(other_ca))))
    err = fatal_for(gw.port, "alice", tokens("alice", ["owners"]))
    assert err.sqlstate == "08006" and "TLS" in err.message


def test_upstream_require_on_plain_server_fails(start_gateway, make_config, tokens, app_db):
    gw = start_gateway(make_config(connections=_conn(app_db, dbname="app",
                                                     sslmode="require")))
    err = fatal_for(gw.port, "alice", tokens("alice", ["owners"]))
    assert err.sqlstate == "08006" and "TLS" in err.message


@pytest.mark.parametrize("user,password", [("md5user", "md5pw"), ("pwuser", "pwpw")])
def test_upstream_md5_and_cleartext(start_gateway, make_config, tokens, tls_pg, user,
                                    password, monkeypatch):
    monkeypatch.setenv("PGGUARD_TEST_UPSTREAM_PW", password)
    gw = start_gateway(make_config(connections=_conn(
        tls_pg, user=user, password_env="PGGUARD_TEST_UPSTREAM_PW", dbname="postgres")))
    with psycopg.connect(gw.dsn("alice"), password=tokens("alice", ["owners"])) as c:
        assert c.execute("SELECT current_user").fetchone() == (user,)


def test_upstream_wrong_password_is_a_clear_fatal(start_gateway, make_config, tokens, app_db,
                                                  monkeypatch):
    monkeypatch.setenv("PGGUARD_TEST_BAD_PW", "wrong")
    gw = start_gateway(make_config(connections=_conn(
        app_db, password_env="PGGUARD_TEST_BAD_PW")))
    err = fatal_for(gw.port, "alice", tokens("alice", ["owners"]))
    assert err.sqlstate == "08006" and "refused the login" in err.message
    assert "wrong" not in err.message


def test_tls_ssl_context_is_strict():
    """The upstream context for verify-full checks host names (libpq semantics)."""
    from pgguard.config import ConnectionConfig
    from pgguard.net.backend import ssl_context
    ctx = ssl_context(ConnectionConfig(name="x", sslmode="verify-full", sslrootcert=None))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(ConnectionConfig(name="x", sslmode="disable")) is None
