"""Session recording: tamper-evident, hash-chained msgpack segment files.

Every gateway session is written as msgpack records into append-only segment files
``INSTANCE.NNNNNNNN.pgglog`` under ``recording.dir``. Each record carries a sequence number
and ``mac = HMAC-SHA256(key, prev_mac || body)``, where ``body`` is the record's own msgpack
encoding without its ``mac`` entry and ``prev_mac`` is the MAC of the record before it. A
segment begins with a ``segment_start`` record that chains to the last record of the previous
segment of the same gateway instance and ends with a ``segment_seal``. Editing, dropping,
inserting or reordering a record, cutting a sealed segment, or deleting a whole segment from
the middle of a chain breaks a MAC, a sequence number or a link, and :func:`verify` names the
file and sequence number of the first bad record. docs/audit-format.md is the format's
reference.

The :class:`Recorder` is the gateway's side: ``record()`` enqueues into a bounded queue (and
awaits when it is full: back-pressure, never a dropped record), and ``run()`` is one writer
task that batches records and does every disk operation in a worker thread, so the trio loop
never waits on the disk. The writer lets records gather for at most ``_GATHER_S`` (5 ms)
before each hand-off to its thread. ``flush()`` waits until everything enqueued so far is
written (and fsynced when ``recording.fsync = "always"``) and makes the writer write at once.

:func:`verify`, :func:`export`, :func:`replay` and the ``pgguard audit`` commands
(:func:`add_cli`) are the auditor's side; ``python -m pgguard.audit`` runs the commands too.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import errno
import fcntl
import hashlib
import heapq
import hmac
import io
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from .config import RecordingConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EXPORT_FORMAT = "pgguard-audit-export"
SEGMENT_SUFFIX = ".pgglog"
ZERO_MAC = bytes(32)

#: Record types a session may write; ``segment_start``/``segment_seal`` belong to the writer.
RECORD_TYPES = frozenset({
    "session_start", "statement", "result", "error", "notice", "approval_request",
    "approval_decision", "cancel", "session_end",
})
SEGMENT_TYPES = frozenset({"segment_start", "segment_seal"})
RECORD_KEYS = ("v", "seq", "ts", "session", "type", "fields", "mac")

# A record is a 7-entry map written with "mac" last, so its bytes end with the packed key
# "mac" and a bin8 header for 32 bytes, then the MAC. The MAC input is the same map without
# that entry: a 6-entry map header followed by the first six entries exactly as stored.
_MAP7 = 0x87
_MAP6 = b"\x86"
_MAC_TAG = b"\xa3mac\xc4\x20"
_MAC_TRAILER = len(_MAC_TAG) + 32
_SEAL_MARK = b"\xa4type\xacsegment_seal"
_RECORD_HEAD = b"\x87\xa1v"

_NAME_RE = re.compile(r"^(?P<inst>[A-Za-z0-9_-]+)\.(?P<num>\d{8,})" + re.escape(SEGMENT_SUFFIX) + "$")
_MAX_BATCH_RECORDS = 4096
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_SHUTDOWN_GRACE_S = 10.0
# How long the writer lets records gather before handing a batch to its thread. Each
# hand-off costs more CPU than writing a small record, and a busy gateway enqueues a record
# every few tens of microseconds; a few milliseconds turn one hand-off per record into one
# per many. A flush() waiter, a filling queue or shutdown cut the wait short, so
# fsync = "always" and back-pressure never wait for it. Kept well below fsync_interval_s.
_GATHER_S = 0.005
_LOCK_WAIT_S = 2.0


class AuditError(Exception):
    """The audit log cannot be written or read as asked (bad key, corrupt log, no session)."""


class RecorderClosed(AuditError):
    """A record was offered after :meth:`Recorder.aclose`, or the writer has stopped."""


# --------------------------------------------------------------------------------------
# Keys and record encoding


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read the HMAC key from *path*.

    The file holds the key as raw bytes; one trailing newline (``\\n`` or ``\\r\\n``) is
    stripped so ``echo KEY > file`` works.

    Args:
        path: the key file (``recording.key_file``).

    Returns:
        The key bytes.

    Raises:
        AuditError: the file cannot be read or holds an empty key.
    """
    try:
        with open(path, "rb") as f:
            key = f.read()
    except OSError as exc:
        raise AuditError(f"cannot read key file {os.fspath(path)}: {exc.strerror}") from None
    if key.endswith(b"\r\n"):
        key = key[:-2]
    elif key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise AuditError(f"key file {os.fspath(path)} is empty")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of *key*, stored in each segment_start to name the key."""
    return hmac.new(key, b"pgguard-audit key id", hashlib.sha256).hexdigest()[:16]


def _mac_proto(key: bytes) -> Any:
    # Keyed once; each record copies the prepared state instead of re-deriving the pads.
    return hmac.new(key, digestmod=hashlib.sha256)


def _default(obj: Any) -> Any:
    # Only lossless conversions: anything else is a caller bug worth a TypeError.
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    type_name = type(obj).__module__ + "." + type(obj).__qualname__
    if type_name in ("decimal.Decimal", "uuid.UUID", "ipaddress.IPv4Address",
                     "ipaddress.IPv6Address"):
        return str(obj)
    raise TypeError(f"audit record field of type {type(obj).__name__} cannot be recorded")


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, datetime=False, default=_default)


def _encode(packer: msgpack.Packer, proto: Any, prev: bytes, seq: int, ts: float,
            session: str, type_: str, fields_packed: bytes) -> tuple[bytes, bytes]:
    """Build one record's bytes and MAC from its parts (fields already packed)."""
    p = packer.pack
    body = b"".join((
        b"\xa1v", p(FORMAT_VERSION), b"\xa3seq", p(seq), b"\xa2ts", p(float(ts)),
        b"\xa7session", p(session), b"\xa4type", p(type_), b"\xa6fields", fields_packed,
    ))
    h = proto.copy()
    h.update(prev)
    h.update(_MAP6)
    h.update(body)
    mac = h.digest()
    return b"".join((b"\x87", body, _MAC_TAG, mac)), mac


