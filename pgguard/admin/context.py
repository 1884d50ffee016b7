"""What the console's commands get from the gateway: typed snapshots and a few actions.

The gateway implements :class:`ConsoleContext` (one per console connection); the commands
in :mod:`.commands` read only what is here. Snapshots are frozen dataclasses made when the
command asks (``sessions()`` etc. are called once per command), so a command never holds
a live session object. All times are timezone-aware UTC :class:`datetime` values; the
console prints them in ISO 8601. Durations are seconds (float), sizes bytes (int).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..approvals import Approvals, Blocks
from ..config import Config

#: The states a client session can be in, as ``SHOW SESSIONS`` prints them.
SESSION_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
                  "held")
#: The states of an upstream connection, as ``SHOW SERVERS`` prints them.
SERVER_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
                 "connecting", "closing")


class Identity(Protocol):
    """Who is at the console, as the gateway authenticated them."""

    user: str
    groups: Sequence[str]


@dataclass(frozen=True, slots=True)
class SessionView:
    """One live client session (not the console connection asking, unless it wants to).

    Attributes:
        id: the session id (what ``KILL`` takes; ``secrets.token_hex(8)`` today).
        user: the authenticated user (from the token's user claim).
        groups: the user's groups from the token.
        connection: the ``[[connections]]`` name the client asked for (its database
            name); ``"pgguard"`` for a console session.
        client: the client's address, ``host:port`` (or the Unix socket path).
        state: one of :data:`SESSION_STATES`: ``active`` while a statement runs upstream,
            ``held`` while a statement waits for approval, ``idle`` / ``idle in
            transaction`` / ``idle in transaction (aborted)`` between statements (from the
            last ReadyForQuery status I / T / E).
        started_at: when the client connected (UTC).
        statement: the statement running or held now (its SQL text as the client sent
            it, before masking of results); None when idle.
        statement_started_at: when that statement started (UTC); None when idle.
        request_id: the approval request a ``held`` statement waits on, else None.
    """

    id: str
    user: str
    groups: tuple[str, ...]
    connection: str
    client: str
    state: str
    started_at: datetime
    statement: str | None = None
    statement_started_at: datetime | None = None
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class ServerView:
    """One upstream (gateway → PostgreSQL) connection.

    Attributes:
        session_id: the client session it serves.
        connection: the ``[[connections]]`` name.
        backend_pid: PostgreSQL's backend process id (from BackendKeyData); None while
            connecting.
        server: the upstream address, ``host:port``.
        user: the database role it logged in as (a Vault-issued name or the static
            user; never a password).
        state: one of :data:`SERVER_STATES`.
        connected_at: when the upstream connection was made (UTC).
        tls: whether the upstream connection is encrypted.
    """

    session_id: str
    connection: str
    backend_pid: int | None
    server: str
    user: str
    state: str
    connected_at: datetime
    tls: bool = False


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One set of database credentials the gateway holds (a Vault lease or static).

    The console never prints ``lease_id`` in full (see ``commands.short_lease_id``); the
    gateway passes it whole so the console decides how much shows.

    Attributes:
        lease_id: the Vault lease id (``MOUNT/creds/ROLE/XXXX``); ``""`` for static
            credentials.
        source: ``vault`` or ``static``.
        role: the Vault role (``vault_role``), None for static credentials.
        connection: the ``[[connections]]`` name.
        user: the database role the credentials are for.
        sessions: ids of the client sessions using it (several when ``vault.reuse =
            "user"`` shares it).
        expires_at: when it expires unless renewed (UTC); None when it does not expire.
        renewable: whether Vault lets the gateway renew it.
    """

    lease_id: str
    source: str
    role: str | None
    connection: str
    user: str
    sessions: tuple[str, ...]
    expires_at: datetime | None
    renewable: bool


@dataclass(frozen=True, slots=True)
class StatsView:
    """Counters of one ``[[connections]]`` entry since this gateway process started.

    Attributes:
        connection: the ``[[connections]]`` name.
        sessions: client sessions open now.
        sessions_total: client sessions started since the process started.
        allowed: statements the policy allowed (run straight away).
        held: statements held for approval (whatever the decision).
        refused: statements the policy refused (``deny``), not counting held ones.
        rows: result rows sent to clients.
        bytes_received: bytes received from clients.
        bytes_sent: bytes sent to clients.
        mean_statement_s: mean time of the statements that ran upstream, in seconds
            (from the statement's start to its CommandComplete/ErrorResponse, approval
            waits excluded); None when none ran.
        p99_statement_s: their 99th percentile, in seconds (over a window or histogram
            the gateway chooses); None when none ran.
    """

    connection: str
    sessions: int
    sessions_total: int
    allowed: int
    held: int
    refused: int
    rows: int
    bytes_received: int
    bytes_sent: int
    mean_statement_s: float | None
    p99_statement_s: float | None


class ConsoleContext(Protocol):
    """What the console needs from the gateway, and nothing more.

    One object per console connection. Who may run what is decided by the commands from
    ``identity.groups``, ``config.admin.groups`` and ``approvals.cfg.approver_groups``;
    the context itself checks nothing.
    """

    @property
    def identity(self) -> Identity:
        """The authenticated console user."""
        ...

    @property
    def approvals(self) -> Approvals | None:
        """The approvals service, or None when approvals are not configured.

        Only ``SHOW APPROVALS``, ``SHOW APPROVAL``, ``APPROVE`` and ``DENY`` need it.
        """
        ...

    @property
    def blocks(self) -> Blocks | None:
        """The kill switch's blocks (in the approvals store), or None when no store is open.

        Open it even without approver groups (:meth:`Blocks.open`); the gateway also runs
        :meth:`Blocks.watch` and checks :meth:`Blocks.is_blocked` at session start.
        """
        ...

    @property
    def secret_key(self) -> int:
        """The key sent in BackendKeyData."""
        ...

    @property
    def config(self) -> Config:
        """The configuration in effect now (the one the latest successful reload loaded)."""
        ...

    def sessions(self) -> Iterable[SessionView]:
        """The live client sessions of this gateway process (ended ones excluded)."""
        ...

    def servers(self) -> Iterable[ServerView]:
        """The open upstream connections of this gateway process."""
        ...

    def leases(self) -> Iterable[LeaseView]:
        """The credentials this gateway process holds now (one per lease, shared or not)."""
        ...

    def stats(self) -> Iterable[StatsView]:
        """One entry per configured connection (zeros included), in configuration order."""
        ...

    async def reload(self) -> str:
        """Reload the configuration file, as SIGHUP does, and say what changed.

        Returns:
            A one-line summary for the operator (e.g. ``"reloaded /etc/pgguard.toml: 2
            connections, policy of appdb changed"``).

        Raises:
            ConfigError: the file is bad; nothing changed (the console reports it, F0000).
        """
        ...

    async def kill(self, session_id: str, reason: str) -> bool:
        """End the client session *session_id*: FATAL to its client, upstream closed,
        its lease revoked, *reason* recorded (session log and recording).

        Args:
            session_id: a :attr:`SessionView.id`, exactly as the operator typed it.
            reason: ``"killed by USER from the admin console"``, plus ``": TEXT"`` when the
                operator gave one; also what the client's FATAL says.

        Returns:
            False when no live session has that id (nothing happened).
        """
        ...

    async def block_user(self, user: str, reason: str) -> int:
        """End every live session of *user* on this gateway process, as :meth:`kill` does,
        with the FATAL ``blocked_message(user, reason)``.

        The console has already stored the block (:meth:`Blocks.block`, which tells other
        gateways and workers); this only ends this process's sessions, and must not fail
        when there are none.

        Returns:
            How many sessions were ended.
        """
        ...
