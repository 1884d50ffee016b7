"""`pgguard serve` for benchmarks, optionally with statement control switched off.

    python benchmarks/serve_variant.py --config FILE [--no-policy]

--no-policy replaces the guard's check with one that allows everything without parsing,
so the benchmark can report the policy's cost as a ratio. It exists only here: the
product has no switch that turns statement control off.
"""

from __future__ import annotations

import argparse
import logging
import signal

import trio

from pgguard import config
from pgguard.net import guard
from pgguard.net.listener import Gateway
from pgguard.runtime import attach_components


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--no-policy", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.no_policy:
        guard.Guard.check = lambda self, msg: None  # type: ignore[method-assign]
    cfg = config.load(args.config)

    async def run() -> None:
        gw = Gateway(cfg)
        attach_components(gw)
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(gw.serve)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)


if __name__ == "__main__":
    main()
