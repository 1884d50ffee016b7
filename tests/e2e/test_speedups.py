"""The compiled hot loops and their pure-Python twins decide identically, for any input.

pgguard._speedups has two implementations of the framer's header walk, the DataRow-run
walk and the detectors' byte gate; these properties feed both (and, for the gate, the
the detectors' full scan) random and well-formed buffers, cut anywhere.
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys

import pytest
from harness.speedups import COMPILED, IMPLS, framer_using
from hypothesis import given, settings
from hypothesis import strategies as st

from pgguard import _speedups
from pgguard._speedups import COL_GATE, COL_GATE_AFTER_1, COL_SKIP, FrameError, _pure
from pgguard.errors import ProtocolViolation
from pgguard.masking.detectors import FINDERS, Detectors
from pgguard.wire.framer import Framer

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="extension not built")
NAMES = list(FINDERS)


def frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def datarow(values: list[bytes | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return frame(b"D", body)


def outcome(fn, *args):
    """What a call did: its result, or the error it raised with its fields."""
    try:
        return ("ok", fn(*args))
    except FrameError as exc:
        return ("FrameError", exc.kind, exc.size)


# Bytes that look like PostgreSQL traffic: mostly whole frames of a few kinds (DataRows
# above all), sometimes random junk and impossible lengths.
values = st.one_of(st.none(), st.binary(max_size=40),
                   st.text("0123456789 -().+/@_AJZeyxokBEGIN-aZ\u00e9", max_size=40)
                   .map(lambda s: s.encode()))
rows = st.lists(values, max_size=6).map(datarow)
others = st.tuples(st.sampled_from([b"C", b"T", b"Z", b"E", b"N"]),
                   st.binary(max_size=20)).map(lambda kb: frame(*kb))
bad = st.tuples(st.sampled_from([b"D", b"X"]),
                st.sampled_from([0, 3, 1 << 31, 2**32 - 1, 70])).map(
                    lambda kb: kb[0] + struct.pack("!I", kb[1]))
streams = st.lists(st.one_of(rows, rows, others, bad, st.binary(max_size=12)),
                   max_size=12).map(b"".join)


@needs_compiled
@settings(max_examples=800, deadline=None)
@given(st.one_of(streams, st.binary(max_size=200)), st.integers(0, 210),
       st.sampled_from([4, 20, 64, 1 << 20]), st.booleans())
def test_next_frame_and_run_end_agree(data, pos, max_size, as_bytes):
    buf = data if as_bytes else bytearray(data)
    assert outcome(_pure.next_frame, buf, pos, max_size) == \
        outcome(COMPILED.next_frame, buf, pos, max_size)
    assert _pure.datarow_run_end(buf, pos, max_size) == \
        COMPILED.datarow_run_end(buf, pos, max_size)


def walk(impl, data: bytes, cuts: list[int], max_size: int) -> list:
    """Feed *data* cut at *cuts* into a Framer walking with *impl*; what it returned:
    frames (DataRow runs merged, as the pumps forward them) and the error, if any."""
    out: list = []
    framer = Framer(max_size=max_size, backend=True)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    with framer_using(impl):
        try:
            for a, b in itertools.pairwise(bounds):
                framer.feed(data[a:b])
                while (f := framer.next_frame()) is not None:
                    kind, start, end = f
                    if kind == b"D":
                        end = framer.datarow_run(end)
                    out.append((kind, bytes(framer.buf[start:end])))
        except ProtocolViolation as exc:
            out.append(("violation", str(exc)))
    out.append(("pending", framer.pending))
    return out


@settings(max_examples=500, deadline=None)
@given(streams, st.lists(st.integers(0, 10_000), max_size=8),
       st.sampled_from([64, 1 << 20]))
def test_framer_walks_identically_with_either_implementation(data, cuts, max_size):
    expected = walk(_pure, data, cuts, max_size)
    if COMPILED is not None:
        assert walk(COMPILED, data, cuts, max_size) == expected
    # Merged runs hold exactly the frames a frame-by-frame walk returns.
    if all(k != "violation" for k, _ in expected):
        whole = b"".join(b for k, b in expected if k != "pending")
        assert data.startswith(whole)


@pytest.mark.parametrize("impl", IMPLS)
def test_datarow_run_stops_at_other_kinds_and_partial_frames(impl):
    run = datarow([b"a"]) + datarow([None, b"bc"])
    data = run + frame(b"C", b"SELECT 2\0") + datarow([b"x"])
    assert impl.datarow_run_end(data, 0, 1 << 20) == len(run)
    assert impl.datarow_run_end(data + datarow([b"y"])[:-1], len(data) - 12, 100) \
        == len(data)
    assert impl.datarow_run_end(data, 0, 5) == 0       # over the limit: next_frame's turn
    with framer_using(impl):
        framer = Framer(backend=True)
        framer.feed(data)
        kind, start, end = framer.next_frame()
        assert (kind, framer.datarow_run(end)) == (b"D", len(run))
        assert framer.next_frame()[0] == b"C"


@pytest.mark.parametrize("impl", IMPLS)
def test_frame_errors_carry_kind_and_size(impl):
    with pytest.raises(FrameError) as info:
        impl.next_frame(b"Q\0\0\0\x03", 0, 100)
    assert (info.value.kind, info.value.size) == (b"Q", 3)
    with pytest.raises(FrameError):
        impl.next_frame(bytearray(b"D\0\0\x10\0"), 0, 100)


# -- the detectors' byte gate -------------------------------------------------------------

gate_text = st.text("0123456789 -().+/@_.AJKSZaeyxoksbj-GINBE\u00e9\t", max_size=60)
gate_values = st.one_of(gate_text.map(lambda s: s.encode()), st.binary(max_size=60),
                        st.sampled_from([b"AKIAABCDEFGHIJKLMNOP", b"xoxb-1234567890",
                                         b"-----BEGIN RSA PRIVATE KEY-----",
                                         b"DE89370400440532013000", b"a@b.cc",
                                         b"call 415-555-2671", b"4111 1111 1111 1111"]))
name_sets = st.sets(st.sampled_from(NAMES))


@settings(max_examples=1500, deadline=None)
@given(gate_values, name_sets)
def test_byte_gate_never_skips_what_the_detectors_find(v, names):
    expected = _pure.ByteGate(names).skips(v)
    if expected:
        # Sound: a value the gate lets pass unscanned holds nothing any detector finds
        # (the full scan, without its own pre-filter, is the reference).
        assert Detectors(names).find(v.decode("latin-1"), prefilter=False) == []
    if COMPILED is not None:
        gate = COMPILED.ByteGate(names)
        assert gate.skips(v) is expected
        assert gate(bytearray(v)) is expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), gate_values), max_size=4), max_size=6),
       st.binary(max_size=8), name_sets,
       st.lists(st.sampled_from([COL_SKIP, COL_GATE, COL_GATE_AFTER_1]), max_size=5)
       .map(bytes), st.integers(0, 400))
def test_first_hit_agrees_and_is_conservative(row_values, junk, names, cols, cut):
    data = b"".join(datarow(r) for r in row_values)
    buf = data + junk
    end = min(cut, len(buf)) if cut < len(buf) else len(data)
    expected = _pure.ByteGate(names).first_hit(buf, 0, end, cols)
    if COMPILED is not None:
        assert COMPILED.ByteGate(names).first_hit(bytearray(buf), 0, end, cols) == expected
    # Every row before the hit has only values the detectors would skip.
    det = Detectors(names)
    pos = 0
    for r in row_values:
        row = datarow(r)
        if pos + len(row) > expected:
            break
        for i, v in enumerate(r):
            code = cols[i] if i < len(cols) else COL_SKIP
            if v is not None and code != COL_SKIP:
                assert det.skips_bytes(v if code == COL_GATE else v[1:])
        pos += len(row)
    assert pos == expected or expected == end


@pytest.mark.parametrize("impl", IMPLS)
def test_first_hit_finds_the_row_with_an_email(impl):
    gate = impl.ByteGate(NAMES)
    clean = datarow([b"1", b"nothing to see here", None])
    hit = datarow([b"2", b"write to ann@example.com", None])
    buf = clean * 3 + hit + clean
    assert gate.first_hit(buf, 0, len(buf), bytes([COL_SKIP, COL_GATE])) == 3 * len(clean)
    assert gate.first_hit(buf, 0, len(buf), bytes([COL_GATE, COL_SKIP])) == len(buf)
    assert gate.first_hit(buf, 0, len(buf), b"") == len(buf)


# -- which implementation is picked -------------------------------------------------------

def _picked(env: dict[str, str]) -> str:
    # Run where this process's pgguard is found first (an installed copy under tox, the
    # source tree in development), so both import the same package.
    package = os.path.dirname(os.path.dirname(os.path.abspath(_speedups.__file__)))
    return subprocess.run(
        [sys.executable, "-c", "from pgguard import _speedups; print(_speedups.IMPLEMENTATION)"],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(package),
        env={**os.environ, **env}).stdout.strip()


def test_pgguard_pure_forces_the_pure_twin():
    assert _picked({"PGGUARD_PURE": "1"}) == "pure"
    assert _picked({"PGGUARD_PURE": ""}) == ("compiled" if COMPILED is not None else "pure")


def test_the_package_exports_the_picked_implementation():
    impl = COMPILED if _speedups.IMPLEMENTATION == "compiled" else _pure
    assert _speedups.next_frame is impl.next_frame
    assert _speedups.ByteGate is impl.ByteGate
