"""KILL through the console ends a session whose credentials come from OpenBao: its
lease is revoked (the role can no longer log in) and SHOW LEASES never shows the id whole.
"""

from __future__ import annotations

import psycopg
from test_vault import (  # noqa: F401 (fixtures)
    GRANTS,
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


def test_kill_revokes_the_lease(vault_up, secrets_seen, make_config, start_gateway,  # noqa: F811
                                tokens, app_db, tmp_path):
    token = gateway_token(vault_up)
    secrets_seen.append(token)
    path = tmp_path / "vault-token"
    path.write_text(token + "\n")
    cfg = make_config(vault={"url": vault_up.url, "token_file": str(path), "timeout_s": 2},
                      connections=[vault_connection(make_config, GRANTS)],
                      admin={"groups": ["dba"]},
                      approvals={"store": f"sqlite:///{tmp_path}/a.db"})
    gw = start_gateway(cfg)
    conn = connect(gw, tokens)
    role = current_user(conn)
    [(db_user, password, lease_id)] = leases(gw)
    secrets_seen += [password, lease_id]
    assert can_login(app_db, role, password)
    admin = psycopg.connect(gw.dsn("alice", dbname="pgguard"),
                            password=tokens("alice", ["dba"]), autocommit=True)
    with admin.cursor() as cur:
        cur.execute("SHOW LEASES")
        shown = cur.fetchall()
    assert len(shown) == 1 and shown[0][1] == "vault" and shown[0][4] == role
    assert shown[0][0] != lease_id and lease_id not in str(shown)
    assert shown[0][0].startswith("database/creds/ro/")
    with admin.cursor() as cur:
        cur.execute("SHOW SESSIONS")
        sid = [r[0] for r in cur.fetchall() if r[1] == "alice"][0]
    admin.execute(f"KILL '{sid}' 'lease test'")
    assert wait_until(lambda: not can_login(app_db, role, password), timeout=5)
    try:
        conn.execute("SELECT 1")
        raise AssertionError("the killed session still works")
    except psycopg.OperationalError as exc:
        assert "lease test" in str(exc)
    admin.close()
