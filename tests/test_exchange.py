"""wire/exchange.py: the protocol state of one session, without sockets."""

from __future__ import annotations

from pgguard.wire import messages as m
from pgguard.wire.exchange import Effect, Exchange
from pgguard.wire.messages import (
    Bind,
    Close,
    CommandComplete,
    Describe,
    Execute,
    Parse,
    Query,
    ReadyForQuery,
    Sync,
)


def bind(portal="", stmt=""):
    return Bind(portal, stmt, (), (), ())


def rfq(ex, status="I"):
    return ex.server_sent(m.READY_FOR_QUERY, ReadyForQuery(status))


def cc(ex, tag):
    return ex.server_sent(m.COMMAND_COMPLETE, CommandComplete(tag))


def test_parse_bind_execute_bound_on_confirmation():
    ex = Exchange()
    p = ex.client_sent(Parse("s1", "SELECT 1", ()), {"k": "v"})
    b = ex.client_sent(bind("p1", "s1"))
    e = ex.client_sent(Execute("p1", 0))
    ex.client_sent(Sync())
    assert ex.statements == {} and ex.portals == {}
    assert [n["k"] for n in ex.expected_statements("s1")] == ["v"]
    assert ex.server_sent(m.PARSE_COMPLETE) is p
    assert ex.statements["s1"].notes == {"k": "v"}
    assert ex.head is b
    assert ex.server_sent(m.BIND_COMPLETE) is b
    assert ex.portals["p1"].statement is ex.statements["s1"]
    assert ex.head is e and e.portal is ex.portals["p1"]
    assert cc(ex, "SELECT 1") is e
    assert rfq(ex).kind == m.SYNC
    assert ex.idle and "p1" not in ex.portals and "s1" in ex.statements


def test_error_skips_to_sync_and_discards_what_follows():
    ex = Exchange()
    ex.client_sent(Parse("a", "SELEC", ()))
    ex.client_sent(bind("", "a"))
    ex.client_sent(Execute("", 0))
    err = ex.server_sent(m.ERROR_RESPONSE)
    assert err.kind == m.PARSE and err.failed
    assert ex.skipping and not ex.pending
    assert ex.client_sent(Describe("S", "a")) is None   # PostgreSQL discards it
    assert ex.client_sent(Query("SELECT 1")) is None
    s = ex.client_sent(Sync())
    assert not ex.skipping and list(ex.pending) == [s]
    assert rfq(ex) is s
    assert "a" not in ex.statements


def test_error_with_sync_already_sent_pops_to_it():
    ex = Exchange()
    ex.client_sent(Parse("", "SELECT 1/0", ()))
    ex.client_sent(bind())
    ex.client_sent(Execute("", 0))
    s = ex.client_sent(Sync())
    ex.client_sent(Parse("b", "SELECT 2", ()))
    ex.server_sent(m.PARSE_COMPLETE)
    ex.server_sent(m.BIND_COMPLETE)
    ex.server_sent(m.ERROR_RESPONSE)
    assert ex.head is s and not ex.skipping
    assert rfq(ex, "I") is s
    assert ex.head.kind == m.PARSE and ex.head.name == "b"
    assert "" in ex.statements and "" not in ex.portals   # portal gone with the txn


def test_parse_of_existing_name_rejected_keeps_the_old_binding():
    ex = Exchange()
    ex.client_sent(Parse("s", "SELECT 1", ()), {"v": 1})
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    rfq(ex)
    ex.client_sent(Parse("s", "SELECT 2", ()), {"v": 2})
    assert [n["v"] for n in ex.expected_statements("s")] == [2, 1]
    ex.client_sent(Sync())
    ex.server_sent(m.ERROR_RESPONSE)   # 42P05
    rfq(ex)
    assert ex.statements["s"].notes == {"v": 1}


def test_unnamed_parse_failure_drops_the_unnamed_statement():
    ex = Exchange()
    ex.client_sent(Parse("", "SELECT 1", ()))
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    rfq(ex)
    ex.client_sent(Parse("", "SELEC", ()))
    ex.client_sent(Sync())
    ex.server_sent(m.ERROR_RESPONSE)
    rfq(ex)
    assert "" not in ex.statements


def test_close_forgets_on_close_complete():
    ex = Exchange()
    ex.client_sent(Parse("s", "SELECT 1", ()))
    ex.server_sent(m.PARSE_COMPLETE)
    ex.client_sent(Close("S", "s"))
    assert "s" in ex.statements
    ex.server_sent(m.CLOSE_COMPLETE)
    assert "s" not in ex.statements


def test_describe_statement_answers():
    ex = Exchange()
    ex.client_sent(Parse("s", "SELECT 1", ()))
    d = ex.client_sent(Describe("S", "s"))
    ex.server_sent(m.PARSE_COMPLETE)
    assert d.statement is ex.statements["s"]
    assert ex.server_sent(m.PARAMETER_DESCRIPTION) is d
    assert ex.server_sent(m.ROW_DESCRIPTION) is d
    assert not ex.pending


