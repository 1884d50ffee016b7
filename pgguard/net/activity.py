"""What a session is doing now, and the counters the console and the metrics show.

:class:`Activity` follows one session: the statement running or held, since when, and
feeds :class:`GatewayStats` (``SHOW STATS``) and :class:`~pgguard.metrics.Metrics`
(``/metrics``) at the few points the pumps call it. Nothing here touches the row hot
path: rows are counted from CommandComplete tags, a statement's time is taken from its
first message to the ReadyForQuery that leaves nothing owed.
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..errors import (
    ApprovalDenied,
    ApprovalTimeout,
    ConnectionFailure,
    CredentialsUnavailable,
    GatewayError,
    QueryCanceled,
)
from ..metrics import Metrics
from ..wire.messages import COMMAND_COMPLETE, READY_FOR_QUERY, CommandComplete

if TYPE_CHECKING:
    from .. import policy
    from ..wire.exchange import Exchange

T = TypeVar("T")

#: Statement times kept per connection for the p99 (a uniform reservoir sample).
RESERVOIR_SIZE = 2048


@dataclass
class ConnectionStats:
    """Counters of one ``[[connections]]`` entry since the process started."""

    sessions_total: int = 0
    allowed: int = 0
    held: int = 0
    refused: int = 0
    rows: int = 0
    # Bytes of ended sessions; live sessions add theirs when the console asks.
    bytes_received: int = 0
    bytes_sent: int = 0
    statements_timed: int = 0
    seconds_total: float = 0.0
    reservoir: list[float] = field(default_factory=list)

    def timed(self, seconds: float) -> None:
        """Add one statement's time (Vitter's algorithm R keeps the sample uniform)."""
        self.statements_timed += 1
        self.seconds_total += seconds
        if len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(seconds)
        else:
            i = random.randrange(self.statements_timed)
            if i < RESERVOIR_SIZE:
                self.reservoir[i] = seconds

    @property
    def mean_s(self) -> float | None:
        return self.seconds_total / self.statements_timed if self.statements_timed else None

    @property
    def p99_s(self) -> float | None:
        if not self.reservoir:
            return None
        ordered = sorted(self.reservoir)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class GatewayStats:
    """:class:`ConnectionStats` by connection name, created on first use."""

    def __init__(self) -> None:
        self.by_connection: dict[str, ConnectionStats] = {}

    def of(self, connection: str) -> ConnectionStats:
        stats = self.by_connection.get(connection)
        if stats is None:
            stats = self.by_connection[connection] = ConnectionStats()
        return stats


class Verdict(Protocol):
    """The guard's verdict on a statement (``net.guard.Verdict``), as read here."""

    decision: policy.Decision | None
    sql: str
    refuse: GatewayError | None
    request_id: int | None


class Holder(Protocol):
    """What :meth:`Activity.hold` needs of the guard."""

    async def wait_for_approval(self, verdict: Verdict) -> Verdict: ...


def _outcome(verdict: Verdict) -> str:
    exc = verdict.refuse
    if verdict.request_id is None:
        return "unavailable"      # the store failed: refused without a request
    if exc is None:
        return "approved"
    if isinstance(exc, ApprovalDenied):
        return "denied"
    if isinstance(exc, ApprovalTimeout):
        return "timeout"
    if isinstance(exc, QueryCanceled):
        return "withdrawn"
    return "error"