def _record_mac_ok(proto: Any, prev: bytes, raw: memoryview) -> bool:
    if len(raw) <= _MAC_TRAILER or raw[0] != _MAP7 or raw[-_MAC_TRAILER:-32] != _MAC_TAG:
        return False
    h = proto.copy()
    h.update(prev)
    h.update(_MAP6)
    h.update(raw[1:-_MAC_TRAILER])
    return hmac.compare_digest(h.digest(), raw[-32:])


def _fs_instance(instance: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", instance)
    return safe or "gateway"


def _segment_name(inst: str, number: int) -> str:
    return f"{inst}.{number:08d}{SEGMENT_SUFFIX}"


def _parse_name(name: str) -> tuple[str, int] | None:
    m = _NAME_RE.match(name)
    return (m["inst"], int(m["num"])) if m else None


# --------------------------------------------------------------------------------------
# Reading segments


@dataclass(frozen=True, slots=True)
class Problem:
    """Where a log stops being trustworthy: a file, a record's sequence number, and why."""

    file: str
    seq: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.seq}: {self.why}"


@dataclass
class _Segment:
    """What one scan of a segment file found."""

    path: str
    size: int = 0
    instance: str | None = None
    number: int | None = None
    prev_mac: bytes | None = None
    last_mac: bytes | None = None
    records: int = 0
    sealed: bool = False
    torn_at: int | None = None
    problem: Problem | None = None
    items: list[dict[str, Any]] | None = None


def _scan(path: str, data: bytes, proto: Any, kid: str, keep: bool = False) -> _Segment:
    """Check one segment's records and MAC chain; optionally keep the decoded records.

    The tail (a torn last record, a missing seal) is reported in ``torn_at``/``sealed``,
    not as a problem: only the caller knows whether the segment is still being written.
    """
    seg = _Segment(path=path, size=len(data), items=[] if keep else None)
    view = memoryview(data)
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, read_size=1 << 20,
                                max_buffer_size=max(100 << 20, len(data) + 1),
                                strict_map_key=True)
    prev = ZERO_MAC
    pos = 0
    seq = 0

    def bad(why: str) -> _Segment:
        seg.problem = Problem(path, seq, why)
        return seg

    while True:
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            break
        except Exception:  # msgpack raises several kinds (FormatError, StackError, ValueError)
            return bad(f"undecodable bytes at offset {pos}")
        end = unpacker.tell()
        raw = view[pos:end]
        if not isinstance(obj, dict) or tuple(obj) != RECORD_KEYS:
            return bad(f"malformed record at offset {pos}")
        if seg.sealed:
            return bad(f"data after the segment seal at offset {pos}")
        rtype, fields = obj["type"], obj["fields"]
        if seq == 0:
            if rtype != "segment_start" or not isinstance(fields, dict):
                return bad("segment does not begin with segment_start "
                           "(its first records were removed or replaced)")
            if fields.get("key_id") not in (None, kid):
                return bad(f"written with another key (key id {fields.get('key_id')}, "
                           f"this key is {kid})")
            declared = fields.get("prev_mac")
            if not isinstance(declared, bytes) or len(declared) != 32:
                return bad("segment_start has no valid prev_mac")
            prev = declared
        if obj["seq"] != seq:
            return bad(f"expected seq {seq}, found seq {obj['seq']!r}: a record was deleted, "
                       "inserted, reordered or altered")
        if not _record_mac_ok(proto, prev, raw):
            return bad("MAC mismatch: the record was altered, or a record before it was "
                       "removed or inserted")
        if seq == 0:
            seg.instance = fields.get("instance")
            seg.number = fields.get("segment")
            seg.prev_mac = prev
            if not isinstance(seg.instance, str) or not isinstance(seg.number, int):
                return bad("segment_start lacks instance or segment number")
        elif rtype == "segment_start":
            return bad("segment_start in the middle of a segment")
        elif rtype == "segment_seal":
            seg.sealed = True
        prev = bytes(raw[-32:])
        seg.last_mac = prev
        if keep:
            seg.items.append(obj)
        seq += 1
        seg.records = seq
        pos = end
    if pos < len(data):
        seg.torn_at = pos
    if seg.records == 0:
        # Segments are created whole with their start, so even an open one has it.
        return bad("empty segment" if not data else
                   "torn segment_start: the file was cut inside its first record")
    return seg


