"""The admin console's commands: running them against a :class:`ConsoleContext`, no I/O.

The console is the database name ``pgguard`` on the gateway, like pgbouncer's. The
gateway authenticates the user with their own OIDC token; :mod:`.console` hands each
query string to :func:`execute` and encodes the :class:`AdminResult` as RowDescription /
DataRow / CommandComplete (or EmptyQueryResponse when the command tag is empty). The
language is in :mod:`.grammar`; :data:`HELP_ROWS` lists it.

Who may run what:

* ``HELP``, ``SHOW VERSION``: anyone at the console.
* ``SHOW APPROVALS``, ``SHOW APPROVAL n``: anyone; approvers (``approvals.approver_groups``)
  see every request, others their own. ``APPROVE``/``DENY``: approvers, never their own
  request. These four need ``[approvals]`` (0A000 without).
* ``SHOW SESSIONS``: operators (``[admin] groups``) and approvers see every session,
  others their own.
* Every other command: operators only; anyone else gets 42501. ``BLOCK``/``UNBLOCK``/
  ``SHOW BLOCKS`` need the approvals store open (0A000 without).
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from importlib import metadata
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import __version__
from ..approvals import Approvals, Block, Blocks, NotAnApprover, Request, UnknownRequest
from ..approvals import is_approver as in_groups
from ..approvals.model import blocked_message
from ..config import CATEGORIES, Config, GrantConfig
from ..errors import AdminCommandError, ConfigError, FeatureNotSupported, GatewayError, PolicyDenied
from .context import ConsoleContext, Identity, LeaseView, SessionView
from .grammar import MAX_COMMAND_CHARS, Command, parse, quote_literal, tokenize

log = logging.getLogger(__name__)

__all__ = [
    "APPROVAL_COLUMNS", "BLOCK_COLUMNS", "DECISION_COLUMNS", "DETAIL_COLUMNS", "HELP_ROWS",
    "LEASE_COLUMNS", "MAX_COMMAND_CHARS", "SERVER_COLUMNS", "SESSION_COLUMNS",
    "STATS_COLUMNS", "AdminResult", "Command", "Identity", "NotAnOperator", "ReloadFailed",
    "UnknownTarget", "config_rows", "execute", "parse", "quote_literal", "short_lease_id",
    "tokenize",
]

APPROVAL_COLUMNS = ["id", "status", "created_at", "user", "groups", "connection",
                    "category", "kind", "reason", "sql", "params"]
DETAIL_COLUMNS = APPROVAL_COLUMNS + ["gateway", "decided_by", "decision_reason",
                                     "decided_at"]
DECISION_COLUMNS = ["id", "status", "user", "decided_by", "decision_reason"]
SESSION_COLUMNS = ["id", "user", "groups", "connection", "client", "state", "statement",
                   "started_at", "statement_started_at", "request"]
SERVER_COLUMNS = ["session", "connection", "backend_pid", "server", "user", "state", "tls",
                  "connected_at"]
LEASE_COLUMNS = ["lease", "source", "role", "connection", "user", "sessions", "expires_at",
                 "renewable"]
STATS_COLUMNS = ["connection", "sessions", "sessions_total", "allowed", "held", "refused",
                 "rows", "bytes_received", "bytes_sent", "mean_ms", "p99_ms"]
BLOCK_COLUMNS = ["user", "reason", "blocked_by", "blocked_at", "gateway", "unblocked_by",
                 "unblocked_at"]
#: How much of a statement SHOW SESSIONS prints (psql's aligned output stays usable).
STATEMENT_CHARS = 200

HELP_ROWS = [
    ("SHOW APPROVALS [ALL]", "pending approval requests (ALL: every status)"),
    ("SHOW APPROVAL n", "one approval request in full"),
    ("APPROVE n ['reason']", "approve request n (approvers)"),
    ("DENY n ['reason']", "deny request n; the held client sees the reason (approvers)"),
    ("SHOW SESSIONS", "client sessions on this gateway"),
    ("SHOW SERVERS", "upstream connections"),
    ("SHOW LEASES", "database credentials held (lease ids shortened)"),
    ("SHOW STATS", "per connection: sessions, statements by decision, rows, bytes, times"),
    ("SHOW CONFIG", "the configuration in effect (secrets elided)"),
    ("SHOW VERSION", "pgguard and library versions"),
    ("RELOAD", "reload the configuration file (as SIGHUP)"),
    ("KILL session ['reason']", "end a session and revoke its lease"),
    ("BLOCK USER 'name' 'reason'", "end the user's sessions on every gateway; refuse new ones"),
    ("UNBLOCK USER 'name'", "lift a block"),
    ("SHOW BLOCKS [ALL]", "blocked users (ALL: lifted blocks too)"),
    ("HELP", "this list"),
]


class NotAnOperator(PolicyDenied):
    """The caller is in none of ``[admin] groups``."""


class UnknownTarget(GatewayError, sqlstate="42704"):
    """No live session has this id, or the user is not blocked."""


class ReloadFailed(GatewayError, sqlstate="F0000"):
    """The configuration file could not be reloaded; nothing changed."""


@dataclass(frozen=True, slots=True)
class AdminResult:
    """A result set, all values text (None is NULL).

    An empty ``command_tag`` means the query was empty: send EmptyQueryResponse.
    """

    columns: list[str]
    rows: list[tuple[str | None, ...]]
    command_tag: str


# ---------------------------------------------------------------------------- text

def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds * 1000:.3f}"


def short_lease_id(lease_id: str) -> str:
    """A lease id as the console shows it: its path, then 4 + 4 characters of the rest.

    ``database/creds/ro/AbCdEfGhIjKlMnOp`` → ``database/creds/ro/AbCd…MnOp``; an id whose
    last part is 12 characters or fewer shows only its last 2 (``…Op``). Never the whole.
    """
    if not lease_id:
        return ""
    path, _, tail = lease_id.rpartition("/")
    short = f"{tail[:4]}…{tail[-4:]}" if len(tail) > 12 else f"…{tail[-2:]}"
    return f"{path}/{short}" if path else short


def _elide_url(value: str) -> str:
    # A DSN may carry a password in its user info or its query (password=, sslpassword=).
    try:
        parts = urlsplit(value)
    except ValueError:
        return "(elided)"
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:(elided)@{host}"
    query = parts.query
    if query:
        pairs = [(k, "(elided)" if "password" in k.lower() or "secret" in k.lower() else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="()")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str | None]]) -> None:
    if isinstance(value, GrantConfig):
        # Effective: every category's action, the defaults included.
        _flatten(f"{prefix}.groups", value.groups, out)
        _flatten(f"{prefix}.vault_role", value.vault_role, out)
        for category in CATEGORIES:
            out.append((f"{prefix}.{category}", value.action(category)))
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            if f.name in ("path", "present"):
                continue  # where the file is, and a parse detail: not settings
            _flatten(f"{prefix}.{f.name}" if prefix else f.name, getattr(value, f.name), out)
    elif isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}", value[k], out)
    elif isinstance(value, tuple | list) and value and is_dataclass(value[0]):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, out)
    elif isinstance(value, tuple | list):
        out.append((prefix, json.dumps(list(value))))
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    elif isinstance(value, str) and "://" in value:
        out.append((prefix, _elide_url(value)))
    else:
        out.append((prefix, None if value is None else str(value)))


def config_rows(cfg: Config) -> list[tuple[str | None, ...]]:
    """``(key, value)`` for every setting of *cfg*, keys as in the TOML file.

    The configuration holds no secrets by design (only files and variable names that
    hold them), but a DSN or URL may carry a password: it is replaced by ``(elided)``.
    """
    out: list[tuple[str, str | None]] = [("config_file", cfg.path)]
    _flatten("", cfg, out)
    return [tuple(r) for r in out]


def _version_rows() -> list[tuple[str | None, ...]]:
    rows: list[tuple[str | None, ...]] = [("pgguard", __version__),
                                          ("python", platform.python_version())]
    for dist in ("trio", "pglast", "psycopg", "hvac"):
        try:
            rows.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append((dist, None))
    return rows


# ---------------------------------------------------------------------------- rows

def _approval_row(req: Request, detail: bool = False) -> tuple[str | None, ...]:
    row = [str(req.id), req.status, _text(req.created_at), req.user, _text(req.groups),
           req.connection, req.category, req.kind, req.reason, req.sql,
           json.dumps(list(req.params)) if req.params else None]
    if detail:
        row += [req.gateway, req.decided_by, req.decision_reason, _text(req.decided_at)]
    return tuple(row)


def _session_row(s: SessionView) -> tuple[str | None, ...]:
    statement = s.statement
    if statement is not None and len(statement) > STATEMENT_CHARS:
        statement = statement[:STATEMENT_CHARS] + "…"
    return (s.id, s.user, _text(s.groups), s.connection, s.client, s.state, statement,
            _text(s.started_at), _text(s.statement_started_at), _text(s.request_id))


def _lease_row(lease: LeaseView) -> tuple[str | None, ...]:
    return (short_lease_id(lease.lease_id), lease.source, lease.role, lease.connection,
            lease.user, _text(lease.sessions), _text(lease.expires_at),
            _text(lease.renewable))


def _block_row(b: Block) -> tuple[str | None, ...]:
    return (b.user, b.reason, b.blocked_by, _text(b.blocked_at), b.gateway, b.unblocked_by,
            _text(b.unblocked_at))


def _show(columns: Sequence[str], rows: Iterable[tuple[str | None, ...]]) -> AdminResult:
    return AdminResult(list(columns), list(rows), "SHOW")


# ---------------------------------------------------------------------------- execution

APPROVAL_VERBS = ("show_approvals", "show_approval", "approve", "deny")
OPEN_VERBS = ("empty", "help", "show_version", "show_sessions") + APPROVAL_VERBS


def _need_approvals(ctx: ConsoleContext) -> Approvals:
    approvals = ctx.approvals
    if approvals is None:
        raise FeatureNotSupported("pgguard: approvals are not configured on this gateway "
                                  "([approvals] approver_groups)")
    return approvals


def _need_blocks(ctx: ConsoleContext) -> Blocks:
    blocks = ctx.blocks
    if blocks is None:
        raise FeatureNotSupported("pgguard: no approvals store is open on this gateway; "
                                  "blocks live there ([approvals] store)")
    return blocks


def _is_operator(ctx: ConsoleContext) -> bool:
    return in_groups(ctx.identity.groups, ctx.config.admin.groups)


async def execute(command: Command | str, ctx: ConsoleContext) -> AdminResult:
    """Run one console command for ``ctx.identity``.

    Args:
        command: a parsed command or the query text.
        ctx: the gateway as the console sees it.

    Returns:
        The result set to send.

    Raises:
        AdminCommandError: bad syntax (42601).
        NotAnOperator, NotAnApprover, OwnRequest: 42501. AlreadyDecided: 55000.
        UnknownRequest, UnknownTarget: 42704. FeatureNotSupported: 0A000 (approvals or
        store missing). ReloadFailed: F0000. StoreUnavailable: the store failed.
    """
    cmd = parse(command) if isinstance(command, str) else command
    identity = ctx.identity
    if cmd.verb == "empty":
        return AdminResult([], [], "")
    if cmd.verb == "help":
        return _show(["command", "description"], HELP_ROWS)
    if cmd.verb == "show_version":
        return _show(["component", "version"], _version_rows())
    if cmd.verb in APPROVAL_VERBS:
        return await _approval_command(cmd, identity, _need_approvals(ctx))
    if cmd.verb == "show_sessions":
        rows = list(ctx.sessions())
        approvals = ctx.approvals
        sees_all = _is_operator(ctx) or (
            approvals is not None and in_groups(identity.groups, approvals.cfg.approver_groups))
        if not sees_all:
            rows = [r for r in rows if r.user == identity.user]
        return _show(SESSION_COLUMNS, [_session_row(r) for r in rows])
    if not _is_operator(ctx):
        raise NotAnOperator(f"{identity.user} is not in an [admin] group "
                            f"({', '.join(ctx.config.admin.groups) or 'none configured'})")
    result = await _operator_command(cmd, ctx)
    if cmd.verb in ("reload", "kill", "block", "unblock"):
        log.warning("event=admin_action user=%r command=%s target=%r", identity.user, cmd.verb,
                    cmd.target)
    return result


async def _approval_command(cmd: Command, identity: Identity,
                            approvals: Approvals) -> AdminResult:
    approver = in_groups(identity.groups, approvals.cfg.approver_groups)
    if cmd.verb == "show_approvals":
        reqs = await approvals.list(None if cmd.all else "pending")
        if not approver:
            reqs = [r for r in reqs if r.user == identity.user]
        return _show(APPROVAL_COLUMNS, [_approval_row(r) for r in reqs])
    assert cmd.request_id is not None
    if cmd.verb == "show_approval":
        req = await approvals.get(cmd.request_id)
        if req is not None and not approver and req.user != identity.user:
            raise NotAnApprover("only approvers may see other users' requests")
        if req is None:
            raise UnknownRequest(f"no approval request {cmd.request_id}")
        return _show(DETAIL_COLUMNS, [_approval_row(req, detail=True)])
    req = await approvals.decide(cmd.request_id, identity.user, tuple(identity.groups),
                                 cmd.verb == "approve", cmd.reason or "")
    row = (str(req.id), req.status, req.user, req.decided_by, req.decision_reason)
    return AdminResult(list(DECISION_COLUMNS), [row], cmd.verb.upper())


async def _operator_command(cmd: Command, ctx: ConsoleContext) -> AdminResult:
    user = ctx.identity.user
    if cmd.verb == "show_servers":
        return _show(SERVER_COLUMNS, [
            (s.session_id, s.connection, _text(s.backend_pid), s.server, s.user, s.state,
             _text(s.tls), _text(s.connected_at)) for s in ctx.servers()])
    if cmd.verb == "show_leases":
        return _show(LEASE_COLUMNS, [_lease_row(lease) for lease in ctx.leases()])
    if cmd.verb == "show_stats":
        return _show(STATS_COLUMNS, [
            (s.connection, str(s.sessions), str(s.sessions_total), str(s.allowed),
             str(s.held), str(s.refused), str(s.rows), str(s.bytes_received),
             str(s.bytes_sent), _ms(s.mean_statement_s), _ms(s.p99_statement_s))
            for s in ctx.stats()])
    if cmd.verb == "show_config":
        return _show(["key", "value"], config_rows(ctx.config))
    if cmd.verb == "reload":
        try:
            summary = await ctx.reload()
        except ConfigError as exc:
            raise ReloadFailed(f"reload failed, nothing changed: {exc}") from None
        return AdminResult(["result"], [(summary,)], "RELOAD")
    if cmd.verb == "kill":
        assert cmd.target is not None
        reason = f"killed by {user} from the admin console"
        if cmd.reason:
            reason += f": {cmd.reason}"
        if not await ctx.kill(cmd.target, reason):
            raise UnknownTarget(f"no live session {cmd.target!r}",
                                hint="SHOW SESSIONS lists the session ids")
        return AdminResult(["session", "result"], [(cmd.target, "killed")], "KILL")
    if cmd.verb == "block":
        assert cmd.target is not None
        if cmd.target == user:
            raise PolicyDenied("you cannot block yourself")
        blocks = _need_blocks(ctx)
        block, created = await blocks.block(cmd.target, cmd.reason or "", user)
        ended = await ctx.block_user(block.user, block.reason)
        log.warning("event=admin_block user=%r by=%r new=%s sessions_ended=%d",
                    block.user, user, created, ended)
        return AdminResult(BLOCK_COLUMNS[:5] + ["new", "sessions_ended", "message"],
                           [_block_row(block)[:5] + (_text(created), str(ended),
                                                     blocked_message(block.user,
                                                                     block.reason))],
                           "BLOCK")
    if cmd.verb == "unblock":
        assert cmd.target is not None
        lifted = await _need_blocks(ctx).unblock(cmd.target, user)
        if lifted is None:
            raise UnknownTarget(f"user {cmd.target!r} is not blocked",
                                hint="SHOW BLOCKS lists the blocked users")
        return AdminResult(list(BLOCK_COLUMNS), [_block_row(lifted)], "UNBLOCK")
    if cmd.verb == "show_blocks":
        blocks = await _need_blocks(ctx).list(include_lifted=cmd.all)
        return _show(BLOCK_COLUMNS, [_block_row(b) for b in blocks])
    raise AdminCommandError(f"unknown command {cmd.verb!r}")
