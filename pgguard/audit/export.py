"""The auditor's readers: :func:`export` (matching records as one msgpack stream),
:func:`replay` (one session as a readable transcript) and :func:`sessions` (the recorded
sessions, one line each). All verify the whole log first.
"""

from __future__ import annotations

import collections
import datetime as _dt
import heapq
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .format import FORMAT_VERSION, SEGMENT_TYPES, AuditError, key_id, mac_proto, new_packer
from .verify import SegmentScan, VerifyResult, chain_order, check_files, expand_paths, scan_segment

EXPORT_FORMAT = "pgguard-audit-export"


def _ts(rec: dict[str, Any]) -> float:
    """A record's timestamp; 0 when a forced read meets a damaged one."""
    return rec["ts"] if isinstance(rec["ts"], (int, float)) else 0.0


def _records(dir: str | os.PathLike[str], key: bytes,
             force: bool) -> tuple[VerifyResult, Iterator[tuple[str, dict[str, Any]]]]:
    """Verify the log under *dir*, then stream ``(path, record)`` in time order.

    Records of one instance stay in log order; instances are merged by timestamp.
    """
    files = expand_paths([dir])
    result, segs = check_files(files, key)
    if not result.ok and not force:
        raise AuditError(f"the audit log does not verify: {result.first_bad} "
                         "(use --force to read it anyway)")
    proto, kid = mac_proto(key), key_id(key)
    chains: dict[str, list[SegmentScan]] = collections.defaultdict(list)
    for seg in segs:
        chains[chain_order(seg)[0]].append(seg)

    def chain_records(chain: list[SegmentScan]) -> Iterator[tuple[str, dict[str, Any]]]:
        for seg in chain:
            try:
                with open(seg.path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            full = scan_segment(seg.path, data, proto, kid, keep=True)
            for rec in full.items or ():
                yield seg.path, rec

    merged = heapq.merge(*(chain_records(c) for _, c in sorted(chains.items())),
                         key=lambda entry: _ts(entry[1]))
    return result, merged


def export(dir: str | os.PathLike[str], key: bytes, out_path: str | os.PathLike[str],
           since: float | None = None, until: float | None = None, user: str | None = None,
           connection: str | None = None, session: str | None = None,
           force: bool = False) -> int:
    """Write matching session records as one msgpack stream for compliance.

    The stream is a header map (``format``, ``version``, ``created``, ``source``,
    ``filters``, ``verified``, ``verify_error``) followed by one map per record (see
    docs/audit-format.md). ``since`` is inclusive and ``until`` exclusive, on each record's
    ``ts``; ``user``/``connection`` match the session's ``session_start``; ``session`` the
    session id. Segment bookkeeping records are not exported.

    Args:
        dir: the recording folder.
        key: the HMAC key; the whole log is verified before anything is exported.
        out_path: the output file, or ``-`` for standard output.
        since, until: epoch seconds bounds.
        user, connection, session: exact matches.
        force: export even when verification fails (the header then says so).

    Returns:
        The number of records exported.

    Raises:
        AuditError: the log does not verify and *force* is false.
        OSError: the output cannot be written.
    """
    result, stream = _records(dir, key, force)
    header = {
        "format": EXPORT_FORMAT,
        "version": FORMAT_VERSION,
        "created": time.time(),
        "source": os.fspath(dir),
        "filters": {"since": since, "until": until, "user": user, "connection": connection,
                    "session": session},
        "verified": result.ok,
        "verify_error": None if result.ok else str(result.first_bad),
    }
    packer = new_packer()
    to_stdout = os.fspath(out_path) == "-"
    tmp = None if to_stdout else Path(f"{os.fspath(out_path)}.tmp{os.getpid()}")
    out = sys.stdout.buffer if to_stdout else open(tmp, "wb")  # noqa: SIM115
    count = 0
    sessions: dict[str, tuple[Any, Any]] = {}
    try:
        out.write(packer.pack(header))
        for path, rec in stream:
            rtype, sid, fields = rec["type"], rec["session"], rec["fields"]
            if rtype in SEGMENT_TYPES:
                continue
            if rtype == "session_start" and isinstance(fields, dict):
                sessions[sid] = (fields.get("user"), fields.get("connection"))
            who, conn = sessions.get(sid, (None, None))
            ts = _ts(rec)
            if since is not None and ts < since:
                continue
            if until is not None and ts >= until:
                continue
            if user is not None and who != user:
                continue
            if connection is not None and conn != connection:
                continue
            if session is not None and sid != session:
                continue
            out.write(packer.pack({
                "ts": ts, "session": sid, "type": rtype, "user": who, "connection": conn,
                "fields": fields, "segment": os.path.basename(path), "seq": rec["seq"],
                "mac": rec["mac"],
            }))
            count += 1
        out.flush()
        if tmp is not None:
            os.fsync(out.fileno())
            out.close()
            os.replace(tmp, out_path)
    except BaseException:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
        raise
    return count


def _fmt_ts(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "?"
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _safe(text: Any, keep_newlines: bool = False) -> str:
    """Render a recorded value so it cannot drive the auditor's terminal."""
    if text is None:
        return "NULL"
    if isinstance(text, bytes):
        return "\\x" + text.hex()
    text = str(text).replace("\t", "    ")
    if not keep_newlines:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_NUMERIC_OIDS = {20, 21, 23, 26, 700, 701, 790, 1700}


def _table(columns: Any, rows: Any) -> list[str]:
    cols = columns if isinstance(columns, list) else []
    names = [_safe(c[0] if isinstance(c, list) and c else c) for c in cols]
    right = [isinstance(c, list) and len(c) > 1 and c[1] in _NUMERIC_OIDS for c in cols]
    body = [[_safe(v) for v in row] for row in rows if isinstance(row, list)]
    ncols = max([len(names)] + [len(r) for r in body])
    names += [""] * (ncols - len(names))
    right += [False] * (ncols - len(right))
    for r in body:
        r += [""] * (ncols - len(r))
    widths = [max([len(names[i])] + [len(r[i]) for r in body]) for i in range(ncols)]

    def line(cells: list[str], align: bool = True) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if align and right[i] else cell.ljust(widths[i]))
        return (" " + " | ".join(out)).rstrip()

    lines = [line([n.center(widths[i]) for i, n in enumerate(names)], align=False),
             "-" + "-+-".join("-" * w for w in widths) + "-"]
    lines += [line(r) for r in body]
    return lines


def _indent(text: str, prefix: str = "    ") -> list[str]:
    return [prefix + line for line in text.splitlines() or [""]]


@dataclass
class SessionSummary:
    """One recorded session, as ``pgguard audit sessions`` lists it."""

    id: str
    user: str | None = None
    connection: str | None = None
    client: str | None = None
    start: float | None = None
    end: float | None = None
    end_reason: str | None = None
    statements: int = 0
    refusals: int = 0
    holds: int = 0


def sessions(dir: str | os.PathLike[str], key: bytes, since: float | None = None,
             user: str | None = None, force: bool = False) -> list[SessionSummary]:
    """The recorded sessions, oldest first, after verifying the whole log.

    Args:
        dir: the recording folder.
        key: the HMAC key.
        since: only sessions still open at or after this time (epoch seconds): ended at
            or after it, or not ended.
        user: only this user's sessions.
        force: list even when verification fails.

    Raises:
        AuditError: the log does not verify and *force* is false.
    """
    _, stream = _records(dir, key, force)
    found: dict[str, SessionSummary] = {}
    for _, rec in stream:
        sid, rtype = rec["session"], rec["type"]
        if rtype in SEGMENT_TYPES or not isinstance(sid, str):
            continue
        f = rec["fields"] if isinstance(rec["fields"], dict) else {}
        s = found.get(sid)
        if s is None:
            s = found[sid] = SessionSummary(sid, start=_ts(rec))
        if rtype == "session_start":
            s.user, s.connection = f.get("user"), f.get("connection")
            s.client, s.start = f.get("client_addr"), _ts(rec)
        elif rtype == "statement":
            s.statements += 1
            if f.get("refused"):
                s.refusals += 1
        elif rtype == "approval_request":
            s.holds += 1
        elif rtype == "session_end":
            s.end, s.end_reason = _ts(rec), f.get("reason")
    out = [s for s in found.values()
           if (user is None or s.user == user)
           and (since is None or s.end is None or s.end >= since)]
    out.sort(key=lambda s: s.start or 0.0)
    return out


def _held_first(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in log order, except that a held statement comes before the approval
    records of its request (the gateway records the statement once the hold ends)."""
    statement_of: set[Any] = set()
    for rec in records:
        f = rec["fields"] if isinstance(rec["fields"], dict) else {}
        if rec["type"] == "statement" and f.get("request_id") is not None:
            statement_of.add(f["request_id"])
    out: list[dict[str, Any]] = []
    waiting: dict[Any, list[dict[str, Any]]] = {}
    for rec in records:
        f = rec["fields"] if isinstance(rec["fields"], dict) else {}
        rid = f.get("request_id")
        if rec["type"] in ("approval_request", "approval_decision") and rid in statement_of:
            waiting.setdefault(rid, []).append(rec)
            continue
        out.append(rec)
        if rec["type"] == "statement" and rid in waiting:
            out += waiting.pop(rid)
    for recs in waiting.values():
        out += recs
    return out


def render_session(records: Sequence[dict[str, Any]]) -> str:
    """Format one session's records as a readable transcript.

    Args:
        records: the session's records as decoded from the log, in log order (a held
            statement is shown before its approval records).

    Returns:
        The transcript; recorded values have control characters escaped.
    """
    out: list[str] = []
    for rec in _held_first(records):
        f = rec["fields"] if isinstance(rec["fields"], dict) else {}
        t = rec["type"]
        when = _fmt_ts(rec["ts"])
        if t == "session_start":
            groups = ", ".join(_safe(g) for g in f.get("groups") or [])
            out += [
                f"Session {_safe(rec['session'])}",
                f"  user        {_safe(f.get('user'))}" + (f" (groups: {groups})" if groups
                                                           else ""),
                f"  connection  {_safe(f.get('connection'))}",
                f"  client      {_safe(f.get('client_addr'))}"
                f" ({'TLS' if f.get('tls') else 'no TLS'})",
                f"  instance    {_safe(f.get('instance'))}",
                f"  started     {when}",
                "",
            ]
        elif t == "statement":
            decision = _safe(f.get("decision"))
            what = "/".join(_safe(x) for x in (f.get("category"), f.get("kind")) if x)
            out.append(f"[{when}] statement ({_safe(f.get('protocol'))}): {decision}"
                       + (f", {what}" if what else ""))
            out += _indent(_safe(f.get("sql"), keep_newlines=True))
            if f.get("params"):
                out.append("    params: " + ", ".join(_safe(p) for p in f["params"]))
            if f.get("reason"):
                out.append(f"    reason: {_safe(f.get('reason'))}")
        elif t == "result":
            rows = f.get("rows") or []
            count = f.get("row_count")
            out.append(f"[{when}] result: {_safe(f.get('command_tag'))} ({_safe(count)} rows)")
            if f.get("columns"):
                out += _indent("\n".join(_table(f.get("columns"), rows)), "  ")
                if f.get("truncated"):
                    out.append(f"  (recorded the first {len(rows)} of {_safe(count)} rows)")
        elif t == "error":
            out.append(f"[{when}] error {_safe(f.get('sqlstate'))}: {_safe(f.get('message'))}")
        elif t == "notice":
            text = f.get("message", f.get("text"))
            out.append(f"[{when}] notice: {_safe(text)}")
        elif t == "approval_request":
            extra = ", ".join(f"{_safe(k)}={_safe(v)}" for k, v in f.items()
                              if k != "request_id")
            out.append(f"[{when}] held for approval as request {_safe(f.get('request_id'))}"
                       + (f" ({extra})" if extra else ""))
        elif t == "approval_decision":
            out.append(f"[{when}] approval request {_safe(f.get('request_id'))}: "
                       f"{_safe(f.get('decision'))} by {_safe(f.get('approver'))}"
                       + (f": {_safe(f.get('reason'))}" if f.get("reason") else ""))
        elif t == "cancel":
            out.append(f"[{when}] cancel requested"
                       + (f": {_safe(f.get('reason'))}" if f.get("reason") else ""))
        elif t == "session_end":
            dur = f.get("duration_s")
            dur_text = f"{dur:.3f} s" if isinstance(dur, (int, float)) else "?"
            out += ["", f"Session ended {when} after {dur_text}: {_safe(f.get('reason'))}; "
                        f"{_safe(f.get('bytes_in'))} bytes in, "
                        f"{_safe(f.get('bytes_out'))} bytes out"]
        else:
            out.append(f"[{when}] {_safe(t)}: {_safe(f)}")
    return "\n".join(out) + "\n"


def replay(dir: str | os.PathLike[str], key: bytes, session_id: str,
           force: bool = False) -> str:
    """A readable transcript of one session: who, when, statements, results, end.

    Args:
        dir: the recording folder.
        key: the HMAC key; the log is verified first.
        session_id: the session id, or a unique prefix of it.
        force: replay even when verification fails (a warning heads the transcript).

    Returns:
        The transcript text.

    Raises:
        AuditError: the log does not verify (without *force*), or no or several sessions
            match.
    """
    result, stream = _records(dir, key, force)
    found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _, rec in stream:
        sid = rec["session"]
        if rec["type"] not in SEGMENT_TYPES and isinstance(sid, str) \
                and sid.startswith(session_id):
            found[sid].append(rec)
    if session_id in found:
        chosen = session_id
    elif len(found) == 1:
        chosen = next(iter(found))
    elif not found:
        raise AuditError(f"no session {session_id!r} in {os.fspath(dir)}")
    else:
        raise AuditError(f"session prefix {session_id!r} is ambiguous: "
                         + ", ".join(sorted(found)[:5]))
    text = render_session(found[chosen])
    if not result.ok:
        text = f"WARNING: the audit log does not verify: {result.first_bad}\n\n" + text
    return text