def _lock_path(directory: Path, inst: str) -> Path:
    return directory / f"{inst}.lock"


def _open_segment_of(directory: Path, inst: str) -> str | None:
    """The name of the segment a live recorder of *inst* holds open, if one runs."""
    try:
        fd = os.open(_lock_path(directory, inst), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or None
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    files: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.glob("*" + SEGMENT_SUFFIX)) if f.is_file())
        else:
            files.append(str(p))
    return files


def _order_key(seg: _Segment) -> tuple[str, int, str]:
    parsed = _parse_name(os.path.basename(seg.path))
    inst = seg.instance if seg.instance is not None else (parsed[0] if parsed else "")
    num = seg.number if seg.number is not None else (parsed[1] if parsed else -1)
    return (inst, num, seg.path)


@dataclass
class VerifyResult:
    """The outcome of :func:`verify`.

    Attributes:
        ok: every record checked out and every chain is unbroken.
        records: how many records were checked.
        segments: how many segment files were read.
        first_bad: the first problem, or None when ok.
        problems: every problem found (at most one per segment, plus broken links).
        notes: facts worth knowing that are not failures (open segments, chain starts).
    """

    ok: bool
    records: int = 0
    segments: int = 0
    first_bad: Problem | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check(files: list[str], key: bytes, keep: bool = False) -> tuple[VerifyResult,
                                                                      list[_Segment]]:
    proto, kid = _mac_proto(key), key_id(key)
    segs: list[_Segment] = []
    result = VerifyResult(ok=True)
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            seg = _Segment(path=path)
            seg.problem = Problem(path, 0, f"cannot read: {exc.strerror}")
        else:
            seg = _scan(path, data, proto, kid, keep)
        segs.append(seg)
        result.records += seg.records
    result.segments = len(segs)
    segs.sort(key=_order_key)

    by_instance: dict[str, list[_Segment]] = collections.defaultdict(list)
    for seg in segs:
        # A segment that fails after its start still holds its place in the chain, so
        # the ones after it are not reported as missing.
        if seg.instance is not None and seg.number is not None:
            by_instance[seg.instance].append(seg)
    link_problems: dict[str, Problem] = {}
    for inst, chain in by_instance.items():
        first = chain[0]
        if first.prev_mac != ZERO_MAC:
            result.notes.append(f"instance {inst}: chain starts at segment {first.number} "
                                f"({first.path}); earlier segments are not present")
        for i, seg in enumerate(chain):
            is_last = i == len(chain) - 1
            if seg.problem is None and (not seg.sealed or seg.torn_at is not None):
                open_name = _open_segment_of(Path(seg.path).parent, _fs_instance(inst))
                if is_last and open_name == os.path.basename(seg.path):
                    result.notes.append(f"{seg.path}: open, being written by a running gateway")
                elif seg.torn_at is not None:
                    seg.problem = Problem(seg.path, seg.records,
                                          f"torn record at offset {seg.torn_at}: the file was "
                                          "cut mid-record (or the gateway crashed and has "
                                          "not restarted)")
                else:
                    seg.problem = Problem(seg.path, seg.records,
                                          "segment is not sealed: its tail was cut (or the "
                                          "gateway crashed and has not restarted)")
            if i == 0:
                continue
            before = chain[i - 1]
            if seg.number == before.number:
                why = f"duplicate segment {seg.number} of instance {inst} (also {before.path})"
            elif seg.number != before.number + 1:
                missing = (str(before.number + 1) if seg.number == before.number + 2 else
                           f"{before.number + 1}..{seg.number - 1}")
                why = f"segment {missing} of instance {inst} is missing"
            elif before.problem is None and seg.prev_mac != before.last_mac:
                why = (f"does not chain to the end of segment {before.number} "
                       f"({before.path}): a segment was replaced or its tail altered")
            else:
                continue
            link_problems[seg.path] = Problem(seg.path, 0, why)

    for seg in segs:
        # A broken link names the segment's start, which comes before any tail problem.
        problem = link_problems.get(seg.path) or seg.problem
        if problem is not None:
            result.problems.append(problem)
    if not segs:
        result.problems.append(Problem("-", 0, "no segment files found"))
    result.ok = not result.problems
    result.first_bad = result.problems[0] if result.problems else None
    return result, segs


def verify(paths: Sequence[str | os.PathLike[str]], key: bytes) -> VerifyResult:
    """Check segment files (or folders of them) against *key*.

    Within a segment every record's sequence number and chained MAC is checked, the first
    record must be a ``segment_start`` and the last a ``segment_seal``; across the segments
    of one gateway instance the numbers must be consecutive and each ``segment_start`` must
    chain to the previous segment's last MAC. A segment a running gateway still writes
    (its instance lock is held) may lack its seal.

    Args:
        paths: segment files and/or folders holding ``*.pgglog`` files.
        key: the HMAC key.

    Returns:
        A :class:`VerifyResult`; ``first_bad`` names file, sequence number and reason.
    """
    result, _ = _check(_expand(paths), key)
    return result


