"""The console's command language: tokens and the parser, without running anything.

Grammar (case-insensitive keywords, one command per query, optional trailing ``;``;
``--`` and ``/* */`` comments allowed)::

    HELP | SHOW HELP
    SHOW APPROVALS [ALL] | SHOW APPROVAL n | APPROVE n ['reason'] | DENY n ['reason']
    SHOW SESSIONS | SHOW SERVERS | SHOW LEASES | SHOW STATS | SHOW CONFIG | SHOW VERSION
    SHOW BLOCKS [ALL]
    RELOAD
    KILL session_id ['reason']
    BLOCK USER name 'reason' | UNBLOCK USER name

A reason is a standard SQL string literal (``''`` is a quote); a user name is a string
literal or a bare word (case kept); a session id is a bare word, digits-and-letters or a
literal. They are data, handed to the store as bound parameters, never spliced into SQL.
Anything else is refused with 42601.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..approvals import MAX_REASON_CHARS, MAX_USER_CHARS
from ..errors import AdminCommandError

MAX_COMMAND_CHARS = 10_000
MAX_ID = 2**63 - 1
HINT = "HELP lists the commands"

#: The SHOW targets that take no argument, and the verb each parses to.
SHOW_SIMPLE = {"SESSIONS": "show_sessions", "SERVERS": "show_servers",
               "LEASES": "show_leases", "STATS": "show_stats", "CONFIG": "show_config",
               "VERSION": "show_version", "HELP": "help"}
SHOW_WORDS = "APPROVALS, APPROVAL, BLOCKS, " + ", ".join(SHOW_SIMPLE)


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed console command.

    ``verb`` is one of: help, empty, show_approvals, show_approval, approve, deny,
    show_sessions, show_servers, show_leases, show_stats, show_config, show_version,
    show_blocks, reload, kill, block, unblock. ``target`` is the session id (kill) or
    the user name (block, unblock).
    """

    verb: str
    request_id: int | None = None
    reason: str | None = None
    all: bool = False
    target: str | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # word, int, ident (digits then letters), string, semi
    value: str  # upper-cased for words
    pos: int
    raw: str = ""  # the text as typed (words and idents)


def _error(pos: int, what: str) -> AdminCommandError:
    return AdminCommandError(f"syntax error at position {pos + 1}: {what}", hint=HINT)


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
                raise _error(i, "unterminated /* comment")
            i = j
        else:
            break
    return i