def test_sql_prepare_deallocate_and_discard_all():
    ex = Exchange()
    q = ex.client_sent(Query("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2"), effects=(
        Effect("prepare", "a", {"v": "a"}), Effect("prepare", "b", {"v": "b"})))
    assert [n["v"] for n in ex.expected_statements("b")] == ["b"]
    assert cc(ex, "PREPARE") is q and q.current == 0
    assert cc(ex, "PREPARE") is q and q.current == 1 and q.results == 2
    rfq(ex)
    assert set(ex.statements) == {"a", "b"} and ex.statements["a"].sql
    ex.client_sent(Query("DEALLOCATE a"), effects=(Effect("deallocate", "a"),))
    cc(ex, "DEALLOCATE")
    rfq(ex)
    assert set(ex.statements) == {"b"}
    ex.client_sent(Query("DEALLOCATE ALL"))
    cc(ex, "DEALLOCATE ALL")
    rfq(ex)
    assert ex.statements == {}
    ex.client_sent(Parse("p", "SELECT 1", ()))
    ex.server_sent(m.PARSE_COMPLETE)
    ex.client_sent(Query("DISCARD ALL"))
    cc(ex, "DISCARD ALL")
    rfq(ex)
    assert ex.statements == {} and ex.portals == {}


def test_failed_prepare_redefinition_keeps_the_old_one():
    ex = Exchange()
    ex.client_sent(Query("PREPARE a AS SELECT 1"), effects=(Effect("prepare", "a", {"v": 1}),))
    cc(ex, "PREPARE")
    rfq(ex)
    ex.client_sent(Query("PREPARE a AS DELETE FROM t"),
                   effects=(Effect("prepare", "a", {"v": 2}),))
    ex.server_sent(m.ERROR_RESPONSE)
    rfq(ex)
    assert ex.statements["a"].notes == {"v": 1}


def test_statements_after_an_error_in_a_query_do_not_apply():
    ex = Exchange()
    ex.client_sent(Query("SELECT 1/0; DEALLOCATE p"), effects=(
        None, Effect("deallocate", "p")))
    ex.server_sent(m.ERROR_RESPONSE)
    rfq(ex)
    ex.client_sent(Query("PREPARE p AS SELECT 1"), effects=(Effect("prepare", "p"),))
    cc(ex, "PREPARE")
    rfq(ex)
    assert "p" in ex.statements


def test_cursors_end_with_their_transaction():
    ex = Exchange()
    ex.client_sent(Query("BEGIN; DECLARE c CURSOR FOR SELECT 1; "
                         "DECLARE h CURSOR WITH HOLD FOR SELECT 1"),
                   effects=(None, Effect("declare", "c"), Effect("declare", "h", holdable=True)))
    cc(ex, "BEGIN")
    cc(ex, "DECLARE CURSOR")
    cc(ex, "DECLARE CURSOR")
    rfq(ex, "T")
    assert set(ex.portals) == {"c", "h"} and ex.txn_status == "T"
    ex.client_sent(Query("COMMIT"))
    cc(ex, "COMMIT")
    rfq(ex, "I")
    assert set(ex.portals) == {"h"}
    ex.client_sent(Query("CLOSE h"), effects=(Effect("close", "h"),))
    cc(ex, "CLOSE CURSOR")
    rfq(ex)
    assert ex.portals == {}


def test_commit_of_a_failed_transaction_drops_its_holdable_cursors():
    ex = Exchange()
    ex.client_sent(Query("BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT 1"),
                   effects=(None, Effect("declare", "h", holdable=True)))
    cc(ex, "BEGIN")
    cc(ex, "DECLARE CURSOR")
    rfq(ex, "T")
    ex.client_sent(Query("SELECT 1/0"))
    ex.server_sent(m.ERROR_RESPONSE)
    rfq(ex, "E")
    assert ex.txn_status == "E" and "h" in ex.portals
    ex.client_sent(Query("COMMIT"))
    cc(ex, "ROLLBACK")
    rfq(ex, "I")
    assert ex.portals == {}


def test_named_portal_lives_until_the_end_of_the_transaction():
    ex = Exchange()
    ex.client_sent(Query("BEGIN"))
    cc(ex, "BEGIN")
    rfq(ex, "T")
    ex.client_sent(Parse("", "SELECT 1", ()))
    ex.client_sent(bind("p"))
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    ex.server_sent(m.BIND_COMPLETE)
    rfq(ex, "T")
    assert "p" in ex.portals
    ex.client_sent(bind("", ""))
    ex.server_sent(m.BIND_COMPLETE)
    ex.client_sent(bind("", ""), {"second": True})
    ex.server_sent(m.BIND_COMPLETE)
    assert ex.portals[""].notes == {"second": True}   # replaced at the next Bind
    ex.client_sent(Query("COMMIT"))
    cc(ex, "COMMIT")
    rfq(ex, "I")
    assert ex.portals == {}


