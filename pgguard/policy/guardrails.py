"""Guardrails: limits per grant that a client cannot lift (docs/guardrails.md).

``limits_for`` takes the strictest value over a user's matching grants; ``refusal`` says
why a classified statement would lift one (``SET statement_timeout = 0``, ``BEGIN READ
WRITE`` under ``read_only``); ``startup_settings`` checks the client's startup parameters
and returns what the upstream login must carry; ``RateWindow`` counts statements per user.
Values in, decisions out: nothing here sees a socket.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import GrantConfig
from ..errors import GatewayError
from ..sql.nodes import guc_boolean
from .results import ANY_SETTING, Classification

__all__ = ["GuardrailRefused", "Limits", "RateLimited", "RateWindow", "SessionTimeLimit",
           "limits_for", "options_settings", "parse_time_ms", "refusal", "startup_settings"]

READ_ONLY_SETTINGS = ("default_transaction_read_only", "transaction_read_only")
#: The timeout settings and the Limits field holding each (milliseconds).
TIMEOUT_SETTINGS = {"statement_timeout": "statement_timeout_ms",
                    "idle_in_transaction_session_timeout": "idle_in_transaction_timeout_ms"}


class GuardrailRefused(GatewayError, sqlstate="42501", severity="FATAL"):
    """A startup parameter would lift a guardrail: the session is refused."""


class RateLimited(GatewayError, sqlstate="53400"):
    """The user ran more statements in the last minute than the grant allows."""


class SessionTimeLimit(GatewayError, sqlstate="57P01", severity="FATAL"):
    """The session has been open for ``max_session_s``."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A session's effective guardrails (None: no limit)."""

    read_only: bool = False
    statement_timeout_ms: int | None = None
    idle_in_transaction_timeout_ms: int | None = None
    max_session_s: float | None = None
    max_statements_per_minute: int | None = None
    max_rows: int | None = None
    max_result_bytes: int | None = None

    @property
    def holds_settings(self) -> bool:
        return self.read_only or self.statement_timeout_ms is not None \
            or self.idle_in_transaction_timeout_ms is not None


def _least(values: Iterable[float | int | None]) -> float | int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _ms(seconds: float | None) -> int | None:
    # At least 1 ms: 0 would disable the timeout.
    return None if seconds is None else max(1, round(seconds * 1000))


def limits_for(grants: Iterable[GrantConfig]) -> Limits:
    """The strictest value of each guardrail over *grants* (a user's matching grants)."""
    grants = tuple(grants)
    return Limits(
        read_only=any(g.is_read_only for g in grants),
        statement_timeout_ms=_ms(_least(g.statement_timeout_s for g in grants)),
        idle_in_transaction_timeout_ms=_ms(_least(g.idle_in_transaction_timeout_s
                                                  for g in grants)),
        max_session_s=_least(g.max_session_s for g in grants),
        max_statements_per_minute=_least(g.max_statements_per_minute for g in grants),
        max_rows=_least(g.max_rows for g in grants),
        max_result_bytes=_least(g.max_result_bytes for g in grants),
    )


# --- PostgreSQL's reading of a time setting (guc.c parse_int / convert_to_base_unit) ---

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0,
             "d": 86400000.0}
# strtol(value, &end, 0): optional sign, then hex (0x), octal (leading 0) or decimal.
_INT = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT = re.compile(r"\s*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")


def parse_time_ms(text: str) -> float | None:
    """A time setting in milliseconds as PostgreSQL reads it (``'5min'``, ``'3000'``,
    ``'1h'``, ``'0x10'``, ``'1.5s'``), or None when PostgreSQL would reject it.

    The unit defaults to milliseconds (statement_timeout's and
    idle_in_transaction_session_timeout's base unit).
    """
    m = _INT.match(text)
    value: float
    if m is not None and text[m.end():m.end() + 1] not in (".", "e", "E"):
        digits = m.group(2)
        if digits.lower().startswith("0x"):
            value = int(digits, 16)
        elif len(digits) > 1 and digits.startswith("0"):
            value = int(digits, 8)
        else:
            value = int(digits)
        if m.group(1) == "-":
            value = -value
        rest = text[m.end():]
    else:
        m = _FLOAT.match(text)
        if m is None:
            return None
        try:
            value = float(m.group(1))
        except ValueError:
            return None
        if math.isnan(value) or math.isinf(value):
            return None
        rest = text[m.end():]
    # Whitespace may surround the unit (case-sensitive, as in PostgreSQL).
    unit = rest.strip()
    if unit and unit not in _UNITS_MS:
        return None
    ms = value * _UNITS_MS.get(unit, 1.0)
    return float(round(ms))  # PostgreSQL rounds to the base unit (rint)


