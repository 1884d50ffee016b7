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

One concern per module, imports pointing one way (``format <- writer <- recorder`` for the
gateway's side, ``format <- verify <- export <- cli`` for the auditor's):

- :mod:`.format`: record layout, version, keys, the chained HMAC, file names.
- :mod:`.writer`: the synchronous segment writer (fsync modes, rotation, torn-tail recovery).
- :mod:`.recorder`: the trio :class:`Recorder` (bounded queue, back-pressure, batching).
- :mod:`.verify`: :func:`verify` and the segment scan the readers share.
- :mod:`.export`: :func:`export` and :func:`replay`.
- :mod:`.cli`: the ``pgguard audit`` commands (:func:`add_cli`); ``python -m pgguard.audit``.

This package re-exports the names the rest of pgguard, the tests and the benchmarks use.
"""

from .cli import add_cli, main, parse_time
from .export import EXPORT_FORMAT, export, render_session, replay
from .format import (
    FORMAT_VERSION,
    RECORD_KEYS,
    RECORD_TYPES,
    SEGMENT_SUFFIX,
    SEGMENT_TYPES,
    ZERO_MAC,
    AuditError,
    key_id,
    load_key,
)
from .recorder import Recorder, RecorderClosed
from .verify import Problem, VerifyResult, verify

__all__ = [
    "EXPORT_FORMAT", "FORMAT_VERSION", "RECORD_KEYS", "RECORD_TYPES", "SEGMENT_SUFFIX",
    "SEGMENT_TYPES", "ZERO_MAC", "AuditError", "Problem", "Recorder", "RecorderClosed",
    "VerifyResult", "add_cli", "export", "key_id", "load_key", "main", "parse_time",
    "render_session", "replay", "verify",
]
