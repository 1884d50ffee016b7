"""Which encoding PostgreSQL reads the client's next statement in, as far as pgguard can
prove it.

PostgreSQL converts every string of a frontend message from ``client_encoding`` to the
server encoding when it reads the message (``pq_getmsgstring``), then parses the converted
text. pgguard must decode the same bytes into the same characters before it classifies
them, or the two read different statements (issue 11, class 1). What it knows:

* **The encoding is what PostgreSQL reports**, never what the client asked for: the
  ``client_encoding`` ParameterStatus of the login and of every change (:meth:`report`).
  An encoding that is not ASCII-safe or that Python cannot decode as PostgreSQL does
  (``encodings.refusal``) ends the session: the caller does so before relaying anything
  else. ``SQL_ASCII`` means "no conversion": PostgreSQL validates the bytes as the server
  encoding and parses them so, and pgguard decodes them in the server encoding.
* **ASCII text reads the same in every encoding** PostgreSQL has: a byte below 0x80 that
  no lead byte precedes is that ASCII character, in SJIS and BIG5 too. Such a statement
  is decoded at once, whatever is in flight.
* **Text with other bytes is decoded only when the encoding is settled**: a statement that
  runs (Query, Bind, Execute, FunctionCall: user code, a trigger, a domain check can call
  ``set_config('client_encoding', …)``) changes the encoding PostgreSQL reads the next
  message in at once, but PostgreSQL reports the change only just before its next
  ReadyForQuery. So non-ASCII text is decoded once every statement sent before it that
  may run something has been followed by a ReadyForQuery (:attr:`Judgement.WAIT` while
  one is owed and will come without more from the client: a Sync, or a Query outside a
  pipeline); in an extended-protocol pipeline with no Sync since such a statement ran, it
  is refused. A statement the policy proves *inert* (``policy.inert``: ``BEGIN``, a
  ``SELECT`` of constants and parameters of built-in types, as psycopg's pipelines start)
  runs no user code and changes no setting, so it leaves the encoding as reported.
* **Exact only in a UTF8 database.** libpg_query parses UTF-8 with PostgreSQL's rules for
  a multibyte database: identifiers are folded in ASCII only and truncated at a character
  boundary within 63 bytes. A database in another encoding folds a single-byte letter with
  its locale's ``tolower`` and truncates in its own bytes, so a non-ASCII identifier may
  name another object there: non-ASCII statement text is refused unless the server
  encoding is UTF8 (values travel as Bind parameters, which are never parsed).

No I/O; the session feeds it (``net.session``).
"""

from __future__ import annotations

import enum
import re

from . import encodings
from .codec import escaped
from .messages import BIND, EXECUTE, FUNCTION_CALL, PARSE, QUERY, SYNC, Bind, Message, Parse, Query

__all__ = ["DISPUTED", "ClientText", "Judgement", "bound_encoding_refusal", "kind_of",
           "text_of"]

_ASCII = bytes(range(0x80))

# Requests that may run user code, and so change client_encoding.
_RUNS = frozenset((QUERY, BIND, EXECUTE, FUNCTION_CALL))
# Requests PostgreSQL answers with a ReadyForQuery (a Query or FunctionCall only outside
# an extended-protocol pipeline: after an error there, PostgreSQL discards them unread).
_READY = frozenset((SYNC, QUERY, FUNCTION_CALL))
_EXTENDED_KINDS = frozenset(b"PBDEC")

#: Characters Python's codec reads where PostgreSQL's conversion to UTF-8 reads another
#: (the JIS mapping variants; tests/e2e/test_session_encodings.py compares every character
#: with PostgreSQL's ``convert_from``). A text holding one is refused, being read two
#: ways (a character another sequence also decodes to is refused too: safe, and rare).
#: The single-byte encodings, EUC_CN and EUC_KR agree character for character.
DISPUTED: dict[str, str] = {
    "EUC_JP": "\u301c\u2016\u2212\u00a2\u00a3\u00a6\u00ac",
    "EUC_JIS_2004": "\uffe3\u2015\uffe5\u2985\u2986",
}
_DISPUTED_RE = {name: re.compile(f"[{chars}]") for name, chars in DISPUTED.items()}


class Judgement(enum.Enum):
    """Whether a statement text can be decoded now (see :meth:`ClientText.judge`)."""

    DECODE = "decode"
    WAIT = "wait"
    REFUSE = "refuse"