def _timeout_refusal(name: str, values: tuple[str | None, ...] | None, limit: int,
                     how: str) -> str | None:
    if values is None:
        return None  # back to the reset value: the one the session started with
    if len(values) != 1 or values[0] is None:
        return f"{how} sets {name} to a value pgguard cannot read; the grant limits it"
    ms = parse_time_ms(values[0])
    if ms is None:
        return None  # PostgreSQL rejects the value itself
    if ms <= 0:
        return f"{how} would disable {name}; the grant limits it to {limit} ms"
    if ms > limit:
        return f"{how} would raise {name} above the grant's {limit} ms"
    return None


def refusal(cls: Classification, limits: Limits) -> str | None:
    """Why a statement of *cls* would lift one of *limits*, else None."""
    if not limits.holds_settings:
        return None
    for st in cls.statements:
        for name, values in st.settings:
            why = _setting_refusal(name, values, limits, st.kind)
            if why is not None:
                return why
    return None


def _setting_refusal(name: str, values: tuple[str | None, ...] | None, limits: Limits,
                     how: str) -> str | None:
    if name == ANY_SETTING:
        return "set_config() with a setting name pgguard cannot read may lift a guardrail"
    if name in READ_ONLY_SETTINGS:
        if not limits.read_only or values is None:
            return None
        if len(values) == 1 and values[0] is not None and guc_boolean(values[0]) is True:
            return None
        return f"{how} would turn off {name}: the grant is read-only"
    field = TIMEOUT_SETTINGS.get(name)
    if field is None:
        return None
    limit = getattr(limits, field)
    if limit is None:
        return None
    return _timeout_refusal(name, values, limit, how)


def startup_settings(params: Mapping[str, str], options: Iterable[tuple[str, str]],
                     limits: Limits) -> dict[str, str]:
    """The startup parameters the upstream login must carry for *limits*.

    Args:
        params: the client's startup parameters (as forwarded).
        options: the ``-c name=value`` settings of the client's ``options``.
        limits: the session's guardrails.

    Returns:
        The parameters to set (they override ``options``, as in PostgreSQL).

    Raises:
        GuardrailRefused: a parameter or option would lift a guardrail.
    """
    given = [(k.lower(), v) for k, v in options] + [(k.lower(), v) for k, v in params.items()]
    out: dict[str, str] = {}
    for name, value in given:
        why = _setting_refusal(name, (value,), limits, "the startup parameter")
        if why is not None:
            raise GuardrailRefused(f"pgguard: {why}")
    if limits.read_only:
        out["default_transaction_read_only"] = "on"
    for name, field in TIMEOUT_SETTINGS.items():
        limit = getattr(limits, field)
        if limit is None:
            continue
        # The client's own lower value stays (the last one given wins, as upstream).
        lower = [parse_time_ms(v) for k, v in given if k == name]
        ms = lower[-1] if lower and lower[-1] is not None else limit
        out[name] = str(int(ms))
    return out


def options_settings(options: str) -> list[tuple[str, str]]:
    """The ``-c name=value`` / ``--name=value`` settings of a startup ``options`` string,
    names as PostgreSQL reads them (``-`` is ``_``). Anything else is left to the session's
    own check of ``options``."""
    words = options.replace("--", "-c ").split()
    out: list[tuple[str, str]] = []
    for i, w in enumerate(words):
        if w == "-c" and i + 1 < len(words):
            setting = words[i + 1]
        elif w.startswith("-c") and len(w) > 2:
            setting = w[2:]
        else:
            continue
        name, _, value = setting.partition("=")
        out.append((name.replace("-", "_"), value))
    return out


class RateWindow:
    """Statements per user over the last minute (a sliding window of timestamps).

    Shared by the sessions of one gateway process; *now* comes from the caller so tests
    need no clock.
    """

    WINDOW_S = 60.0
    MAX_USERS = 100000

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = {}

    def allow(self, user: str, limit: int, now: float, count: int = 1) -> bool:
        """Count *count* statements of *user* at *now* unless that exceeds *limit* in the
        window; True when they may run."""
        times = self._seen.get(user)
        if times is None:
            if len(self._seen) >= self.MAX_USERS:
                self._prune(now)
            times = self._seen[user] = deque()
        cutoff = now - self.WINDOW_S
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) + count > limit:
            return False
        times.extend([now] * count)
        return True

    def _prune(self, now: float) -> None:
        cutoff = now - self.WINDOW_S
        for user in [u for u, t in self._seen.items() if not t or t[-1] <= cutoff]:
            del self._seen[user]
