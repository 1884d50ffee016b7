"""``pgguard approvals``: the DBA's terminal prompt, a client of the admin console.

It connects to the gateway's admin console (the database ``pgguard``) with the DBA's own
OIDC token, lists the pending requests, shows each one (who, where, why it was held, the
SQL pretty-printed by pglast) and asks approve / deny / skip with a reason, which it sends
as ``APPROVE n 'reason'`` / ``DENY n 'reason'``. ``--watch`` keeps polling for new ones.
It never touches the approvals store itself.

The SQL shown comes from an agent: control and bidirectional-formatting characters are
shown escaped (``\\x1b``, ``\\u202e``) so a statement cannot repaint or reorder the DBA's
terminal to hide what it does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from collections.abc import Callable
from typing import Any, TextIO

from .commands import quote_literal

ADMIN_DB = "pgguard"
DEFAULT_INTERVAL_S = 2.0
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0
RECONNECT_ATTEMPTS = 3
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments or no token: exit 2 with the message."""


# ---------------------------------------------------------------------------- display

class Style:
    """ANSI colour, or plain text when colour is off."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33",
             "blue": "34", "magenta": "35", "cyan": "36", "keyword": "1;34", "alert": "1;7;31"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, name: str) -> str:
        if not self.enabled or not text:
            return text
        return f"\x1b[{self.CODES[name]}m{text}\x1b[0m"


def use_colour(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour when *stream* is a terminal, NO_COLOR is unset and TERM is not ``dumb``."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _unsafe(ch: str) -> bool:
    if ch in "\n\t":
        return False
    # Cc: C0/C1 controls (ESC, CR, BS…); Cf: format characters including the bidi
    # overrides and zero-width joiners; Zl/Zp: line/paragraph separators.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str, style: Style | None = None) -> str:
    """*text* with control and formatting characters shown as escapes (highlighted)."""
    if not any(_unsafe(c) for c in text):
        return text
    style = style or Style(False)
    return "".join(style(_escape(c), "alert") if _unsafe(c) else c for c in text)


def pretty_sql(sql: str) -> tuple[str, bool]:
    """The SQL pretty-printed by pglast, and whether that worked (else *sql* as sent)."""
    try:
        import pglast

        return pglast.prettify(sql), True
    except Exception:  # any parse or deparse failure: show the text as sent
        return sql, False


def highlight_sql(sql: str, style: Style) -> str:
    """*sql*, sanitized, with keywords, literals and comments coloured when enabled."""
    if not style.enabled:
        return sanitize(sql)
    try:
        from pglast.parser import scan

        tokens = scan(sql)
    except Exception:
        return sanitize(sql, style)
    out, pos = [], 0
    for tok in tokens:
        start, end = tok.start, tok.end + 1
        if start < pos or end > len(sql):
            return sanitize(sql, style)
        out.append(sanitize(sql[pos:start], style))
        piece = sanitize(sql[start:end], style)
        if tok.kind != "NO_KEYWORD":
            piece = style(piece, "keyword")
        elif tok.name in ("SCONST", "USCONST", "BCONST", "XCONST"):
            piece = style(piece, "green")
        elif tok.name in ("ICONST", "FCONST", "PARAM"):
            piece = style(piece, "cyan")
        elif tok.name in ("SQL_COMMENT", "C_COMMENT"):
            piece = style(piece, "dim")
        out.append(piece)
        pos = end
    out.append(sanitize(sql[pos:], style))
    return "".join(out)


def render_request(req: dict[str, Any], style: Style) -> str:
    """A request as the prompt shows it: header, who/where/why, parameters, the SQL."""
    s = lambda v: sanitize("" if v is None else str(v), style)  # noqa: E731
    lines = [style(f"── request {s(req.get('id'))} ", "bold")
             + style(f"({s(req.get('status'))} since {s(req.get('created_at'))})", "dim")]
    fields = [("user", s(req.get("user"))), ("groups", s(req.get("groups")) or "-"),
              ("connection", s(req.get("connection"))),
              ("category", f"{s(req.get('category'))} ({s(req.get('kind'))})"),
              ("held because", s(req.get("reason")))]
    for label, value in fields:
        lines.append("  " + style(f"{label + ':':<14}", "yellow") + value)
    params = req.get("params")
    if params:
        try:
            values = json.loads(params)
        except ValueError:
            values = [params]
        shown = ", ".join(f"${i} = " + ("NULL" if v is None else s(repr(v)))
                          for i, v in enumerate(values, 1))
        lines.append("  " + style(f"{'parameters:':<14}", "yellow") + shown)
    sql = req.get("sql") or ""
    text, parsed = pretty_sql(sql)
    lines.append(f"  {style('SQL:', 'yellow')}"
                 + ("" if parsed else style("  (not parseable; shown as sent)", "red")))
    for line in highlight_sql(text, style).split("\n"):
        lines.append("    " + line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- console

class Console:
    """The admin-console connection (psycopg 3, simple query protocol)."""

    def __init__(self, dsn: str, token: str, connect_timeout_s: float = 10.0):
        self.dsn = dsn
        self._token = token
        self.connect_timeout_s = connect_timeout_s
        self.conn: Any = None

    def connect(self) -> None:
        import psycopg

        self.close()
        # ClientCursor sends plain Query messages: the console speaks the simple protocol
        # like psql does, and our commands carry no bound parameters anyway.
        self.conn = psycopg.connect(self.dsn, password=self._token, autocommit=True,
                                    connect_timeout=max(1, int(self.connect_timeout_s)),
                                    cursor_factory=psycopg.ClientCursor)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one console command; rows as dicts keyed by column name."""
        if self.conn is None or self.conn.closed:
            self.connect()
        with self.conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                return []
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pending(self) -> list[dict[str, Any]]:
        return self.query("SHOW APPROVALS")

    def decide(self, request_id: int, approve: bool, reason: str) -> dict[str, Any]:
        verb = "APPROVE" if approve else "DENY"
        rows = self.query(f"{verb} {int(request_id)} {quote_literal(reason)}")
        return rows[0] if rows else {}


