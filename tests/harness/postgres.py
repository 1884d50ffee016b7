"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, SCRAM on TCP."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

SUPERUSER = "postgres"
SUPERPASS = "postgres-test-pass"


def find_bindir() -> str:
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        if os.path.exists(os.path.join(out, "initdb")) and os.path.exists(
                os.path.join(out, "postgres")):
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    for c in reversed(candidates):
        if os.path.exists(os.path.join(c, "postgres")):
            return c
    raise RuntimeError("PostgreSQL binaries not found (pg_config --bindir or /usr/lib/postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    bindir: str
    datadir: str
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    superuser: str = SUPERUSER
    password: str = SUPERPASS
    run_as: dict | None = None

    def dsn(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        user = user or self.superuser
        password = password if password is not None else self.password
        return (f"host={self.host} port={self.port} dbname={dbname} user={user} "
                f"password={password} sslmode=disable connect_timeout=10")

    def bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        res = subprocess.run(
            [self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", dbname,
             "-c", sql],
            capture_output=True, text=True, env=env, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def start(self, extra_conf: str = "") -> None:
        log_path = os.path.join(self.datadir, "..", "postgres.log")
        log = open(log_path, "ab")
        if self.run_as:
            os.chown(log_path, self.run_as["user"], self.run_as["group"])
        self.proc = subprocess.Popen(
            [self.bin("postgres"), "-D", self.datadir, "-p", str(self.port),
             "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.datadir}",
             "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
             "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, **(self.run_as or {}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start; see postgres.log")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                res = subprocess.run([self.bin("pg_isready"), "-h", self.host, "-p",
                                      str(self.port)], capture_output=True, timeout=10)
                if res.returncode == 0:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("postgres did not start within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # Fast shutdown: don't wait for clients such as OpenBao's connection pool.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def create_cluster(root: str | None = None, ssl_cert: str | None = None,
                   ssl_key: str | None = None) -> PgCluster:
    """initdb a new cluster with SCRAM auth on TCP and start it on a free port."""
    bindir = find_bindir()
    root = root or tempfile.mkdtemp(prefix="pgguard-pg-")
    datadir = os.path.join(root, "data")
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as f:
        f.write(SUPERPASS)
    cmd = [os.path.join(bindir, "initdb"), "-D", datadir, "-U", SUPERUSER,
           "--pwfile", pwfile, "-A", "scram-sha-256", "--auth-local=trust",
           "-E", "UTF8", "--locale=C", "--no-sync"]
    kwargs = {}
    if os.geteuid() == 0:
        # initdb refuses to run as root: drop to the nobody-like account that owns the dir.
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed: {res.stderr}")
    conf_lines = ["password_encryption = 'scram-sha-256'"]
    if ssl_cert and ssl_key:
        for src, name in ((ssl_cert, "server.crt"), (ssl_key, "server.key")):
            dst = os.path.join(datadir, name)
            shutil.copy(src, dst)
            os.chmod(dst, 0o600)
            if kwargs:
                os.chown(dst, kwargs["user"], kwargs["group"])
        conf_lines += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
    with open(os.path.join(datadir, "postgresql.conf"), "a") as f:
        f.write("\n".join(conf_lines) + "\n")
    with open(os.path.join(datadir, "pg_hba.conf"), "w") as f:
        f.write("local all all trust\n"
                "host all md5user 127.0.0.1/32 md5\n"
                "host all pwuser 127.0.0.1/32 password\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n")
    cluster = PgCluster(bindir=bindir, datadir=datadir, port=free_port(), run_as=kwargs or None)
    cluster.start()
    return cluster
