"""What both twins share: the framing error and the detector gate's constants.

Pure Python, stdlib only, so ``pgguard.wire`` and ``pgguard.masking`` can both import the
twins without pointing up.
"""

from __future__ import annotations

from collections.abc import Iterable

DATA_ROW = 0x44  # 'D'

# Mirrors of pgguard.masking.detectors' minimums (tests/e2e/test_speedups.py checks that the
# twins decide exactly as Detectors.skips_bytes does, so a drift fails there).
MIN_LEN = 6          # a@b.cc: below it nothing fits
LONG_MIN = 15        # below it neither a secret nor an IBAN fits
MIN_DIGITS = {"phone": 7, "ssn": 9, "card": 13}
KNOWN = frozenset(("secret", "email", "iban", "card", "ssn", "phone"))
NO_DIGIT_MIN = 1 << 30

# Per-column codes for ByteGate.first_hit: skip the column, gate the value, or gate the
# value without its first byte (binary jsonb's version byte).
COL_SKIP, COL_GATE, COL_GATE_AFTER_1 = 0, 1, 2


class FrameError(ValueError):
    """A message header claims an impossible length (under 4 or over the limit)."""

    def __init__(self, kind: bytes, size: int):
        super().__init__(kind, size)
        self.kind = kind
        self.size = size


def gate_params(names: Iterable[str]) -> tuple[bool, int, bool, bool, bool]:
    """(any detector, digits needed by card/ssn/phone, email, secret, iban) for *names*.

    Raises:
        ValueError: an unknown detector name.
    """
    on = set(names)
    unknown = on - KNOWN
    if unknown:
        raise ValueError(f"unknown detectors: {', '.join(sorted(unknown))}")
    digit_min = min([m for n, m in MIN_DIGITS.items() if n in on] or [NO_DIGIT_MIN])
    return bool(on), digit_min, "email" in on, "secret" in on, "iban" in on
