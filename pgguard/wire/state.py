"""The phases of a client connection and which messages each admits.

One table, as in h11: the session asks ``expect(phase, kind)`` instead of scattering
checks through the pumps.
"""

from __future__ import annotations

from enum import Enum

from ..errors import ProtocolViolation


class Phase(Enum):
    STARTUP = "startup"            # untyped packets: SSLRequest, GSSENCRequest, Startup, Cancel
    AUTHENTICATING = "auth"        # waiting for the client's PasswordMessage ('p')
    READY = "ready"                # regular frontend messages
    COPY_IN = "copy_in"            # CopyData / CopyDone / CopyFail from the client, plus Sync/Flush
    CLOSED = "closed"


FRONTEND_KINDS = frozenset(b"QPBDECSHXFdcfp")

ALLOWED: dict[Phase, frozenset[int]] = {
    Phase.AUTHENTICATING: frozenset(b"p"),
    # 'p' after authentication would be a second password: PostgreSQL rejects it too.
    Phase.READY: frozenset(b"QPBDECSHXFdcf"),
    Phase.COPY_IN: frozenset(b"dcfSHX"),
}


def expect(phase: Phase, kind: int) -> None:
    """Refuse a message type that cannot appear in *phase*.

    Raises:
        ProtocolViolation: the message is out of place (the connection is closed).
    """
    allowed = ALLOWED.get(phase)
    if allowed is None or kind not in allowed:
        shown = chr(kind) if 32 <= kind < 127 else f"0x{kind:02x}"
        raise ProtocolViolation(f"unexpected message type '{shown}' in phase {phase.value}")
