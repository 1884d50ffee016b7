"""`pgguard serve` for benchmarks, optionally with statement control switched off.

    python benchmarks/serve_variant.py --config FILE [--no-policy] [--byte-gate] [--root DIR]

--no-policy replaces the guard's check with one that allows everything without parsing,
so the benchmark can report the policy's cost as a ratio. It exists only here: the
product has no switch that turns statement control off.

--byte-gate applies the switch proposed for pgguard/masking/detectors.py (its byte-level
pre-filter replaced by the compiled twin, ``pgguard._speedups.ByteGate``), so a benchmark
can show what the switch gives before it is merged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _root() -> str:
    """The source tree to serve: --root DIR (a checkout to compare against), else this
    one, ahead of any installed pgguard."""
    if "--root" in sys.argv:
        return os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sys.path.insert(0, _root())

from pgguard import config  # noqa: E402
from pgguard.cli import serve_config  # noqa: E402
from pgguard.net import guard  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--no-policy", action="store_true")
    ap.add_argument("--byte-gate", action="store_true")
    ap.add_argument("--root", help="serve the pgguard of this source tree")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.no_policy:
        guard.Guard.check = lambda self, msg: None  # type: ignore[method-assign]
    if args.byte_gate:
        _use_byte_gate()
    return serve_config(config.load(args.config))


def _use_byte_gate() -> None:
    from pgguard._speedups import ByteGate
    from pgguard.masking import detectors

    init = detectors.Detectors.__init__

    def with_gate(self, names=detectors.DETECTORS):
        init(self, names)
        self.skips_bytes = ByteGate(self.names)
    detectors.Detectors.__init__ = with_gate  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