# --------------------------------------------------------------------------------------
# Writing segments (synchronous; the Recorder runs these methods in a worker thread)


class _WriteFailed(Exception):
    def __init__(self, written: int, cause: BaseException):
        super().__init__(str(cause))
        self.written = written
        self.cause = cause


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _tail_is_seal(data: bytes) -> bool:
    """Cheaply tell whether a file ends with a complete segment_seal record."""
    i = data.rfind(_SEAL_MARK, max(0, len(data) - 4096))
    if i < 0:
        return False
    j = data.rfind(_RECORD_HEAD, max(0, i - 256), i)
    if j < 0:
        return False
    try:
        obj = msgpack.unpackb(data[j:], raw=False)
    except Exception:  # not a record that runs exactly to the end of the file
        return False
    return isinstance(obj, dict) and obj.get("type") == "segment_seal"


def _is_incomplete(data: bytes) -> bool:
    """True when *data* is a strict prefix of one msgpack object: what a crash leaves."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(100 << 20, len(data) + 1))
    unpacker.feed(data)
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return True
    except Exception:
        return False
    return False


class _SegmentWriter:
    """Owns the open segment of one gateway instance: chain state, rotation, recovery.

    Not thread-safe: the Recorder calls it from one worker thread at a time.
    """

    def __init__(self, directory: str | os.PathLike[str], key: bytes, instance: str,
                 fsync: str = "batch", max_bytes: int = 64 << 20):
        self.dir = Path(directory)
        self.key = key
        self.instance = instance
        self.inst = _fs_instance(instance)
        self.fsync_mode = fsync
        self.max_bytes = max_bytes
        self._proto = _mac_proto(key)
        self._kid = key_id(key)
        self._packer = _new_packer()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self.path: Path | None = None
        self.number = -1
        self._seq = 0
        self._prev = ZERO_MAC
        self._size = 0
        self.records_in_segment = 0  # records beyond segment_start
        self.dirty = False
        self.recovered: list[str] = []

    # -- start -----------------------------------------------------------------------

    def start(self) -> None:
        """Lock the instance, recover crashed segments, and open a new segment.

        Raises:
            AuditError: another recorder holds this instance, or the folder is unusable.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock(self.inst, wait=True)
        if self._lock_fd is None:
            raise AuditError(f"another recorder is running for instance {self.instance!r} "
                             f"in {self.dir}")
        try:
            segments = self._segments()
            for inst, numbers in segments.items():
                if inst == self.inst:
                    continue
                # A crashed gateway with another instance id may never come back: recover
                # its last segment now if nobody holds it.
                fd = self._lock(inst, wait=False)
                if fd is not None:
                    try:
                        self._recover(self.dir / _segment_name(inst, max(numbers)))
                    finally:
                        os.close(fd)
            for tmp in self.dir.glob(f".{self.inst}.*{SEGMENT_SUFFIX}.tmp"):
                tmp.unlink(missing_ok=True)  # only ever holds a segment_start
            mine = segments.get(self.inst)
            if mine:
                last = max(mine)
                self._prev = self._recover(self.dir / _segment_name(self.inst, last)) or ZERO_MAC
                self.number = last
            self._open_next()
        except BaseException:
            self.close_fds()
            raise

    def _segments(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = collections.defaultdict(list)
        for entry in os.scandir(self.dir):
            parsed = _parse_name(entry.name)
            if parsed and entry.is_file():
                found[parsed[0]].append(parsed[1])
        return found

    def _lock(self, inst: str, wait: bool) -> int | None:
        fd = os.open(_lock_path(self.dir, inst), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + (_LOCK_WAIT_S if wait else 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            # A verify holds a shared lock for a moment; a recorder holds it for good.
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.01)

    def _recover(self, path: Path) -> bytes | None:
        """Seal a segment a crash left open; return the MAC the next segment chains to.

        Only a torn tail is cut: an incomplete last record (plus zero fill). Complete
        records are never removed, even if their MACs are wrong: verify must see them.
        A segment written with another key is left alone (None): sealing it with this key
        would make it verify under neither.
        """
        with open(path, "rb") as f:
            data = f.read()
        if _tail_is_seal(data):
            return self._same_key(path, data) and data[-32:] or None
        if not self._same_key(path, data):
            return None
        unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False,
                                    max_buffer_size=max(100 << 20, len(data) + 1))
        end = 0
        records = 0
        last_mac = ZERO_MAC
        while True:
            try:
                obj = unpacker.unpack()
            except Exception:  # OutOfData (torn tail) or undecodable bytes
                break
            if isinstance(obj, dict) and isinstance(obj.get("mac"), bytes):
                end = unpacker.tell()
                records += 1
                last_mac = obj["mac"]
        rest = data[end:]
        stripped = rest.rstrip(b"\0")
        torn = 0
        if not stripped or _is_incomplete(stripped):
            torn = len(rest)
        else:
            log.error("event=audit_segment_damaged path=%s offset=%d: bytes after the last record "
                      "are not a torn write; sealing after them so verify reports them",
                      path, end)
        fields = {"reason": "recovered", "torn_bytes": torn}
        record, mac = _encode(self._packer, self._proto, last_mac, records, time.time(), "",
                              "segment_seal", self._packer.pack(fields))
        fd = os.open(path, os.O_WRONLY)
        try:
            if torn:
                os.ftruncate(fd, len(data) - torn)
            os.lseek(fd, 0, os.SEEK_END)
            _write_all(fd, record)
            if self.fsync_mode != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("event=audit_segment_recovered path=%s records=%d torn_bytes=%d",
                    path, records, torn)
        self.recovered.append(str(path))
        return mac

    def _same_key(self, path: Path, data: bytes) -> bool:
        try:
            first = next(iter(msgpack.Unpacker(io.BytesIO(data), raw=False)))
            kid = first["fields"]["key_id"]
        except Exception:  # not even a readable segment_start: nothing to chain to
            log.error("event=audit_segment_unreadable path=%s: left as is", path)
            return False
        if kid != self._kid:
            log.error("event=audit_segment_other_key path=%s key_id=%s: left as is; a new chain "
                      "starts", path, kid)
            return False
        return True

    # -- writing ---------------------------------------------------------------------

    def _open_next(self) -> None:
        number = self.number + 1
        while True:
            name = _segment_name(self.inst, number)
            final = self.dir / name
            if not final.exists():
                break
            number += 1
        fields = {
            "version": FORMAT_VERSION, "instance": self.instance, "segment": number,
            "prev_mac": self._prev, "key_id": self._kid, "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        record, mac = _encode(self._packer, self._proto, self._prev, 0, time.time(), "",
                              "segment_start", self._packer.pack(fields))
        # Written whole to a temporary name, then linked into place: a segment file never
        # exists without its segment_start, and link() refuses to replace a file.
        tmp = self.dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, record)
            if self.fsync_mode != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fsync_mode != "never":
            _fsync_dir(self.dir)
        self._fd = os.open(final, os.O_WRONLY | os.O_APPEND)
        self.path = final
        self.number = number
        self._seq = 1
        self._prev = mac
        self._size = len(record)
        self.records_in_segment = 0
        self.dirty = False
        if self._lock_fd is not None:
            encoded = name.encode()
            os.pwrite(self._lock_fd, encoded, 0)
            os.ftruncate(self._lock_fd, len(encoded))

    def _append_bytes(self, buf: bytearray, seq: int, prev: bytes, records: int) -> None:
        """Write *buf*; on failure cut the file back and restore the chain state."""
        try:
            _write_all(self._fd, buf)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.exception("event=audit_truncate_failed path=%s", self.path)
            self._seq, self._prev, self.records_in_segment = seq, prev, records
            raise
        self._size += len(buf)
        self.dirty = True

    def write_batch(self, items: Sequence[tuple[float, str, str, bytes]], sync: bool = False,
                    rotate: bool = False) -> int:
        """Append records; rotate by size between records; fsync and rotate by age on request.

        Args:
            items: ``(ts, session, type, packed fields)`` in order.
            sync: fsync after writing.
            rotate: seal the segment after writing and open the next (age rotation).

        Returns:
            The number of the segment that is open afterwards.

        Raises:
            _WriteFailed: with how many items were durably appended before the failure.
        """
        done = 0
        try:
            if self._fd is None:
                self._open_next()
            buf = bytearray()
            mark = (self._seq, self._prev, self.records_in_segment)
            pending = 0
            for ts, session, type_, fields in items:
                record, self._prev = _encode(self._packer, self._proto, self._prev, self._seq,
                                             ts, session, type_, fields)
                self._seq += 1
                self.records_in_segment += 1
                buf += record
                pending += 1
                if self._size + len(buf) >= self.max_bytes or len(buf) >= _MAX_BATCH_BYTES:
                    self._append_bytes(buf, *mark)
                    done += pending
                    pending = 0
                    buf.clear()
                    if self._size >= self.max_bytes:
                        self._rotate("size")
                    mark = (self._seq, self._prev, self.records_in_segment)
            if buf:
                self._append_bytes(buf, *mark)
                done += pending
            if rotate and self.records_in_segment:
                self._rotate("age")
            if sync:
                self.sync()
        except OSError as exc:
            raise _WriteFailed(done, exc) from exc
        return self.number

    def sync(self) -> None:
        """fsync the open segment if anything was written since the last fsync."""
        if self._fd is not None and self.dirty:
            if self.fsync_mode != "never":
                os.fsync(self._fd)
            self.dirty = False

    def _seal(self, reason: str) -> None:
        fields = self._packer.pack({"reason": reason, "records": self._seq + 1})
        record, mac = _encode(self._packer, self._proto, self._prev, self._seq, time.time(),
                              "", "segment_seal", fields)
        self._append_bytes(bytearray(record), self._seq, self._prev, self.records_in_segment)
        self._seq += 1
        self._prev = mac
        self.dirty = True
        self.sync()
        os.close(self._fd)
        self._fd = None

    def _rotate(self, reason: str) -> None:
        self._seal(reason)
        self._open_next()

    def close(self, reason: str = "close") -> None:
        """Seal the open segment and release the instance lock."""
        try:
            if self._fd is not None:
                self._seal(reason)
        finally:
            self.close_fds()

    def close_fds(self) -> None:
        """Release file descriptors without sealing (what a crash would leave)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# --------------------------------------------------------------------------------------
# The recorder (trio)


class Recorder:
    """Records gateway sessions into the audit log without blocking the trio loop on disk.

    Usage::

        recorder = Recorder(cfg.recording, instance="gw1")
        await nursery.start(recorder.run)
        sid = recorder.session_id()
        await recorder.record(sid, "session_start", user="alice", groups=[...], ...)
        ...
        await recorder.aclose()

    Args:
        cfg: the ``[recording]`` configuration (``dir`` and ``key_file`` must be set).
        instance: the gateway instance id; each instance writes its own segment chain.

    Raises:
        AuditError: recording is not configured or the key cannot be read.
    """

    def __init__(self, cfg: RecordingConfig, instance: str):
        if not cfg.dir or not cfg.key_file:
            raise AuditError("recording.dir and recording.key_file must be set")
        self.cfg = cfg
        self.instance = instance
        self._writer = _SegmentWriter(cfg.dir, load_key(cfg.key_file), instance,
                                      cfg.fsync, cfg.segment_max_bytes)
        self._packer = _new_packer()
        self._queue: collections.deque[tuple[float, str, str, bytes]] = collections.deque()
        self._slots = trio.Semaphore(cfg.queue_size)
        self._limiter = trio.CapacityLimiter(1)
        self._wakeup = trio.Event()
        self._progress = trio.Event()
        self._stopped = trio.Event()
        self._enqueued = 0
        self._done = 0
        self._inflight = 0
        self._started = False
        self._closing = False
        self._pressure = False
        self._blocked = 0
        self._failing = False
        self._dirty_since: float | None = None
        self._segment_opened = 0.0
        self._segment = -1
        self._gather_s = min(_GATHER_S, cfg.fsync_interval_s / 4)
        self._gather_until: float | None = None
        # The writer stops gathering and writes at once at this queue length, well before
        # record() would have to wait for room.
        self._urgent_len = max(1, min(_MAX_BATCH_RECORDS, cfg.queue_size // 2))
        self._flushers = 0

    @property
    def max_rows(self) -> int:
        """How many rows of each result are recorded (``recording.max_rows``)."""
        return self.cfg.max_rows

    @property
    def directory(self) -> Path:
        """The folder holding the segment files."""
        return self._writer.dir

    def session_id(self) -> str:
        """A new unique session id (16 hex digits)."""
        return secrets.token_hex(8)

    async def record(self, session_id: str, type: str, **fields: Any) -> None:
        """Enqueue one record.

        Never drops: when the queue holds ``recording.queue_size`` records this waits for
        room (back-pressure on the session), and logs once per episode that it does so.
        It does not checkpoint when the queue has room, to keep the hot path cheap.

        Args:
            session_id: from :meth:`session_id`.
            type: one of :data:`RECORD_TYPES`.
            **fields: the record's fields (docs/audit-format.md); values must already be
                masked. ``result`` rows beyond ``max_rows`` are cut and ``truncated`` set.

        Raises:
            ValueError: unknown record type.
            TypeError: a field value msgpack cannot carry.
            RecorderClosed: after :meth:`aclose` or once the writer has stopped.
        """
        await self.record_map(session_id, type, fields)

    async def record_map(self, session_id: str, type: str, fields: dict[str, Any]) -> None:
        """Enqueue one record whose fields are already in a dict (see :meth:`record`).

        The gateway's tap builds its fields as dicts; this spares it a copy per record.
        *fields* is packed before this returns, so the caller may reuse it afterwards;
        for a ``result`` or ``session_start`` it may be completed in place (``truncated``,
        ``instance``).

        Args:
            session_id: from :meth:`session_id`.
            type: one of :data:`RECORD_TYPES`.
            fields: the record's fields.

        Raises:
            ValueError: unknown record type.
            TypeError: a field value msgpack cannot carry.
            RecorderClosed: after :meth:`aclose` or once the writer has stopped.
        """
        if self._closing or self._stopped.is_set():
            raise RecorderClosed("the audit recorder is closed")
        if type not in RECORD_TYPES:
            raise ValueError(f"unknown audit record type {type!r}")
        if type == "result":
            rows = fields.get("rows")
            if rows is None:
                fields["rows"] = rows = []
            if len(rows) > self.cfg.max_rows:
                fields["rows"] = list(rows[: self.cfg.max_rows])
                fields["truncated"] = True
            fields.setdefault("truncated", False)
        elif type == "session_start":
            fields.setdefault("instance", self.instance)
        packed = self._packer.pack(fields)
        item = (time.time(), session_id, type, packed)
        self._inflight += 1
        try:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                self._wakeup.set()  # the writer must not sit out its gathering delay
                self._blocked += 1
                if not self._pressure:
                    self._pressure = True
                    log.warning("event=audit_backpressure queue_size=%d: the audit writer is behind; "
                                "sessions wait for it instead of dropping records",
                                self.cfg.queue_size)
                await self._slots.acquire()
            queue = self._queue
            queue.append(item)
            self._enqueued += 1
            # Wake the writer when it idles (an empty queue) or the batch is big enough;
            # otherwise it is already gathering and wakes at its deadline.
            if len(queue) == 1 or len(queue) >= self._urgent_len:
                self._wakeup.set()
        finally:
            self._inflight -= 1

    async def flush(self) -> None:
        """Wait until every record enqueued so far is written (fsynced if fsync="always").

        Raises:
            RecorderClosed: the writer stopped before writing them.
        """
        target = self._enqueued
        await trio.lowlevel.checkpoint()
        if self._done >= target:
            return
        # Someone waits: the writer writes now instead of gathering more records.
        self._flushers += 1
        self._wakeup.set()
        try:
            while self._done < target:
                if self._stopped.is_set():
                    raise RecorderClosed("the audit writer stopped before the records were "
                                         "written")
                await self._progress.wait()
        finally:
            self._flushers -= 1

    async def aclose(self) -> None:
        """Stop accepting records, write everything queued, and seal the open segment."""
        self._closing = True
        if not self._started:
            self._stopped.set()
            return
        self._wakeup.set()
        await self._stopped.wait()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: recover crashed segments, then write the queue until closed.

        Start it with ``await nursery.start(recorder.run)``: it reports started once
        recovery is done and a new segment is open.

        Raises:
            AuditError: another recorder holds this instance's segments.
            OSError: the recording folder cannot be created or read.
        """
        if self._started:
            raise RuntimeError("Recorder.run() is already running")
        if self._closing:  # closed before it ever ran: nothing to recover or seal
            task_status.started()
            return
        self._started = True
        try:
            self._segment = await trio.to_thread.run_sync(self._start_writer,
                                                          limiter=self._limiter)
        except BaseException:
            self._stopped.set()
            raise
        self._segment_opened = trio.current_time()
        task_status.started()
        try:
            await self._loop()
        finally:
            self._closing = True  # the writer is going away: refuse new records
            with trio.move_on_after(_SHUTDOWN_GRACE_S) as scope:
                scope.shield = True
                await self._shutdown()
            self._stopped.set()
            self._progress.set()

    def _start_writer(self) -> int:
        self._writer.start()
        return self._writer.number

    def _take_batch(self) -> list[tuple[float, str, str, bytes]]:
        # Items stay in the queue until written (_account pops them): a writer cancelled
        # mid-batch leaves them for the shutdown drain instead of losing them.
        batch = []
        size = 0
        for item in self._queue:
            if len(batch) >= _MAX_BATCH_RECORDS or size >= _MAX_BATCH_BYTES:
                break
            size += len(item[3])
            batch.append(item)
        return batch

    def _due(self) -> tuple[float, bool, bool]:
        """Next deadline, and whether an fsync or an age rotation is due now."""
        now = trio.current_time()
        deadline = float("inf")
        sync_due = rotate_due = False
        if self.cfg.fsync == "batch" and self._dirty_since is not None:
            at = self._dirty_since + self.cfg.fsync_interval_s
            sync_due = now >= at
            deadline = min(deadline, at)
        if self._writer.records_in_segment:
            at = self._segment_opened + self.cfg.segment_max_age_s
            rotate_due = now >= at
            deadline = min(deadline, at)
        return deadline, sync_due, rotate_due

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing and self._inflight == 0:
                    return
                deadline, sync_due, rotate_due = self._due()
                if sync_due or rotate_due:
                    await self._write([], sync_due, rotate_due)
                    continue
                self._wakeup = trio.Event()
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                continue
            if self._gathering():
                self._wakeup = trio.Event()
                with trio.move_on_at(self._gather_until):
                    await self._wakeup.wait()
                continue
            self._gather_until = None
            batch = self._take_batch()
            _, sync_due, rotate_due = self._due()
            await self._write(batch, sync_due or self.cfg.fsync == "always", rotate_due)

    def _gathering(self) -> bool:
        """Whether the writer should wait for more records before writing the queue.

        It waits at most ``_gather_s`` from the moment it finds the queue non-empty (after
        its previous write), and not at all when someone awaits flush(), when the queue is
        filling up, or when the recorder closes.
        """
        if (not self._gather_s or self._flushers or self._closing
                or len(self._queue) >= self._urgent_len):
            return False
        now = trio.current_time()
        if self._gather_until is None:
            self._gather_until = now + self._gather_s
        return now < self._gather_until

    async def _write(self, batch: list[tuple[float, str, str, bytes]], sync: bool,
                     rotate: bool) -> None:
        remaining = batch
        backoff = 0.05
        while True:
            try:
                number = await trio.to_thread.run_sync(
                    self._writer.write_batch, remaining, sync, rotate,
                    limiter=self._limiter)
                break
            except _WriteFailed as exc:
                self._account(exc.written)
                remaining = remaining[exc.written:]
                if not self._failing:
                    self._failing = True
                    log.error("event=audit_write_failed error=%s: retrying; sessions wait for the "
                              "audit log instead of losing records", exc.cause)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if self._failing:
            self._failing = False
            log.warning("event=audit_write_recovered")
        if number != self._segment:
            self._segment = number
            self._segment_opened = trio.current_time()
        if sync or self.cfg.fsync == "never":
            self._dirty_since = None
        elif remaining and self._dirty_since is None:
            self._dirty_since = trio.current_time()
        self._account(len(remaining))

    def _account(self, n: int) -> None:
        if not n:
            return
        self._done += n
        for _ in range(n):
            self._queue.popleft()
            self._slots.release()
        if self._pressure and len(self._queue) <= self.cfg.queue_size // 2:
            self._pressure = False
            log.warning("event=audit_backpressure_end blocked_records=%d", self._blocked)
            self._blocked = 0
        event, self._progress = self._progress, trio.Event()
        event.set()

    async def _shutdown(self) -> None:
        try:
            while self._queue:
                batch = self._take_batch()
                await self._write(batch, False, False)
            await trio.to_thread.run_sync(self._writer.close,
                                          limiter=self._limiter)
        except BaseException:
            if self._queue:
                log.error("event=audit_shutdown_incomplete unwritten_records=%d", len(self._queue))
            # Only os.close calls: safe on the loop, and the scope may already be cancelled.
            self._writer.close_fds()
            raise


