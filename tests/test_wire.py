"""The sans-IO protocol core: framing from any chunking, round trips, hostile bytes."""

from __future__ import annotations

import pytest
from harness.speedups import IMPLS, framer_using
from hypothesis import given, settings
from hypothesis import strategies as st

from pgguard.errors import ProtocolViolation
from pgguard.wire import codec
from pgguard.wire.framer import NEED_DATA, Framer, StartupFramer
from pgguard.wire.messages import (
    Bind,
    CancelRequest,
    Close,
    CommandComplete,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    GSSENCRequest,
    NoticeResponse,
    ParameterStatus,
    Parse,
    Query,
    Raw,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
)


@pytest.fixture(autouse=True, scope="module", params=IMPLS)
def speedups(request):
    """Every test here runs with the compiled framer walk and with its pure twin."""
    with framer_using(request.param):
        yield request.param


text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
               max_size=40)
i16 = st.integers(0, 1)
oid = st.integers(0, 2**32 - 1)
value = st.one_of(st.none(), st.binary(max_size=30))

frontend_messages = st.one_of(
    st.builds(Query, text),
    st.builds(Parse, text, text, st.lists(oid, max_size=4).map(tuple)),
    st.builds(Bind, text, text, st.lists(i16, max_size=3).map(tuple),
              st.lists(value, max_size=4).map(tuple), st.lists(i16, max_size=3).map(tuple)),
    st.builds(Describe, st.sampled_from("SP"), text),
    st.builds(Execute, text, st.integers(0, 2**31 - 1)),
    st.builds(Close, st.sampled_from("SP"), text),
    st.just(Sync()), st.just(Flush()), st.just(Terminate()),
    st.builds(Raw, st.sampled_from([b"d", b"c"]), st.binary(max_size=50)),
)

field_desc = st.builds(FieldDescription, text, oid, st.integers(-32768, 32767), oid,
                       st.integers(-32768, 32767), st.integers(-2**31, 2**31 - 1), i16)
fields = st.dictionaries(st.sampled_from("SVCMDHPWsctdnFLR"), text, max_size=6)
backend_messages = st.one_of(
    st.builds(ParameterStatus, text, text),
    st.builds(ReadyForQuery, st.sampled_from("ITE")),
    st.builds(ErrorResponse, fields),
    st.builds(NoticeResponse, fields),
    st.builds(RowDescription, st.lists(field_desc, max_size=4).map(tuple)),
    st.builds(DataRow, st.lists(value, max_size=6).map(tuple)),
    st.builds(CommandComplete, text),
    st.builds(Raw, st.sampled_from([b"A", b"1", b"2", b"3", b"n", b"s", b"I", b"d"]),
              st.binary(max_size=50)),
)


def _frames(framer: Framer) -> list:
    out = []
    while (msg := framer.next_message()) is not NEED_DATA:
        out.append(msg)
    return out


def _split_feed(framer: Framer, data: bytes, cuts: list[int]) -> list:
    got = []
    points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
    prev = 0
    for p in points:
        framer.feed(data[prev:p])
        prev = p
        got.extend(_frames(framer))
    return got


@settings(max_examples=300, deadline=None)
@given(st.lists(frontend_messages, max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_frontend_messages_survive_any_split(msgs, cuts):
    data = b"".join(codec.encode_frontend(m) for m in msgs)
    assert _split_feed(Framer(), data, cuts) == msgs


@settings(max_examples=300, deadline=None)
@given(st.lists(backend_messages, max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_backend_messages_survive_any_split(msgs, cuts):
    data = b"".join(codec.encode_backend(m) for m in msgs)
    assert _split_feed(Framer(backend=True), data, cuts) == msgs


@settings(max_examples=100, deadline=None)
@given(st.lists(frontend_messages, min_size=1, max_size=6))
def test_byte_by_byte(msgs):
    data = b"".join(codec.encode_frontend(m) for m in msgs)
    framer = Framer()
    got = []
    for i in range(len(data)):
        framer.feed(data[i:i + 1])
        got.extend(_frames(framer))
    assert got == msgs
    assert framer.pending == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_raise_only_protocol_violation(data, backend):
    framer = Framer(max_size=1000, backend=backend)
    framer.feed(data)
    try:
        _frames(framer)
    except ProtocolViolation:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_startup_bytes_raise_only_protocol_violation(data):
    framer = StartupFramer()
    framer.feed(data)
    try:
        while framer.next_packet() is not NEED_DATA:
            pass
    except ProtocolViolation:
        pass


def test_oversized_message_is_refused_before_buffering():
    framer = Framer(max_size=1024)
    framer.feed(b"Q" + (10_000_000).to_bytes(4, "big"))
    with pytest.raises(ProtocolViolation, match="claims 10000000 bytes"):
        framer.next_frame()


def test_impossible_length_is_refused():
    framer = Framer()
    framer.feed(b"Q\0\0\0\2")
    with pytest.raises(ProtocolViolation):
        framer.next_frame()


def test_malformed_body_is_a_protocol_violation():
    framer = Framer()
    framer.feed(codec.message(b"Q", b"no terminator"))
    with pytest.raises(ProtocolViolation, match="unterminated"):
        framer.next_message()


@pytest.mark.parametrize("packet", [
    SSLRequest(), GSSENCRequest(), CancelRequest(1234, -5678),
    StartupMessage(196608, {"user": "alice", "database": "appdb", "application_name": "x"}),
])
def test_startup_packets_round_trip(packet):
    data = codec.encode_startup(packet)
    framer = StartupFramer()
    for i in range(len(data)):
        assert framer.next_packet() is NEED_DATA
        framer.feed(data[i:i + 1])
    assert framer.next_packet() == packet


def test_protocol_2_is_refused():
    framer = StartupFramer()
    framer.feed(codec.startup_packet(2 << 16, b"user\0x\0\0"))
    with pytest.raises(ProtocolViolation, match="unsupported frontend protocol"):
        framer.next_packet()


def test_oversized_startup_packet_is_refused():
    framer = StartupFramer(max_size=10000)
    framer.feed((100_000).to_bytes(4, "big") + b"\0\3\0\0")
    with pytest.raises(ProtocolViolation):
        framer.next_packet()


def test_frames_point_at_the_original_bytes():
    data = codec.query("SELECT 1") + codec.sync()
    framer = Framer()
    framer.feed(data)
    kind, start, end = framer.next_frame()
    assert kind == b"Q" and bytes(framer.buf[start:end]) == codec.query("SELECT 1")


def test_message_kind_names_match_the_encoders():
    from pgguard.wire import messages as m

    assert codec.query("x")[0] == m.QUERY
    assert codec.parse("", "x")[0] == m.PARSE
    assert codec.sync()[0] == m.SYNC
    assert codec.describe("P", "")[0] == m.DESCRIBE
    assert codec.ready_for_query("I")[0] == m.READY_FOR_QUERY
    assert codec.command_complete("SELECT 1")[0] == m.COMMAND_COMPLETE
    assert codec.data_row([b"1"])[0] == m.DATA_ROW
    assert codec.error_response("ERROR", "XX000", "x")[0] == m.ERROR_RESPONSE


def test_bind_names_reads_only_the_names():
    data = codec.bind("portal", "stmt", [b"secret"], (0,), (1,))
    framer = Framer()
    framer.feed(data)
    _, start, end = framer.next_frame()
    assert framer.decode_bind_names(start, end) == Bind("portal", "stmt", (), (), ())
    with pytest.raises(ProtocolViolation):
        framer.decode_bind_names(0, 8)   # no terminator inside the message
