"""The ``pgguard`` command: serve, check-config, demo, approvals, audit."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .errors import ConfigError


def _setup_logging(level: str | None, fmt: str | None = None, cfg=None) -> None:
    """Logs to stderr, one event per line (:mod:`pgguard.logs`); the command line's
    ``--log-level``/``--log-format`` win over the configuration's ``[log]``."""
    from . import logs
    level = level or (cfg.log.level if cfg is not None else "info")
    fmt = fmt or (cfg.log.format if cfg is not None else "text")
    logs.setup(level, fmt)


def _load_config(path: str):
    """The validated configuration, or None after printing which key is wrong."""
    from . import config
    try:
        return config.load(path)
    except ConfigError as exc:
        print(f"pgguard: invalid configuration: {exc}", file=sys.stderr)
        return None


def _preflight(cfg) -> bool:
    """True when the machine can run *cfg*; else every problem is printed, one a line."""
    from .preflight import check
    problems = check(cfg)
    for problem in problems:
        print(f"{problem} (in {cfg.path})" if cfg.path else problem, file=sys.stderr)
    return not problems


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args.file)
    if cfg is None or not _preflight(cfg):
        return 1
    print(f"{args.file}: OK ({len(cfg.connections)} connection(s), listening on "
          f"{cfg.listen.host}:{cfg.listen.port})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    # Everything that can be checked is checked before anything listens (workers too).
    if cfg is None or not _preflight(cfg):
        return 1
    _setup_logging(args.log_level, args.log_format, cfg)
    if args.workers and args.workers > 1:
        return _serve_workers(args, cfg)
    return serve_config(cfg)


def serve_config(cfg) -> int:
    """Run one gateway process for *cfg* until SIGINT/SIGTERM; returns the exit code."""
    import signal

    import trio

    from .app import build_gateway

    async def main() -> None:
        gateway = build_gateway(cfg)
        async with trio.open_nursery() as nursery:
            # SIGINT/SIGTERM end the gateway cleanly: sessions are closed, leases revoked,
            # the session log sealed (Gateway.serve's cleanup).
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(gateway.serve)
                async for signum in signals:
                    logging.getLogger("pgguard").info("event=shutdown signal=%d", signum)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except (OSError, BaseExceptionGroup) as exc:
        os_errors = [exc] if isinstance(exc, OSError) else \
            exc.subgroup(OSError).exceptions if exc.subgroup(OSError) else []
        if not os_errors:
            raise
        print(f"pgguard: cannot listen on {cfg.listen.host}:{cfg.listen.port}: "
              f"{os_errors[0]}", file=sys.stderr)
        return 1
    return 0


def _serve_workers(args, cfg) -> int:
    """N worker processes sharing the port with SO_REUSEPORT (set by each worker's listener).

    With ``[metrics]`` the parent serves ``/metrics`` (the sum over the workers, from
    prometheus_client's multiprocess folder, made here and removed at the end),
    ``/healthz`` (a worker is running) and ``/readyz``; the workers serve none.
    """
    import functools
    import shutil
    import signal
    import subprocess
    import tempfile

    import trio

    from .metrics import aggregate_registry, mark_worker_dead, serve_metrics, worker_env
    from .readiness import checks_for

    mdir = tempfile.mkdtemp(prefix="pgguard-metrics-") if cfg.metrics.enabled else None
    env = dict(os.environ, PGGUARD_REUSE_PORT="1")
    if mdir is not None:
        env = worker_env(mdir, env)
    argv = [sys.executable, "-m", "pgguard", "serve", "--config", args.config]
    for flag, value in (("--log-level", args.log_level), ("--log-format", args.log_format)):
        if value:
            argv += [flag, value]
    procs = [subprocess.Popen(argv, env=dict(env, PGGUARD_WORKER=str(i)))
             for i in range(args.workers)]

    def forward(signum, _frame=None):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGTERM, forward)

    async def wait_worker(p: subprocess.Popen) -> None:
        await trio.to_thread.run_sync(p.wait, abandon_on_cancel=True)
        if mdir is not None:
            mark_worker_dead(p.pid, mdir)  # its sessions and leases stop counting

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if mdir is not None:
                m = cfg.metrics
                nursery.start_soon(functools.partial(
                    serve_metrics, aggregate_registry(mdir), m.host, m.port,
                    healthy=lambda: any(p.poll() is None for p in procs),
                    checks=checks_for(cfg), check_timeout_s=m.check_timeout_s))
            async with trio.open_nursery() as workers:
                for p in procs:
                    workers.start_soon(wait_worker, p)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        forward(signal.SIGINT)
        for p in procs:
            p.wait()
        return 0
    finally:
        if mdir is not None:
            shutil.rmtree(mdir, ignore_errors=True)
    return max(p.returncode or 0 for p in procs)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    _setup_logging(args.log_level, args.log_format)
    return run_demo(args)


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("text", "json"),
                   default=os.environ.get("PGGUARD_LOG_FORMAT"),
                   help="log lines as logfmt text or JSON (default: [log] format, else text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgguard", description="A PostgreSQL gateway that governs what AI agents do with data.")
    parser.add_argument("--version", action="version", version=f"pgguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--workers", type=int, default=1, help="worker processes (SO_REUSEPORT)")
    p.add_argument("--log-level", default=os.environ.get("PGGUARD_LOG_LEVEL"),
                   help="debug, info, warning, error (default: [log] level, else info)")
    _add_log_format(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("demo", help="run the gateway on an embedded default setup")
    p.add_argument("--port", type=int, default=6432)
    p.add_argument("--log-level", default="warning")
    _add_log_format(p)
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--write-config", metavar="DIR", default=None,
                   help="also write DIR/pgguard.toml and its key files: a configuration for "
                        "`pgguard serve` against the demo's PostgreSQL and OpenBao")
    p.add_argument("--serve-port", type=int, default=None,
                   help="the port in the --write-config configuration (default: --port + 1)")
    p.set_defaults(func=cmd_demo)

    for module in ("audit", "admin.prompt"):
        try:
            mod = __import__(f"pgguard.{module}", fromlist=["add_cli"])
        except ImportError:
            continue
        add = getattr(mod, "add_cli", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
