"""Verifying segment files: every record's sequence number and chained MAC, and the links
between the segments of each gateway instance.

:func:`verify` is the auditor's check; :func:`check_files` and :func:`scan_segment` are the
same check for readers (export and replay) that go on to read the records.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import hmac
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from .format import (
    RECORD_KEYS,
    SEGMENT_SUFFIX,
    ZERO_MAC,
    fs_instance,
    key_id,
    lock_path,
    mac_proto,
    parse_segment_name,
    record_mac_ok,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """Where a log stops being trustworthy: a file, a record's sequence number, and why."""

    file: str
    seq: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.seq}: {self.why}"


@dataclass
class SegmentScan:
    """What one scan of a segment file found."""

    path: str
    instance: str | None = None
    number: int | None = None
    prev_mac: bytes | None = None
    last_mac: bytes | None = None
    records: int = 0
    sealed: bool = False
    torn_at: int | None = None
    problem: Problem | None = None
    items: list[dict[str, Any]] | None = None


def scan_segment(path: str, data: bytes, proto: hmac.HMAC, kid: str,
                 keep: bool = False) -> SegmentScan:
    """Check one segment's records and MAC chain; optionally keep the decoded records.

    The tail (a torn last record, a missing seal) is reported in ``torn_at``/``sealed``,
    not as a problem: only the caller knows whether the segment is still being written.

    Args:
        path: the file's name, for the problem it may report.
        data: the file's bytes.
        proto: from :func:`~pgguard.audit.format.mac_proto`.
        kid: the key's :func:`~pgguard.audit.format.key_id`.
        keep: keep the decoded records in ``items``.

    Returns:
        What the scan found; ``problem`` is set at the first bad record.
    """
    seg = SegmentScan(path=path, items=[] if keep else None)
    view = memoryview(data)
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, read_size=1 << 20,
                                max_buffer_size=max(100 << 20, len(data) + 1),
                                strict_map_key=True)
    prev = ZERO_MAC
    pos = 0
    seq = 0

    def bad(why: str) -> SegmentScan:
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
        if not record_mac_ok(proto, prev, raw):
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


def _open_segment_of(directory: Path, inst: str) -> str | None:
    """The name of the segment a live recorder of *inst* holds open, if one runs."""
    try:
        fd = os.open(lock_path(directory, inst), os.O_RDONLY)
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


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The segment files named by *paths*: files as given, folders as their ``*.pgglog``."""
    files: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.glob("*" + SEGMENT_SUFFIX)) if f.is_file())
        else:
            files.append(str(p))
    return files


def chain_order(seg: SegmentScan) -> tuple[str, int, str]:
    """Sort key: instance, segment number, path (from the file name if the start is bad)."""
    parsed = parse_segment_name(os.path.basename(seg.path))
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


def check_files(files: list[str], key: bytes) -> tuple[VerifyResult, list[SegmentScan]]:
    """Verify *files* as :func:`verify` does; also return their scans in chain order."""
    proto, kid = mac_proto(key), key_id(key)
    segs: list[SegmentScan] = []
    result = VerifyResult(ok=True)
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            seg = SegmentScan(path=path)
            seg.problem = Problem(path, 0, f"cannot read: {exc.strerror}")
        else:
            seg = scan_segment(path, data, proto, kid)
        segs.append(seg)
        result.records += seg.records
    result.segments = len(segs)
    segs.sort(key=chain_order)

    by_instance: dict[str, list[SegmentScan]] = collections.defaultdict(list)
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
                open_name = _open_segment_of(Path(seg.path).parent, fs_instance(inst))
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
    result, _ = check_files(expand_paths(paths), key)
    return result

