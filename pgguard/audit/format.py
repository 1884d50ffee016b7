"""The audit log's on-disk format: record layout, version, keys, the chained HMAC, file names.

A record is a msgpack map ``{v, seq, ts, session, type, fields, mac}`` with
``mac = HMAC-SHA256(key, prev_mac || body)``, where ``body`` is the record's own encoding
without its ``mac`` entry and ``prev_mac`` the MAC of the record before it.
docs/audit-format.md is the reference; everything here is pure (no I/O but reading a key
file), so the writer, the verifier and an independent reader agree on one definition.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any

import msgpack

FORMAT_VERSION = 1
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
#: The packed ``type: "segment_seal"`` entry and the start of every record: the writer's
#: recovery looks for them to tell cheaply whether a file ends with its seal.
SEAL_MARK = b"\xa4type\xacsegment_seal"
RECORD_HEAD = b"\x87\xa1v"

_NAME_RE = re.compile(r"^(?P<inst>[A-Za-z0-9_-]+)\.(?P<num>\d{8,})" + re.escape(SEGMENT_SUFFIX) + "$")


class AuditError(Exception):
    """The audit log cannot be written or read as asked (bad key, corrupt log, no session)."""


# --------------------------------------------------------------------------------------
# Keys


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


def mac_proto(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with *key*, to be ``copy()``-ed once per record.

    Keyed once; each record copies the prepared state instead of re-deriving the pads.
    """
    return hmac.new(key, digestmod=hashlib.sha256)


# --------------------------------------------------------------------------------------
# Records


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


def new_packer() -> msgpack.Packer:
    """The packer every record's fields go through (bin for bytes, lossless extras only)."""
    return msgpack.Packer(use_bin_type=True, datetime=False, default=_default)


def encode_record(packer: msgpack.Packer, proto: hmac.HMAC, prev: bytes, seq: int, ts: float,
                  session: str, type_: str, fields_packed: bytes) -> tuple[bytes, bytes]:
    """Build one record's bytes and MAC from its parts.

    Args:
        packer: from :func:`new_packer`.
        proto: from :func:`mac_proto`.
        prev: the MAC this record chains to.
        seq, ts, session, type_: the record's header entries.
        fields_packed: the record's ``fields`` map, already packed.

    Returns:
        ``(record bytes, mac)``.
    """
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


def record_mac_ok(proto: hmac.HMAC, prev: bytes, raw: memoryview) -> bool:
    """Whether the stored record *raw* carries the right MAC for chaining to *prev*."""
    if len(raw) <= _MAC_TRAILER or raw[0] != _MAP7 or raw[-_MAC_TRAILER:-32] != _MAC_TAG:
        return False
    h = proto.copy()
    h.update(prev)
    h.update(_MAP6)
    h.update(raw[1:-_MAC_TRAILER])
    return hmac.compare_digest(h.digest(), raw[-32:])


# --------------------------------------------------------------------------------------
# File names


def fs_instance(instance: str) -> str:
    """The instance id as it appears in file names (anything unsafe becomes ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", instance)
    return safe or "gateway"


def segment_name(inst: str, number: int) -> str:
    """``INSTANCE.NNNNNNNN.pgglog`` for a file-name-safe instance and a segment number."""
    return f"{inst}.{number:08d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    """``(instance, number)`` of a segment file name, or None for any other name."""
    m = _NAME_RE.match(name)
    return (m["inst"], int(m["num"])) if m else None


def lock_path(directory: Path, inst: str) -> Path:
    """The lock file a running recorder of *inst* holds; it names the open segment."""
    return directory / f"{inst}.lock"
