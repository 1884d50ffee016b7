"""The result limiter without sockets: rows and bytes counted per result, the rest
dropped, a notice and a rewritten tag, cursors counted across FETCHes."""

from __future__ import annotations

from pgguard.wire import codec
from pgguard.wire.exchange import Exchange
from pgguard.wire.framer import Framer
from pgguard.wire.limits import LIMITS, ResultLimiter, truncated_tag
from pgguard.wire.messages import NoticeResponse, Query, ReadyForQuery


def _run(limiter, exchange, data: bytes) -> list:
    """Feed backend bytes as the pump does; decode what the client would get."""
    framer = Framer(1 << 20)
    framer.feed(data)
    out = bytearray()
    while (frame := framer.next_frame()) is not None:
        kind, start, end = frame
        k = kind[0]
        req = None
        if k not in (ord("D"), ord("d"), ord("N")):
            msg = None
            if k == ord("C"):
                msg = codec.decode_backend(kind, framer.buf, start, end)
            elif k == ord("Z"):
                msg = ReadyForQuery(chr(framer.buf[start + 5]))
            req = exchange.server_sent(k, msg)
        rep = limiter.on_backend(k, framer.buf, start, end, None, req)
        out += bytes(framer.buf[start:end]) if rep is None else rep
    client = Framer(1 << 20)
    client.feed(bytes(out))
    msgs = []
    while (frame := client.next_frame()) is not None:
        kind, start, end = frame
        msgs.append(codec.decode_backend(kind, client.buf, start, end))
    return msgs


def _rows(n: int, width: int = 1) -> bytes:
    return b"".join(codec.data_row([b"x" * width]) for _ in range(n))


def test_truncated_tag():
    assert truncated_tag(b"SELECT 1000", 10) == b"SELECT 10"
    assert truncated_tag(b"INSERT 0 9", 3) == b"INSERT 0 3"
    assert truncated_tag(b"FETCH 70", 0) == b"FETCH 0"
    assert truncated_tag(b"BEGIN", 3) == b"BEGIN"


def test_rows_over_the_limit_are_dropped():
    ex = Exchange()
    ex.client_sent(Query("SELECT ..."), {})
    lim = ResultLimiter(3, None, ex)
    msgs = _run(lim, ex, _rows(5) + codec.command_complete("SELECT 5")
                + codec.ready_for_query("I"))
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == ["DataRow"] * 3 + ["NoticeResponse", "CommandComplete", "ReadyForQuery"]
    notice = msgs[3]
    assert isinstance(notice, NoticeResponse)
    assert notice.fields["M"] == "pgguard: result truncated at 3 rows"
    assert msgs[4].tag == "SELECT 3" and lim.truncations == 1


def test_under_the_limit_is_untouched_and_each_result_counts_alone():
    ex = Exchange()
    ex.client_sent(Query("SELECT ...; SELECT ..."), {})
    lim = ResultLimiter(3, None, ex)
    data = (_rows(3) + codec.command_complete("SELECT 3") + _rows(3)
            + codec.command_complete("SELECT 3") + codec.ready_for_query("I"))
    assert [type(m).__name__ for m in _run(lim, ex, data)].count("DataRow") == 6


def test_bytes_limit():
    ex = Exchange()
    ex.client_sent(Query("SELECT ..."), {})
    row = len(codec.data_row([b"x" * 10]))
    lim = ResultLimiter(None, 2 * row + 1, ex)
    msgs = _run(lim, ex, _rows(4, 10) + codec.command_complete("SELECT 4"))
    assert [type(m).__name__ for m in msgs].count("DataRow") == 2
    assert msgs[-1].tag == "SELECT 2"


class _St:
    def __init__(self, kind, cursor):
        self.kind, self.cursor = kind, cursor


def test_fetches_of_one_cursor_share_the_count():
    ex = Exchange()
    lim = ResultLimiter(5, None, ex)
    for n, expect in ((3, 3), (3, 2), (3, 0)):
        notes: dict = {}
        lim.note_statements([_St("FETCH", "c")], notes)
        assert notes[LIMITS] == (("FETCH", "c"),)
        ex.client_sent(Query("FETCH 3 FROM c"), notes)
        msgs = _run(lim, ex, _rows(n) + codec.command_complete(f"FETCH {n}")
                    + codec.ready_for_query("T"))
        assert [type(m).__name__ for m in msgs].count("DataRow") == expect
        assert msgs[-2].tag == f"FETCH {expect}"
    # DECLARE of the same name starts again.
    notes = {}
    lim.note_statements([_St("DECLARE CURSOR", "c")], notes)
    ex.client_sent(Query("DECLARE c CURSOR FOR ..."), notes)
    _run(lim, ex, codec.command_complete("DECLARE CURSOR") + codec.ready_for_query("T"))
    notes = {}
    lim.note_statements([_St("FETCH", "c")], notes)
    ex.client_sent(Query("FETCH 3 FROM c"), notes)
    msgs = _run(lim, ex, _rows(3) + codec.command_complete("FETCH 3"))
    assert [type(m).__name__ for m in msgs].count("DataRow") == 3
