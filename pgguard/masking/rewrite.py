"""Rewriting result bytes: DataRow bodies and COPY data (error and notice fields:
:mod:`.messages`; type classes and what a value holds: :mod:`.values`).

Per output column an *action* is precomputed once per RowDescription: None (forward the
value's bytes untouched), a mask, or a detector scan. :meth:`RowMasker.mask_datarow` then
walks the column lengths with ``unpack_from`` and rebuilds the body only around the
columns that change.

How a masked value is written, per type and format (the value must stay a valid value of
its type or become NULL):

===========================================  ==========================================
column type                                  masked value (text and binary format)
===========================================  ==========================================
text, varchar, bpchar, name, unknown,        the strategy's text (``***``, ``****6789``,
user string types (citext, text domains)     ``h:…``), in the client encoding
json                                         a JSON string of the strategy's text
jsonb                                        the same; binary format adds the version 1
anything else (numbers, dates, arrays,       NULL
records, bytea, …), and every ``null`` rule
===========================================  ==========================================

Detectors scan values of clear columns of every type not known to carry no text
(:data:`.values.NO_TEXT_TYPES`): text-like types are rewritten in place (``[email]``),
json/jsonb in place when the result is still valid JSON (else NULL), arrays, records and
documents of text in place in text format when the hit is in the text as it stands.
Everything else that holds a hit becomes NULL: ``bytea`` (read decoded from hex or escape
output, or its binary bytes), an array or record whose hit is in an escaped or binary
element, values of any other type (enums, ranges of text, user types, …). A text value
that is hex ``bytea`` output (``\\x…``, say from a cast) is read decoded too.
"""

from __future__ import annotations

import json
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ..errors import ProtocolViolation
from ..wire import encodings
from .detectors import Detectors
from .messages import mask_error_fields
from .plan import CopyOptions
from .rules import REDACTED, Mask, apply_text, hash_token
from .values import (
    BYTEA,
    CONTAINER,
    JSON,
    JSONB,
    NONE,
    OTHER,
    TEXT,
    TypeInfo,
    bytea_from_text,
    text_of_bytes,
    texts_of_binary,
    texts_of_json,
    texts_of_text,
    type_class,
)

__all__ = [
    "BYTEA", "CONTAINER", "JSON", "JSONB", "NONE", "OTHER", "TEXT", "Action", "CopyMasker",
    "RowMasker", "ValueCodec", "mask_error_fields", "python_encoding", "type_class",
]

Action = Callable[[bytes], bytes | None]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
NULL_LEN = b"\xff\xff\xff\xff"
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HASH_CACHE_SIZE = 4096
HASH_CACHE_MAX_LEN = 256


def python_encoding(client_encoding: str, server_encoding: str | None = None) -> str:
    """Python codec for a PostgreSQL client_encoding name: the one the session decodes
    statement text in (``pgguard.wire.encodings.python_codec``; SQL_ASCII is the server
    encoding's bytes). UTF-8 for a name pgguard refuses: the session ends before any value
    in it is read."""
    return encodings.python_codec(client_encoding, server_encoding) or "utf-8"