def _word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def tokenize(text: str) -> list[_Token]:
    """Split a console command into words, integers, string literals and semicolons.

    A run of digits followed by letters (``1a2b``, a session id) is an ``ident``; where a
    number is expected it is a "bad number".

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
                    raise _error(i, "unterminated string literal")
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
                raise _error(i, "unexpected text after string literal")
        elif c.isascii() and c.isdigit():
            j = i
            while j < n and text[j].isascii() and text[j].isdigit():
                j += 1
            if j < n and text[j] == ".":
                raise _error(i, f"bad number {text[i:j + 1]!r}")
            if j < n and _word_char(text[j]):
                while j < n and _word_char(text[j]):
                    j += 1
                tokens.append(_Token("ident", text[i:j].upper(), i, text[i:j]))
            else:
                tokens.append(_Token("int", text[i:j], i, text[i:j]))
            i = j
        elif c.isascii() and (c.isalpha() or c == "_"):
            j = i
            while j < n and _word_char(text[j]):
                j += 1
            if j < n and text[j] == "'":
                # E'…', U&'…', X'…' and friends have other escaping rules: refuse them.
                raise _error(i, "only standard '…' string literals are accepted")
            tokens.append(_Token("word", text[i:j].upper(), i, text[i:j]))
            i = j
        elif c == ";":
            tokens.append(_Token("semi", ";", i))
            i += 1
        else:
            raise _error(i, f"unexpected character {c!r}")


def _describe(t: _Token) -> str:
    # Never echo a literal's text back: it may be long, and it is the operator's data.
    return "a string literal" if t.kind == "string" else repr(t.value)


class _Parser:
    def __init__(self, text: str, toks: list[_Token]):
        self.text = text
        self.toks = toks
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.toks)

    def peek(self, kind: str, value: str | None = None) -> bool:
        if not self.more():
            return False
        t = self.toks[self.pos]
        return t.kind == kind and (value is None or t.value == value)

    def take(self, kinds: str | tuple[str, ...], what: str, value: str | None = None) -> _Token:
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if not self.more():
            raise _error(len(self.text), f"expected {what} at end of command")
        t = self.toks[self.pos]
        if t.kind not in kinds or (value is not None and t.value != value):
            raise _error(t.pos, f"expected {what}, got {_describe(t)}")
        self.pos += 1
        return t

    def request_id(self) -> int:
        if self.peek("ident"):
            t = self.toks[self.pos]
            raise _error(t.pos, f"bad number {t.raw!r}")
        t = self.take("int", "a request id")
        value = int(t.value)
        if not 1 <= value <= MAX_ID:
            raise _error(t.pos, f"request id {t.value} out of range")
        return value

    def reason(self, required: bool = False) -> str:
        if required or self.peek("string"):
            value = self.take("string", "a reason ('…')").value
            if len(value) > MAX_REASON_CHARS:
                raise AdminCommandError(f"reason longer than {MAX_REASON_CHARS} characters")
            return value
        return ""

    def user_name(self) -> str:
        t = self.take(("string", "word"), "a user name ('…')")
        name = t.value if t.kind == "string" else t.raw
        if not name or len(name) > MAX_USER_CHARS:
            raise _error(t.pos, f"a user name must be 1 to {MAX_USER_CHARS} characters")
        return name

    def session_id(self) -> str:
        t = self.take(("string", "word", "ident", "int"), "a session id")
        value = t.value if t.kind == "string" else t.raw
        if not value:
            raise _error(t.pos, "empty session id")
        return value

    def optional_all(self) -> bool:
        if self.more():
            self.take("word", "ALL or the end of the command", "ALL")
            return True
        return False

    def end(self) -> None:
        if self.more():
            t = self.toks[self.pos]
            raise _error(t.pos, f"unexpected {_describe(t)} after the command")


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
            raise _error(t.pos, "one command per query")
    if not toks:
        return Command("empty")
    p = _Parser(text, toks)
    first = p.take("word", "a command")
    verb = first.value
    cmd: Command
    if verb == "HELP":
        cmd = Command("help")
    elif verb in ("APPROVE", "DENY"):
        rid = p.request_id()
        cmd = Command(verb.lower(), request_id=rid, reason=p.reason())
    elif verb == "RELOAD":
        cmd = Command("reload")
    elif verb == "KILL":
        sid = p.session_id()
        cmd = Command("kill", target=sid, reason=p.reason())
    elif verb in ("BLOCK", "UNBLOCK"):
        p.take("word", "USER", "USER")
        name = p.user_name()
        if verb == "BLOCK":
            cmd = Command("block", target=name, reason=p.reason(required=True))
        else:
            cmd = Command("unblock", target=name)
    elif verb == "SHOW":
        what = p.take("word", SHOW_WORDS)
        if what.value == "APPROVALS":
            cmd = Command("show_approvals", all=p.optional_all())
        elif what.value == "APPROVAL":
            cmd = Command("show_approval", request_id=p.request_id())
        elif what.value == "BLOCKS":
            cmd = Command("show_blocks", all=p.optional_all())
        elif what.value in SHOW_SIMPLE:
            cmd = Command(SHOW_SIMPLE[what.value])
        else:
            raise _error(what.pos, f"unknown SHOW {what.value!r} ({SHOW_WORDS})")
    else:
        raise _error(first.pos, f"unknown command {verb!r} "
                                "(SHOW, APPROVE, DENY, RELOAD, KILL, BLOCK, UNBLOCK, HELP)")
    p.end()
    return cmd


def quote_literal(value: str) -> str:
    """*value* as a standard SQL string literal the console's parser reads back verbatim.

    Raises:
        ValueError: *value* contains a NUL character (no PostgreSQL string can).
    """
    if "\x00" in value:
        raise ValueError("a string literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"
