"""Compiled twins of the hot loops, with a pure-Python fallback (as psycopg ships psycopg_c).

``next_frame`` and ``datarow_run_end`` walk a receive buffer (the framer, the pumps'
DataRow runs); ``ByteGate`` is the detectors' byte-level pre-filter, per value or over a run
of DataRows. The compiled module (``_compiled.pyx``, built by ``pip install .`` when Cython
and a compiler are present) is used when importable, else ``_pure``; ``PGGUARD_PURE=1``
forces the pure one. Both give identical results (tests/e2e/test_speedups.py).

Stdlib only below this package, so every layer may import it.
"""

from __future__ import annotations

import os

from ._common import COL_GATE, COL_GATE_AFTER_1, COL_SKIP, FrameError

if os.environ.get("PGGUARD_PURE", "") not in ("", "0"):
    from ._pure import ByteGate, datarow_run_end, next_frame
    IMPLEMENTATION = "pure"
else:
    try:
        from ._compiled import ByteGate, datarow_run_end, next_frame
        IMPLEMENTATION = "compiled"
    except ImportError:
        from ._pure import ByteGate, datarow_run_end, next_frame
        IMPLEMENTATION = "pure"

__all__ = ["COL_GATE", "COL_GATE_AFTER_1", "COL_SKIP", "IMPLEMENTATION", "ByteGate",
           "FrameError", "datarow_run_end", "next_frame"]
