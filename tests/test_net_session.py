"""Pieces of net/session.py and net/services.py that need no socket."""

from __future__ import annotations

import pytest
import trio

from pgguard.errors import PolicyDenied, ProtocolViolation
from pgguard.net.services import SessionRegistry
from pgguard.net.session import _check_options, _first_error, _Outgoing, is_loopback


def test_outgoing_joins_runs_of_kept_frames_and_replacements_in_order():
    buf = bytearray(b"AAAABBBBCCCC")
    out = _Outgoing(buf)
    out.keep(0, 4)
    out.keep(4, 8)          # adjacent: one run
    out.put(b"xx")
    out.keep(8, 12)
    assert out.take() == b"AAAABBBBxxCCCC"
    assert out.take() == b""
    out.keep(0, 4)
    out.keep(8, 12)         # not adjacent: two runs
    assert out.take() == b"AAAACCCC"


def test_startup_options_allow_only_forwarded_settings():
    assert _check_options("-c search_path=app --statement_timeout=5s")
    with pytest.raises(PolicyDenied):
        _check_options("-c role=admin")
    with pytest.raises(PolicyDenied):
        _check_options("-D /tmp")


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("db.example")


def test_first_error_prefers_the_gateway_error():
    boom = ProtocolViolation("bad")
    group = BaseExceptionGroup("g", [ValueError("x"), BaseExceptionGroup("h", [boom])])
    assert _first_error(group) is boom
    other = ValueError("y")
    assert _first_error(BaseExceptionGroup("g", [other])) is other


def test_registry_routes_a_cancel_by_key_only():
    class Session:
        cancelled = 0

        async def cancel_request(self) -> None:
            self.cancelled += 1

    async def main() -> None:
        reg = SessionRegistry()
        s = Session()
        reg.add(s)
        reg.register(7, 42, s)
        await reg.cancel(7, 41)          # wrong key: nothing, no answer
        await reg.cancel(7, 42)
        assert s.cancelled == 1
        reg.unregister(s, (7, 42))
        await reg.cancel(7, 42)
        assert s.cancelled == 1 and not reg.all

    trio.run(main)