def error_text(exc: BaseException) -> str:
    """A psycopg error's primary message (the gateway's ``pgguard: …`` text)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or str(exc).strip() or type(exc).__name__


def admin_dsn(dsn: str) -> str:
    """*dsn* with the database set to the admin console (``pgguard``) when it names none.

    Raises:
        UsageError: the DSN is malformed or names another database.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        raise UsageError(f"bad --gateway DSN: {error_text(exc)}") from None
    if "password" in params:
        raise UsageError("put the token in PGPASSWORD or --token-file, not in the DSN")
    dbname = params.get("dbname")
    if dbname and dbname != ADMIN_DB:
        raise UsageError(f"the admin console is the database {ADMIN_DB!r}, not {dbname!r}")
    return make_conninfo(dsn, dbname=ADMIN_DB)


def read_token(token_file: str | None, environ: dict[str, str] | None = None) -> str:
    """The DBA's OIDC token from *token_file* or ``PGPASSWORD``.

    Raises:
        UsageError: neither is given, or the file cannot be read or is empty.
    """
    env = os.environ if environ is None else environ
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise UsageError(f"--token-file {token_file} is empty")
        return token
    token = env.get("PGPASSWORD", "").strip()
    if not token:
        raise UsageError("no token: set PGPASSWORD or pass --token-file")
    return token


# ---------------------------------------------------------------------------- the prompt

