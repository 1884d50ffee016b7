"""Run a real pgguard gateway for tests: in a thread of this process, or as `pgguard serve`."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import tomli_w
import trio

from pgguard import config as config_mod

APP_DB = "app"
APP_USER = "app_owner"
APP_PASSWORD = "app-owner-test-pass"
APP_PASSWORD_ENV = "PGGUARD_TEST_APP_PASSWORD"


def base_config(pg, identity: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A configuration dict: one connection 'appdb' with static credentials and grants.

    Groups: analysts (read only), engineers (read/write, ddl review), admins (everything
    but privileged), owners (all allowed, for driver tests that create objects).
    """
    os.environ[APP_PASSWORD_ENV] = APP_PASSWORD
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0, "startup_timeout_s": 5},
        "identity": dict(identity),
        "connections": [{
            "name": "appdb",
            "host": pg.host,
            "port": pg.port,
            "dbname": APP_DB,
            "sslmode": "disable",
            "user": APP_USER,
            "password_env": APP_PASSWORD_ENV,
            "grants": [
                {"groups": ["analysts"], "read": "allow", "write": "deny", "ddl": "deny"},
                {"groups": ["engineers"], "write": "allow", "ddl": "review"},
                {"groups": ["owners"], "write": "allow", "ddl": "allow", "txn": "allow",
                 "unknown": "allow"},
            ],
        }],
    }
    for name, value in sections.items():
        if name == "connections":
            cfg["connections"] = value
        else:
            cfg.setdefault(name, {}).update(value)
    return cfg


def prepare_app_database(pg) -> None:
    """Create the application role and database the gateway logs into."""
    exists = pg.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}'")
    if not exists:
        pg.psql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}' CREATEROLE")
        pg.psql(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")
        pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric);"
                "INSERT INTO accounts SELECT g, 'owner' || g, g * 10 FROM generate_series(1, 100) g;"
                f"ALTER TABLE accounts OWNER TO {APP_USER};", dbname=APP_DB)


class ThreadGateway:
    """A Gateway running under trio.run in a background thread."""

    def __init__(self, cfg_dict: dict[str, Any], attach=None):
        self.cfg_dict = copy.deepcopy(cfg_dict)
        self.cfg = config_mod.parse(self.cfg_dict, "<test>")
        self.attach = attach
        self.port: int | None = None
        self.gateway = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> ThreadGateway:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("gateway did not start within 30 s")
        if self.error:
            raise self.error
        return self

    def _run(self) -> None:
        from pgguard.app import build_gateway

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            gw = build_gateway(self.cfg)
            if self.attach:
                self.attach(gw)
            self.gateway = gw
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as n:
                    self.port = await n.start(gw.serve)
                    self._started.set()

        try:
            trio.run(main)
        except BaseException as exc:  # surfaced to the test through start()/stop()
            self.error = exc
        finally:
            self._started.set()

    def run_sync(self, fn, *args):
        """Run *fn* in the gateway's trio thread (e.g. to inspect its sessions)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None:
            try:
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(20)

    def dsn(self, user: str, dbname: str = "appdb", **extra: Any) -> str:
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}",
                 "sslmode=disable connect_timeout=10"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def url(self, user: str, dbname: str = "appdb") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessGateway:
    """`pgguard serve --config FILE` as a subprocess, for CLI-level and crash tests."""

    def __init__(self, cfg_dict: dict[str, Any], workdir: str):
        self.cfg_dict = copy.deepcopy(cfg_dict)
        if not self.cfg_dict["listen"].get("port"):
            self.cfg_dict["listen"]["port"] = free_port()
        self.port = self.cfg_dict["listen"]["port"]
        self.path = os.path.join(workdir, "pgguard.toml")
        with open(self.path, "wb") as f:
            tomli_w.dump(self.cfg_dict, f)
        self.log_path = os.path.join(workdir, "pgguard.log")
        self.proc: subprocess.Popen | None = None
        self.command = [sys.executable, "-m", "pgguard", "serve", "--config", self.path,
                        "--log-level", "debug"]

    def start(self) -> ProcessGateway:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgguard serve exited: {self.read_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pgguard serve did not listen within 30 s")

    def read_log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int | None = None) -> None:
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def dsn(self, user: str, dbname: str = "appdb") -> str:
        return (f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} "
                f"sslmode=disable connect_timeout=10")