class ValueCodec:
    """Builds per-column actions: masks and scans for one encoding, key and detectors."""

    def __init__(self, key: bytes, detectors: Detectors, encoding: str = "utf-8",
                 catalog: TypeInfo | None = None):
        self.key = key
        self.detectors = detectors
        self.encoding = encoding
        # to classify the elements of binary arrays and records of user types (without
        # it they are read as types of unknown content: scanned)
        self.catalog = catalog
        # hash tokens per distinct value: the HMAC is the per-value cost, values repeat.
        self._tokens: OrderedDict[bytes, bytes] = OrderedDict()

    def hash_bytes(self, v: bytes) -> bytes:
        """The encoded ``hash`` token of the encoded value *v* (cached, bounded)."""
        tokens = self._tokens
        tok = tokens.get(v)
        if tok is None:
            tok = self._enc(hash_token(self._dec(v), self.key))
            if len(v) <= HASH_CACHE_MAX_LEN:
                if len(tokens) >= HASH_CACHE_SIZE:
                    try:    # drop the oldest entry (O(1), unlike a dict's first key)
                        tokens.popitem(last=False)
                    except KeyError:
                        pass
                tokens[bytes(v)] = tok
        return tok

    def _dec(self, b: bytes) -> str:
        return bytes(b).decode(self.encoding, "surrogateescape")

    def _enc(self, s: str) -> bytes:
        return s.encode(self.encoding, "surrogateescape")

    # -- masks -------------------------------------------------------------------

    def mask_action(self, mask: Mask, cls: int, binary: bool) -> Action:
        """The action writing *mask* over a value of type class *cls*."""
        if mask.strategy == "null" or cls not in (TEXT, JSON, JSONB):
            return _to_null
        if mask.strategy == "redact":
            if cls == TEXT:
                const = self._enc(REDACTED)
            else:
                const = self._enc(json.dumps(REDACTED))
                if cls == JSONB and binary:
                    const = b"\x01" + const
            return lambda v, c=const: c
        key = self.key
        if cls == TEXT:
            if mask.strategy == "hash":
                return self.hash_bytes
            return lambda v: self._enc(apply_text(mask, self._dec(v), key))
        prefix = b"\x01" if cls == JSONB and binary else b""
        # partial over JSON text would keep syntax, not data: redact instead.
        jmask = mask if mask.strategy == "hash" else Mask("redact")

        def json_action(v: bytes) -> bytes:
            raw = v[1:] if prefix else v
            return prefix + self._enc(json.dumps(apply_text(jmask, self._dec(raw), key)))
        return json_action

    def text_mask_action(self, mask: Mask) -> Action:
        """Mask for COPY text/CSV, where no type is known: the strategy's text."""
        if mask.strategy == "null":
            return _to_null
        if mask.strategy == "hash":
            return self.hash_bytes
        key = self.key
        return lambda v: self._enc(apply_text(mask, self._dec(v), key))

    # -- scans -------------------------------------------------------------------

    def scan_action(self, cls: int, binary: bool) -> Action | None:
        """The detector action for a clear value of type class *cls* (None: no scan).

        Text is rewritten in place (``[email]``); so is the text output of arrays,
        records and documents of text (:data:`CONTAINER`) when the hit is in the text as
        it stands. A hit only in a decoded form (``bytea`` hex or escape output, an
        escaped element, a binary element) or in a value of another type nulls the
        whole value: its bytes cannot be rewritten and stay valid.
        """
        det = self.detectors
        if not det or cls == NONE:
            return None
        skips = det.skips_bytes
        find = det.find
        if cls == TEXT or (cls == CONTAINER and not binary):
            def scan_text(v: bytes) -> bytes | None:
                escaped = b"\\" in v
                if not escaped and skips(v):
                    return v
                s = self._dec(v)
                out = det.scan_text(s)
                # bytea output (a cast to text, a COPY field of unknown type) or the
                # escaped elements of an array or record: read what they hold too
                if escaped and any(find(t) for t in texts_of_text(out)[1:]):
                    return None
                return v if out is s else self._enc(out)
            return scan_text
        if cls in (JSON, JSONB):
            prefix = cls == JSONB and binary

            def scan_json(v: bytes) -> bytes | None:
                raw = v[1:] if prefix else v
                escaped = b"\\" in raw
                if not escaped and skips(raw):
                    return v
                s = self._dec(raw)
                out = det.scan_text(s)
                # escaped strings: bytea output, array text, … inside the document
                if escaped and any(find(t) for t in texts_of_json(out)[1:]):
                    return None
                if out is s:
                    return v
                try:
                    json.loads(out)
                except ValueError:
                    return None
                return (b"\x01" if prefix else b"") + self._enc(out)
            return scan_json
        if cls == BYTEA:
            def scan_bytea(v: bytes) -> bytes | None:
                raw = v if binary else bytea_from_text(v)
                if raw is None:       # not bytea output after all: read it as it is
                    raw = v
                if skips(raw):
                    return v
                t = text_of_bytes(raw)
                if find(t) or ("\\" in t and any(find(x) for x in texts_of_text(t)[1:])):
                    return None
                return v
            return scan_bytea
        catalog = self.catalog
        if binary:
            def scan_binary(v: bytes) -> bytes | None:
                if skips(v):
                    return v
                return None if any(find(t) for t in texts_of_binary(v, cls, catalog)) \
                    else v
            return scan_binary

        def scan_other(v: bytes) -> bytes | None:
            if b"\\" not in v and skips(v):
                return v
            return None if any(find(t) for t in texts_of_text(self._dec(v))) else v
        return scan_other


