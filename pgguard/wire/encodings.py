"""PostgreSQL's encoding names, and which of them pgguard can read statements in.

PostgreSQL looks an encoding name up as ``pg_char_to_encoding`` does (src/common/encnames.c):
``clean_encoding_name`` keeps only the letters and digits of the name, lower-cased, and the
result is looked up in an alias table (``'Shift_JIS'`` -> ``shiftjis`` -> SJIS,
``'ISO-8859-15'`` -> ``iso885915`` -> LATIN9, ``'unicode'`` -> UTF8). :func:`normalize`
does the same and returns the canonical name ``SHOW client_encoding`` reports.

pgguard parses statement text as characters, so it must decode the bytes as PostgreSQL
does. That is sound only for an encoding in which every byte below 0x80 is the ASCII
character it looks like, also inside a multibyte character ("ASCII-safe"): every encoding
PostgreSQL can use on the server is. The client-only encodings SJIS, SHIFT_JIS_2004, BIG5,
GBK, UHC, GB18030 and JOHAB are not (the second byte of a character can be ``\\`` or
``'``), so a statement can read differently to pgguard and to PostgreSQL; and MULE_INTERNAL
and EUC_TW have no Python codec that decodes them as PostgreSQL does. pgguard refuses all
of these (:func:`refusal`), at startup and on ``SET client_encoding``.

Pure and stdlib only: the session (startup, ParameterStatus) and the policy (``SET``,
``set_config``, ``COPY … ENCODING``) read the same table.
"""

from __future__ import annotations

import codecs

__all__ = [
    "ALIASES", "CANONICAL", "CLIENT_ONLY", "NOT_ASCII_SAFE", "PYTHON_CODECS", "clean",
    "is_accepted", "is_ascii_safe", "normalize", "python_codec", "refusal",
]

#: The canonical names, in the order of PostgreSQL's ``pg_enc`` (``pg_encoding_to_char(i)``
#: for i = 0 … 41). Server encodings are 0 … 34 (KOI8U); the rest are client-only.
CANONICAL: tuple[str, ...] = (
    "SQL_ASCII", "EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "UTF8",
    "MULE_INTERNAL", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7",
    "LATIN8", "LATIN9", "LATIN10", "WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R",
    "WIN1251", "WIN1252", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8", "WIN1250",
    "WIN1253", "WIN1254", "WIN1255", "WIN1257", "KOI8U",
    # client-only
    "SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004",
)
CLIENT_ONLY: frozenset[str] = frozenset(CANONICAL[CANONICAL.index("SJIS"):])

#: ``pg_encname_tbl``: cleaned alias -> canonical name (the aliases only; the cleaned
#: canonical names are added below, as they are in PostgreSQL's table).
ALIASES: dict[str, str] = {
    "abc": "WIN1258", "alt": "WIN866", "big5": "BIG5", "euccn": "EUC_CN",
    "eucjis2004": "EUC_JIS_2004", "eucjp": "EUC_JP", "euckr": "EUC_KR", "euctw": "EUC_TW",
    "gb18030": "GB18030", "gbk": "GBK", "iso88591": "LATIN1", "iso885910": "LATIN6",
    "iso885913": "LATIN7", "iso885914": "LATIN8", "iso885915": "LATIN9",
    "iso885916": "LATIN10", "iso88592": "LATIN2", "iso88593": "LATIN3", "iso88594": "LATIN4",
    "iso88595": "ISO_8859_5", "iso88596": "ISO_8859_6", "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8", "iso88599": "LATIN5", "johab": "JOHAB", "koi8": "KOI8R",
    "koi8r": "KOI8R", "koi8u": "KOI8U", "latin1": "LATIN1", "latin10": "LATIN10",
    "latin2": "LATIN2", "latin3": "LATIN3", "latin4": "LATIN4", "latin5": "LATIN5",
    "latin6": "LATIN6", "latin7": "LATIN7", "latin8": "LATIN8", "latin9": "LATIN9",
    "mskanji": "SJIS", "muleinternal": "MULE_INTERNAL", "shiftjis": "SJIS",
    "shiftjis2004": "SHIFT_JIS_2004", "sjis": "SJIS", "sqlascii": "SQL_ASCII",
    "tcvn": "WIN1258", "tcvn5712": "WIN1258", "uhc": "UHC", "unicode": "UTF8", "utf8": "UTF8",
    "vscii": "WIN1258", "win": "WIN1251", "win1250": "WIN1250", "win1251": "WIN1251",
    "win1252": "WIN1252", "win1253": "WIN1253", "win1254": "WIN1254", "win1255": "WIN1255",
    "win1256": "WIN1256", "win1257": "WIN1257", "win1258": "WIN1258", "win866": "WIN866",
    "win874": "WIN874", "win932": "SJIS", "win936": "GBK", "win949": "UHC", "win950": "BIG5",
    "windows1250": "WIN1250", "windows1251": "WIN1251", "windows1252": "WIN1252",
    "windows1253": "WIN1253", "windows1254": "WIN1254", "windows1255": "WIN1255",
    "windows1256": "WIN1256", "windows1257": "WIN1257", "windows1258": "WIN1258",
    "windows866": "WIN866", "windows874": "WIN874", "windows932": "SJIS",
    "windows936": "GBK", "windows949": "UHC", "windows950": "BIG5",
}

#: Encodings in which a byte below 0x80 can be part of a multibyte character.
NOT_ASCII_SAFE: frozenset[str] = frozenset(CLIENT_ONLY)

