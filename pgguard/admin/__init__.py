"""The admin side: the console's command language, the console on the wire, the DBA prompt.

``grammar`` parses console commands, ``context`` is what they need from the gateway (the
:class:`~.context.ConsoleContext` Protocol and its snapshot types), ``commands`` runs them
(no I/O), ``console`` speaks the protocol to a connected operator or approver over a small
:class:`~.console.Channel`, and ``prompt`` is ``pgguard approvals``, a terminal client of
the console. The names other modules use are re-exported here; import ``console`` and
``prompt`` by their module names.
"""

from .commands import (
    APPROVAL_COLUMNS,
    BLOCK_COLUMNS,
    DECISION_COLUMNS,
    DETAIL_COLUMNS,
    HELP_ROWS,
    LEASE_COLUMNS,
    MAX_COMMAND_CHARS,
    SERVER_COLUMNS,
    SESSION_COLUMNS,
    STATS_COLUMNS,
    AdminResult,
    Command,
    Identity,
    NotAnOperator,
    ReloadFailed,
    UnknownTarget,
    config_rows,
    execute,
    parse,
    quote_literal,
    short_lease_id,
    tokenize,
)
from .context import (
    SERVER_STATES,
    SESSION_STATES,
    ConsoleContext,
    LeaseView,
    ServerView,
    SessionView,
    StatsView,
)

__all__ = [
    "APPROVAL_COLUMNS", "BLOCK_COLUMNS", "DECISION_COLUMNS", "DETAIL_COLUMNS", "HELP_ROWS",
    "LEASE_COLUMNS", "MAX_COMMAND_CHARS", "SERVER_COLUMNS", "SERVER_STATES",
    "SESSION_COLUMNS", "SESSION_STATES", "STATS_COLUMNS", "AdminResult", "Command",
    "ConsoleContext", "Identity", "LeaseView", "NotAnOperator", "ReloadFailed",
    "ServerView", "SessionView", "StatsView", "UnknownTarget", "config_rows", "execute",
    "parse", "quote_literal", "short_lease_id", "tokenize",
]