def rows_of(tag: str) -> int:
    """The row count a CommandComplete tag reports (``SELECT 5``, ``INSERT 0 3``), else 0."""
    last = tag.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class Activity:
    """One session's current statement and its counters.

    Args:
        connection: the ``[[connections]]`` name.
        stats: the process's stats (this connection's entry is updated).
        metrics: the process's metrics.
    """

    def __init__(self, connection: str, stats: GatewayStats, metrics: Metrics | None):
        self.connection = connection
        self.stats = stats.of(connection)
        self.metrics = metrics
        self.sql: str | None = None           # as the client sent it (scanned on display)
        self.started_at: float | None = None  # time.time() of the statement's start
        self._t0: float | None = None         # monotonic, for its duration
        self.holding: Verdict | None = None   # the verdict of a statement held now
        self.connected_at = time.time()       # made as the upstream login starts
        m = metrics
        self._seconds = m.statement_seconds.labels(connection) if m is not None else None

    # --- frontend ----------------------------------------------------------------------

    def statement(self, sql: str, verdict: Verdict | None,
                  decision: policy.Decision | None) -> None:
        """The guard judged a statement (after any approval wait); it goes upstream now."""
        held = verdict is not None and verdict.request_id is not None
        refused = verdict is not None and verdict.refuse is not None
        s = self.stats
        if held:
            s.held += 1
            label = "held"
        elif refused:
            s.refused += 1
            label = "refused"
        else:
            s.allowed += 1
            label = "allowed"
        if self.metrics is not None:
            d = verdict.decision if verdict is not None and verdict.decision else decision
            self.metrics.statements.labels(self.connection, d.category if d else "unknown",
                                           label).inc()
        self.sql = sql
        if self._t0 is None and not refused:
            self.started_at = time.time()
            self._t0 = time.monotonic()

    async def hold(self, guard: Holder, verdict: Verdict) -> Verdict:
        """Wait for the approval of a held statement, showing it as ``held`` meanwhile."""
        self.holding = verdict
        self.sql = verdict.sql
        self.started_at = time.time()
        t0 = time.monotonic()
        try:
            verdict = await guard.wait_for_approval(verdict)
        finally:
            self.holding = None
            self.started_at = None
        if self.metrics is not None:
            self.metrics.approval_requests.labels(_outcome(verdict)).inc()
            if verdict.request_id is not None:
                self.metrics.approval_wait_seconds.observe(time.monotonic() - t0)
        return verdict

    # --- backend -----------------------------------------------------------------------

    def backend(self, kind: int, msg: object, exchange: Exchange) -> None:
        """A CommandComplete or ReadyForQuery came back (called for those two only)."""
        if kind == COMMAND_COMPLETE:
            if isinstance(msg, CommandComplete):
                self.stats.rows += rows_of(msg.tag)
        elif kind == READY_FOR_QUERY and not exchange.pending:
            t0 = self._t0
            if t0 is not None:
                seconds = time.monotonic() - t0
                self.stats.timed(seconds)
                if self._seconds is not None:
                    self._seconds.observe(seconds)
            self._t0 = None
            self.started_at = None
            self.sql = None

    def state(self, exchange: Exchange) -> str:
        """The session state as ``SHOW SESSIONS`` prints it."""
        if self.holding is not None:
            return "held"
        if exchange.pending:
            return "active"
        return {"T": "idle in transaction", "E": "idle in transaction (aborted)"}.get(
            exchange.txn_status, "idle")

    def ended(self, bytes_in: int, bytes_out: int) -> None:
        """The session is over: its bytes join the connection's totals."""
        self.stats.bytes_received += bytes_in
        self.stats.bytes_sent += bytes_out


def count_failure(metrics: Metrics | None, exc: GatewayError, *, authenticated: bool,
                  connection: str | None) -> None:
    """Count why a session failed: a refused login, or an upstream failure.

    Args:
        authenticated: the token was accepted (else this is an authentication failure).
        connection: the connection the session was for, once known.
    """
    if metrics is None:
        return
    if not authenticated:
        metrics.auth_failures.labels(type(exc).__name__).inc()
    elif isinstance(exc, CredentialsUnavailable):
        metrics.vault_lease_errors.labels("issue").inc()
    elif isinstance(exc, ConnectionFailure) and connection is not None:
        metrics.upstream_errors.labels(connection).inc()


def label_strategies(rows: T, plan: object) -> T:
    """Note on a row rewriter the strategy of each masked column, for
    :func:`count_masked` (the plan's mask; ``redact`` where the catalog or an unproven
    lineage masks). Returns *rows*."""
    masked = getattr(rows, "masked", ())
    if masked:
        mask_for = getattr(plan, "mask_for", None)
        n = getattr(rows, "ncols", 0)
        strategies = []
        for i in masked:
            mask = mask_for(i, n) if mask_for is not None else None
            strategies.append(getattr(mask, "strategy", None) or "redact")
        rows.metric_labels = tuple(collections.Counter(strategies).items())
    return rows


def count_masked(metrics: Metrics, rows: object) -> None:
    """A DataRow was changed by masking: count its masked values.

    Column rules count one value per masked column, by strategy (detector ``rule``);
    a row changed with no masked column was changed by the detectors' scan; a row of
    unknown layout was nulled whole (fail closed).
    """
    labels = getattr(rows, "metric_labels", None)
    if labels:
        for strategy, n in labels:
            metrics.masked_values.labels(strategy, "rule").inc(n)
    elif getattr(rows, "masked", None) is None:
        metrics.masked_values.labels("null", "fail_closed").inc()
    else:
        metrics.masked_values.labels("redact", "detectors").inc()
