"""The recorder tap of a session: turns what a session sees into audit records.

The session calls the tap at fixed points (docs/audit-format.md, "Session records"):
``session_start`` once the client is connected upstream, ``statement`` for every Query,
Parse and FunctionCall with the guard's verdict, ``bind`` for every Bind, ``to_client``
with the exact bytes about to be sent to the client (already masked), ``approval`` from
the guard, ``cancel`` and ``session_end``.

What is recorded is what the client saw: result rows are taken from the bytes sent to it,
after masking. Statement text and parameters go through the masking detectors first, so a
literal e-mail address or card number in a statement is recorded as ``[email]``/``[card]``.

Durability: a result record is enqueued before the bytes that complete it (CommandComplete,
ErrorResponse, ReadyForQuery) leave for the client; with ``recording.fsync = "always"`` the
tap also awaits ``Recorder.flush()`` then, so the record is on disk before the client can
see the result. See "Durability" in docs/audit-format.md for the other modes.
"""

from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import policy
from ..audit import AuditError
from ..config import MaskingConfig
from ..errors import ConnectionFailure
from ..masking.detectors import Detectors
from ..masking.rewrite import python_encoding
from ..wire import codec
from ..wire.exchange import Exchange
from ..wire.messages import (
    COMMAND_COMPLETE,
    COPY_DATA,
    COPY_IN_RESPONSE,
    COPY_OUT_RESPONSE,
    DATA_ROW,
    ERROR_RESPONSE,
    NOTICE_RESPONSE,
    PARAMETER_DESCRIPTION,
    PARAMETER_STATUS,
    PORTAL_SUSPENDED,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    Bind,
    FunctionCall,
    Parse,
    Query,
)

if TYPE_CHECKING:
    from ..audit import Recorder
    from ..masking import SessionMasking
    from .guard import Verdict

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!cI")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_FIELD = struct.Struct("!IhIhih")  # a RowDescription field after its name

_COPY_TEXT_OID = 25
_COPY_BINARY_OID = 17
_CACHE_ENTRIES = 256
_MAX_PREPARED = 10000
RECORD = "record"   # the tap's key in the exchange's notes
# No detector matches fewer than seven digits and nothing else (the shortest, phone, needs
# seven digits and a separator or a "+"; plain integers never match): skip the scan.
_SHORT_NUMBER_LEN = 7


_ESCAPED = re.compile("[\udc80-\udcff]")


def _text(raw: bytes, encoding: str = "utf-8") -> str:
    # Names and tags in the session's client encoding; "replace", as for values: a record
    # holds text (a lone surrogate would not pack).
    return raw.decode(encoding, "replace")


def _row_description(kind: bytes, data: bytes, pos: int, end: int, encoding: str = "utf-8"
                     ) -> tuple[list[list[Any]], list[int]]:
    """Column ``[name, type oid]`` pairs and formats of the RowDescription at *pos*.

    Reads only what the record needs, without building the codec's message objects (this
    runs once per result); anything malformed goes to the codec, which says what is wrong.
    """
    try:
        (ncols,) = _I16.unpack_from(data, pos + 5)
        p = pos + 7
        columns: list[list[Any]] = []
        formats: list[int] = []
        for _ in range(ncols):
            zero = data.index(b"\0", p, end)
            name = _text(data[p:zero], encoding)
            _, _, oid, _, _, fmt = _FIELD.unpack_from(data, zero + 1)
            p = zero + 1 + _FIELD.size
            columns.append([name, oid])
            formats.append(fmt)
        if ncols >= 0 and p == end:
            return columns, formats
    except (ValueError, struct.error):
        pass
    msg = codec.decode_backend(kind, data, pos, end, encoding)  # raises on malformed bytes
    return ([[f.name, f.type_oid] for f in msg.fields], [f.format for f in msg.fields])


class RecordingUnavailable(ConnectionFailure):
    """The audit writer stopped: a session must not go on unrecorded."""


