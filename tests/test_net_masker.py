"""net/masker.py over the exchange, without sockets: frames in, rewritten bytes out."""

from __future__ import annotations

from pgguard.config import ConnectionConfig, MaskingConfig
from pgguard.masking import SessionMasking
from pgguard.masking.hub import MaskingHub
from pgguard.net.masker import ResultMasker
from pgguard.wire import codec
from pgguard.wire import messages as m
from pgguard.wire.exchange import Exchange
from pgguard.wire.framer import Framer
from pgguard.wire.messages import Bind, Execute, FieldDescription, Parse, Query, Sync

EMAIL = b"alice.anderson@example.com"
CFG = MaskingConfig(detectors=("email",), present=True)


def _masker():
    ex = Exchange()
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    masking = SessionMasking(CFG, ["analysts"], hash_key=b"k")
    hub = MaskingHub(CFG, key=b"k")
    return ex, ResultMasker(masking, hub, ConnectionConfig("db"), ex, send, "s1")


def _relay(ex: Exchange, masker: ResultMasker, data: bytes) -> bytes:
    """What the backend pump does with *data*: feed the exchange, let masking rewrite."""
    framer = Framer(backend=True)
    framer.feed(data)
    out = []
    while (frame := framer.next_frame()) is not None:
        kind, start, end = frame
        k = kind[0]
        req = None
        if k not in (m.DATA_ROW, m.COPY_DATA, m.NOTICE_RESPONSE, m.PARAMETER_STATUS,
                     m.NOTIFICATION_RESPONSE):
            msg = framer.decode(kind, start, end) if k in (
                m.READY_FOR_QUERY, m.COMMAND_COMPLETE) else None
            req = ex.server_sent(k, msg)
        new = masker.on_backend(kind, framer, start, end, None, req)
        out.append(bytes(framer.buf[start:end]) if new is None else new)
    return b"".join(out)


def _send(ex: Exchange, masker: ResultMasker, msg) -> bytes | None:
    """What the frontend pump does with one message."""
    notes: dict = {}
    if isinstance(msg, Query | Parse):
        assert masker.plan_statement(msg.sql) is None
        effects = masker.sent(msg, False, notes)
        ex.client_sent(msg, notes, tuple(effects))
        return None
    raw = codec.execute(msg.portal, 0) if isinstance(msg, Execute) else b""
    extra = masker.on_frontend(msg, notes, raw)
    ex.client_sent(msg, notes)
    return extra


FIELD = FieldDescription("v", 0, 0, 25, -1, -1, 0)


def test_simple_query_rows_are_scanned():
    ex, masker = _masker()
    _send(ex, masker, Query("SELECT v FROM (VALUES ('x')) t(v)"))
    out = _relay(ex, masker, codec.row_description([FIELD]) + codec.data_row([EMAIL])
                 + codec.command_complete("SELECT 1") + codec.ready_for_query("I"))
    assert EMAIL not in out and out.endswith(codec.ready_for_query("I"))
    assert ex.idle


def test_execute_nobody_described_gets_a_describe_whose_answer_is_dropped():
    ex, masker = _masker()
    _send(ex, masker, Parse("", "SELECT v FROM (VALUES ('x')) t(v)", ()))
    _send(ex, masker, Bind("", "", (), (), ()))
    extra = _send(ex, masker, Execute("", 0))
    assert extra == codec.describe("P", "") + codec.execute("", 0)
    _send(ex, masker, Sync())
    answers = (codec.message(b"1") + codec.message(b"2") + codec.row_description([FIELD])
               + codec.data_row([EMAIL]) + codec.command_complete("SELECT 1")
               + codec.ready_for_query("I"))
    out = _relay(ex, masker, answers)
    assert EMAIL not in out
    assert codec.row_description([FIELD]) not in out   # the added Describe's answer
    assert ex.idle and "" in ex.statements


def test_error_in_a_pipeline_skips_to_sync():
    ex, masker = _masker()
    _send(ex, masker, Parse("", "SELECT v FROM (VALUES ('x')) t(v)", ()))
    _send(ex, masker, Bind("", "", (), (), ()))
    _send(ex, masker, Execute("", 0))
    _send(ex, masker, Sync())
    err = codec.error_response("ERROR", "22012", "division by zero")
    out = _relay(ex, masker, codec.message(b"1") + err + codec.ready_for_query("I"))
    assert out.endswith(codec.ready_for_query("I")) and ex.idle