class Prompt:
    """The interactive loop, over any input/output (a terminal in real use)."""

    def __init__(self, console: Console, out: TextIO, ask: Callable[[str], str],
                 style: Style, watch: bool, interval_s: float,
                 sleep: Callable[[float], None] = time.sleep):
        self.console = console
        self.out = out
        self.ask = ask
        self.style = style
        self.watch = watch
        self.interval_s = interval_s
        self.sleep = sleep
        self.seen: set[str] = set()

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> int:
        """Review pending requests (forever with --watch). Returns the exit code."""
        waiting_shown = False
        failures = 0
        while True:
            try:
                rows = self.console.pending()
                failures = 0
            except Exception as exc:  # psycopg errors: the gateway went away or refused us
                if not self.watch or failures >= RECONNECT_ATTEMPTS:
                    self.say(self.style(f"pgguard approvals: {error_text(exc)}", "red"))
                    return EXIT_FAIL
                failures += 1
                self.console.close()
                self.say(self.style(f"lost the console ({error_text(exc)}); retrying", "red"))
                self.sleep(min(self.interval_s * failures, MAX_INTERVAL_S))
                continue
            new = [r for r in rows if str(r.get("id")) not in self.seen]
            if not new and not self.watch:
                self.say("no pending requests" if not rows else "no more pending requests")
                return EXIT_OK
            for req in new:
                self.seen.add(str(req.get("id")))
                if self.review(req) == "quit":
                    return EXIT_OK
                waiting_shown = False
            if not self.watch:
                return EXIT_OK
            if not waiting_shown:
                self.say(self.style("waiting for new requests (Ctrl-C to quit)", "dim"))
                waiting_shown = True
            self.sleep(self.interval_s)

    def review(self, req: dict[str, Any]) -> str:
        """Show one request and act on the DBA's answer: approved/denied/skipped/quit."""
        self.say()
        self.say(render_request(req, self.style))
        while True:
            answer = self.ask("approve / deny / skip [a/d/s]? ").strip().lower()
            if answer in ("a", "approve", "d", "deny"):
                break
            if answer in ("s", "skip"):
                self.say(f"skipped request {req.get('id')}")
                return "skipped"
            if answer in ("q", "quit"):
                return "quit"
            self.say("answer a (approve), d (deny), s (skip) or q (quit)")
        approve = answer.startswith("a")
        reason = self.ask("reason: ").strip()
        while "\x00" in reason:
            reason = self.ask("reason (no NUL characters): ").strip()
        try:
            row = self.console.decide(int(req["id"]), approve, reason)
        except Exception as exc:  # the console refused: show why, go on with the next
            self.say(self.style(error_text(exc), "red"))
            return "failed"
        status = row.get("status") or ("approved" if approve else "denied")
        self.say(self.style(f"request {req.get('id')} {status}",
                            "green" if status == "approved" else "magenta"))
        return status


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be between {MIN_INTERVAL_S} and "
                                         f"{MAX_INTERVAL_S} seconds")
    return seconds


def run(args: argparse.Namespace) -> int:
    """The ``approvals`` subcommand. Returns the exit code."""
    try:
        token = read_token(args.token_file)
        dsn = admin_dsn(args.gateway)
    except UsageError as exc:
        print(f"pgguard approvals: {exc}", file=sys.stderr)
        return EXIT_USAGE
    style = Style(use_colour(sys.stdout))
    console = Console(dsn, token)
    try:
        console.connect()
    except Exception as exc:
        print(f"pgguard approvals: cannot connect to the admin console: {error_text(exc)}",
              file=sys.stderr)
        return EXIT_FAIL
    prompt = Prompt(console, sys.stdout, input, style, args.watch, args.interval)
    try:
        return prompt.run()
    except EOFError:
        prompt.say()
        return EXIT_OK
    except KeyboardInterrupt:
        prompt.say()
        return EXIT_INTERRUPTED
    finally:
        console.close()


def add_cli(subparsers: Any) -> None:
    """Register ``pgguard approvals`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "approvals", help="review held statements (the DBA's terminal prompt)",
        description="Review statements held for approval through the gateway's admin "
                    "console. The token is read from PGPASSWORD or --token-file.")
    p.add_argument("--gateway", required=True,
                   help="DSN of the gateway, e.g. postgresql://alice@gw:6432/pgguard")
    p.add_argument("--watch", action="store_true", help="keep waiting for new requests")
    p.add_argument("--token-file", help="file holding your OIDC token (else PGPASSWORD)")
    p.add_argument("--interval", type=_interval, default=DEFAULT_INTERVAL_S,
                   help=f"seconds between polls with --watch (default {DEFAULT_INTERVAL_S})")
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """``python -m pgguard.admin.prompt``: the same as ``pgguard approvals``."""
    parser = argparse.ArgumentParser(prog="pgguard")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["approvals", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
