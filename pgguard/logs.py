"""Log lines: one event per line, as logfmt text or as JSON, with secrets redacted.

Every line carries an event name and key=value fields. Call sites either pass the fields
structured::

    log_event(log, "session_end", session=sid, reason="client closed")

or, as most of today's code does, log an already formatted logfmt-ish message::

    log.info("event=session_end session=%s reason=%r", sid, reason)

The formatters parse such a message back into fields (``%r``'s Python quoting is
understood, and a bare word after a value is taken to continue it, as ``%s`` of a
message with spaces produces), so both kinds render the same in both formats. A message
that is not ``event=...`` starts with its first word as the event name when it looks like
one (``jwks_refresh reason=unknown_kid``), else it becomes ``event=log msg="..."``.

Text lines start with ``event=NAME``, then ``ts``, ``level`` and ``logger``, then the
fields; a value is quoted (``"..."`` with ``\\"``, ``\\\\`` and ``\\n`` escapes) when it is
empty or holds a space, a quote, ``=`` or a control character. JSON lines hold the same
fields as one object.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["JsonFormatter", "REDACTED", "TextFormatter", "log_event", "parse_message",
           "redact", "setup"]

FORMATS = ("text", "json")
REDACTED = "[redacted]"
#: Keys whose values are never written, whatever the call site passed.
SECRET_KEYS = frozenset({"password", "token", "secret", "lease_secret", "secret_id",
                         "passwd", "authorization"})
_SECRET_SUFFIXES = ("_password", "_token", "_secret")
_EXTRA_ATTR = "pgguard_fields"
_EVENT_ATTR = "pgguard_event"
_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")
_KEY = re.compile(r"([A-Za-z_][\w.\-]*)=")
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[\x00-\x1f\x7f]')


def log_event(logger: logging.Logger, event: str, /, level: int = logging.INFO,
              **fields: Any) -> None:
    """Log *event* with structured *fields* (rendered as logfmt or JSON by :func:`setup`).

    Args:
        logger: the module's logger.
        event: the event name (``session_end``).
        level: a ``logging`` level.
        **fields: the key=value pairs, in order; secret-named keys are redacted.
    """
    if logger.isEnabledFor(level):
        logger.log(level, "event=%s", event,
                   extra={_EVENT_ATTR: event, _EXTRA_ATTR: fields})


def redact(key: str, value: Any) -> Any:
    """*value*, or :data:`REDACTED` when *key* names a secret."""
    k = key.lower()
    if k in SECRET_KEYS or k.endswith(_SECRET_SUFFIXES):
        return REDACTED
    return value


def _read_value(text: str, i: int) -> tuple[Any, int]:
    """The value starting at *text[i]* and the index after it."""
    if i < len(text) and text[i] in "'\"":
        quote, j = text[i], i + 1
        while j < len(text):
            if text[j] == "\\":
                j += 2
                continue
            if text[j] == quote:
                raw = text[i:j + 1]
                try:
                    return ast.literal_eval(raw), j + 1
                except (ValueError, SyntaxError):
                    return raw[1:-1], j + 1
            j += 1
        return text[i + 1:], len(text)  # unterminated: keep what is there
    j = i
    while j < len(text) and not text[j].isspace():
        j += 1
    return text[i:j], j


def parse_message(message: str) -> tuple[str, dict[str, Any]]:
    """Split an ``event=NAME k=v ...`` message into the event name and its fields.

    Returns:
        ``(event, fields)``; ``("log", {"msg": message})`` for free text.
    """
    fields: dict[str, Any] = {}
    event = None
    text = message.strip()
    i, n = 0, len(text)
    head = text.split(None, 1)[0] if text else ""
    if head and "=" not in head and _NAME.match(head) and (
            len(text) == len(head) or "=" in text[len(head):].split(None, 1)[0]):
        event = head
        i = len(head)
    last: str | None = None
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        m = _KEY.match(text, i)
        if m is None:
            if last is None:
                return "log", {"msg": message}
            # a %s value holding spaces: the bare words continue the previous value
            word, i = _read_value(text, i)
            fields[last] = f"{fields[last]} {word}"
            continue
        key = m.group(1)
        value, i = _read_value(text, m.end())
        if key == "event" and event is None:
            event = str(value)
            continue
        fields[key] = value
        last = key
    if event is None:
        return "log", {"msg": message}
    return event, fields


def _record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    if hasattr(record, _EVENT_ATTR):
        event, fields = getattr(record, _EVENT_ATTR), dict(getattr(record, _EXTRA_ATTR))
    else:
        event, fields = parse_message(record.getMessage())
    out = {k: redact(k, v) for k, v in fields.items()}
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    return event, out


def _timestamp(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


def quote(value: Any) -> str:
    """*value* as one logfmt value: bare when safe, else double-quoted and escaped."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


class TextFormatter(logging.Formatter):
    """``event=NAME ts=... level=... logger=... k=v ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _record_fields(record)
        head = {"event": event, "ts": _timestamp(record), "level": record.levelname.lower(),
                "logger": record.name}
        parts = [f"{k}={quote(v)}" for k, v in head.items()]
        for k, v in fields.items():
            if k in head:
                k = f"field.{k}"  # never let a field shadow the line's own event or time
            parts.append(f"{k}={quote(v)}")
        return " ".join(parts)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """The same fields as :class:`TextFormatter`, as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _record_fields(record)
        obj: dict[str, Any] = {"event": event, "ts": _timestamp(record),
                               "level": record.levelname.lower(), "logger": record.name}
        for k, v in fields.items():
            obj[f"field.{k}" if k in obj else k] = _jsonable(v)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record to *stream* (stderr) in *fmt*, replacing earlier handlers.

    Args:
        level: debug, info, warning, error or critical.
        fmt: ``text`` or ``json``.
        stream: where lines go (default: ``sys.stderr`` at the time of the call).

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