def _to_null(v: bytes) -> None:
    return None


class RowMasker:
    """Rewrites the DataRows of one result (one RowDescription).

    Attributes:
        passthrough: nothing to do: forward DataRows as raw bytes.
        masked: indexes of masked columns (for the audit record).
    """

    def __init__(self, actions: Sequence[Action | None], masked: Sequence[int] = ()):
        self.actions = list(actions)
        self.ncols = len(self.actions)
        self.masked = tuple(masked)
        self.passthrough = all(a is None for a in self.actions)
        idx = [i for i, a in enumerate(self.actions) if a is not None]
        self._last = idx[-1] if idx else -1

    def mask_datarow(self, body: bytes | bytearray | memoryview) -> bytes:
        """Rewrite a DataRow body (without the ``D`` type byte and length).

        Args:
            body: Int16 column count, then per column Int32 length (-1 = NULL) and bytes.

        Returns:
            The new body (the same bytes when no value changed).

        Raises:
            ProtocolViolation: the body does not match the RowDescription.
        """
        if self.passthrough:
            return bytes(body)
        try:
            (n,) = _I16.unpack_from(body, 0)
        except struct.error:
            raise ProtocolViolation("DataRow too short") from None
        if n != self.ncols:
            raise ProtocolViolation(f"DataRow has {n} columns, RowDescription {self.ncols}")
        actions = self.actions
        pos = 2
        last = 0
        out: list[bytes] = []
        size = len(body)
        unpack = _I32.unpack_from
        for i in range(self._last + 1):
            if pos + 4 > size:
                raise ProtocolViolation("DataRow truncated")
            (ln,) = unpack(body, pos)
            start = pos + 4
            end = start + ln if ln > 0 else start
            if end > size:
                raise ProtocolViolation("DataRow truncated")
            act = actions[i]
            if act is not None and ln >= 0:
                value = bytes(body[start:end])
                new = act(value)
                if new is not value:
                    out.append(bytes(body[last:pos]))
                    if new is None:
                        out.append(NULL_LEN)
                    else:
                        out.append(_I32.pack(len(new)))
                        out.append(new)
                    last = end
            pos = end
        if not out:
            return bytes(body)
        out.append(bytes(body[last:]))
        return b"".join(out)


# --- COPY ------------------------------------------------------------------------

_TEXT_UNESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_SIMPLE_ESC = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _copy_unescape(field: bytes) -> bytes:
    if b"\\" not in field:
        return field

    def rep(m: re.Match[bytes]) -> bytes:
        if m.group(1):
            return bytes([int(m.group(1), 8) & 0xFF])
        if m.group(2):
            return bytes([int(m.group(2), 16)])
        ch = m.group(3)
        return _SIMPLE_ESC.get(ch, ch)
    return _TEXT_UNESCAPE.sub(rep, field)


def _copy_escape(value: bytes, delim: bytes) -> bytes:
    out = value.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    out = out.replace(b"\t", b"\\t") if delim == b"\t" else out.replace(b"\t", b"\\t")
    if delim not in (b"\t",):
        out = out.replace(delim, b"\\" + delim)
    return out


