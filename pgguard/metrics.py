"""Prometheus metrics and the ``/metrics``, ``/healthz``, ``/readyz`` HTTP endpoint.

The metric objects live in a :class:`Metrics` instance with its own
``CollectorRegistry`` (never prometheus_client's global default one), so tests and several
gateways in one process do not collide.

Workers (``pgguard serve --workers N``) use prometheus_client's *multiprocess mode*: the
parent creates an empty folder and passes it to every worker as
``PROMETHEUS_MULTIPROC_DIR`` (:func:`worker_env`); each worker's counters, gauges and
histograms then write their values to memory-mapped files there instead of keeping them
in memory, and only the parent serves ``/metrics``, from a registry holding a
``MultiProcessCollector`` that sums the files (:func:`aggregate_registry`). Summing in the
collector rather than scraping each worker over HTTP means a scrape needs no worker to
answer, a worker that died still counts for the counters it moved, and no port per worker.
Gauges use ``livesum``: the sum over live workers; the parent calls
:func:`mark_worker_dead` when a worker exits so its sessions and leases stop counting.
prometheus_client chooses the storage when it is imported, so the variable must be in the
worker's environment before it starts (it is, being set by the parent).

The HTTP server is deliberately tiny (HTTP/1.0 semantics, GET only, one request per
connection): it serves scrapes and probes, nothing else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "MULTIPROC_ENV", "Metrics", "ReadyCheck", "aggregate_registry", "mark_worker_dead",
    "metrics_app", "serve_metrics", "worker_env",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Statement latency buckets (seconds): sub-millisecond forwarding up to long approvals.
STATEMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Approval waits are human-scale: seconds to the approval timeout.
APPROVAL_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
DEFAULT_CHECK_TIMEOUT_S = 2.0

#: A readiness check: returns normally when ready, raises (anything) or returns False when not.
ReadyCheck = Callable[[], Awaitable[bool | None]]


class Metrics:
    """Every metric pgguard exports, registered in one private registry.

    Attributes:
        registry: the registry to serve (in a worker under multiprocess mode, serve
            :func:`aggregate_registry` in the parent instead).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sessions = Gauge(
            "pgguard_sessions", "Client sessions open now", ["connection"],
            registry=r, multiprocess_mode="livesum")
        self.statements = Counter(
            "pgguard_statements", "Statements seen, by policy decision",
            ["connection", "category", "decision"], registry=r)
        self.statement_seconds = Histogram(
            "pgguard_statement_seconds", "Time from a statement to its last response",
            ["connection"], buckets=STATEMENT_BUCKETS, registry=r)
        self.masked_values = Counter(
            "pgguard_masked_values", "Values masked before reaching the client",
            ["strategy", "detector"], registry=r)
        self.approval_requests = Counter(
            "pgguard_approval_requests", "Held statements, by how the hold ended",
            ["outcome"], registry=r)
        self.approval_wait_seconds = Histogram(
            "pgguard_approval_wait_seconds", "Time a held statement waited for a decision",
            buckets=APPROVAL_BUCKETS, registry=r)
        self.auth_failures = Counter(
            "pgguard_auth_failures", "Refused client logins, by reason", ["reason"],
            registry=r)
        self.upstream_errors = Counter(
            "pgguard_upstream_errors", "Failures talking to PostgreSQL", ["connection"],
            registry=r)
        self.vault_leases = Gauge(
            "pgguard_vault_leases", "Dynamic-credential leases held now", registry=r,
            multiprocess_mode="livesum")
        self.vault_lease_errors = Counter(
            "pgguard_vault_lease_errors", "Failed lease issue, renew or revoke calls",
            ["operation"], registry=r)
        self.recording_records = Counter(
            "pgguard_recording_records", "Records written to the session log", registry=r)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def worker_env(directory: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a worker process that reports into *directory*.

    Args:
        directory: an empty folder the parent owns for the life of the workers (clear it
            before the workers start: stale files would be summed in).
        env: the base environment (default: this process's).

    Returns:
        A copy of *env* with ``PROMETHEUS_MULTIPROC_DIR`` set.
    """
    out = dict(os.environ if env is None else env)
    out[MULTIPROC_ENV] = directory
    return out


def aggregate_registry(directory: str) -> CollectorRegistry:
    """A registry (for the parent) whose collection sums every worker's files in *directory*."""
    from prometheus_client import multiprocess
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry


def mark_worker_dead(pid: int, directory: str) -> None:
    """Drop a dead worker's live gauges (sessions, leases) from the sums."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid, path=directory)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


async def _run_check(check: ReadyCheck, timeout_s: float) -> str | None:
    """None when *check* passed, else why not (one line, for the probe's body)."""
    try:
        with trio.fail_after(timeout_s):
            ok = await check()
    except trio.TooSlowError:
        return f"timed out after {timeout_s:g} s"
    except Exception as exc:  # a check's failure is its answer, not ours
        return (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return "returned false" if ok is False else None


def metrics_app(registry: CollectorRegistry, healthy: Callable[[], bool],
                checks: Mapping[str, ReadyCheck], check_timeout_s: float
                ) -> Callable[[str, str], Awaitable[Response]]:
    """The request handler: ``(method, path) -> Response``, kept apart from the socket."""

    async def handle(method: str, path: str) -> Response:
        path = path.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return Response(404, b"not found\n")
        if method not in ("GET", "HEAD"):
            return Response(405, b"GET only\n")
        if path == "/metrics":
            return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            ok = healthy()
            return Response(200 if ok else 503, b"ok\n" if ok else b"not accepting\n")
        failures: list[str] = []
        for name, check in checks.items():
            why = await _run_check(check, check_timeout_s)
            if why is not None:
                failures.append(f"{name}: {why}")
        if failures:
            return Response(503, ("\n".join(failures) + "\n").encode())
        return Response(200, b"ready\n")

    return handle


async def _serve_one(stream: trio.abc.Stream,
                     handle: Callable[[str, str], Awaitable[Response]]) -> None:
    try:
        buf = bytearray()
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
                if len(buf) > MAX_REQUEST_BYTES:
                    break
                data = await stream.receive_some(4096)
                if not data:
                    break
                buf += data
        line = bytes(buf).split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            resp = Response(400, b"bad request\n")
            method = ""
        else:
            method = line[0]
            resp = await handle(method, line[1])
        head = (f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, '')}\r\n"
                f"Content-Type: {resp.content_type}\r\n"
                f"Content-Length: {len(resp.body)}\r\nConnection: close\r\n\r\n")
        await stream.send_all(head.encode() + (b"" if method == "HEAD" else resp.body))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper went away; nothing to answer
    finally:
        await stream.aclose()


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, *,
                        healthy: Callable[[], bool] = lambda: True,
                        checks: Mapping[str, ReadyCheck] | None = None,
                        check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                        ) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` until cancelled.

    Args:
        registry: what ``/metrics`` renders (:attr:`Metrics.registry`, or
            :func:`aggregate_registry` in a multi-worker parent).
        host: listen address.
        port: TCP port (0: any free one, reported through *task_status*).
        healthy: ``/healthz`` answers 200 while it returns True (the gateway accepts
            connections), else 503.
        checks: ``/readyz`` runs each, in order, with *check_timeout_s* each; 503 naming
            every failing check, 200 when all pass.
        check_timeout_s: the time one check may take.
        task_status: for ``nursery.start``; receives the bound port.
    """
    # Not copied: the caller may add checks (a connection added by RELOAD) while serving.
    handle = metrics_app(registry, healthy, checks if checks is not None else {},
                         check_timeout_s)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("event=metrics_listen host=%s port=%d", host, bound)
    task_status.started(bound)
    await trio.serve_listeners(lambda s: _serve_one(s, handle), listeners)