class _Result:
    """One result being received: columns, the first rows, and the row count."""

    __slots__ = ("columns", "formats", "rows", "count", "copy_format")

    def __init__(self) -> None:
        self.columns: list[list[Any]] = []
        # None: not known from a RowDescription; taken from the last Bind at the first row.
        self.formats: list[int] | None = None
        self.rows: list[list[Any]] = []
        self.count = 0
        self.copy_format: int | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who a recorded session is, as its ``session_start`` record says."""

    session_id: str
    user: str
    groups: tuple[str, ...]
    connection: str
    client_addr: str
    tls: bool
    started: float          # time.time() when the client connected


def session_detectors(masking: SessionMasking | None, cfg: MaskingConfig,
                      groups: Sequence[str]) -> Detectors:
    """The detectors that scan a session's statement text and parameters: its masking's,
    else the configured ones (none for exempt groups)."""
    if masking is not None:
        return masking.detectors
    if set(groups) & set(cfg.exempt_groups):
        return Detectors(())
    return Detectors(cfg.detectors)


class SessionTap:
    """Feeds one session's events into the gateway's :class:`~pgguard.audit.Recorder`.

    Args:
        recorder: the gateway's recorder (running).
        info: the session (connected upstream, authenticated).
        exchange: the session's protocol state (a Parse's record waits on its statement).
        detectors: what scans statement text and parameters (:func:`session_detectors`).
    """

    def __init__(self, recorder: Recorder, info: SessionInfo, exchange: Exchange,
                 detectors: Detectors):
        self.recorder = recorder
        self.info = info
        self.sid = info.session_id
        self.max_rows = recorder.max_rows
        self.sync_results = recorder.cfg.fsync == "always"
        self._detectors = detectors
        # Values are decoded as the session decodes statements: the session sets the
        # server encoding and the login's client_encoding (follow_encoding), the tap
        # follows the ParameterStatus messages it relays.
        self._encoding = "utf-8"
        self.server_encoding: str | None = None
        # Extended protocol: a statement is recorded at its Bind, with the parameters; the
        # record of a Parse is noted with the statement on the exchange (key "record").
        # Records of statements parsed but not bound yet wait here.
        self._exchange = exchange
        self._unbound: dict[str, dict[str, Any]] = {}
        self._result: _Result | None = None
        self._rest = b""
        # Result formats of the last Bind, for rows no portal RowDescription describes
        # (a RowDescription answering Describe of a *statement* says text for every column).
        self._bind_formats: tuple[int, ...] = ()
        self._after_param_desc = False
        # Statement text repeats (drivers re-send the same SQL): cache its scan.
        self._scanned: dict[str, str] = {}
        self._ended = False
        # The metrics counter of records written (set by the session), or None.
        self.records: Any = None

    # --- helpers --------------------------------------------------------------------

    async def _record(self, type: str, **fields: Any) -> None:
        await self._record_map(type, fields)

    async def _record_map(self, type: str, fields: dict[str, Any]) -> None:
        try:
            await self.recorder.record_map(self.sid, type, fields)
            if self.records is not None:
                self.records.inc()   # pgguard_recording_records_total
        except AuditError as exc:
            # Nothing may happen unrecorded: end the session rather than go on blind.
            log.error("event=recording_unavailable session=%s error=%s", self.sid, exc)
            raise RecordingUnavailable("pgguard: session recording is unavailable") from None

    def follow_encoding(self, client_encoding: str) -> None:
        """Decode values in *client_encoding* (PostgreSQL's name) from now on."""
        self._encoding = python_encoding(client_encoding, self.server_encoding)

    def _scan(self, text: str) -> str:
        if not self._detectors or (len(text) < _SHORT_NUMBER_LEN and text.isdigit()):
            return text
        return self._detectors.scan_text(text)

    def _scan_sql(self, sql: str) -> str:
        if codec.escaped(sql):
            # Bytes the client's encoding does not read (a statement refused for them,
            # 22021): a record holds text, so each becomes U+FFFD, as in values.
            sql = _ESCAPED.sub("\ufffd", sql)
        if len(sql) > policy.CACHE_MAX_TEXT:
            return self._scan(sql)  # huge texts are rarely repeated: do not hold them
        scanned = self._scanned.get(sql)
        if scanned is None:
            scanned = self._scan(sql)
            if len(self._scanned) >= _CACHE_ENTRIES:
                self._scanned.clear()
            self._scanned[sql] = scanned
        return scanned

    def _decision(self, sql: str, protocol: str, verdict: Verdict | None,
                  allowed: policy.Decision | None) -> dict[str, Any]:
        request_id = None
        refusal = None
        if verdict is not None and verdict.decision is not None:
            decision = verdict.decision
            refused = verdict.refuse is not None
            request_id = verdict.request_id
            if verdict.refuse is not None:
                # Why the client got an error: a deny, an approver, or masking (whose
                # refusals come with an "allow" from the policy).
                refusal = verdict.refuse.message
        else:
            # An allowed statement has no verdict: the guard's decision comes with it.
            decision = allowed
            refused = False
        fields = self._fields(sql, protocol, decision, refused, request_id)
        if refusal is not None:
            fields["refusal"] = refusal
        return fields

    def _fields(self, sql: str, protocol: str, decision: policy.Decision | None,
                refused: bool, request_id: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "sql": self._scan_sql(sql),
            "params": [],
            "protocol": protocol,
            "decision": decision.action if decision else "allow",
            "category": decision.category if decision else "unknown",
            "kind": decision.kind if decision else "",
            "reason": decision.reason if decision else "",
            "refused": refused,
        }
        if request_id is not None:
            fields["request_id"] = request_id
        return fields

    def _param(self, value: bytes | None, fmt: int) -> str | None:
        if value is None:
            return None
        if fmt == 1:
            return f"<binary {len(value)} bytes>"
        return self._scan(value.decode(self._encoding, "replace"))

    # --- hooks ----------------------------------------------------------------------

    async def session_start(self) -> None:
        """Record who connected, from where, to what."""
        s = self.info
        await self._record(
            "session_start",
            user=s.user,
            groups=list(s.groups),
            connection=s.connection,
            client_addr=s.client_addr,
            tls=s.tls,
        )

    async def statement(self, msg: Query | Parse | FunctionCall, verdict: Verdict | None,
                        notes: dict[str, Any] | None = None,
                        decision: policy.Decision | None = None) -> None:
        """Record a statement and its decision (extended protocol: at its Bind).

        Args:
            msg: the client's Query, Parse or FunctionCall.
            verdict: None when the guard let it through, else the guard's verdict.
            notes: the notes of the request on the exchange (a Parse's record is kept
                there, for its Binds).
            decision: the policy's decision when there is no verdict (allowed).
        """
        if isinstance(msg, Query):
            await self._record_map("statement", self._decision(msg.sql, "simple", verdict, decision))
        elif isinstance(msg, Parse):
            fields = self._decision(msg.sql, "extended", verdict, decision)
            if verdict is not None and verdict.refuse is not None:
                # No Bind will follow a refused Parse (the session skips to Sync).
                await self._record_map("statement", fields)
                return
            old = self._unbound.pop(msg.name, None)
            if old is not None:
                await self._record_map("statement", old)  # parsed again before any Bind
            if notes is not None:
                notes[RECORD] = fields
            self._unbound[msg.name] = fields
            if len(self._unbound) > _MAX_PREPARED:
                name = next(iter(self._unbound))
                await self._record_map("statement", self._unbound.pop(name))
        elif isinstance(msg, FunctionCall):
            sql = f"-- FunctionCall oid {msg.function_oid}"
            await self._record_map("statement", self._decision(sql, "function", verdict, decision))

    async def bind(self, msg: Bind) -> None:
        """Record the statement a Bind executes, with its parameters after the detectors.

        Args:
            msg: the client's Bind.
        """
        base = next((n[RECORD] for n in self._exchange.expected_statements(msg.statement)
                     if RECORD in n), None)
        self._unbound.pop(msg.statement, None)
        if base is None:
            # Parsed before the tap existed, or never: record what is known.
            base = {"sql": "", "params": [], "protocol": "extended", "decision": "allow",
                    "category": "unknown", "kind": "", "reason": "statement not seen",
                    "refused": False}
        formats = msg.param_formats
        nf = len(formats)
        params = [self._param(v, formats[i] if nf > 1 else (formats[0] if nf else 0))
                  for i, v in enumerate(msg.params)]
        self._bind_formats = msg.result_formats
        fields = dict(base)
        fields["params"] = params
        await self._record_map("statement", fields)

    async def to_client(self, data: bytes) -> None:
        """Build result, error and notice records from bytes about to reach the client.

        Only the first ``recording.max_rows`` DataRows of a result are decoded; the rest
        are counted. Records completed by *data* are enqueued (and flushed when
        ``fsync = "always"``) before this returns, i.e. before the client gets them.

        Args:
            data: whole backend messages, exactly as they will be sent.
        """
        if self._rest:
            data = self._rest + data
            self._rest = b""
        n = len(data)
        pos = 0
        completed = False
        max_rows = self.max_rows
        unpack = _HEADER.unpack_from
        while pos + 5 <= n:
            kind, size = unpack(data, pos)
            end = pos + 1 + size
            if end > n:
                break
            k = kind[0]
            if k == DATA_ROW:
                res = self._result
                if res is None:
                    res = self._result = _Result()
                res.count += 1
                if len(res.rows) < max_rows:
                    if res.formats is None:
                        res.formats = self._guess_formats(data, pos + 5)
                    res.rows.append(self._row(data, pos + 5, res.formats))
            elif k == COPY_DATA:
                res = self._result
                if res is not None and res.copy_format is not None:
                    res.count += 1
                    if len(res.rows) < max_rows:
                        chunk = data[pos + 5:end]
                        res.rows.append([chunk if res.copy_format
                                         else chunk.decode(self._encoding, "replace")])
            elif k == ROW_DESCRIPTION:
                res = self._result = _Result()
                columns, formats = _row_description(kind, data, pos, end, self._encoding)
                res.columns = columns
                if not self._after_param_desc:
                    res.formats = formats
            elif k == COMMAND_COMPLETE:
                raw = data[pos + 5:end - 1]
                if data[end - 1] != 0 or b"\0" in raw:
                    tag = codec.decode_backend(kind, data, pos, end).tag  # raises
                else:
                    tag = _text(raw, self._encoding)
                await self._finish_result(tag)
                completed = True
            elif k == ERROR_RESPONSE:
                fields = codec.decode_backend(kind, data, pos, end, self._encoding).fields
                if self._result is not None and self._result.count:
                    await self._finish_result("")  # rows the client got before the error
                self._result = None
                await self._record("error", sqlstate=fields.get("C", ""),
                                   message=fields.get("M", ""))
                completed = True
            elif k == NOTICE_RESPONSE:
                fields = codec.decode_backend(kind, data, pos, end, self._encoding).fields
                await self._record("notice", message=fields.get("M", ""),
                                   severity=fields.get("S", ""), sqlstate=fields.get("C", ""))
            elif k == COPY_OUT_RESPONSE or k == COPY_IN_RESPONSE:
                res = self._result = _Result()
                fmt = data[pos + 5]
                res.copy_format = fmt if k == COPY_OUT_RESPONSE else None
                if k == COPY_OUT_RESPONSE:
                    oid = _COPY_BINARY_OID if fmt else _COPY_TEXT_OID
                    res.columns = [["(copy data)", oid]]
            elif k == PORTAL_SUSPENDED:  # Execute hit its row limit
                res = self._result
                if res is not None:
                    await self._finish_result("", suspended=True)
                    # The next Execute of the portal continues without a RowDescription.
                    nxt = self._result = _Result()
                    nxt.columns, nxt.formats = res.columns, res.formats
                completed = True
            elif k == READY_FOR_QUERY:
                # A Describe without Execute leaves a RowDescription that never completes.
                self._result = None
                completed = True
            elif k == PARAMETER_STATUS:
                msg = codec.decode_backend(kind, data, pos, end)
                if msg.name == "client_encoding":
                    self.follow_encoding(msg.value)
            self._after_param_desc = k == PARAMETER_DESCRIPTION  # a statement Describe
            pos = end
        if pos < n:
            # The pump sends whole messages; keep a stray partial one rather than misparse.
            self._rest = data[pos:]
        if completed and self.sync_results:
            await self._flush()

    def _guess_formats(self, data: bytes, pos: int) -> list[int]:
        (ncols,) = _I16.unpack_from(data, pos)
        bf = self._bind_formats
        if len(bf) == 1:
            return [bf[0]] * ncols
        return list(bf) if len(bf) == ncols else [0] * ncols

    def _row(self, data: bytes, pos: int, formats: list[int]) -> list[Any]:
        (ncols,) = _I16.unpack_from(data, pos)
        pos += 2
        row: list[Any] = []
        nf = len(formats)
        enc = self._encoding
        for i in range(ncols):
            (size,) = _I32.unpack_from(data, pos)
            pos += 4
            if size < 0:
                row.append(None)
                continue
            value = data[pos:pos + size]
            pos += size
            if i < nf and formats[i] == 1:
                row.append(value)
            else:
                row.append(value.decode(enc, "replace"))
        return row

    async def _finish_result(self, tag: str, suspended: bool = False) -> None:
        res = self._result
        self._result = None
        if res is None:
            res = _Result()
        # row_count is what the client was sent (DataRows, or CopyData of COPY TO); the
        # rows a write affected are in the command tag.
        count = res.count
        fields: dict[str, Any] = {
            "columns": res.columns,
            "row_count": count,
            "rows": res.rows,
            "truncated": count > len(res.rows),
            "command_tag": tag,
        }
        if suspended:
            fields["suspended"] = True
        await self._record_map("result", fields)

    async def _flush(self) -> None:
        try:
            await self.recorder.flush()
        except AuditError as exc:
            log.error("event=recording_unavailable session=%s error=%s", self.sid, exc)
            raise RecordingUnavailable("pgguard: session recording is unavailable") from None

    async def approval(self, type: str, **fields: Any) -> None:
        """Record an ``approval_request`` or ``approval_decision`` from the guard."""
        await self._record(type, **fields)
        if self.sync_results:
            await self._flush()

    async def cancel(self) -> None:
        """Record a client CancelRequest for this session."""
        await self._record("cancel", reason="client cancel request")

    async def session_end(self, reason: str, bytes_in: int, bytes_out: int) -> None:
        """Record why and how the session ended; never raises (the session is over)."""
        if self._ended:
            return
        self._ended = True
        s = self.info
        try:
            for fields in self._unbound.values():
                await self._record_map("statement", fields)  # parsed, never executed
            self._unbound.clear()
            await self._record("session_end", reason=reason,
                               duration_s=round(time.time() - s.started, 6),
                               bytes_in=bytes_in, bytes_out=bytes_out)
        except RecordingUnavailable:
            log.warning("event=session_end_unrecorded session=%s", self.sid)
