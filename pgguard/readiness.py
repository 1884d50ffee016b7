"""The readiness checks ``/readyz`` runs (:func:`pgguard.metrics.serve_metrics`).

Each check is an async callable that returns when the thing is ready and raises (with a
one-line reason) when not. :func:`checks_for` builds the set a configuration asks for:
``identity`` (when given a probe for it), ``approvals_store``, ``recording`` and one
``database:NAME`` per connection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import trio

from .config import Config, ConnectionConfig
from .metrics import ReadyCheck
from .preflight import Problem, approvals_store_problem, writable_dir_problem

__all__ = ["NotReady", "checks_for", "database_check"]

#: SSLRequest: any PostgreSQL answers it with one byte (S or N) before authentication.
SSL_REQUEST = struct.pack("!II", 8, 80877103)


class NotReady(Exception):
    """A readiness check failed; the message says why, in one line."""


def _os_reason(exc: OSError) -> str:
    """The first attempt's strerror: trio's open_tcp_stream wraps the attempts' errors."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        first = cause.exceptions[0]
        if isinstance(first, OSError) and first.strerror:
            return first.strerror
    return exc.strerror or str(exc)


def database_check(conn: ConnectionConfig) -> ReadyCheck:
    """A check that *conn*'s server answers as PostgreSQL (an SSLRequest gets S or N).

    No login: readiness must not need credentials, and must not use up a lease.
    """

    async def check() -> None:
        try:
            stream = await trio.open_tcp_stream(conn.host, conn.port)
        except OSError as exc:
            raise NotReady(f"cannot connect to {conn.host}:{conn.port}: "
                           f"{_os_reason(exc)}") from None
        try:
            await stream.send_all(SSL_REQUEST)
            answer = await stream.receive_some(1)
        except (trio.BrokenResourceError, OSError) as exc:
            raise NotReady(f"{conn.host}:{conn.port} closed the connection: {exc}") from None
        finally:
            await stream.aclose()
        if answer not in (b"S", b"N"):
            raise NotReady(f"{conn.host}:{conn.port} does not answer as PostgreSQL")

    return check


def _blocking(probe: Callable[[], Problem | None]) -> ReadyCheck:
    async def check() -> None:
        # Files and SQLite block: off the event loop, abandoned on the check's timeout.
        problem = await trio.to_thread.run_sync(probe, abandon_on_cancel=True)
        if problem is not None:
            raise NotReady(problem.message)

    return check


def _flag(probe: Callable[[], bool], what: str) -> ReadyCheck:
    async def check() -> None:
        if not probe():
            raise NotReady(what)

    return check


def checks_for(cfg: Config, identity_ready: Callable[[], bool] | None = None
               ) -> dict[str, ReadyCheck]:
    """The readiness checks for *cfg*, by name (the name ``/readyz`` reports).

    Args:
        cfg: the running configuration.
        identity_ready: True once the identity provider's signing keys are loaded (the
            token verifier knows); without it no ``identity`` check is made.

    Returns:
        ``{"identity": ..., "approvals_store": ..., "recording": ..., "database:NAME": ...}``,
        each present only when the configuration uses it.
    """
    checks: dict[str, ReadyCheck] = {}
    if identity_ready is not None:
        checks["identity"] = _flag(identity_ready, "signing keys not loaded")
    if cfg.approvals.approver_groups:
        store = cfg.approvals.store
        checks["approvals_store"] = _blocking(lambda: approvals_store_problem(store))
    if cfg.recording.dir:
        rec_dir = cfg.recording.dir
        checks["recording"] = _blocking(
            lambda: writable_dir_problem("recording.dir", rec_dir, may_create=False))
    for conn in cfg.connections:
        checks[f"database:{conn.name}"] = database_check(conn)
    return checks
