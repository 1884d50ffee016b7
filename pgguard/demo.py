"""``pgguard demo``: the whole product on one machine, in one command.

It starts, in a fresh temp dir,

* a throwaway PostgreSQL cluster (from the local server binaries) holding the database
  ``demo`` with sample PII (``pgguard/demo_data/pii_schema.sql``);
* an OpenBao dev server that is both the OIDC identity provider (it signs the users'
  tokens) and the issuer of short-lived PostgreSQL roles (database secrets engine);
* the gateway, in this process, with a sample policy: analysts read (PII masked),
  engineers write and ask for DDL, the dba group approves;

prints a DSN, tokens and copy-paste commands, runs until Ctrl-C, SIGTERM or
``--seconds``, and removes everything it started.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TextIO

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DATABASE = "demo"  # the connection name clients put in their DSN, and the real database
OWNER_ROLE = "demo_owner"  # owns the sample tables
READER_ROLE = "demo_reader"  # NOLOGIN role the read-only Vault roles are members of
READONLY_ROLE = "demo-readonly"
READWRITE_ROLE = "demo-readwrite"
#: Who gets a printed token, and their groups (the sample policy's three groups).
USERS = {"alice": ("analysts",), "bob": ("engineers",), "dana": ("dba",)}
#: Token lifetime: the longest the OpenBao OIDC key allows (its verification_ttl).
TOKEN_TTL = "24h"
TOKEN_TTL_TEXT = "24 hours"
GATEWAY_POLICY = "pgguard-demo-gateway"

ROLE_SQL = ("CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' "
            "VALID UNTIL '{{{{expiration}}}}' IN ROLE {member_of};")
# A read-write session may create objects (DDL a DBA approved); the role that owns them
# could not be dropped, so hand them to the owner first.
REVOKE_SQL = (f"REASSIGN OWNED BY \"{{{{name}}}}\" TO {OWNER_ROLE}; "
              "DROP OWNED BY \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";")


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


class _Stop(BaseException):
    """SIGTERM during set-up: unwinds it like Ctrl-C does."""


class _SigTerm:
    """SIGTERM before the gateway's own signal handling takes over.

    During set-up (blocking subprocess waits) it raises :class:`_Stop`; once trio runs
    it only records the request, which :func:`serve` honours as soon as it listens for
    signals itself (an exception raised inside trio's machinery could corrupt it).
    """

    def __init__(self) -> None:
        self.requested = False
        self.raise_now = True

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.raise_now:
            raise _Stop()


@dataclass
class Demo:
    """Everything one demo run started, so that :meth:`cleanup` can undo it.

    Attributes:
        workdir: the temp dir holding the cluster, OpenBao's log, keys, the policy file,
            the approvals store and the session recordings.
        port: the gateway port asked for (0: any free port).
    """

    workdir: str
    port: int
    pg: Any = None
    bao: Any = None
    config_path: str = ""
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    # --write-config: the folder with a config for `pgguard serve` against these services.
    served_config: str = ""
    served_port: int = 0
    _gateway_token_text: str = field(default="", repr=False)

    # --- set-up -------------------------------------------------------------------

    def setup(self) -> None:
        """Start PostgreSQL and OpenBao, load the sample data, write the policy.

        Raises:
            DemoError: a step failed (the message names it).
        """
        from .embedded import openbao, postgres

        pg_root = os.path.join(self.workdir, "pg")
        os.mkdir(pg_root)
        try:
            self.pg = postgres.init_cluster(pg_root, password=secrets.token_urlsafe(24),
                                            tie_to_parent=True)
            self.pg.start()
        except RuntimeError as exc:
            raise DemoError(f"PostgreSQL did not start: {exc}") from None
        try:
            self._load_data()
        except RuntimeError as exc:
            raise DemoError(f"loading the sample data failed: {exc}") from None
        bao_dir = os.path.join(self.workdir, "openbao")
        os.mkdir(bao_dir, 0o700)  # its log holds the dev root token
        try:
            self.bao = openbao.BaoServer(bao_dir, tie_to_parent=True)
            self.bao.start()
            self.bao.enable_database_secrets(
                self.pg, roles={READONLY_ROLE: ROLE_SQL.format(member_of=READER_ROLE),
                                READWRITE_ROLE: ROLE_SQL.format(member_of=OWNER_ROLE)},
                revocation={READONLY_ROLE: REVOKE_SQL, READWRITE_ROLE: REVOKE_SQL},
                default_ttl="10m", max_ttl="24h", database=DATABASE, db_name=DATABASE)
            for user, groups in USERS.items():
                self.tokens[user] = self.bao.issue_token(user, groups, ttl=TOKEN_TTL)
            gateway_token = self._gateway_token()
            self._gateway_token_text = gateway_token
        except Exception as exc:
            # RuntimeError from the process, hvac's VaultError from configuring it.
            raise DemoError(f"setting up OpenBao failed: {exc}") from None
        self.config_path = self._write_config(gateway_token)

    def _load_data(self) -> None:
        pg = self.pg
        pg.psql(f"CREATE ROLE {OWNER_ROLE} NOLOGIN; CREATE ROLE {READER_ROLE} NOLOGIN")
        pg.psql(f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}")
        schema = os.path.join(self.workdir, "pii_schema.sql")
        with open(schema, "wb") as f:
            f.write(schema_sql())
        os.chmod(schema, 0o644)
        # Created as the owner role, so the tables belong to it and not to the superuser.
        loader = os.path.join(self.workdir, "load.sql")
        with open(loader, "w") as f:
            f.write(f"SET ROLE {OWNER_ROLE};\n\\i {schema}\n")
        pg.psql_file(loader, dbname=DATABASE)
        pg.psql(f"GRANT CONNECT ON DATABASE {DATABASE} TO {READER_ROLE}; "
                f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}; "
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE}; "
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public "
                f"GRANT SELECT ON TABLES TO {READER_ROLE}", dbname=DATABASE)

    def _gateway_token(self) -> str:
        """An OpenBao token that can only read the two roles and renew/revoke leases."""
        client = self.bao.client()
        client.sys.create_or_update_policy(GATEWAY_POLICY, "\n".join([
            f'path "database/creds/{READONLY_ROLE}" {{ capabilities = ["read"] }}',
            f'path "database/creds/{READWRITE_ROLE}" {{ capabilities = ["read"] }}',
            'path "sys/leases/renew" { capabilities = ["update"] }',
            'path "sys/leases/revoke" { capabilities = ["update"] }',
        ]))
        resp = client.auth.token.create(policies=[GATEWAY_POLICY], ttl="768h",
                                        renewable=True)
        return resp["auth"]["client_token"]

    def _secret_file(self, name: str, content: str, root: str | None = None) -> str:
        path = os.path.join(root or self.workdir, "secrets", name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
        return path

    def _write_config(self, gateway_token: str) -> str:
        """Write the sample policy as a pgguard TOML file and validate it."""
        from . import config as config_mod

        path = os.path.join(self.workdir, "pgguard.toml")
        with open(path, "w") as f:
            f.write(render_config(
                port=self.port, issuer=self.bao.issuer, vault_url=self.bao.url,
                pg_port=self.pg.port,
                vault_token_file=self._secret_file("vault-token", gateway_token),
                mask_key_file=self._secret_file("mask-key", secrets.token_hex(32)),
                audit_key_file=self._secret_file("audit-key", secrets.token_hex(32)),
                approvals_db=os.path.join(self.workdir, "approvals.db"),
                sessions_dir=os.path.join(self.workdir, "sessions")))
        config_mod.load(path)  # a broken sample policy is a bug: fail here, loudly
        return path

    def write_config_to(self, directory: str, port: int) -> str:
        """Write a configuration for ``pgguard serve`` against this demo's PostgreSQL and
        OpenBao into *directory*, with its own key files (``secrets/``, mode 0600), its
        approvals store and recording folder; it works while the demo runs.

        Args:
            directory: created if missing; must not hold a ``pgguard.toml`` already.
            port: the port the served gateway listens on.

        Returns:
            The path of ``DIRECTORY/pgguard.toml``.

        Raises:
            DemoError: the folder cannot be written or already has a configuration.
        """
        from . import config as config_mod

        directory = os.path.abspath(directory)
        path = os.path.join(directory, "pgguard.toml")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if os.path.exists(path):
                raise DemoError(f"--write-config: {path} exists; give an empty folder")
            sessions = os.path.join(directory, "sessions")
            os.makedirs(sessions, mode=0o700, exist_ok=True)
            text = render_config(
                port=port, issuer=self.bao.issuer, vault_url=self.bao.url,
                pg_port=self.pg.port,
                vault_token_file=self._secret_file("vault-token", self._gateway_token_text,
                                                   directory),
                mask_key_file=self._secret_file("mask-key", secrets.token_hex(32), directory),
                audit_key_file=self._secret_file("audit-key", secrets.token_hex(32),
                                                 directory),
                approvals_db=os.path.join(directory, "approvals.db"), sessions_dir=sessions,
                note="for `pgguard serve --config` while `pgguard demo` runs (its "
                     "PostgreSQL and OpenBao go away when the demo stops)")
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise DemoError(f"--write-config: cannot write {directory}: {exc}") from None
        config_mod.load(path)
        self.served_config, self.served_port = path, port
        return path

    # --- clean-up -----------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop OpenBao and PostgreSQL and remove the temp dir; never raises.

        The gateway has stopped by now (and revoked its sessions' leases).
        """
        if self.bao is not None:
            try:
                if self.bao.running:
                    # Revokes what is left and closes the plugin's connections, so the
                    # cluster is not dropping roles while it shuts down.
                    self.bao.disable_database_secrets()
            except Exception as exc:
                log.warning("event=demo_cleanup step=vault_unmount error=%s", exc)
            try:
                self.bao.stop()
            except Exception as exc:
                log.warning("event=demo_cleanup step=openbao_stop error=%s", exc)
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as exc:
                log.warning("event=demo_cleanup step=postgres_stop error=%s", exc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def schema_sql() -> bytes:
    """The sample schema and data (``pgguard/demo_data/pii_schema.sql``)."""
    return resources.files("pgguard").joinpath("demo_data/pii_schema.sql").read_bytes()


def _toml(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return json.dumps(value)


def render_config(*, port: int, issuer: str, vault_url: str, pg_port: int,
                  vault_token_file: str, mask_key_file: str, audit_key_file: str,
                  approvals_db: str, sessions_dir: str,
                  note: str = "generated; removed when the demo stops") -> str:
    """The demo's sample policy as TOML.

    Args:
        port: gateway port (0: any free port).
        issuer: the OIDC issuer (OpenBao's identity endpoint).
        vault_url: OpenBao's API address.
        pg_port: the throwaway cluster's port.
        vault_token_file: file holding the gateway's OpenBao token.
        mask_key_file: HMAC key for the ``hash`` masking strategy.
        audit_key_file: HMAC key for the session recordings.
        approvals_db: sqlite file of the approvals store.
        sessions_dir: folder for the session recordings.
        note: what the header comment says about the file.

    Returns:
        The configuration text.
    """
    t = _toml
    return f"""\
# pgguard demo policy ({note})

[listen]
host = {t(HOST)}
port = {port}

[identity]
issuer = {t(issuer)}
audience = "pgguard"
user_claim = "username"
groups_claim = "groups"
algorithms = ["RS256"]

[vault]
url = {t(vault_url)}
mount = "database"
token_file = {t(vault_token_file)}

[[connections]]
name = {t(DATABASE)}
host = {t(HOST)}
port = {pg_port}
dbname = {t(DATABASE)}
sslmode = "disable"

  [[connections.grants]]
  groups = ["analysts"]
  vault_role = {t(READONLY_ROLE)}
  read = "allow"
  write = "deny"
  ddl = "deny"

  [[connections.grants]]
  groups = ["engineers"]
  vault_role = {t(READWRITE_ROLE)}
  write = "allow"
  ddl = "review"

[masking]
detectors = ["email", "ssn", "card", "phone", "iban", "secret"]
hash_key_file = {t(mask_key_file)}

  [[masking.rules]]
  columns = ["public.users.ssn"]
  strategy = "partial"
  keep = 4

  [[masking.rules]]
  columns = ["public.users.email"]
  strategy = "hash"

  [[masking.rules]]
  columns = ["public.users.card_number"]
  strategy = "partial"
  keep = 4

[approvals]
store = {t("sqlite:///" + approvals_db)}
approver_groups = ["dba"]
timeout_s = 300

[recording]
dir = {t(sessions_dir)}
key_file = {t(audit_key_file)}
"""


# --- pre-flight -----------------------------------------------------------------------


def preflight(port: int) -> None:
    """Check what the demo needs before starting anything.

    Args:
        port: the gateway port asked for (0: any free port).

    Raises:
        DemoError: PostgreSQL, OpenBao or hvac is missing, or the port is taken; the
            message says what to install or do.
    """
    from .embedded.postgres import PostgresNotFound, find_bindir

    try:
        find_bindir()
    except PostgresNotFound as exc:
        raise DemoError(str(exc)) from None
    try:
        import hvac  # noqa: F401

        from .embedded.openbao import BaoNotFound, find_bao
    except ImportError as exc:
        raise DemoError(f"the demo needs the Python package {exc.name or 'hvac'!r}; "
                        "install it with: pip install 'pgguard[demo]'") from None
    try:
        find_bao()
    except BaoNotFound as exc:
        raise DemoError(str(exc)) from None
    if port and not port_free(HOST, port):
        raise DemoError(f"port {port} on {HOST} is already in use (another pgguard, or "
                        "pgbouncer?); pick another with --port N, or --port 0 for any "
                        "free port")


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind *host*:*port* now (as trio's would: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


# --- running --------------------------------------------------------------------------


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Let clean-up finish: a second Ctrl-C would leave servers and files behind (it is
    bounded: every stop gives up after a timeout)."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


async def serve(cfg: Any, seconds: float | None, on_ready: Callable[[int], None],
                stop_requested: Callable[[], bool] = lambda: False) -> None:
    """Run the gateway until SIGINT, SIGTERM or *seconds* have passed.

    Args:
        cfg: the loaded configuration.
        seconds: stop after this long (None: run until a signal).
        on_ready: called with the bound port once the gateway listens.
        stop_requested: whether a stop signal arrived before this function took over
            signal handling.

    Raises:
        OSError: the gateway could not listen.
    """
    import trio

    from .app import build_gateway

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if stop_requested():
            return
        gateway = build_gateway(cfg)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(gateway.serve)
            on_ready(port)

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("event=demo_stopping signal=%s", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            if seconds is not None:
                await trio.sleep(seconds)
                nursery.cancel_scope.cancel()


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """*exc* or the first *kind* inside an exception group."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def print_banner(demo: Demo, port: int, out: TextIO = sys.stdout) -> None:
    """Print what runs where, the tokens and the commands to try.

    Args:
        demo: the started demo.
        port: the gateway's bound port.
        out: where to print.
    """
    def dsn(user: str, db: str = DATABASE) -> str:
        return f"postgresql://{user}@{HOST}:{port}/{db}?sslmode=disable"

    tokens = demo.tokens
    lines = [
        "pgguard demo is running. Ctrl-C stops it and removes everything it created.",
        "",
        f"  gateway     {HOST}:{port}  (policy: {demo.config_path})",
        f"  PostgreSQL  {HOST}:{demo.pg.port}  (throwaway cluster, database {DATABASE!r} "
        "with sample PII)",
        f"  OpenBao     {demo.bao.url}  (dev server: OIDC identity provider and "
        "database credentials)",
        f"  work dir    {demo.workdir}",
        "",
        f"DSN: {dsn('alice')}",
        "",
        f"Tokens (OIDC JWTs signed by OpenBao, valid for {TOKEN_TTL_TEXT}):",
        "  alice (analysts: read allowed, PII masked; writes and DDL denied):",
        f"    {tokens['alice']}",
        "  bob (engineers: writes allowed; DDL held for approval):",
        f"    {tokens['bob']}",
        "  dana (dba: approves held statements):",
        f"    {tokens['dana']}",
        "",
        "Try it as alice:",
        f"  PGPASSWORD={tokens['alice']} psql \"{dsn('alice')}\"",
        "  then: SELECT current_user;  SELECT name, ssn, email, card_number FROM users;"
        "  DROP TABLE users;",
        "",
        "Ask for DDL as bob (it waits for a DBA):",
        f"  PGPASSWORD={tokens['bob']} psql \"{dsn('bob')}\" -c "
        "'CREATE TABLE scratch (id int)'",
        "",
        "Approve it as dana, in another terminal:",
        f"  PGPASSWORD={tokens['dana']} pgguard approvals --gateway "
        f"\"{dsn('dana', 'pgguard')}\" --watch",
        "",
        "List the recorded sessions, then replay one:",
        f"  pgguard audit sessions --config {demo.config_path}",
        f"  pgguard audit replay --config {demo.config_path} SESSION",
        "",
    ]
    if demo.served_config:
        lines += [
            f"A configuration for your own gateway on port {demo.served_port}, against these "
            "services (while the demo runs):",
            f"  pgguard serve --config {demo.served_config}",
            "",
        ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def run_demo(args: argparse.Namespace) -> int:
    """``pgguard demo``: start everything, print how to connect, run, clean up.

    Args:
        args: ``port`` (0: any free port), ``seconds`` (None: until Ctrl-C or SIGTERM)
            and ``log_level`` (logging is set up by the caller).

    Returns:
        0 after a normal stop (Ctrl-C, SIGTERM, ``--seconds``), 1 when the demo could
        not start.
    """
    import trio

    from . import config as config_mod

    port = int(args.port)
    seconds = getattr(args, "seconds", None)
    try:
        preflight(port)
    except DemoError as exc:
        print(f"pgguard demo: {exc}", file=sys.stderr)
        return 1

    sigterm = _SigTerm()
    old_handler = signal.signal(signal.SIGTERM, sigterm)
    workdir = tempfile.mkdtemp(prefix="pgguard-demo-")
    if os.geteuid() == 0:
        # PostgreSQL runs as the postgres account and must get through to its folder.
        os.chmod(workdir, 0o711)
    demo = Demo(workdir=workdir, port=port)
    status = 0
    try:
        print("pgguard demo: starting PostgreSQL and OpenBao...", file=sys.stderr, flush=True)
        started = time.monotonic()
        demo.setup()
        write_dir = getattr(args, "write_config", None)
        if write_dir:
            demo.write_config_to(write_dir, getattr(args, "serve_port", None)
                                 or (port + 1 if port else 6433))
        cfg = config_mod.load(demo.config_path)
        log.info("event=demo_ready setup_s=%.1f", time.monotonic() - started)
        sigterm.raise_now = False
        try:
            trio.run(serve, cfg, seconds, lambda bound: print_banner(demo, bound),
                     lambda: sigterm.requested)
        except BaseException as exc:
            os_error = _find(exc, OSError)
            if os_error is None:
                raise
            print(f"pgguard demo: cannot listen on {HOST}:{port}: {os_error}",
                  file=sys.stderr)
            status = 1
    except (KeyboardInterrupt, _Stop):
        pass
    except DemoError as exc:
        print(f"pgguard demo: {exc}", file=sys.stderr)
        status = 1
    finally:
        with _signals_ignored():
            print("pgguard demo: stopping...", file=sys.stderr, flush=True)
            demo.cleanup()
        signal.signal(signal.SIGTERM, old_handler)
    print("pgguard demo: stopped; everything it created has been removed.", file=sys.stderr)
    return status
