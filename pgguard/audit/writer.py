"""The segment writer: appends chained records to one gateway instance's segment files.

Synchronous on purpose: the :class:`~pgguard.audit.recorder.Recorder` calls it from one
worker thread, so the trio loop never waits on the disk. It holds the instance's lock,
rotates segments by size (and by age when asked), fsyncs per ``recording.fsync``, and on
start seals the segments a crash left open, cutting only a torn tail.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import io
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import msgpack

from .format import (
    FORMAT_VERSION,
    RECORD_HEAD,
    SEAL_MARK,
    SEGMENT_SUFFIX,
    ZERO_MAC,
    AuditError,
    encode_record,
    fs_instance,
    key_id,
    lock_path,
    mac_proto,
    new_packer,
    parse_segment_name,
    segment_name,
)

log = logging.getLogger(__name__)

#: The most bytes write_batch() gathers for one write(); the Recorder's batches stop there too.
MAX_BATCH_BYTES = 8 * 1024 * 1024
# How long start() waits for the instance lock: a verify holds it shared for a moment.
_LOCK_WAIT_S = 2.0


class WriteFailed(Exception):
    """A write failed after *written* of the batch's records were appended whole."""

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
    i = data.rfind(SEAL_MARK, max(0, len(data) - 4096))
    if i < 0:
        return False
    j = data.rfind(RECORD_HEAD, max(0, i - 256), i)
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


class SegmentWriter:
    """Owns the open segment of one gateway instance: chain state, rotation, recovery.

    Not thread-safe: the Recorder calls it from one worker thread at a time.
    """

    def __init__(self, directory: str | os.PathLike[str], key: bytes, instance: str,
                 fsync: str = "batch", max_bytes: int = 64 << 20):
        self.dir = Path(directory)
        self.instance = instance
        self.inst = fs_instance(instance)
        self.fsync_mode = fsync
        self.max_bytes = max_bytes
        self._proto = mac_proto(key)
        self._kid = key_id(key)
        self._packer = new_packer()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self.path: Path | None = None
        self.number = -1
        self._seq = 0
        self._prev = ZERO_MAC
        self._size = 0
        self.records_in_segment = 0  # records beyond segment_start
        self.dirty = False

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
                        self._recover(self.dir / segment_name(inst, max(numbers)))
                    finally:
                        os.close(fd)
            for tmp in self.dir.glob(f".{self.inst}.*{SEGMENT_SUFFIX}.tmp"):
                tmp.unlink(missing_ok=True)  # only ever holds a segment_start
            mine = segments.get(self.inst)
            if mine:
                last = max(mine)
                self._prev = self._recover(self.dir / segment_name(self.inst, last)) or ZERO_MAC
                self.number = last
            self._open_next()
        except BaseException:
            self.close_fds()
            raise

    def _segments(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = collections.defaultdict(list)
        for entry in os.scandir(self.dir):
            parsed = parse_segment_name(entry.name)
            if parsed and entry.is_file():
                found[parsed[0]].append(parsed[1])
        return found

    def _lock(self, inst: str, wait: bool) -> int | None:
        fd = os.open(lock_path(self.dir, inst), os.O_RDWR | os.O_CREAT, 0o600)
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
        record, mac = encode_record(self._packer, self._proto, last_mac, records, time.time(), "",
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
            name = segment_name(self.inst, number)
            final = self.dir / name
            if not final.exists():
                break
            number += 1
        fields = {
            "version": FORMAT_VERSION, "instance": self.instance, "segment": number,
            "prev_mac": self._prev, "key_id": self._kid, "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        record, mac = encode_record(self._packer, self._proto, self._prev, 0, time.time(), "",
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
            WriteFailed: with how many items were durably appended before the failure.
        """
        done = 0
        try:
            if self._fd is None:
                self._open_next()
            buf = bytearray()
            mark = (self._seq, self._prev, self.records_in_segment)
            pending = 0
            for ts, session, type_, fields in items:
                record, self._prev = encode_record(self._packer, self._proto, self._prev, self._seq,
                                             ts, session, type_, fields)
                self._seq += 1
                self.records_in_segment += 1
                buf += record
                pending += 1
                if self._size + len(buf) >= self.max_bytes or len(buf) >= MAX_BATCH_BYTES:
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
            raise WriteFailed(done, exc) from exc
        return self.number

    def sync(self) -> None:
        """fsync the open segment if anything was written since the last fsync."""
        if self._fd is not None and self.dirty:
            if self.fsync_mode != "never":
                os.fsync(self._fd)
            self.dirty = False

    def _seal(self, reason: str) -> None:
        fields = self._packer.pack({"reason": reason, "records": self._seq + 1})
        record, mac = encode_record(self._packer, self._proto, self._prev, self._seq, time.time(),
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

