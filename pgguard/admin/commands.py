"""The admin console's commands: parsing and running them, without any I/O of its own.

The console is the database name ``pgguard`` on the gateway. The gateway authenticates
the approver with their own OIDC token; :mod:`.console` hands each query string to
:func:`parse` and the result to :func:`execute`, and encodes the :class:`AdminResult` as
RowDescription / DataRow / CommandComplete (or EmptyQueryResponse when the command tag is
empty). Grammar (case-insensitive, one command per query, optional trailing ``;``)::

    SHOW APPROVALS [ALL]      pending requests (ALL: every status, newest 1000)
    SHOW APPROVAL n           one request in full
    APPROVE n ['reason']      approve request n
    DENY n ['reason']         deny request n; the held client sees the reason
    SHOW SESSIONS             the gateway's client sessions
    HELP | SHOW HELP          this list

The reason is a standard SQL string literal (``''`` is a quote); it is data, passed to the
store as a bound parameter, never spliced into SQL. Anything else is refused with 42601.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..approvals import (
    MAX_REASON_CHARS,
    Approvals,
    NotAnApprover,
    Request,
    UnknownRequest,
    is_approver,
)
from ..errors import AdminCommandError

MAX_COMMAND_CHARS = 10_000
MAX_ID = 2**63 - 1

APPROVAL_COLUMNS = ["id", "status", "created_at", "user", "groups", "connection",
                    "category", "kind", "reason", "sql", "params"]
DETAIL_COLUMNS = APPROVAL_COLUMNS + ["gateway", "decided_by", "decision_reason",
                                     "decided_at"]
DECISION_COLUMNS = ["id", "status", "user", "decided_by", "decision_reason"]
SESSION_COLUMNS = ["id", "user", "groups", "connection", "client", "started_at", "state"]
HELP_ROWS = [
    ("SHOW APPROVALS [ALL]", "pending requests (ALL: every status)"),
    ("SHOW APPROVAL n", "one request in full"),
    ("APPROVE n 'reason'", "approve request n"),
    ("DENY n 'reason'", "deny request n; the held client sees the reason"),
    ("SHOW SESSIONS", "client sessions on this gateway"),
    ("HELP", "this list"),
]


class Identity(Protocol):
    """Who is at the console, as the gateway authenticated them."""

    user: str
    groups: Sequence[str]


@dataclass(frozen=True, slots=True)
class AdminResult:
    """A result set, all values text (None is NULL).

    An empty ``command_tag`` means the query was empty: send EmptyQueryResponse.
    """

    columns: list[str]
    rows: list[tuple[str | None, ...]]
    command_tag: str


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed console command."""

    verb: str  # show_approvals, show_approval, approve, deny, show_sessions, help, empty
    request_id: int | None = None
    reason: str | None = None
    all: bool = False


# ---------------------------------------------------------------------------- tokenizer

@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # word, int, string, semi
    value: str
    pos: int


def _error(text: str, pos: int, what: str) -> AdminCommandError:
    return AdminCommandError(f"syntax error at position {pos + 1}: {what}",
                             hint="commands: " + "; ".join(c for c, _ in HELP_ROWS))


