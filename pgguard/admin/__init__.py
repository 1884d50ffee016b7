"""The admin side: the console's command language, the console on the wire, the DBA prompt.

``commands`` parses and runs console commands (no I/O), ``console`` speaks the protocol
to a connected approver over a small :class:`~.console.Channel`, and ``prompt`` is
``pgguard approvals``, a terminal client of the console. The command names other modules
use are re-exported here; import ``console`` and ``prompt`` by their module names.
"""

from .commands import (
    APPROVAL_COLUMNS,
    DECISION_COLUMNS,
    DETAIL_COLUMNS,
    HELP_ROWS,
    MAX_COMMAND_CHARS,
    SESSION_COLUMNS,
    AdminResult,
    Command,
    Identity,
    execute,
    parse,
    quote_literal,
    tokenize,
)

__all__ = [
    "APPROVAL_COLUMNS", "DECISION_COLUMNS", "DETAIL_COLUMNS", "HELP_ROWS",
    "MAX_COMMAND_CHARS", "SESSION_COLUMNS", "AdminResult", "Command", "Identity",
    "execute", "parse", "quote_literal", "tokenize",
]
