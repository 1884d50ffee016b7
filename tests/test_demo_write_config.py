"""``pgguard demo --write-config DIR``: a configuration `check-config` accepts and
`pgguard serve` runs against the demo's PostgreSQL and OpenBao."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import psycopg
from harness.gateway import free_port
from test_demo import ROOT, start_demo, stop


def test_write_config_then_check_config_and_serve(tmp_path):
    target = tmp_path / "served"
    port = free_port()
    running = start_demo("--seconds", "120", "--write-config", str(target),
                         "--serve-port", str(port))
    serve = None
    try:
        path = target / "pgguard.toml"
        assert path.is_file()
        for name in ("vault-token", "mask-key", "audit-key"):
            mode = stat.S_IMODE(os.stat(target / "secrets" / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        check = subprocess.run([sys.executable, "-m", "pgguard", "check-config", str(path)],
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert check.returncode == 0, check.stderr
        assert f"listening on 127.0.0.1:{port}" in check.stdout
        log = open(tmp_path / "serve.log", "wb")
        serve = subprocess.Popen([sys.executable, "-m", "pgguard", "serve", "--config",
                                  str(path)], stdout=log, stderr=log, cwd=ROOT)
        dsn = running.dsn.replace(running.dsn.split("@")[1].split("/")[0],
                                  f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(dsn, password=running.token, autocommit=True,
                                       connect_timeout=5)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or serve.poll() is not None:
                    raise
                time.sleep(0.2)
        with conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
            assert user.startswith("v-")  # a Vault-issued role from the demo's OpenBao
            ssn = conn.execute("SELECT ssn FROM users ORDER BY id LIMIT 1").fetchone()[0]
            assert ssn.startswith("*") or "*" in ssn  # masked by the written rules
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(20)
        stop(running.proc)
