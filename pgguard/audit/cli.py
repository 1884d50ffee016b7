"""``pgguard audit verify|export|sessions|replay``: the argparse side of the auditor's commands.

:func:`add_cli` hangs the commands under ``pgguard``'s own parser; :func:`main` runs them
alone (``python -m pgguard.audit``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Callable, Sequence

from ..config import load
from ..errors import ConfigError
from .export import export, replay, sessions
from .format import AuditError, load_key
from .verify import verify

#: A command handler: the parsed arguments in, the exit code out.
Command = Callable[[argparse.Namespace], int]


def parse_time(value: str) -> float:
    """Parse ``--since``/``--until``: ISO 8601 (naive means UTC) or epoch seconds.

    Args:
        value: ``2024-05-01T12:00:00Z``, ``2024-05-01 14:00:00+02:00`` or ``1714564800``.

    Returns:
        Seconds since the epoch.

    Raises:
        ValueError: neither form.
    """
    try:
        return float(value)
    except ValueError:
        pass
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = _dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


def _settings(args: argparse.Namespace) -> tuple[str | None, bytes]:
    directory = getattr(args, "dir", None)
    key_file = getattr(args, "key_file", None)
    if args.config:
        rec = load(args.config).recording
        directory = directory or rec.dir
        key_file = key_file or rec.key_file
    if not key_file:
        raise AuditError("no key: give --config FILE (recording.key_file) or --key-file")
    return directory, load_key(key_file)


def _cmd_verify(args: argparse.Namespace) -> int:
    directory, key = _settings(args)
    paths = args.paths or ([directory] if directory else [])
    if not paths:
        raise AuditError("nothing to verify: give PATH or --config with recording.dir")
    result = verify(paths, key)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.ok:
        print(f"OK: {result.records} records in {result.segments} segments")
        return 0
    print(result.first_bad)
    return 1


def _need_dir(directory: str | None) -> str:
    if not directory:
        raise AuditError("no recording folder: give --config FILE (recording.dir) or --dir")
    return directory


def _cmd_export(args: argparse.Namespace) -> int:
    directory, key = _settings(args)
    n = export(_need_dir(directory), key, args.output, since=args.since, until=args.until,
               user=args.user, connection=args.connection, session=args.session,
               force=args.force)
    print(f"exported {n} records to {args.output}", file=sys.stderr)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    directory, key = _settings(args)
    sys.stdout.write(replay(_need_dir(directory), key, args.session, force=args.force))
    return 0


SESSION_COLUMNS = ("id", "user", "connection", "start", "end", "statements", "refusals",
                   "holds")


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="seconds")


def _cmd_sessions(args: argparse.Namespace) -> int:
    directory, key = _settings(args)
    found = sessions(_need_dir(directory), key, since=args.since, user=args.user,
                     force=args.force)
    table = [SESSION_COLUMNS] + [
        (s.id, s.user or "?", s.connection or "?", _iso(s.start),
         _iso(s.end) if s.end is not None else "(open)", str(s.statements),
         str(s.refusals), str(s.holds)) for s in found]
    widths = [max(len(row[i]) for row in table) for i in range(len(SESSION_COLUMNS))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"({len(found)} session{'s' if len(found) != 1 else ''})", file=sys.stderr)
    return 0


def _time_arg(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor epoch seconds"
        ) from None


def _guard(handler: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (AuditError, ConfigError, OSError, ValueError) as exc:
            print(f"pgguard audit: error: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, AuditError) else 2
    return run


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` with ``verify``, ``export``, ``sessions`` and ``replay`` to a
    subparsers object.

    Each leaf parser sets ``func``: call ``args.func(args)`` to run the command; it
    returns the exit code (0 success, 1 a failed verification or a refused/empty
    request, 2 bad usage such as an unreadable configuration).

    Args:
        subparsers: the result of ``ArgumentParser.add_subparsers()``.
    """
    audit = subparsers.add_parser(
        "audit", help="verify, export and replay session recordings",
        description="Verify, export and replay the tamper-evident session recordings.")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="pgguard configuration (reads recording.dir and key_file)")
    common.add_argument("--key-file", metavar="FILE", help="HMAC key file (overrides config)")

    p = commands.add_parser("verify", parents=[common], help="check the logs are intact",
                            description="Exit 0 when intact; otherwise print "
                                        "FILE:SEQ: WHY of the first bad record and exit 1.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="segment files or folders (default: recording.dir)")
    p.set_defaults(func=_guard(_cmd_verify))

    p = commands.add_parser("export", parents=[common], help="write records as msgpack",
                            description="Write the matching records as one msgpack stream "
                                        "(format in docs/audit-format.md).")
    p.add_argument("--dir", help="recording folder (overrides config)")
    p.add_argument("--since", metavar="T", type=_time_arg,
                   help="ISO 8601 or epoch seconds (inclusive)")
    p.add_argument("--until", metavar="T", type=_time_arg,
                   help="ISO 8601 or epoch seconds (exclusive)")
    p.add_argument("--user", metavar="U")
    p.add_argument("--connection", metavar="C")
    p.add_argument("--session", metavar="S")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="output file, - = stdout")
    p.add_argument("--force", action="store_true", help="export even if verification fails")
    p.set_defaults(func=_guard(_cmd_export))

    p = commands.add_parser("sessions", parents=[common], help="list recorded sessions",
                            description="One line per recorded session: id, user, "
                                        "connection, start, end, statements, refusals, "
                                        "holds (times in UTC).")
    p.add_argument("--dir", help="recording folder (overrides config)")
    p.add_argument("--since", metavar="T", type=_time_arg,
                   help="sessions open at or after T (ISO 8601 or epoch seconds)")
    p.add_argument("--user", metavar="U", help="only this user's sessions")
    p.add_argument("--force", action="store_true", help="list even if verification fails")
    p.set_defaults(func=_guard(_cmd_sessions))

    p = commands.add_parser("replay", parents=[common], help="print a session transcript",
                            description="Print what happened in one session.")
    p.add_argument("--dir", help="recording folder (overrides config)")
    p.add_argument("session", metavar="SESSION", help="session id (or a unique prefix)")
    p.add_argument("--force", action="store_true", help="replay even if verification fails")
    p.set_defaults(func=_guard(_cmd_replay))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pgguard.audit [audit] COMMAND ...``: the audit commands on their own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["audit"]:
        argv.insert(0, "audit")
    parser = argparse.ArgumentParser(prog="pgguard")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