class CopyMasker:
    """Rewrites the CopyData stream of one ``COPY … TO STDOUT``.

    Feed each CopyData payload to :meth:`feed` and send what it returns (skip empty
    results); call :meth:`finish` at CopyDone. Rows split across CopyData messages are
    buffered; text rows end at newline, CSV rows at a newline outside quotes, binary
    tuples by their lengths.

    Attributes:
        passthrough: nothing to do: forward CopyData untouched.
    """

    def __init__(self, actions: Sequence[Action | None], opts: CopyOptions,
                 null_text: bytes = b"\\N", binary_actions: Sequence[Action | None] = ()):
        self.opts = opts
        self.actions = list(actions)
        self.binary_actions = list(binary_actions) or self.actions
        self.passthrough = all(a is None for a in self.actions) and \
            all(a is None for a in self.binary_actions)
        self._buf = bytearray()
        self._header_pending = opts.header and opts.format != "binary"
        self._binary_header = opts.format == "binary"
        self._delim = opts.delimiter.encode()
        self._null = opts.null.encode()
        self._done = False

    def feed(self, data: bytes | memoryview) -> bytes:
        """Take one CopyData payload; return the masked bytes of the complete rows in it."""
        if self.passthrough:
            return bytes(data)
        self._buf += data
        out: list[bytes] = []
        if self.opts.format == "binary":
            self._feed_binary(out)
        elif self.opts.format == "csv":
            self._feed_csv(out)
        else:
            self._feed_text(out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At CopyDone: mask whatever incomplete row is left (fail closed)."""
        if self.passthrough or not self._buf:
            return b""
        rest = bytes(self._buf)
        self._buf.clear()
        if self.opts.format == "binary":
            return b""   # an incomplete tuple cannot be parsed; drop it
        return self._mask_line(rest)

    # text
    def _feed_text(self, out: list[bytes]) -> None:
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl + 1])
            start = nl + 1
            if self._header_pending:
                self._header_pending = False
                out.append(line)
                continue
            out.append(self._mask_line(line))
        del buf[:start]

    def _mask_line(self, line: bytes) -> bytes:
        if self.opts.format == "csv":
            return self._mask_csv_record(line)
        end = b"\n" if line.endswith(b"\n") else b""
        body = line[:-1] if end else line
        if body.endswith(b"\r"):
            end = b"\r" + end
            body = body[:-1]
        if body == b"\\.":
            return line
        fields = body.split(self._delim)
        changed = False
        for i, act in enumerate(self.actions[:len(fields)]):
            if act is None or fields[i] == self._null:
                continue
            value = _copy_unescape(fields[i])
            new = act(value)
            if new is value:
                continue
            fields[i] = self._null if new is None else _copy_escape(new, self._delim)
            changed = True
        if len(fields) != len(self.actions):
            # Not the row shape we planned for: every field with any action is dropped.
            if any(a is not None for a in self.actions):
                fields = [self._null] * len(fields)
                changed = True
        return self._delim.join(fields) + end if changed else line

    # CSV
    def _feed_csv(self, out: list[bytes]) -> None:
        buf = self._buf
        q = self.opts.quote.encode()
        start = 0
        i = 0
        inq = False
        n = len(buf)
        esc = self.opts.escape.encode()
        while i < n:
            ch = buf[i:i + 1]
            if inq:
                if ch == esc and esc != q and i + 1 < n and buf[i + 1:i + 2] in (q, esc):
                    i += 2
                    continue
                if ch == q:
                    if esc == q and buf[i + 1:i + 2] == q:
                        i += 2
                        continue
                    inq = False
            elif ch == q:
                inq = True
            elif ch == b"\n":
                line = bytes(buf[start:i + 1])
                if self._header_pending:
                    self._header_pending = False
                    out.append(line)
                else:
                    out.append(self._mask_csv_record(line))
                start = i + 1
            i += 1
        del buf[:start]

    def _split_csv(self, body: bytes) -> list[tuple[bytes, bool]]:
        """Fields of a CSV record as (raw value, was quoted)."""
        q = self.opts.quote.encode()
        esc = self.opts.escape.encode()
        d = self._delim
        fields: list[tuple[bytes, bool]] = []
        i, n = 0, len(body)
        while True:
            if body[i:i + 1] == q:
                val = bytearray()
                i += 1
                while i < n:
                    ch = body[i:i + 1]
                    if ch == esc and body[i + 1:i + 2] in (q, esc) and (esc != q or
                                                                       body[i + 1:i + 2] == q):
                        val += body[i + 1:i + 2]
                        i += 2
                        continue
                    if ch == q:
                        i += 1
                        break
                    val += ch
                    i += 1
                # PostgreSQL allows unquoted text after the closing quote up to the delimiter.
                j = body.find(d, i)
                tail = body[i:] if j < 0 else body[i:j]
                fields.append((bytes(val) + tail, True))
                i = n if j < 0 else j
            else:
                j = body.find(d, i)
                fields.append((body[i:] if j < 0 else body[i:j], False))
                i = n if j < 0 else j
            if i >= n:
                break
            i += len(d)
            if i >= n:
                fields.append((b"", False))
                break
        return fields

    def _csv_quote(self, v: bytes) -> bytes:
        q = self.opts.quote.encode()
        esc = self.opts.escape.encode()
        if esc != q:
            v = v.replace(esc, esc + esc)
        return q + v.replace(q, esc + q) + q

    def _mask_csv_record(self, line: bytes) -> bytes:
        end = b"\n" if line.endswith(b"\n") else b""
        body = line[:-1] if end else line
        if body.endswith(b"\r"):
            end = b"\r" + end
            body = body[:-1]
        fields = self._split_csv(body)
        if len(fields) != len(self.actions):
            return self._delim.join(self._null if a is not None else
                                    (self._csv_quote(v) if qd else v)
                                    for (v, qd), a in zip(fields, self.actions + [None] * len(
                                        fields), strict=False)) + end
        parts = []
        changed = False
        for (raw, quoted), act in zip(fields, self.actions, strict=True):
            if act is None or (not quoted and raw == self._null):
                parts.append(self._csv_quote(raw) if quoted else raw)
                continue
            new = act(raw)
            if new is not raw:
                changed = True
            parts.append(self._null if new is None else self._csv_quote(new))
        if not changed:
            return line
        return self._delim.join(parts) + end

    # binary
    def _feed_binary(self, out: list[bytes]) -> None:
        buf = self._buf
        pos = 0
        if self._binary_header:
            if len(buf) < 19:
                return
            if bytes(buf[:11]) != COPY_SIGNATURE:
                raise ProtocolViolation("binary COPY without signature")
            (ext,) = _I32.unpack_from(buf, 15)
            if len(buf) < 19 + ext:
                return
            out.append(bytes(buf[:19 + ext]))
            pos = 19 + ext
            self._binary_header = False
        actions = self.binary_actions
        while len(buf) - pos >= 2:
            (n,) = _I16.unpack_from(buf, pos)
            if n == -1:
                out.append(bytes(buf[pos:pos + 2]))
                pos += 2
                continue
            p = pos + 2
            parts = [bytes(buf[pos:p])]
            complete = True
            for i in range(n):
                if len(buf) - p < 4:
                    complete = False
                    break
                (ln,) = _I32.unpack_from(buf, p)
                end = p + 4 + max(ln, 0)
                if end > len(buf):
                    complete = False
                    break
                act = actions[i] if i < len(actions) and n == len(actions) else (
                    _to_null if any(actions) else None)
                if act is None or ln < 0:
                    parts.append(bytes(buf[p:end]))
                else:
                    new = act(bytes(buf[p + 4:end]))
                    parts.append(NULL_LEN if new is None else _I32.pack(len(new)) + new)
                p = end
            if not complete:
                break
            out.append(b"".join(parts))
            pos = p
        del buf[:pos]