class ClientText:
    """The encoding of one session's statement text (see the module docstring).

    Attributes:
        client_encoding: the canonical name PostgreSQL last reported (None before).
        server_encoding: the canonical server encoding (reported once, at login).
        codec: the Python codec statement text and names are decoded in.
    """

    def __init__(self, server_encoding: str):
        self.server_encoding = encodings.normalize(server_encoding) or server_encoding
        self.client_encoding: str | None = None
        self.codec = "utf-8"
        self._ran = 0          # requests that may run something, forwarded
        self._risky = 0        # _ran at the last of them not known inert
        self._promised = 0     # _ran when the last request sure to get a ReadyForQuery went
        self._settled = 0      # _ran covered by the last ReadyForQuery received
        self._pipeline = False  # extended-protocol messages forwarded since the last Sync

    # --- what PostgreSQL says ------------------------------------------------------

    def report(self, value: str) -> str | None:
        """PostgreSQL reported ``client_encoding`` *value* (ParameterStatus).

        Returns:
            None when pgguard decodes text in it (:attr:`codec` now follows it), else why
            not (a sentence for ``pgguard: ``): the caller ends the session.
        """
        why = encodings.refusal(value)
        if why is not None:
            return why
        canonical = encodings.normalize(value)
        codec = encodings.python_codec(value, self.server_encoding)
        if canonical is None or codec is None:  # refusal() said it is known and decodable
            return f"client_encoding {value!r} cannot be decoded"
        self.client_encoding = canonical
        self.codec = codec
        return None

    def ready(self, mark: int) -> None:
        """A ReadyForQuery arrived, answering the request :meth:`sent` gave *mark* for;
        every ParameterStatus before it has been reported."""
        if mark > self._settled:
            self._settled = mark

    def unreadable(self, raw: bytes, text: str) -> str | None:
        """Why *text*, decoded from *raw* in :attr:`codec`, is not what PostgreSQL reads
        (a sentence for ``pgguard: ``), or None.

        Bytes invalid in the encoding (PostgreSQL rejects them, or reads them otherwise),
        a non-ASCII byte sequence read as an ASCII character (Python's EUC_JP reads
        ``8f a2 b7`` as ``~``, an operator) and :data:`DISPUTED` characters.
        """
        enc = self.client_encoding
        if escaped(text):
            return f"invalid byte sequence for encoding {enc}"
        if len(text.encode("ascii", "ignore")) != len(raw) - len(raw.translate(None, _ASCII)):
            return f"a non-ASCII character in encoding {enc} that pgguard reads as ASCII"
        disputed = _DISPUTED_RE.get(enc or "")
        if disputed is not None and (m := disputed.search(text)) is not None:
            return (f"character U+{ord(m.group()):04X} in encoding {enc} reads differently "
                    "in PostgreSQL")
        return None

    # --- what the client sends -----------------------------------------------------

    def sent(self, kind: int, inert: bool = False) -> int:
        """A frontend message of type *kind* is forwarded upstream.

        Args:
            inert: what it runs is proven to run no user code and to change no setting
                (``policy.inert``), so it cannot change client_encoding.

        Returns:
            The mark to give :meth:`ready` when PostgreSQL answers it with ReadyForQuery.
        """
        if kind in _RUNS:
            self._ran += 1
            if not inert:
                self._risky = self._ran
        if kind == SYNC:
            self._pipeline = False
            self._promised = self._ran
        elif kind in _READY:
            if not self._pipeline:
                self._promised = self._ran
        elif kind in _EXTENDED_KINDS:
            self._pipeline = True
        return self._ran

    @property
    def settled(self) -> bool:
        """Every request that may have changed the encoding has been answered up to a
        ReadyForQuery."""
        return self._settled >= self._risky

    def judge(self, ascii_only: bool) -> tuple[Judgement, str]:
        """Can a statement text be decoded now?

        Args:
            ascii_only: its bytes (statement name and text) are all below 0x80.

        Returns:
            DECODE, WAIT (until :attr:`settled`: a ReadyForQuery is owed) or REFUSE, with
            the reason for a refusal (a sentence for ``pgguard: ``).
        """
        if ascii_only:
            return Judgement.DECODE, ""
        if self.server_encoding != "UTF8":
            return Judgement.REFUSE, (
                f"statement text that is not ASCII needs a UTF8 database (server_encoding "
                f"is {self.server_encoding}): pass such values as parameters")
        if self.settled:
            return Judgement.DECODE, ""
        if self._promised >= self._risky:
            return Judgement.WAIT, ""
        return Judgement.REFUSE, (
            "statement text that is not ASCII, in a pipeline after a statement that may "
            "have changed client_encoding: send a Sync first")


def kind_of(msg: Message) -> int:
    """The type byte of a Query, Parse or (anything else) FunctionCall, for
    :meth:`ClientText.sent`."""
    return QUERY if isinstance(msg, Query) else PARSE if isinstance(msg, Parse) \
        else FUNCTION_CALL


def text_of(msg: Message) -> str:
    """The strings of a Query or Parse as ``codec.text_span`` spans their bytes (for
    :meth:`ClientText.unreadable`)."""
    if isinstance(msg, Parse):
        return f"{msg.name}\0{msg.sql}"
    return msg.sql if isinstance(msg, Query) else ""


def bound_encoding_refusal(msg: Bind, numbers: tuple[int, ...], codec: str) -> str | None:
    """Why a Bind whose parameters *numbers* (1-based) set client_encoding is refused
    (``encodings.refusal`` of the value, decoded in *codec*), else None.

    *numbers* are of every definition of the statement the Bind may run (which one is
    known only when PostgreSQL answers), so a value that names no encoding is let
    through: PostgreSQL rejects it if it does set client_encoding (and the session's
    backstop stands behind a name PostgreSQL would know and pgguard not). A NULL resets
    the setting to the login's value, which was checked; a missing one fails upstream.
    """
    for n in numbers:
        if not 0 < n <= len(msg.params) or msg.params[n - 1] is None:
            continue
        value = msg.params[n - 1].decode(codec, "surrogateescape")
        if encodings.normalize(value) is not None and (why := encodings.refusal(value)):
            return why
    return None
