"""A typed fake of the gateway's :class:`~pgguard.admin.context.ConsoleContext` for tests.

It holds real services (an :class:`Approvals` and a :class:`Blocks` on a SQLite store the
test makes) and records the actions the console asks for, so a test can see that ``KILL``
and ``BLOCK USER`` reached the gateway with the right arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgguard import config
from pgguard.admin.context import LeaseView, ServerView, SessionView, StatsView
from pgguard.approvals import Approvals, Blocks
from pgguard.errors import ConfigError

T0 = datetime(2026, 12, 3, 17, 0, 0, tzinfo=UTC)


@dataclass
class Who:
    user: str
    groups: tuple[str, ...]


DBA = Who("alice", ("dba",))
DBA2 = Who("carol", ("ops", "dba"))
SRE = Who("sam", ("sre",))
AGENT = Who("agent-bob", ("engineers",))


def make_config(admin_groups: tuple[str, ...] = ("dba", "sre"),
                approver_groups: tuple[str, ...] = ("dba",)) -> config.Config:
    return config.parse({
        "identity": {"issuer": "https://idp.example.com"},
        "approvals": {"store": "postgresql://pgguard:s3cret@db.example.com/approvals"
                               "?sslmode=require&password=s3cret",
                      "approver_groups": list(approver_groups)},
        "admin": {"groups": list(admin_groups)},
        "connections": [{"name": "appdb", "host": "db.internal", "user": "app",
                         "password_env": "APPDB_PASSWORD",
                         "grants": [{"groups": ["engineers"], "write": "deny"}]}],
    }, "/etc/pgguard/pgguard.toml")


def session(sid: str, user: str, state: str = "idle", **kw: object) -> SessionView:
    fields = dict(id=sid, user=user, groups=("engineers",), connection="appdb",
                  client="127.0.0.1:50000", state=state, started_at=T0)
    fields.update(kw)
    return SessionView(**fields)  # type: ignore[arg-type]


@dataclass
class FakeContext:
    identity: Who
    approvals: Approvals | None = None
    blocks: Blocks | None = None
    secret_key: int = 424242
    config: config.Config = field(default_factory=make_config)
    live: list[SessionView] = field(default_factory=list)
    upstream: list[ServerView] = field(default_factory=list)
    held_leases: list[LeaseView] = field(default_factory=list)
    counters: list[StatsView] = field(default_factory=list)
    reload_error: ConfigError | None = None
    killed: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    reloads: int = 0

    def sessions(self) -> list[SessionView]:
        return list(self.live)

    def servers(self) -> list[ServerView]:
        return list(self.upstream)

    def leases(self) -> list[LeaseView]:
        return list(self.held_leases)

    def stats(self) -> list[StatsView]:
        return list(self.counters)

    async def reload(self) -> str:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloads += 1
        return f"reloaded {self.config.path}: {len(self.config.connections)} connections"

    async def kill(self, session_id: str, reason: str) -> bool:
        for s in self.live:
            if s.id == session_id:
                self.killed.append((session_id, reason))
                self.live.remove(s)
                return True
        return False

    async def block_user(self, user: str, reason: str) -> int:
        self.blocked.append((user, reason))
        ended = [s for s in self.live if s.user == user]
        for s in ended:
            self.live.remove(s)
        return len(ended)