#: Canonical name -> the Python codec that decodes it as PostgreSQL does; absent where
#: Python has none (EUC_TW: CNS 11643; MULE_INTERNAL). SQL_ASCII is special: see
#: :func:`python_codec`.
PYTHON_CODECS: dict[str, str] = {
    "EUC_JP": "euc_jp", "EUC_CN": "gb2312", "EUC_KR": "euc_kr",
    "EUC_JIS_2004": "euc_jis_2004", "UTF8": "utf-8",
    "LATIN1": "latin-1", "LATIN2": "iso8859_2", "LATIN3": "iso8859_3",
    "LATIN4": "iso8859_4", "LATIN5": "iso8859_9", "LATIN6": "iso8859_10",
    "LATIN7": "iso8859_13", "LATIN8": "iso8859_14", "LATIN9": "iso8859_15",
    "LATIN10": "iso8859_16", "WIN1256": "cp1256", "WIN1258": "cp1258", "WIN866": "cp866",
    "WIN874": "cp874", "KOI8R": "koi8_r", "WIN1251": "cp1251", "WIN1252": "cp1252",
    "ISO_8859_5": "iso8859_5", "ISO_8859_6": "iso8859_6", "ISO_8859_7": "iso8859_7",
    "ISO_8859_8": "iso8859_8", "WIN1250": "cp1250", "WIN1253": "cp1253",
    "WIN1254": "cp1254", "WIN1255": "cp1255", "WIN1257": "cp1257", "KOI8U": "koi8_u",
    # Not ASCII-safe, refused; listed so error texts can still be read.
    "SJIS": "cp932", "BIG5": "cp950", "GBK": "gbk", "UHC": "cp949", "GB18030": "gb18030",
    "JOHAB": "johab", "SHIFT_JIS_2004": "shift_jis_2004",
}

def clean(name: str) -> str:
    """PostgreSQL's ``clean_encoding_name``: the ASCII letters and digits of *name*,
    lower-cased (``'ISO-8859-15'`` -> ``'iso885915'``).

    Other characters are dropped. PostgreSQL keeps a non-ASCII byte its locale calls
    alphanumeric (no table entry then matches, so the name is rejected) and drops the
    others: dropping them all finds the encoding PostgreSQL finds whenever it finds one.
    """
    return "".join(c for c in name if c.isascii() and c.isalnum()).lower()


def _build() -> dict[str, str]:
    table = dict(ALIASES)
    for canonical in CANONICAL:
        table.setdefault(clean(canonical), canonical)
    return table


_TABLE: dict[str, str] = _build()


def normalize(name: str) -> str | None:
    """The canonical name PostgreSQL gives the encoding *name*, or None when it has none.

    ``normalize('Shift_JIS') == 'SJIS'``, ``normalize('unicode') == 'UTF8'``,
    ``normalize('latin-9') == 'LATIN9'``; ``normalize('utf9') is None``. PostgreSQL keeps
    the exact spelling ``UNICODE`` in ``SHOW client_encoding``: it normalizes to UTF8.
    """
    if not isinstance(name, str):
        return None
    return _TABLE.get(clean(name))


def is_ascii_safe(name: str) -> bool:
    """True when *name* is an encoding in which no byte below 0x80 is part of a multibyte
    character (every server encoding). False for SJIS, BIG5, GBK, UHC, GB18030, JOHAB,
    SHIFT_JIS_2004 and for names PostgreSQL does not know."""
    canonical = normalize(name)
    return canonical is not None and canonical not in NOT_ASCII_SAFE


def python_codec(name: str, server_encoding: str | None = None) -> str | None:
    """The Python codec that decodes text of encoding *name* as PostgreSQL does, or None.

    SQL_ASCII means "no conversion": the bytes are those of the server's encoding, so
    give *server_encoding* (its codec is returned; ``latin-1``, which keeps every byte,
    when it is unknown or SQL_ASCII too). None for names PostgreSQL does not know and for
    EUC_TW and MULE_INTERNAL, which Python cannot decode.
    """
    canonical = normalize(name)
    if canonical == "SQL_ASCII":
        inner = python_codec(server_encoding) if server_encoding is not None else None
        if inner is None or normalize(server_encoding or "") == "SQL_ASCII":
            return "latin-1"
        return inner
    if canonical is None:
        return None
    codec = PYTHON_CODECS.get(canonical)
    if codec is None:
        return None
    codecs.lookup(codec)  # every codec named here exists in this Python
    return codec


def is_accepted(name: str) -> bool:
    """True when pgguard can read statements sent in encoding *name*: PostgreSQL knows
    it, it is ASCII-safe and Python decodes it exactly (:func:`refusal` is None)."""
    return refusal(name) is None


def refusal(name: str) -> str | None:
    """Why pgguard refuses the client encoding *name* (a sentence naming it), or None.

    The sentence is meant to follow ``pgguard: `` in an ErrorResponse.
    """
    canonical = normalize(name)
    shown = name if len(name) <= 64 else name[:64] + "..."
    if canonical is None:
        return f"client_encoding {shown!r} is not an encoding pgguard knows"
    if canonical in NOT_ASCII_SAFE:
        return (f"client_encoding {canonical} is refused: it is not ASCII-safe (a multibyte "
                "character can hide a quote or a backslash), use UTF8")
    if python_codec(canonical) is None:
        return f"client_encoding {canonical} is refused: pgguard cannot decode it, use UTF8"
    return None
