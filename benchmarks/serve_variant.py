"""`pgguard serve` for benchmarks, optionally with statement control switched off.

    python benchmarks/serve_variant.py --config FILE [--no-policy]

--no-policy replaces the guard's check with one that allows everything without parsing,
so the benchmark can report the policy's cost as a ratio. It exists only here: the
product has no switch that turns statement control off.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pgguard import config
from pgguard.cli import serve_config
from pgguard.net import guard


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--no-policy", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.no_policy:
        guard.Guard.check = lambda self, msg: None  # type: ignore[method-assign]
    return serve_config(config.load(args.config))


if __name__ == "__main__":
    sys.exit(main())
