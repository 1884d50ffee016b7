"""The pure-Python twins of the compiled hot loops (``_compiled.pyx``).

Same names, same signatures, same results for any input (tests/e2e/test_speedups.py checks it
with hypothesis); used when the extension is not built or ``PGGUARD_PURE=1``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from ._common import COL_GATE, COL_SKIP, DATA_ROW, LONG_MIN, MIN_LEN, FrameError, gate_params

_HEADER = struct.Struct("!cI")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


def next_frame(buf: bytes | bytearray, pos: int, max_size: int
               ) -> tuple[bytes, int, int] | None:
    """The typed message at *pos* as ``(kind, start, end)``, or None if incomplete.

    Raises:
        FrameError: the length word is under 4 or over *max_size*.
    """
    if len(buf) - pos < 5:
        return None
    kind, size = _HEADER.unpack_from(buf, pos)
    if size < 4 or size > max_size:
        raise FrameError(kind, size)
    end = pos + 1 + size
    if len(buf) < end:
        return None
    return kind, pos, end


def datarow_run_end(buf: bytes | bytearray, pos: int, max_size: int) -> int:
    """Where the run of complete DataRow messages starting at *pos* ends.

    Stops before the first message that is not a DataRow, is incomplete or has an
    impossible length (which ``next_frame`` then reports); *pos* when none.
    """
    n = len(buf)
    unpack = _U32.unpack_from
    while n - pos >= 5 and buf[pos] == DATA_ROW:
        (size,) = unpack(buf, pos + 1)
        if size < 4 or size > max_size or pos + 1 + size > n:
            break
        pos += 1 + size
    return pos


_DIGITS = b"0123456789"
_DIGIT_RUN = re.compile(rb"[0-9](?:[ ().+/-]{0,3}[0-9]){6}")
_IBAN_START = re.compile(rb"[A-Z]{2}[0-9]{2}")
_HINT_BITS = (b"_", b"A", b"-----BEGIN", b"eyJ", b"xox", b"k-")


class ByteGate:
    """The detectors' byte-level pre-filter (``Detectors.skips_bytes``) for a set of names.

    Args:
        names: detector names (any of ``email ssn card phone iban secret``).
    """

    __slots__ = ("_any", "_digit_min", "_email", "_gate1", "_gate")

    def __init__(self, names: Iterable[str]):
        self._any, self._digit_min, self._email, secret, iban = gate_params(names)
        gate = ([rb"@"] if self._email else []) + \
            ([re.escape(b) for b in _HINT_BITS] if secret else []) + \
            ([_IBAN_START.pattern] if iban else [])
        self._gate = re.compile(b"|".join(gate)) if gate else None
        chars = ((b"@" if self._email else b"") + (b"\\-_AJ" if secret else b"")
                 + (b"A-Z" if iban else b""))
        self._gate1 = re.compile(b"[" + chars + b"]") if chars else None

    def skips(self, v: bytes | bytearray) -> bool:
        """True when the encoded value *v* certainly holds nothing a detector finds
        (ASCII values only; any other value returns False, to be decoded and scanned)."""
        n = len(v)
        if n < MIN_LEN or not self._any:
            return True
        if not v.isascii():
            return False
        digits = n - len(v.translate(None, _DIGITS))
        if digits >= self._digit_min and _DIGIT_RUN.search(v) is not None:
            return False
        if n < LONG_MIN:
            return not self._email or b"@" not in v
        if self._gate1 is None or self._gate1.search(v) is None:
            return True
        return self._gate is None or self._gate.search(v) is None

    __call__ = skips

    def first_hit(self, buf: bytes | bytearray, pos: int, end: int, cols: bytes) -> int:
        """The offset of the first DataRow in ``buf[pos:end]`` (a run of whole DataRows)
        holding a value the gate does not skip, else *end*.

        Args:
            cols: a code per column (``_common.COL_*``): skip, gate the value, or gate it
                without its first byte. Columns beyond ``len(cols)`` are skipped.

        A row whose layout does not add up is returned as a hit, for the caller's decoder
        to judge.
        """
        ncodes = len(cols)
        end = min(end, len(buf))
        if pos < 0:
            return pos
        while pos < end:
            if end - pos < 5:
                return pos
            (size,) = _U32.unpack_from(buf, pos + 1)
            row_end = pos + 1 + size
            if buf[pos] != DATA_ROW or size < 6 or row_end > end:
                return pos
            (ncols,) = _I16.unpack_from(buf, pos + 5)
            p = pos + 7
            for i in range(ncols):
                if p + 4 > row_end:
                    return pos
                (vlen,) = _I32.unpack_from(buf, p)
                p += 4
                if vlen == -1:
                    continue
                if vlen < 0:
                    return pos
                if p + vlen > row_end:
                    return pos
                code = cols[i] if i < ncodes else COL_SKIP
                if code != COL_SKIP:
                    start = p if code == COL_GATE else min(p + 1, p + vlen)
                    if not self.skips(bytes(buf[start:p + vlen])):
                        return pos
                p += vlen
            if p != row_end:
                return pos
            pos = row_end
        return end
