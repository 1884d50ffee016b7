"""Just-in-time database credentials from a real OpenBao dev server, through the gateway.

The OIDC tokens come from the session-wide ``bao`` server; the database secrets come from a
second OpenBao server owned by this module (``vault``), so the tests that stop and restart
it never disturb the identity provider other test modules rely on.
"""

from __future__ import annotations

import socket
import struct
import time

import psycopg
import pytest
from harness.vault import (  # noqa: F401 (fixtures)
    GATEWAY_POLICY,
    GRANTS,
    POLICY,
    can_login,
    connect,
    current_user,
    gateway_token,
    leases,
    secrets_seen,
    vault,
    vault_connection,
    vault_up,
    wait_until,
)

from pgguard.credentials.vault import VaultCredentials

MESSAGE = "pgguard: credentials unavailable for appdb"


@pytest.fixture
def vault_gateway(vault_up, secrets_seen, make_config, start_gateway, tmp_path):
    """vault_gateway(**vault_options) -> a gateway whose grants use Vault roles."""
    def start(grants=GRANTS, token: str | None = None, **options):
        token = token or gateway_token(vault_up)
        secrets_seen.append(token)
        path = tmp_path / "vault-token"
        path.write_text(token + "\n")
        section = {"url": vault_up.url, "token_file": str(path), "timeout_s": 2}
        section.update(options)
        return start_gateway(make_config(vault=section,
                                         connections=[vault_connection(make_config, grants)]))
    return start


# --- the session's own role ---------------------------------------------------------


def test_session_runs_as_fresh_role_revoked_after_disconnect(vault_gateway, tokens, app_db,
                                                             secrets_seen, caplog):
    gw = vault_gateway()
    with connect(gw, tokens) as conn:
        role = current_user(conn)
        assert role.startswith("v-")
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 100
        [(db_user, password, lease_id)] = leases(gw)
        secrets_seen += [password, lease_id]
        assert db_user == role
        assert can_login(app_db, role, password)
        assert "event=vault_lease_issued" in caplog.text  # the log capture sees the gateway
    assert wait_until(lambda: not can_login(app_db, role, password), timeout=5)
    assert app_db.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == "0"


def test_concurrent_sessions_get_distinct_roles(vault_gateway, tokens, secrets_seen):
    gw = vault_gateway()
    with connect(gw, tokens) as a, connect(gw, tokens) as b:
        ra, rb = current_user(a), current_user(b)
        secrets_seen += [p for _, p, _ in leases(gw)]
    assert ra.startswith("v-") and rb.startswith("v-")
    assert ra != rb


def test_reuse_user_shares_one_role_until_idle_past_ttl(vault_gateway, tokens, app_db,
                                                        secrets_seen):
    gw = vault_gateway(reuse="user", reuse_ttl_s=1.5)
    with connect(gw, tokens) as a, connect(gw, tokens) as b:
        ra, rb = current_user(a), current_user(b)
        [(_, password, _), _] = leases(gw)
        secrets_seen.append(password)
        with connect(gw, tokens, "bob", ["analysts"]) as other:
            assert current_user(other) != ra  # one lease per user, not per role
    assert ra == rb and ra.startswith("v-")
    with connect(gw, tokens) as c:  # within reuse_ttl_s: still the cached role
        assert current_user(c) == ra
    assert can_login(app_db, ra, password)
    # Unused and past reuse_ttl_s: revoked by the gateway (the lease itself lasts 1 min).
    assert wait_until(lambda: not can_login(app_db, ra, password), timeout=6)
    with connect(gw, tokens) as d:
        assert current_user(d) not in (ra, "")


# --- leases that end --------------------------------------------------------------


def test_max_ttl_ends_the_session(vault_gateway, tokens):
    gw = vault_gateway(mount="shortdb")
    with connect(gw, tokens) as conn:
        conn.execute("SET statement_timeout = 12000")  # bounds the test if nothing ends it
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT pg_sleep(11)")
        elapsed = time.monotonic() - started
    assert "pgguard: credentials expired" in str(info.value)
    assert info.value.sqlstate == "08006"
    # The lease lasts 1 s and is renewed up to its 3 s max TTL; then the session ends.
    assert 1.5 < elapsed < 6


