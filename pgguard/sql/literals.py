"""A literal-blind key for statement texts: the text with every constant replaced.

``literal_key(sql)`` scans a text with PostgreSQL's lexical rules (``scan.l``) and
replaces each numeric and string constant by a placeholder naming its lexical form, so
``... WHERE aid = 12345`` and ``... WHERE aid = 678`` share one key. Everything else
(identifiers, quoted identifiers, keywords, operators, comments, whitespace) is kept
verbatim, so two texts with one key lex into the same tokens but for the constants'
values. The key alone proves nothing about an analysis: a cached analysis is reused for
another text of its key only when the analysis never read a constant's value (see
:func:`pgguard.sql.parse.literals_covered` and :func:`pgguard.sql.nodes.literal_reads`).

The scanner gives up (returns None, and the caller uses the exact text) wherever it is not
sure it lexes as PostgreSQL does: an unterminated string, quoted identifier, comment or
dollar quote; a backslash while ``standard_conforming_strings`` is off; a string
continued on the next line (``'a'`` newline ``'b'``: one constant in two pieces); a number
followed by an identifier character or a dot ("trailing junk"); a NUL character.

Placeholders start with NUL, which no text that has a key contains, so no text collides
with another text's key. The forms are kept apart (``i`` an integer that fits int32 and
so parses as ``Integer``, ``f`` any other number, ``s``/``e``/``d``/``u``/``n``/``b``/``x``
for plain, E'', dollar-quoted, U&'', N'', B'' and X'' strings): the parse tree's node kinds
then depend on the key alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LiteralKey", "literal_key", "shift_offset"]

_NUMBER = re.compile(
    r"0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
    r"|(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?")
_INT32_MAX = 2**31 - 1
_SPACE = " \t\n\r\f\v"
# Characters that end an identifier: anything but letters, digits, _, $ and non-ASCII.
_IDENT_REST = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]*")
# A run of tokens the key keeps as they are and that cannot open a constant, a comment or
# a quoted name: whitespace, ASCII identifiers and keywords (not one followed by a quote or
# &, which may be the E/B/X/N/U& of a string prefix), operators and punctuation but - before
# -, / before *, . before a digit. The scanner's loop takes whatever stops it.
_PLAIN = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_$]*+(?!['&])|[ \t\n\r\f\v]+"
    r"|[^A-Za-z_0-9'\"$./\- \t\n\r\f\v\x80-\U0010ffff]+|-(?!-)|/(?!\*)|\.(?![0-9]))++")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_PARAM = re.compile(r"\$\d+")


@dataclass(frozen=True, slots=True)
class LiteralKey:
    """The key of a text and where its constants are.

    Attributes:
        key: the text with each constant replaced by a NUL-led placeholder.
        spans: (start, end) character offsets of each constant in the text, in order
            (prefixes such as ``E`` and ``U&`` included).
    """

    key: str
    spans: tuple[tuple[int, int], ...]


def _is_ident_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_$") or not c.isascii()


def _quoted_end(sql: str, i: int, quote: str, backslash: bool) -> int:
    """The offset after the quote closing the quoted text opened at *i*, or -1."""
    n = len(sql)
    j = i + 1
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return -1


def _continues(sql: str, j: int) -> bool:
    """Whether a string ending at *j* continues (whitespace with a newline, then a
    quote), which makes two pieces one constant."""
    n = len(sql)
    newline = False
    while j < n:
        c = sql[j]
        if c in _SPACE:
            newline = newline or c in "\n\r"
            j += 1
        elif sql.startswith("--", j):
            while j < n and sql[j] not in "\n\r":
                j += 1
        else:
            break
    return newline and j < n and sql[j] == "'"


_BAD_ESCAPE = re.compile(r"\\[0-7xuU]")
_BITS = re.compile(r"[01]*")
_HEX = re.compile(r"[0-9A-Fa-f]*")


def _valid(form: str, body: str) -> bool:
    """Whether a constant's body is one the lexer surely accepts whatever it holds, so its
    value cannot decide whether the text parses. Unicode (``\\u``), octal and hex escapes
    may make an invalid character or byte sequence; so may any backslash in a U&'' string
    (``U&'\\zzzz'``); B'' and X'' take only binary and hex digits."""
    if form == "e":
        return _BAD_ESCAPE.search(body) is None
    if form == "u":
        return "\\" not in body
    if form == "b":
        return _BITS.fullmatch(body) is not None
    if form == "x":
        return _HEX.fullmatch(body) is not None
    return True


def _block_comment_end(sql: str, i: int) -> int:
    """The offset after the (nested) ``/* */`` comment opened at *i*, or -1."""
    depth = 0
    n = len(sql)
    j = i
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return -1


def literal_key(sql: str, standard_strings: bool = True) -> LiteralKey | None:
    """The literal-blind key of *sql*, or None when the scanner is not sure.

    Args:
        sql: the query string.
        standard_strings: the session's ``standard_conforming_strings``; with it off, a
            text holding a backslash has no key.

    Returns:
        The key and the constants' spans, or None (use the exact text).
    """
    if "\x00" in sql or (not standard_strings and "\\" in sql):
        return None
    if not sql.isascii():
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the parse fails, whatever it is in
            return None
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    n = len(sql)
    i = 0
    kept = 0  # text from here up to i is copied verbatim
    plain = _PLAIN.match
    while True:
        m = plain(sql, i)
        if m is not None:
            i = m.end()
        if i >= n:
            break
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            k = sql.find("\r", i)
            ends = [e for e in (j, k) if e >= 0]
            i = min(ends) if ends else n
            continue
        if c == "/" and sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
            if i < 0:
                return None
            continue
        form = None
        start = i
        body = i  # offset of the opening quote
        backslash = False
        if c in "eE" and sql.startswith("'", i + 1):
            form, body, backslash = "e", i + 1, True
        elif c in "bBxXnN" and sql.startswith("'", i + 1):
            form, body = c.lower(), i + 1
        elif c in "uU" and sql.startswith("&'", i + 1):
            form, body = "u", i + 2
        elif c in "uU" and sql.startswith('&"', i + 1):
            end = _quoted_end(sql, i + 2, '"', False)
            if end < 0:
                return None
            i = end
            continue
        elif c == "'":
            form = "s"
        if form is not None:
            end = _quoted_end(sql, body, "'", backslash)
            if end < 0 or _continues(sql, end) or not _valid(form, sql[body + 1:end - 1]):
                return None
            out.append(sql[kept:start])
            out.append("\x00" + form)
            spans.append((start, end))
            i = kept = end
            continue
        if c == '"':
            end = _quoted_end(sql, i, '"', False)
            if end < 0:
                return None
            i = end
            continue
        if c == "$":
            m = _PARAM.match(sql, i)
            if m is not None:
                i = m.end()
                if i < n and _is_ident_char(sql[i]):
                    return None
                continue
            m = _DOLLAR_TAG.match(sql, i)
            if m is None:
                return None
            tag = m.group()
            end = sql.find(tag, m.end())
            if end < 0:
                return None
            end += len(tag)
            out.append(sql[kept:start])
            out.append("\x00d")
            spans.append((start, end))
            i = kept = end
            continue
        if c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            m = _NUMBER.match(sql, i)
            if m is None:  # pragma: no cover - the pattern matches any digit
                return None
            end = m.end()
            if end < n and (_is_ident_char(sql[end]) or sql[end] == "."):
                return None
            out.append(sql[kept:start])
            out.append("\x00" + _number_form(m.group()))
            spans.append((start, end))
            i = kept = end
            continue
        if _is_ident_char(c):
            i = _IDENT_REST.match(sql, i).end()  # type: ignore[union-attr]
            continue
        i += 1  # an operator or punctuation character
    out.append(sql[kept:])
    return LiteralKey("".join(out), tuple(spans))


def _number_form(text: str) -> str:
    """``i`` when libpg_query makes the number an ``Integer`` (it fits int32), else ``f``."""
    digits = text.replace("_", "")
    if len(digits) > 12:  # far beyond int32 (and int() refuses thousands of digits)
        return "f"
    if digits[:2].lower() in ("0x", "0o", "0b"):
        value = int(digits, 0)
    elif digits.isdigit():
        value = int(digits)
    else:
        return "f"
    return "i" if value <= _INT32_MAX else "f"


def shift_offset(offset: int, old: tuple[tuple[int, int], ...],
                 new: tuple[tuple[int, int], ...]) -> int:
    """Where *offset* of one text is in another text of the same key.

    Args:
        offset: a character offset of the first text outside its constants.
        old: the constants' spans in the first text.
        new: the constants' spans in the other text.

    Returns:
        The offset moved by the change in length of every constant ending at or before it.
    """
    shift = 0
    for (old_start, old_end), (new_start, new_end) in zip(old, new, strict=True):
        if old_end > offset:
            break
        shift += (new_end - new_start) - (old_end - old_start)
    return offset + shift
