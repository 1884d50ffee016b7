"""The phases of a client connection and which messages each admits.

One table, as in h11: the session asks ``expect(phase, kind)`` instead of scattering
checks through the pumps.
"""

from __future__ import annotations

from enum import Enum

from ..errors import ProtocolViolation
from .messages import PASSWORD


class Phase(Enum):
    AUTHENTICATING = "auth"        # waiting for the client's PasswordMessage ('p')
    READY = "ready"                # regular frontend messages, COPY data included


ALLOWED: dict[Phase, frozenset[int]] = {
    Phase.AUTHENTICATING: frozenset((PASSWORD,)),
    # 'p' after authentication would be a second password: PostgreSQL rejects it too.
    # CopyData/CopyDone/CopyFail are admitted outside COPY too: PostgreSQL ignores them
    # there, and drivers send them after a COPY ended in an error.
    Phase.READY: frozenset(b"QPBDECSHXFdcf"),
}


def expect(phase: Phase, kind: int) -> None:
    """Refuse a message type that cannot appear in *phase*.

    Raises:
        ProtocolViolation: the message is out of place (the connection is closed).
    """
    if kind not in ALLOWED[phase]:
        shown = chr(kind) if 32 <= kind < 127 else f"0x{kind:02x}"
        raise ProtocolViolation(f"unexpected message type '{shown}' in phase {phase.value}")