def test_revoked_lease_ends_the_session(vault_gateway, vault_up, tokens):
    gw = vault_gateway(mount="shortdb")
    with connect(gw, tokens) as conn:
        conn.execute("SET statement_timeout = 12000")
        assert current_user(conn).startswith("v-")
        vault_up.client().sys.revoke_prefix("shortdb/creds/ro")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="pgguard: credentials expired"):
            conn.execute("SELECT pg_sleep(11)")
        assert time.monotonic() - started < 2.5


# --- failures -----------------------------------------------------------------------


def startup_error(gw, user: str, token: str) -> dict[str, str]:
    """Log in with a raw protocol-3 startup and return the fields of the ErrorResponse
    (libpq does not expose the SQLSTATE of a failed connection attempt)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        body = struct.pack("!I", 196608) + f"user\0{user}\0database\0appdb\0\0".encode()
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        stream = sock.makefile("rb")

        def receive() -> tuple[bytes, bytes]:
            kind = stream.read(1)
            (size,) = struct.unpack("!I", stream.read(4))
            return kind, stream.read(size - 4)

        kind, data = receive()
        assert (kind, data[:4]) == (b"R", struct.pack("!I", 3))  # cleartext password
        password = token.encode() + b"\0"
        sock.sendall(b"p" + struct.pack("!I", len(password) + 4) + password)
        kind, data = receive()
        while kind == b"N":
            kind, data = receive()
        assert kind == b"E", kind
        return {chr(f[0]): f[1:].decode() for f in data.split(b"\0") if f}


def expect_unavailable(gw, tokens, user="alice", groups=("analysts",)) -> str:
    """Assert the client gets FATAL 08006 'credentials unavailable'; return what libpq
    shows."""
    fields = startup_error(gw, user, tokens(user, list(groups)))
    assert (fields["V"], fields["C"], fields["M"]) == ("FATAL", "08006", MESSAGE)
    assert set(fields) <= {"S", "V", "C", "M"}  # no detail or hint that could leak
    with pytest.raises(psycopg.OperationalError) as info:
        connect(gw, tokens, user, groups).close()
    assert f"FATAL:  {MESSAGE}" in str(info.value)
    return str(info.value)


def test_vault_sealed_or_down_then_back(vault_gateway, vault_up, tokens, tmp_path, secrets_seen):
    gw = vault_gateway()
    with connect(gw, tokens) as before:
        current_user(before)
        vault_up.client().sys.seal()
        expect_unavailable(gw, tokens)
        vault_up.stop()
        expect_unavailable(gw, tokens)
        # A session that already has its credentials keeps working.
        assert current_user(before).startswith("v-")
    # The dev server comes back empty: the configuration is re-applied and the gateway's
    # token is issued again into its token file (as an agent would).
    vault_up.start()
    token = gateway_token(vault_up)
    secrets_seen.append(token)
    (tmp_path / "vault-token").write_text(token)
    with connect(gw, tokens) as after:
        assert current_user(after).startswith("v-")


def test_unknown_and_forbidden_roles(vault_gateway, tokens):
    gw = vault_gateway()
    for user, group in (("gus", "ghosts"), ("olga", "outsiders")):
        shown = expect_unavailable(gw, tokens, user, (group,))
        assert "creds" not in shown and "nosuch" not in shown and "secret" not in shown
    with connect(gw, tokens) as conn:  # other grants keep working
        assert current_user(conn).startswith("v-")


def test_slow_vault_times_out(make_config, start_gateway, tmp_path, tokens):
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)  # accepts (in the backlog) and never answers
        (tmp_path / "t").write_text("s.never-used")
        cfg = make_config(
            vault={"url": f"http://127.0.0.1:{sink.getsockname()[1]}",
                   "token_file": str(tmp_path / "t"), "timeout_s": 1},
            connections=[vault_connection(make_config, GRANTS[:1])])
        gw = start_gateway(cfg)
        started = time.monotonic()
        expect_unavailable(gw, tokens)
        assert time.monotonic() - started < 4


def test_missing_token_file(vault_gateway, tokens, tmp_path):
    gw = vault_gateway()
    (tmp_path / "vault-token").unlink()
    # The token is read lazily: the first connect finds no file.
    expect_unavailable(gw, tokens)


# --- the gateway's own Vault token ----------------------------------------------------


def test_approle_login_outlives_its_tokens(vault_gateway, vault_up, tokens,
                                                     tmp_path, secrets_seen):
    c = vault_up.client()
    c.sys.create_or_update_policy(GATEWAY_POLICY, POLICY)
    if "approle/" not in c.sys.list_auth_methods()["data"]:
        c.sys.enable_auth_method("approle")
    # Tokens live 2 s and at most 3 s: the gateway must renew, then log in again
    # (or, at the latest, log in again when Vault refuses the expired token).
    c.auth.approle.create_or_update_approle("pgguard", token_policies=[GATEWAY_POLICY],
                                            token_ttl="2s", token_max_ttl="3s")
    role_id = c.auth.approle.read_role_id("pgguard")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("pgguard")["data"]["secret_id"]
    secrets_seen.append(secret_id)
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    gw = vault_gateway(token="unused", role_id_file=str(tmp_path / "role_id"),
                       secret_id_file=str(tmp_path / "secret_id"))
    with connect(gw, tokens) as conn:
        assert current_user(conn).startswith("v-")
        time.sleep(4.5)  # longer than the first token could live
    with connect(gw, tokens) as conn:
        assert current_user(conn).startswith("v-")
    holder = gw.gateway.credentials.vault
    assert isinstance(holder, VaultCredentials)
    token = holder._token.token
    secrets_seen.append(token)


def test_token_file_token_is_renewed(vault_gateway, vault_up, tokens):
    token = gateway_token(vault_up, ttl="2s")
    gw = vault_gateway(token=token)
    with connect(gw, tokens) as conn:
        assert current_user(conn).startswith("v-")
    time.sleep(3)
    ttl = vault_up.client().auth.token.lookup(token)["data"]["ttl"]
    assert ttl > 0  # without renewal it would be gone
    with connect(gw, tokens) as conn:
        assert current_user(conn).startswith("v-")


@pytest.mark.parametrize("reuse", ["session", "user"])
def test_clean_shutdown_revokes_leases(vault_gateway, tokens, app_db, secrets_seen, reuse):
    """A session still open (session) or a cached idle lease (user) is revoked when the
    gateway stops."""
    gw = vault_gateway(reuse=reuse, reuse_ttl_s=60)
    conn = connect(gw, tokens)
    role = current_user(conn)
    [(_, password, _)] = leases(gw)
    secrets_seen.append(password)
    if reuse == "user":
        conn.close()
    assert can_login(app_db, role, password)  # not revoked yet
    gw.stop()
    conn.close()
    assert wait_until(lambda: not can_login(app_db, role, password), timeout=5)


def test_lease_issued_after_the_client_gave_up_is_revoked(vault_gateway, tokens, app_db,
                                                          caplog):
    """The startup timeout fires while Vault is still issuing (its creation SQL sleeps):
    the lease it then issues is revoked at once instead of living until its TTL."""
    import dataclasses

    from harness.rawclient import RawClient, error_of

    gw = vault_gateway(timeout_s=10)
    cfg = gw.gateway.cfg  # sessions read the config when they start
    gw.gateway.cfg = dataclasses.replace(
        cfg, listen=dataclasses.replace(cfg.listen, startup_timeout_s=1.0))
    c = RawClient(gw.port)
    err = error_of(c.login("sam", tokens("sam", ["sloths"])))
    c.close()
    assert err is not None and "timed out" in err.message

    def events(name: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if f"event={name}" in r.getMessage() and "role=slow" in r.getMessage()]

    assert wait_until(lambda: bool(events("vault_lease_revoked")), 10), \
        events("vault_lease_issued")
    db_user = events("vault_lease_revoked")[0].split("db_user=")[1].split()[0]
    assert db_user in events("vault_lease_issued")[0]
    left = app_db.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{db_user}'")
    assert left == "0"
