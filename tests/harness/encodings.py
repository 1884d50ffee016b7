"""Client encodings whose second bytes overlap ASCII, and SQL that hides a DELETE behind a
swallowed backslash: shared by test_attack_encodings and test_session_encodings."""

from __future__ import annotations

from harness.attack import SIMPLE

#: PostgreSQL encoding -> Python codec, for the encodings with 0x5C as a second byte.
#: (JOHAB and UHC are refused too, but PostgreSQL's own JOHAB check rejects a 0x5C second
#: byte and UHC has none.)
CODECS = {"SJIS": "shift_jis", "BIG5": "big5", "GBK": "gbk", "GB18030": "gb18030"}


def swallower(pycodec: str) -> str:
    """Text whose bytes in *pycodec* are, read as UTF-8, one valid character followed by a
    backslash, while *pycodec* pairs that character's last byte with the backslash."""
    for cp in range(0x3000, 0xA000):
        raw = chr(cp).encode("utf-8") + b"\\"
        try:
            text = raw.decode(pycodec)
        except UnicodeDecodeError:
            continue
        if "\\" not in text and text.encode(pycodec) == raw:
            return text
    raise AssertionError(pycodec)


SWALLOWERS = {enc: swallower(py) for enc, py in CODECS.items()}
#: Client encodings whose second bytes overlap ASCII: refused.
UNSAFE = (*SWALLOWERS, "JOHAB", "UHC")



def _hidden_delete(ch: str, mode: str, quote: str = "E'") -> str:
    """SQL PostgreSQL reads (in the encoding of *ch*) as a read followed by a DELETE, and
    the gateway (reading UTF-8, where the backslash escapes the quote) as one read."""
    if mode == SIMPLE:
        return f"SELECT {quote}{ch}'; DELETE FROM victims; --'"
    # One statement (the extended protocol takes no more): the DELETE in a CTE.
    return (f"WITH q(a) AS (SELECT {quote}{ch}'), d AS (DELETE FROM victims RETURNING 1) "
            f"SELECT count(*) FROM d --') SELECT a FROM q")