# --------------------------------------------------------------------------------------
# Export and replay


def _records(dir: str | os.PathLike[str], key: bytes,
             force: bool) -> tuple[VerifyResult, Iterator[tuple[str, int, dict[str, Any]]]]:
    """Verify the log under *dir*, then stream ``(path, segment, record)`` in time order.

    Records of one instance stay in log order; instances are merged by timestamp.
    """
    files = _expand([dir])
    result, segs = _check(files, key)
    if not result.ok and not force:
        raise AuditError(f"the audit log does not verify: {result.first_bad} "
                         "(use --force to read it anyway)")
    proto, kid = _mac_proto(key), key_id(key)
    chains: dict[str, list[_Segment]] = collections.defaultdict(list)
    for seg in segs:
        chains[_order_key(seg)[0]].append(seg)

    def chain_records(chain: list[_Segment]) -> Iterator[tuple[float, int, tuple]]:
        for seg in chain:
            try:
                with open(seg.path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            full = _scan(seg.path, data, proto, kid, keep=True)
            for rec in full.items or ():
                ts = rec["ts"] if isinstance(rec["ts"], (int, float)) else 0.0
                yield ts, 0, (seg.path, full.number, rec)

    merged = heapq.merge(*(chain_records(c) for _, c in sorted(chains.items())),
                         key=lambda t: t[0])
    return result, (entry for _, _, entry in merged)


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
    packer = _new_packer()
    to_stdout = os.fspath(out_path) == "-"
    tmp = None if to_stdout else Path(f"{os.fspath(out_path)}.tmp{os.getpid()}")
    out = sys.stdout.buffer if to_stdout else open(tmp, "wb")  # noqa: SIM115
    count = 0
    sessions: dict[str, tuple[Any, Any]] = {}
    try:
        out.write(packer.pack(header))
        for path, _segment, rec in stream:
            rtype, sid, fields = rec["type"], rec["session"], rec["fields"]
            if rtype in SEGMENT_TYPES:
                continue
            if rtype == "session_start" and isinstance(fields, dict):
                sessions[sid] = (fields.get("user"), fields.get("connection"))
            who, conn = sessions.get(sid, (None, None))
            ts = rec["ts"] if isinstance(rec["ts"], (int, float)) else 0.0
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


def render_session(records: Sequence[dict[str, Any]]) -> str:
    """Format one session's records as a readable transcript.

    Args:
        records: the session's records as decoded from the log, in log order.

    Returns:
        The transcript; recorded values have control characters escaped.
    """
    out: list[str] = []
    for rec in records:
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
    for _, _, rec in stream:
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


# --------------------------------------------------------------------------------------
# Command line


def _settings(args: argparse.Namespace) -> tuple[str | None, bytes]:
    from .config import load

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


def _time_arg(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor epoch seconds"
        ) from None


def _guard(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from .errors import ConfigError

        try:
            return handler(args)
        except (AuditError, ConfigError, OSError, ValueError) as exc:
            print(f"pgguard audit: error: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, AuditError) else 2
    return run


def add_cli(subparsers: Any) -> None:
    """Add ``audit`` with ``verify``, ``export`` and ``replay`` to a subparsers object.

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


if __name__ == "__main__":
    sys.exit(main())
