"""Checks a loaded configuration against the machine before anything listens.

:func:`check` opens every file the configuration names (key files, TLS certificates into
an ``SSLContext``, token files), tries writing in the recording folder, opens the
approvals store, and requires ``[identity]``; it returns every problem found rather than
stopping at the first, so one ``check-config`` run lists everything to fix. Nothing is
created or changed: a missing recording folder is fine when it could be created (the
recorder creates it at start), and a missing SQLite approvals file when its folder is
writable.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from .config import Config

__all__ = ["Problem", "approvals_store_problem", "check", "writable_dir_problem"]

STORE_CONNECT_TIMEOUT_S = 3


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that would stop the gateway: the configuration key and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"pgguard: {self.key}: {self.message}"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _readable(key: str, path: str | None, *, nonempty: bool = False) -> Problem | None:
    """A problem when *path* cannot be opened and read (or is empty, if *nonempty*)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(3)
    except OSError as exc:
        return Problem(key, f"cannot read {path}: {_why(exc)}")
    if nonempty and not data.strip():
        return Problem(key, f"{path} is empty")
    return None


def _ca_file(key: str, path: str | None) -> Problem | None:
    if not path:
        return None
    if (p := _readable(key, path)) is not None:
        return p
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        return Problem(key, f"{path} holds no usable CA certificate ({exc})")
    return None


def _tls_pair(cert_key: str, key_key: str, cert: str | None, key: str | None
              ) -> list[Problem]:
    if not (cert and key):
        return []
    found = [p for p in (_readable(cert_key, cert), _readable(key_key, key)) if p]
    if found:
        return found
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        return [Problem(cert_key, f"{cert} with {key} does not load as a certificate and "
                                  f"its private key ({exc.reason or exc})")]
    return []


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def writable_dir_problem(key: str, path: str, *, may_create: bool) -> Problem | None:
    """A problem when files cannot be created in *path* (or in the folder that would
    hold it, when it does not exist yet and *may_create*)."""
    target = path
    if not os.path.exists(path):
        if not may_create:
            return Problem(key, f"{path} does not exist")
        target = _nearest_existing(path)
    if not os.path.isdir(target):
        what = "is not a folder" if target == os.path.abspath(path) else \
            f"cannot be created: {target} is not a folder"
        return Problem(key, f"{path} {what}")
    try:
        # A real write, not os.access: root passes os.access on a read-only mount.
        with tempfile.TemporaryFile(dir=target, prefix=".pgguard-preflight-"):
            pass
    except OSError as exc:
        where = "" if target == path else f" (creating it in {target})"
        return Problem(key, f"cannot write in {path}{where}: {_why(exc)}")
    return None


def _sqlite_store(store: str) -> Problem | None:
    import sqlite3

    from .approvals import sqlite_path
    try:
        path = sqlite_path(store)
    except ValueError as exc:
        return Problem("approvals.store", str(exc))
    if os.path.exists(path):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=2)
            try:
                conn.execute("PRAGMA schema_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return Problem("approvals.store", f"cannot open {path}: {exc}")
        return None
    p = writable_dir_problem("approvals.store", os.path.dirname(os.path.abspath(path)),
                      may_create=False)
    return Problem("approvals.store", f"cannot create {path}: {p.message}") if p else None


def _postgres_store(store: str) -> Problem | None:
    import psycopg
    try:
        psycopg.conninfo.conninfo_to_dict(store)
    except psycopg.ProgrammingError as exc:
        return Problem("approvals.store", f"not a valid PostgreSQL DSN: {exc}")
    try:
        with psycopg.connect(store, connect_timeout=STORE_CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Problem("approvals.store", f"cannot connect: {first}")
    return None


def approvals_store_problem(store: str) -> Problem | None:
    """A problem when the approvals *store* (``sqlite:///`` or a DSN) cannot be opened."""
    return _sqlite_store(store) if store.startswith("sqlite:///") else _postgres_store(store)


def _env_set(key: str, name: str | None) -> Problem | None:
    if name and not os.environ.get(name, "").strip():
        return Problem(key, f"environment variable {name} is not set")
    return None


def check(cfg: Config) -> list[Problem]:
    """Everything in *cfg* that would make ``serve`` fail or refuse every client.

    Args:
        cfg: a configuration :func:`pgguard.config.load` accepted.

    Returns:
        The problems, in configuration order; empty when the gateway can start.
    """
    found: list[Problem | None] = []
    add = found.append
    found += _tls_pair("listen.tls_cert", "listen.tls_key", cfg.listen.tls_cert,
                       cfg.listen.tls_key)

    ident = cfg.identity
    if not (ident.issuer or ident.jwks_url):
        add(Problem("identity", "is required: set identity.issuer (or identity.jwks_url) "
                                "so clients' tokens can be verified"))
    add(_ca_file("identity.ca_file", ident.ca_file))

    v = cfg.vault
    if v.url:
        add(_readable("vault.token_file", v.token_file, nonempty=True))
        add(_env_set("vault.token_env", v.token_env if not v.token_file else None))
        add(_readable("vault.role_id_file", v.role_id_file, nonempty=True))
        add(_readable("vault.secret_id_file", v.secret_id_file, nonempty=True))
        add(_ca_file("vault.ca_file", v.ca_file))

    for i, conn in enumerate(cfg.connections):
        k = f"connections[{i}]"
        add(_ca_file(f"{k}.sslrootcert", conn.sslrootcert))
        add(_readable(f"{k}.sslcert", conn.sslcert))
        add(_readable(f"{k}.sslkey", conn.sslkey))
        if conn.user is not None:
            add(_env_set(f"{k}.password_env", conn.password_env))

    add(_readable("masking.hash_key_file", cfg.masking.hash_key_file, nonempty=True))

    if cfg.approvals.approver_groups:
        add(approvals_store_problem(cfg.approvals.store))

    rec = cfg.recording
    if rec.dir:
        add(_readable("recording.key_file", rec.key_file, nonempty=True))
        add(writable_dir_problem("recording.dir", rec.dir, may_create=True))
    return [p for p in found if p is not None]
