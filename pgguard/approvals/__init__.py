"""Held statements waiting for a human.

``model`` says what a request is, ``store`` what a store must do and the SQL both stores
share, ``sqlite`` and ``postgres`` are the two stores (the latter with its LISTEN thread),
``service`` is the trio :class:`Approvals` sessions and the admin console call, ``blocks``
the kill switch's :class:`Blocks` (kept in the same store). The names other modules use
are re-exported here.
"""

from .blocks import Blocks, OnBlock
from .model import (
    FINAL_BY_WAITER,
    MAX_REASON_CHARS,
    MAX_SQL_CHARS,
    MAX_USER_CHARS,
    STATUSES,
    AlreadyDecided,
    Block,
    NotAnApprover,
    OwnRequest,
    Request,
    StoreUnavailable,
    UnknownRequest,
    blocked_message,
    held_notice,
    is_approver,
)
from .postgres import POSTGRES_SCHEMA, PostgresStore
from .service import Approvals, open_store
from .sqlite import SQLITE_SCHEMA, SqliteStore, sqlite_path
from .store import (
    BLOCKS_CHANNEL,
    BLOCKS_TABLE,
    CHANNEL,
    LIST_LIMIT,
    STORE_TIMEOUT_S,
    TABLE,
    ApprovalStore,
    BlockStore,
)

__all__ = [
    "BLOCKS_CHANNEL", "BLOCKS_TABLE", "CHANNEL", "FINAL_BY_WAITER", "LIST_LIMIT",
    "MAX_REASON_CHARS", "MAX_SQL_CHARS", "MAX_USER_CHARS", "POSTGRES_SCHEMA",
    "SQLITE_SCHEMA", "STATUSES", "STORE_TIMEOUT_S", "TABLE", "AlreadyDecided",
    "ApprovalStore", "Approvals", "Block", "BlockStore", "Blocks", "NotAnApprover",
    "OnBlock", "OwnRequest", "PostgresStore", "Request", "SqliteStore", "StoreUnavailable",
    "UnknownRequest", "blocked_message", "held_notice", "is_approver", "open_store",
    "sqlite_path",
]
