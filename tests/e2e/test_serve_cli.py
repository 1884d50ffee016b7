"""`pgguard serve` as a process: SIGHUP reloads policy without dropping sessions;
SIGTERM shuts down cleanly."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
import tomli_w
from harness.gateway import ProcessGateway

pytestmark = pytest.mark.usefixtures("app_db")


def test_sighup_reloads_policy_without_dropping_sessions(make_config, tokens, tmp_path):
    gw = ProcessGateway(make_config(), str(tmp_path)).start()
    try:
        with psycopg.connect(gw.dsn("rita"), password=tokens("rita", ["analysts"]),
                             autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] >= 100
            cfg = dict(gw.cfg_dict)
            cfg["connections"][0]["grants"][0]["read"] = "deny"
            with open(gw.path, "wb") as f:
                tomli_w.dump(cfg, f)
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            refused = False
            while time.monotonic() < deadline and not refused:
                try:
                    conn.execute("SELECT 1 FROM accounts LIMIT 1")
                    time.sleep(0.2)
                except psycopg.errors.InsufficientPrivilege as exc:
                    refused = "read statement" in str(exc)
            assert refused, "the reloaded policy never applied"
            # The session survived the reload.
            assert conn.execute("SHOW server_version").fetchone()
    finally:
        gw.stop()
    assert gw.proc.returncode == 0


def test_sighup_with_a_broken_file_keeps_the_running_policy(make_config, tokens, tmp_path):
    gw = ProcessGateway(make_config(), str(tmp_path)).start()
    try:
        with open(gw.path, "w") as f:
            f.write("[listen\n")
        gw.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        with psycopg.connect(gw.dsn("rita"), password=tokens("rita", ["analysts"])) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert "reload_failed" in gw.read_log()
    finally:
        gw.stop()
