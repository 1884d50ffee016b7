"""Statement control: classify SQL on PostgreSQL's own parse tree and apply grants.

* :mod:`.lists` — the documented function, setting and statement lists;
* :mod:`.results` — ``StatementInfo`` and ``Classification``;
* :mod:`.classify` — ``classify()``: the walk over the shared parse (``pgguard.sql``);
* :mod:`.prepared` — PREPARE/EXECUTE tracking (``remember_prepared``);
* :mod:`.grants` — ``Policy``, ``Decision`` and ``deny_message``.

Everything a consumer needs is re-exported here. These modules take values and return
decisions: they never see a socket.
"""

from __future__ import annotations

from .classify import CACHE_MAX_TEXT, cache_clear, cache_info, classify
from .grants import Decision, Policy, deny_message
from .lists import (
    CATEGORY_SEVERITY,
    PARSER_SETTINGS,
    PRIVILEGED_FUNCTION_PREFIXES,
    PRIVILEGED_FUNCTIONS,
    PRIVILEGED_SETTINGS,
    WRITING_FUNCTION_PREFIXES,
    WRITING_FUNCTIONS,
)
from .prepared import remember_prepared
from .results import Classification, StatementInfo

__all__ = [
    "CACHE_MAX_TEXT",
    "CATEGORY_SEVERITY",
    "Classification",
    "Decision",
    "PARSER_SETTINGS",
    "Policy",
    "PRIVILEGED_FUNCTIONS",
    "PRIVILEGED_FUNCTION_PREFIXES",
    "PRIVILEGED_SETTINGS",
    "StatementInfo",
    "WRITING_FUNCTIONS",
    "WRITING_FUNCTION_PREFIXES",
    "cache_clear",
    "cache_info",
    "classify",
    "deny_message",
    "remember_prepared",
]
