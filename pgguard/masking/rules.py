"""Masking rules and the four strategies.

A rule names columns as ``[schema.]table.column`` globs; the first rule (in configuration
order) that matches a column decides how it is masked. Strategies work on the text of a
value; how a masked value is written back in each wire format lives in
:mod:`pgguard.masking.rewrite`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, field

from ..config import MaskingConfig, MaskRule

log = logging.getLogger(__name__)

REDACTED = "***"
HASH_PREFIX = "h:"
# 16 base32 characters = 80 bits of the HMAC: collisions are negligible for any table.
HASH_CHARS = 16
STRATEGY_ORDER = {"hash": 1, "partial": 1, "redact": 2, "null": 3}


@dataclass(frozen=True, slots=True)
class Mask:
    """How one output column is masked.

    Attributes:
        strategy: ``redact``, ``partial``, ``hash`` or ``null``.
        keep: for ``partial``, how many trailing characters stay.
        reason: why (``rule public.users.ssn``, ``derived from …``, ``unproven: …``);
            names only, never values.
    """

    strategy: str
    keep: int = 0
    reason: str = field(default="", compare=False)


def stricter(a: Mask | None, b: Mask | None) -> Mask | None:
    """The mask that reveals no more than either of *a* and *b*."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    if "null" in (a.strategy, b.strategy):
        return Mask("null", reason=a.reason if a.strategy == "null" else b.reason)
    return Mask("redact", reason=f"{a.reason}; {b.reason}")


class RuleSet:
    """Matches qualified column names against the configured rules (cached)."""

    def __init__(self, rules: tuple[MaskRule, ...] | list[MaskRule]):
        self._compiled: list[tuple[list[tuple[re.Pattern[str], int]], MaskRule]] = []
        for rule in rules:
            pats = []
            for glob in rule.columns:
                # Identifiers differ only by quoting case; matching case-insensitively can
                # only mask more, never less.
                pats.append((re.compile(fnmatch.translate(glob.lower())), glob.count(".") + 1))
            self._compiled.append((pats, rule))
        self._cache: dict[tuple[str, str, str], Mask | None] = {}

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def match(self, schema: str, table: str, column: str) -> Mask | None:
        """The mask of the first rule naming ``schema.table.column``, or None.

        Args:
            schema: schema name.
            table: relation name.
            column: column name.

        Returns:
            A :class:`Mask` with reason ``rule schema.table.column``, or None when no rule
            names the column.
        """
        key = (schema, table, column)
        try:
            return self._cache[key]
        except KeyError:
            pass
        full = f"{schema}.{table}.{column}".lower()
        short = f"{table}.{column}".lower()
        found = None
        for pats, rule in self._compiled:
            if any(p.fullmatch(full if parts == 3 else short) for p, parts in pats):
                found = Mask(rule.strategy, rule.keep if rule.strategy == "partial" else 0,
                             reason=f"rule {schema}.{table}.{column}")
                break
        if len(self._cache) < 100_000:
            self._cache[key] = found
        return found


def load_hash_key(cfg: MaskingConfig) -> bytes:
    """Read the HMAC key for the ``hash`` strategy.

    Without ``hash_key_file`` a random per-process key is used: tokens are then stable
    within one gateway process only.

    Args:
        cfg: the masking configuration.

    Returns:
        The key bytes (surrounding whitespace stripped).

    Raises:
        OSError: the key file cannot be read.
        ValueError: the key file is empty.
    """
    if not cfg.hash_key_file:
        log.warning("masking.hash_key_random reason=no_hash_key_file")
        return os.urandom(32)
    with open(cfg.hash_key_file, "rb") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"masking.hash_key_file {cfg.hash_key_file} is empty")
    return key


def redact(value: str) -> str:
    """The fixed marker, whatever the value."""
    return REDACTED


def partial(value: str, keep: int) -> str:
    """Keep the last *keep* characters, replace the others by ``*`` (length preserved).

    A value of *keep* characters or fewer is replaced entirely: keeping it would reveal it.
    """
    n = len(value)
    if keep <= 0 or n <= keep:
        return "*" * n
    return "*" * (n - keep) + value[n - keep:]


def hash_token(value: str | bytes, key: bytes) -> str:
    """Keyed HMAC-SHA256 token: ``h:`` + 16 base32 characters; equal inputs, equal tokens."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    digest = hmac.new(key, data, hashlib.sha256).digest()
    return HASH_PREFIX + base64.b32encode(digest[:10]).decode("ascii").lower()


def apply_text(mask: Mask, value: str, key: bytes) -> str | None:
    """Apply *mask* to a text value; None means SQL NULL."""
    s = mask.strategy
    if s == "redact":
        return REDACTED
    if s == "partial":
        return partial(value, mask.keep)
    if s == "hash":
        return hash_token(value, key)
    return None