def _skip_space(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while depth and j < n:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise _error(text, i, "unterminated /* comment")
            i = j
        else:
            break
    return i


def tokenize(text: str) -> list[_Token]:
    """Split a console command into words, integers, string literals and semicolons.

    Raises:
        AdminCommandError: an unterminated literal or a character the grammar lacks.
    """
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        i = _skip_space(text, i)
        if i >= n:
            return tokens
        c = text[i]
        if c == "'":
            # Standard string literal: '' is one quote, backslash is an ordinary character.
            parts, j = [], i + 1
            while True:
                end = text.find("'", j)
                if end < 0:
                    raise _error(text, i, "unterminated string literal")
                parts.append(text[j:end])
                if text.startswith("''", end):
                    parts.append("'")
                    j = end + 2
                    continue
                i_next = end + 1
                break
            tokens.append(_Token("string", "".join(parts), i))
            i = i_next
            if i < n and (text[i].isalnum() or text[i] in "_'"):
                raise _error(text, i, "unexpected text after string literal")
        elif c.isascii() and c.isdigit():
            j = i
            while j < n and text[j].isascii() and text[j].isdigit():
                j += 1
            if j < n and (text[j].isalpha() or text[j] in "_."):
                raise _error(text, i, f"bad number {text[i:j + 1]!r}")
            tokens.append(_Token("int", text[i:j], i))
            i = j
        elif c.isascii() and (c.isalpha() or c == "_"):
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if j < n and text[j] == "'":
                # E'…', U&'…', X'…' and friends have other escaping rules: refuse them.
                raise _error(text, i, "only standard '…' string literals are accepted")
            tokens.append(_Token("word", text[i:j].upper(), i))
            i = j
        elif c == ";":
            tokens.append(_Token("semi", ";", i))
            i += 1
        else:
            raise _error(text, i, f"unexpected character {c!r}")


# ---------------------------------------------------------------------------- parser

def _describe(t: _Token) -> str:
    # Never echo a literal's text back: it may be long, and it is the approver's data.
    return "a string literal" if t.kind == "string" else repr(t.value)


def parse(text: str) -> Command:
    """Parse one console command.

    Returns:
        The command; ``Command("empty")`` for an empty query (whitespace, comments, ``;``).

    Raises:
        AdminCommandError: anything outside the grammar (SQLSTATE 42601).
    """
    if len(text) > MAX_COMMAND_CHARS:
        raise AdminCommandError(f"command longer than {MAX_COMMAND_CHARS} characters")
    if "\x00" in text:
        raise AdminCommandError("command contains a NUL character")
    toks = tokenize(text)
    if toks and toks[-1].kind == "semi":
        toks = toks[:-1]
    for t in toks:
        if t.kind == "semi":
            raise _error(text, t.pos, "one command per query")
    if not toks:
        return Command("empty")
    pos = 0

    def take(kind: str, what: str, value: str | None = None) -> _Token:
        nonlocal pos
        if pos >= len(toks):
            raise _error(text, len(text), f"expected {what} at end of command")
        t = toks[pos]
        if t.kind != kind or (value is not None and t.value != value):
            raise _error(text, t.pos, f"expected {what}, got {_describe(t)}")
        pos += 1
        return t

    def request_id() -> int:
        t = take("int", "a request id")
        value = int(t.value)
        if not 1 <= value <= MAX_ID:
            raise _error(text, t.pos, f"request id {t.value} out of range")
        return value

    def end() -> None:
        if pos < len(toks):
            t = toks[pos]
            raise _error(text, t.pos, f"unexpected {_describe(t)} after the command")

    first = take("word", "a command")
    if first.value == "HELP":
        end()
        return Command("help")
    if first.value in ("APPROVE", "DENY"):
        rid = request_id()
        reason = ""
        if pos < len(toks) and toks[pos].kind == "string":
            reason = take("string", "a reason").value
        end()
        if len(reason) > MAX_REASON_CHARS:
            raise AdminCommandError(f"reason longer than {MAX_REASON_CHARS} characters")
        return Command(first.value.lower(), request_id=rid, reason=reason)
    if first.value == "SHOW":
        what = take("word", "APPROVALS, APPROVAL, SESSIONS or HELP")
        if what.value == "APPROVALS":
            show_all = False
            if pos < len(toks):
                take("word", "ALL or the end of the command", "ALL")
                show_all = True
            end()
            return Command("show_approvals", all=show_all)
        if what.value == "APPROVAL":
            rid = request_id()
            end()
            return Command("show_approval", request_id=rid)
        if what.value == "SESSIONS":
            end()
            return Command("show_sessions")
        if what.value == "HELP":
            end()
            return Command("help")
        raise _error(text, what.pos, f"unknown SHOW {what.value!r} "
                                     "(APPROVALS, APPROVAL, SESSIONS, HELP)")
    raise _error(text, first.pos, f"unknown command {first.value!r} "
                                  "(SHOW, APPROVE, DENY, HELP)")


def quote_literal(value: str) -> str:
    """*value* as a standard SQL string literal the console's parser reads back verbatim.

    Raises:
        ValueError: *value* contains a NUL character (no PostgreSQL string can).
    """
    if "\x00" in value:
        raise ValueError("a string literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------- execution

def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _approval_row(req: Request, detail: bool = False) -> tuple[str | None, ...]:
    row = [str(req.id), req.status, _text(req.created_at), req.user, _text(req.groups),
           req.connection, req.category, req.kind, req.reason, req.sql,
           json.dumps(list(req.params)) if req.params else None]
    if detail:
        row += [req.gateway, req.decided_by, req.decision_reason, _text(req.decided_at)]
    return tuple(row)


def _session_result(rows: Iterable[Mapping[str, Any]]) -> AdminResult:
    rows = list(rows)
    columns = list(SESSION_COLUMNS) if not rows else []
    for r in rows:
        for key in r:
            if key not in columns:
                columns.append(key)
    return AdminResult(columns, [tuple(_text(r.get(c)) for c in columns) for r in rows],
                       "SHOW")


async def execute(command: Command | str, identity: Identity, approvals: Approvals,
                  sessions: Callable[[], Iterable[Mapping[str, Any]]] | None = None
                  ) -> AdminResult:
    """Run one console command for *identity*.

    Approvers (members of ``approvals.approver_groups``) see every request and session;
    anyone else sees only their own, and cannot decide.

    Args:
        command: a parsed command or the query text.
        identity: the authenticated console user (``.user``, ``.groups``).
        approvals: the gateway's approvals service.
        sessions: returns one mapping per live client session (keys as in
            ``SESSION_COLUMNS``, more allowed, values turned to text).

    Returns:
        The result set to send.

    Raises:
        AdminCommandError: bad syntax (42601).
        NotAnApprover, OwnRequest: 42501. AlreadyDecided: 55000. UnknownRequest: 42704.
        StoreUnavailable: the approvals store failed.
    """
    cmd = parse(command) if isinstance(command, str) else command
    approver = is_approver(identity.groups, approvals.cfg.approver_groups)
    if cmd.verb == "empty":
        return AdminResult([], [], "")
    if cmd.verb == "help":
        return AdminResult(["command", "description"], list(HELP_ROWS), "SHOW")
    if cmd.verb == "show_approvals":
        reqs = await approvals.list(None if cmd.all else "pending")
        if not approver:
            reqs = [r for r in reqs if r.user == identity.user]
        return AdminResult(list(APPROVAL_COLUMNS), [_approval_row(r) for r in reqs], "SHOW")
    if cmd.verb == "show_approval":
        assert cmd.request_id is not None
        req = await approvals.get(cmd.request_id)
        if req is not None and not approver and req.user != identity.user:
            raise NotAnApprover("only approvers may see other users' requests")
        if req is None:
            raise UnknownRequest(f"no approval request {cmd.request_id}")
        return AdminResult(list(DETAIL_COLUMNS), [_approval_row(req, detail=True)], "SHOW")
    if cmd.verb in ("approve", "deny"):
        assert cmd.request_id is not None
        req = await approvals.decide(cmd.request_id, identity.user, tuple(identity.groups),
                                     cmd.verb == "approve", cmd.reason or "")
        row = (str(req.id), req.status, req.user, req.decided_by, req.decision_reason)
        return AdminResult(list(DECISION_COLUMNS), [row], cmd.verb.upper())
    if cmd.verb == "show_sessions":
        rows = list(sessions()) if sessions is not None else []
        if not approver:
            rows = [r for r in rows if r.get("user") == identity.user]
        return _session_result(rows)
    raise AdminCommandError(f"unknown command {cmd.verb!r}")
