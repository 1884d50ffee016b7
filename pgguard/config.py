"""Configuration: one TOML file loaded into frozen dataclasses, validated at load.

Every error names the file and the key (``connections[0].grants[1].write``) so an
operator can find it. Secrets are never written in the file: only paths to files or
names of environment variables that hold them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

ACTIONS = ("allow", "review", "deny")
CATEGORIES = ("read", "write", "ddl", "privileged", "txn", "unknown")
DEFAULT_ACTIONS = {
    "read": "allow",
    "txn": "allow",
    "write": "review",
    "ddl": "review",
    "privileged": "deny",
    "unknown": "deny",
}
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
STRATEGIES = ("redact", "partial", "hash", "null")
DETECTORS = ("email", "ssn", "card", "phone", "iban", "secret")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 6432
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plaintext: bool = False
    startup_timeout_s: float = 10.0
    max_message_size: int = 64 * 1024 * 1024
    max_statement_bytes: int = 16 * 1024 * 1024
    max_startup_size: int = 10000
    max_clients: int = 1000


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    issuer: str | None = None
    audience: str | tuple[str, ...] | None = None
    jwks_url: str | None = None
    user_claim: str = "sub"
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: float = 0.0
    jwks_cache_s: float = 300.0
    fetch_timeout_s: float = 5.0
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class VaultConfig:
    url: str | None = None
    mount: str = "database"
    token_file: str | None = None
    token_env: str | None = None
    role_id_file: str | None = None
    secret_id_file: str | None = None
    approle_mount: str = "approle"
    ca_file: str | None = None
    reuse: str = "session"
    reuse_ttl_s: float = 300.0
    timeout_s: float = 5.0
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class GrantConfig:
    groups: tuple[str, ...]
    vault_role: str | None = None
    actions: dict[str, str] = field(default_factory=dict)
    # Guardrails (docs/guardrails.md); None = no limit. A session takes the strictest
    # value over the user's matching grants.
    read_only: bool | None = None   # None: true when write, ddl and privileged are deny
    statement_timeout_s: float | None = None
    idle_in_transaction_timeout_s: float | None = None
    max_session_s: float | None = None
    max_statements_per_minute: int | None = None
    max_rows: int | None = None
    max_result_bytes: int | None = None

    def action(self, category: str) -> str:
        return self.actions.get(category, DEFAULT_ACTIONS[category])

    @property
    def is_read_only(self) -> bool:
        """``read_only``, or its default: nothing but reads (and transactions) allowed."""
        if self.read_only is not None:
            return self.read_only
        return all(self.action(c) == "deny" for c in ("write", "ddl", "privileged"))


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    name: str
    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    user: str | None = None
    password_env: str | None = None
    connect_timeout_s: float = 10.0
    grants: tuple[GrantConfig, ...] = ()

    @property
    def database(self) -> str:
        return self.dbname or self.name


@dataclass(frozen=True, slots=True)
class MaskRule:
    columns: tuple[str, ...]
    strategy: str = "redact"
    keep: int = 4


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    exempt_groups: tuple[str, ...] = ()
    detectors: tuple[str, ...] = DETECTORS
    hash_key_file: str | None = None
    deny_predicates: bool = False
    rules: tuple[MaskRule, ...] = ()
    # Whether the file has a [masking] section at all: without one, the default detector
    # list stays off so gateways that mask nothing keep the raw byte path.
    present: bool = False


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    store: str = "sqlite:///pgguard-approvals.db"
    approver_groups: tuple[str, ...] = ()
    timeout_s: float = 300.0
    poll_interval_s: float = 0.5


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: who may run the console's operator commands.

    ``groups`` defaults to ``approvals.approver_groups``; an empty tuple lets nobody.
    """

    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    dir: str | None = None
    key_file: str | None = None
    max_rows: int = 100
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_s: float = 3600.0
    fsync: str = "batch"
    fsync_interval_s: float = 0.2
    queue_size: int = 10000


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus and probe endpoint; off unless the section exists."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9930
    check_timeout_s: float = 2.0

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: the log line format and level (``--log-format``/``--log-level`` win)."""

    format: str = "text"
    level: str = "info"


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class Config:
    path: str | None = None
    listen: ListenConfig = field(default_factory=ListenConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    vault: VaultConfig = field(default_factory=VaultConfig)
    connections: tuple[ConnectionConfig, ...] = ()
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)

    def connection(self, name: str) -> ConnectionConfig | None:
        for conn in self.connections:
            if conn.name == name:
                return conn
        return None


class _Section:
    """Typed reads from one TOML table that remember the key path for errors."""

    def __init__(self, data: Any, key: str, path: str | None):
        if not isinstance(data, dict):
            raise ConfigError(key, "must be a table", path)
        self.data = dict(data)
        self.key = key
        self.path = path
        self.used: set[str] = set()

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self._k(name), message, self.path)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if bool not in kinds and isinstance(value, bool):
            raise self.error(name, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {_kind_name(kinds)}, got {type(value).__name__}")
        return value

    def get_str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, (list, str), None)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{i}]", "must be a string")
        return tuple(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def positive(self, name: str, kind: type, default: Any) -> Any:
        value = self.get(name, kind, default)
        if value is not None and value <= 0:
            raise self.error(name, "must be greater than zero")
        return value

    def sub(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.data.get(name, {}), self._k(name), self.path)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _listen(s: _Section) -> ListenConfig:
    cfg = ListenConfig(
        host=s.get("host", str, "127.0.0.1"),
        port=s.get("port", int, 6432),
        tls_cert=s.get("tls_cert", str),
        tls_key=s.get("tls_key", str),
        allow_plaintext=s.get("allow_plaintext", bool, False),
        startup_timeout_s=s.positive("startup_timeout_s", float, 10.0),
        max_message_size=s.positive("max_message_size", int, 64 * 1024 * 1024),
        max_statement_bytes=s.positive("max_statement_bytes", int, 16 * 1024 * 1024),
        max_startup_size=s.positive("max_startup_size", int, 10000),
        max_clients=s.positive("max_clients", int, 1000),
    )
    if not 0 <= cfg.port <= 65535:
        raise s.error("port", "must be between 0 and 65535")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise s.error("tls_key" if cfg.tls_cert else "tls_cert",
                      "tls_cert and tls_key must be given together")
    for name in ("tls_cert", "tls_key"):
        value = getattr(cfg, name)
        if value and not os.path.isfile(value):
            raise s.error(name, f"file not found: {value}")
    s.finish()
    return cfg


def _identity(s: _Section) -> IdentityConfig:
    audience = s.get("audience", (str, list))
    if isinstance(audience, list):
        audience = s.get_str_list("audience")
    algorithms = s.get_str_list("algorithms", ("RS256", "ES256"))
    allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
               "ES512", "EdDSA"}
    for i, alg in enumerate(algorithms):
        if alg not in allowed:
            # HS* would let anyone holding the public key forge tokens; none is no signature.
            raise s.error(f"algorithms[{i}]",
                          f"{alg!r} is not an allowed asymmetric algorithm "
                          f"({', '.join(sorted(allowed))})")
    if not algorithms:
        raise s.error("algorithms", "must name at least one algorithm")
    cfg = IdentityConfig(
        issuer=s.get("issuer", str),
        audience=audience,
        jwks_url=s.get("jwks_url", str),
        user_claim=s.get("user_claim", str, "sub"),
        groups_claim=s.get("groups_claim", str, "groups"),
        algorithms=algorithms,
        leeway_s=s.get("leeway_s", float, 0.0),
        jwks_cache_s=s.positive("jwks_cache_s", float, 300.0),
        fetch_timeout_s=s.positive("fetch_timeout_s", float, 5.0),
        ca_file=s.get("ca_file", str),
    )
    s.finish()
    return cfg


def _vault(s: _Section) -> VaultConfig:
    cfg = VaultConfig(
        url=s.get("url", str),
        mount=s.get("mount", str, "database"),
        token_file=s.get("token_file", str),
        token_env=s.get("token_env", str),
        role_id_file=s.get("role_id_file", str),
        secret_id_file=s.get("secret_id_file", str),
        approle_mount=s.get("approle_mount", str, "approle"),
        ca_file=s.get("ca_file", str),
        reuse=s.choice("reuse", ("session", "user"), "session"),
        reuse_ttl_s=s.positive("reuse_ttl_s", float, 300.0),
        timeout_s=s.positive("timeout_s", float, 5.0),
        namespace=s.get("namespace", str),
    )
    if bool(cfg.role_id_file) != bool(cfg.secret_id_file):
        raise s.error("secret_id_file" if cfg.role_id_file else "role_id_file",
                      "role_id_file and secret_id_file must be given together (AppRole)")
    if cfg.url and not (cfg.token_file or cfg.token_env or cfg.role_id_file):
        raise s.error("token_file", "vault.url needs token_file, token_env or "
                                    "role_id_file + secret_id_file")
    if "token" in s.data or "secret_id" in s.data or "password" in s.data:
        bad = next(k for k in ("token", "secret_id", "password") if k in s.data)
        raise s.error(bad, "secrets are never written in the configuration; "
                           "use token_file, token_env or role_id_file/secret_id_file")
    s.finish()
    return cfg


def _grant(s: _Section) -> GrantConfig:
    groups = s.get_str_list("groups")
    if not groups:
        raise s.error("groups", "must name at least one group ('*' for everyone)")
    actions = {}
    for category in CATEGORIES:
        if category in s.data:
            actions[category] = s.choice(category, ACTIONS, DEFAULT_ACTIONS[category])
    timeouts = {}
    for key in ("statement_timeout_s", "idle_in_transaction_timeout_s"):
        value = s.positive(key, float, None)
        if value is not None and value * 1000 > 2**31 - 1:
            # PostgreSQL's limit for these settings (milliseconds in an int).
            raise s.error(key, "must be at most 2147483 seconds")
        timeouts[key] = value
    grant = GrantConfig(
        groups=groups, vault_role=s.get("vault_role", str), actions=actions,
        read_only=s.get("read_only", bool),
        max_session_s=s.positive("max_session_s", float, None),
        max_statements_per_minute=s.positive("max_statements_per_minute", int, None),
        max_rows=s.positive("max_rows", int, None),
        max_result_bytes=s.positive("max_result_bytes", int, None),
        **timeouts)
    s.finish()
    return grant


def _connection(s: _Section, vault: VaultConfig) -> ConnectionConfig:
    name = s.get("name", str)
    if not name:
        raise s.error("name", "is required")
    if name == "pgguard":
        raise s.error("name", "'pgguard' is reserved for the admin console")
    grants_raw = s.get("grants", list, [])
    s.used.add("grants")
    grants = tuple(_grant(_Section(g, f"{s.key}.grants[{i}]", s.path))
                   for i, g in enumerate(grants_raw))
    if "password" in s.data:
        raise s.error("password", "passwords are never written in the configuration; "
                                  "use password_env (development only) or vault_role")
    cfg = ConnectionConfig(
        name=name,
        host=s.get("host", str, "127.0.0.1"),
        port=s.get("port", int, 5432),
        dbname=s.get("dbname", str),
        sslmode=s.choice("sslmode", SSLMODES, "prefer"),
        sslrootcert=s.get("sslrootcert", str),
        sslcert=s.get("sslcert", str),
        sslkey=s.get("sslkey", str),
        user=s.get("user", str),
        password_env=s.get("password_env", str),
        connect_timeout_s=s.positive("connect_timeout_s", float, 10.0),
        grants=grants,
    )
    if cfg.sslmode in ("verify-ca", "verify-full") and not cfg.sslrootcert:
        raise s.error("sslrootcert", f"is required with sslmode = {cfg.sslmode!r}")
    for i, grant in enumerate(grants):
        if grant.vault_role is None and cfg.user is None:
            raise ConfigError(f"{s.key}.grants[{i}].vault_role",
                              "is required unless the connection has static credentials "
                              "(user and password_env)", s.path)
        if grant.vault_role is not None and vault.url is None:
            raise ConfigError("vault.url", f"is required: {s.key}.grants[{i}] names a "
                              "vault_role", s.path)
    s.finish()
    return cfg


def _masking(s: _Section, present: bool) -> MaskingConfig:
    detectors = s.get_str_list("detectors", DETECTORS)
    for i, d in enumerate(detectors):
        if d not in DETECTORS:
            raise s.error(f"detectors[{i}]", f"unknown detector {d!r} "
                                             f"(one of {', '.join(DETECTORS)})")
    rules_raw = s.get("rules", list, [])
    rules = []
    for i, raw in enumerate(rules_raw):
        r = _Section(raw, f"{s.key}.rules[{i}]", s.path)
        columns = r.get_str_list("columns")
        if not columns:
            raise r.error("columns", "must name at least one column")
        for j, col in enumerate(columns):
            if not 1 <= col.count(".") <= 2 or any(not p for p in col.split(".")):
                raise r.error(f"columns[{j}]",
                              f"{col!r} must be [schema.]table.column (globs allowed)")
        keep = r.get("keep", int, 4)
        if keep < 0:
            raise r.error("keep", "must not be negative")
        rules.append(MaskRule(columns=columns,
                              strategy=r.choice("strategy", STRATEGIES, "redact"), keep=keep))
        r.finish()
    cfg = MaskingConfig(
        exempt_groups=s.get_str_list("exempt_groups"),
        detectors=detectors,
        hash_key_file=s.get("hash_key_file", str),
        deny_predicates=s.get("deny_predicates", bool, False),
        rules=tuple(rules),
        present=present,
    )
    s.finish()
    return cfg


def _approvals(s: _Section) -> ApprovalsConfig:
    store = s.get("store", str, "sqlite:///pgguard-approvals.db")
    if not (store.startswith("sqlite:///") or store.startswith("postgresql://")
            or store.startswith("postgres://")):
        raise s.error("store", "must be sqlite:///PATH or a postgresql:// DSN")
    cfg = ApprovalsConfig(
        store=store,
        approver_groups=s.get_str_list("approver_groups"),
        timeout_s=s.positive("timeout_s", float, 300.0),
        poll_interval_s=s.positive("poll_interval_s", float, 0.5),
    )
    s.finish()
    return cfg


def _admin(s: _Section, approvals: ApprovalsConfig) -> AdminConfig:
    explicit = "groups" in s.data
    groups = s.get_str_list("groups", approvals.approver_groups)
    for i, group in enumerate(groups if explicit else ()):
        if not group.strip():
            raise s.error(f"groups[{i}]", "must not be empty")
        if group == "*":
            # Grants read '*' as everyone; the console (KILL, BLOCK) must never be that.
            raise s.error(f"groups[{i}]", "'*' is not allowed here; name the groups")
    s.finish()
    return AdminConfig(groups=groups)


def _recording(s: _Section) -> RecordingConfig:
    cfg = RecordingConfig(
        dir=s.get("dir", str),
        key_file=s.get("key_file", str),
        max_rows=s.get("max_rows", int, 100),
        segment_max_bytes=s.positive("segment_max_bytes", int, 64 * 1024 * 1024),
        segment_max_age_s=s.positive("segment_max_age_s", float, 3600.0),
        fsync=s.choice("fsync", ("always", "batch", "never"), "batch"),
        fsync_interval_s=s.positive("fsync_interval_s", float, 0.2),
        queue_size=s.positive("queue_size", int, 10000),
    )
    if cfg.max_rows < 0:
        raise s.error("max_rows", "must not be negative")
    if cfg.dir and not cfg.key_file:
        raise s.error("key_file", "is required when recording.dir is set")
    s.finish()
    return cfg


def _metrics(s: _Section, present: bool) -> MetricsConfig:
    listen = s.get("listen", str, "127.0.0.1:9930")
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise s.error("listen", f"must be HOST:PORT (e.g. 127.0.0.1:9930); got {listen!r}")
    cfg = MetricsConfig(enabled=present, host=host, port=int(port_text),
                        check_timeout_s=s.positive("check_timeout_s", float, 2.0))
    s.finish()
    return cfg


def _log(s: _Section) -> LogConfig:
    cfg = LogConfig(format=s.choice("format", LOG_FORMATS, "text"),
                    level=s.choice("level", LOG_LEVELS, "info"))
    s.finish()
    return cfg


SECTIONS = ("listen", "identity", "vault", "connections", "masking", "approvals", "recording",
            "metrics", "log", "admin")


def parse(data: dict[str, Any], path: str | None = None) -> Config:
    """Validate a decoded TOML document.

    Raises:
        ConfigError: naming the first bad key.
    """
    root = _Section(data, "", path)
    listen = _listen(root.sub("listen"))
    identity = _identity(root.sub("identity"))
    vault = _vault(root.sub("vault"))
    conns_raw = root.get("connections", list, [])
    connections = tuple(_connection(_Section(c, f"connections[{i}]", path), vault)
                        for i, c in enumerate(conns_raw))
    seen: set[str] = set()
    for i, c in enumerate(connections):
        if c.name in seen:
            raise ConfigError(f"connections[{i}].name", f"duplicate connection {c.name!r}", path)
        seen.add(c.name)
    if connections and not identity.issuer and not identity.jwks_url:
        raise ConfigError("identity.issuer", "is required (or identity.jwks_url)", path)
    approvals = _approvals(root.sub("approvals"))
    cfg = Config(
        path=path,
        listen=listen,
        identity=identity,
        vault=vault,
        connections=connections,
        masking=_masking(root.sub("masking"), "masking" in data),
        approvals=approvals,
        recording=_recording(root.sub("recording")),
        metrics=_metrics(root.sub("metrics"), "metrics" in data),
        log=_log(root.sub("log")),
        admin=_admin(root.sub("admin"), approvals),
    )
    root.finish()
    return cfg


def load(path: str) -> Config:
    """Read and validate the TOML file at *path*.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key is invalid.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read: {exc.strerror}", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", str(exc), path) from None
    return parse(data, path)