def test_copy_in_a_query_and_an_execute():
    ex = Exchange()
    q = ex.client_sent(Query("COPY t TO STDOUT"))
    assert ex.server_sent(m.COPY_OUT_RESPONSE) is q
    assert ex.server_sent(m.COPY_DONE) is q
    cc(ex, "COPY 3")
    assert rfq(ex) is q
    ex.client_sent(Parse("", "COPY t FROM STDIN", ()))
    ex.client_sent(bind())
    e = ex.client_sent(Execute("", 0))
    assert ex.client_sent(m.Raw(b"d", b"x")) is None   # CopyData gets no answer
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    ex.server_sent(m.BIND_COMPLETE)
    assert ex.server_sent(m.COPY_IN_RESPONSE) is e
    assert cc(ex, "COPY 1") is e
    assert rfq(ex).kind == m.SYNC


def test_execute_of_a_parsed_prepare_applies_its_effect():
    ex = Exchange()
    ex.client_sent(Parse("", "PREPARE x AS SELECT 1", ()),
                   effects=(Effect("prepare", "x", {"v": "x"}),))
    ex.client_sent(bind())
    ex.client_sent(Execute("", 0))
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    ex.server_sent(m.BIND_COMPLETE)
    cc(ex, "PREPARE")
    rfq(ex)
    assert ex.statements["x"].notes == {"v": "x"}


def test_portal_suspended_and_empty_query():
    ex = Exchange()
    ex.client_sent(Parse("", "", ()))
    ex.client_sent(bind())
    e1 = ex.client_sent(Execute("", 1))
    e2 = ex.client_sent(Execute("", 1))
    ex.server_sent(m.PARSE_COMPLETE)
    ex.server_sent(m.BIND_COMPLETE)
    assert ex.server_sent(m.PORTAL_SUSPENDED) is e1
    assert ex.server_sent(m.EMPTY_QUERY_RESPONSE) is e2
    assert not ex.pending


def test_expect_failure_discards_until_sync():
    ex = Exchange()
    ex.client_sent(Parse("s", "pgguard_refused_x", ()))
    ex.expect_failure()
    assert ex.client_sent(bind("", "s")) is None
    s = ex.client_sent(Sync())
    ex.server_sent(m.ERROR_RESPONSE)
    assert ex.head is s and not ex.skipping
    rfq(ex)
    assert ex.idle and ex.statements == {}


def test_ready_for_query_without_request_sets_status():
    ex = Exchange()
    assert rfq(ex, "T") is None and ex.txn_status == "T"
    assert ex.server_sent(m.ERROR_RESPONSE) is None   # FATAL after nothing was asked


def _answer_stream() -> bytes:
    from pgguard.wire import codec

    return b"".join([
        codec.message(b"1"), codec.message(b"2"),
        codec.data_row([b"1"]), codec.command_complete("SELECT 1"),
        codec.ready_for_query("I"),
        codec.command_complete("PREPARE"), codec.ready_for_query("I"),
    ])


def _run(chunks) -> Exchange:
    from pgguard.wire.framer import Framer

    ex = Exchange()
    ex.client_sent(Parse("s", "SELECT 1", ()))
    ex.client_sent(bind("p", "s"))
    ex.client_sent(Execute("p", 0))
    ex.client_sent(Sync())
    ex.client_sent(Query("PREPARE q AS SELECT 1"), effects=(Effect("prepare", "q"),))
    framer = Framer(backend=True)
    for chunk in chunks:
        framer.feed(chunk)
        while (frame := framer.next_frame()) is not None:
            kind, start, end = frame
            k = kind[0]
            if k != m.DATA_ROW:
                msg = framer.decode(kind, start, end) if k in (
                    m.READY_FOR_QUERY, m.COMMAND_COMPLETE) else None
                ex.server_sent(k, msg)
    return ex


def test_answers_fed_whole_or_byte_by_byte_end_in_the_same_state():
    data = _answer_stream()
    whole = _run([data])
    single = _run([data[i:i + 1] for i in range(len(data))])
    for ex in (whole, single):
        assert ex.idle and ex.txn_status == "I"
        assert set(ex.statements) == {"s", "q"} and ex.portals == {}


def test_a_long_pipeline_looks_names_up_by_index():
    import time

    ex = Exchange()
    ex.client_sent(Parse("s", "SELECT 1", ()), {"v": "s"})
    t0 = time.perf_counter()
    for i in range(20000):
        ex.client_sent(bind(f"p{i}", "s"), {"v": i})
        ex.client_sent(Execute(f"p{i}", 0))
        assert next(ex.expected_portals(f"p{i}"))["v"] == i
        assert next(ex.expected_statements("s"))["v"] == "s"
    assert time.perf_counter() - t0 < 10.0   # linear; a scan per lookup would take minutes
    ex.client_sent(Sync())
    ex.server_sent(m.PARSE_COMPLETE)
    for _ in range(20000):
        ex.server_sent(m.BIND_COMPLETE)
        cc(ex, "SELECT 1")
    rfq(ex)
    assert ex.idle and ex.portals == {} and ex._defs == {}
