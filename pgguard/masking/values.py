"""What a result value is, for masking and for the detectors: type classes and the texts a
value holds.

Detectors read every type that can carry text. Which types carry none is an allow-list
(:data:`NO_TEXT_TYPES`: numbers, booleans, date/time, uuid, network addresses, geometry,
ranges of those, and arrays of all of them); every other type, built in or not, is read.
A value is read as the texts it holds, not only as its bytes on the wire:

* ``bytea`` decoded from its hex (``\\x…``) or escape output, or its binary bytes;
* arrays and composites (and ranges, whose output is written the same way) parsed into
  their elements, each unescaped and read again (a ``bytea[]`` holds hex strings);
* in binary format, arrays and records parsed element by element (each element's type
  OID is on the wire), an element of a type that carries no text skipped.

The parsers are tolerant: what they cannot parse is read as it is, never skipped.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Protocol

# Type classes: how a value is masked (see rewrite) and how the detectors read it.
NONE, TEXT, JSON, JSONB, CONTAINER, OTHER, BYTEA = range(7)
TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705})
JSON_TYPE, JSONB_TYPE, BYTEA_TYPE = 114, 3802, 17
# Types whose values are arrays, records or documents of text: a detector hit in their text
# output is replaced in place (the value keeps its syntax), elsewhere it nulls the value.
CONTAINER_TYPES = frozenset({
    1009, 1015, 1014, 1003, 199, 3807, 2249, 2287, 142, 143, 3614, 3615,
})
# Built-in types (PostgreSQL 15 OIDs, checked against pg_type by tests/e2e/test_masking_values.py)
# whose values hold no text a detector could read. Everything else is read.
NO_TEXT_BASE_TYPES: dict[int, str] = {
    16: "bool", 18: "char", 20: "int8", 21: "int2", 22: "int2vector", 23: "int4", 26: "oid",
    27: "tid", 28: "xid", 29: "cid", 30: "oidvector", 600: "point", 601: "lseg",
    602: "path", 603: "box", 604: "polygon", 628: "line", 650: "cidr", 700: "float4",
    701: "float8", 718: "circle", 774: "macaddr8", 790: "money", 829: "macaddr",
    869: "inet", 1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz",
    1186: "interval", 1266: "timetz", 1560: "bit", 1562: "varbit", 1700: "numeric",
    2278: "void", 2950: "uuid", 2970: "txid_snapshot", 3220: "pg_lsn", 3904: "int4range",
    3906: "numrange", 3908: "tsrange", 3910: "tstzrange", 3912: "daterange",
    3926: "int8range", 4451: "int4multirange", 4532: "nummultirange", 4533: "tsmultirange",
    4534: "tstzmultirange", 4535: "datemultirange", 4536: "int8multirange",
    5038: "pg_snapshot", 5069: "xid8",
}
NO_TEXT_ARRAY_TYPES: dict[int, str] = {
    271: "_xid8", 629: "_line", 651: "_cidr", 719: "_circle", 775: "_macaddr8",
    791: "_money", 1000: "_bool", 1002: "_char", 1005: "_int2", 1006: "_int2vector",
    1007: "_int4", 1010: "_tid", 1011: "_xid", 1012: "_cid", 1013: "_oidvector",
    1016: "_int8", 1017: "_point", 1018: "_lseg", 1019: "_path", 1020: "_box",
    1021: "_float4", 1022: "_float8", 1027: "_polygon", 1028: "_oid", 1040: "_macaddr",
    1041: "_inet", 1115: "_timestamp", 1182: "_date", 1183: "_time", 1185: "_timestamptz",
    1187: "_interval", 1231: "_numeric", 1270: "_timetz", 1561: "_bit", 1563: "_varbit",
    2949: "_txid_snapshot", 2951: "_uuid", 3221: "_pg_lsn", 3905: "_int4range",
    3907: "_numrange", 3909: "_tsrange", 3911: "_tstzrange", 3913: "_daterange",
    3927: "_int8range", 5039: "_pg_snapshot", 6150: "_int4multirange",
    6151: "_nummultirange", 6152: "_tsmultirange", 6153: "_tstzmultirange",
    6155: "_datemultirange", 6157: "_int8multirange",
}
NO_TEXT_TYPES = frozenset(NO_TEXT_BASE_TYPES) | frozenset(NO_TEXT_ARRAY_TYPES)
# Nesting deeper than this is read as it is (arrays are at most 6-dimensional; composites
# of composites rarely go deeper).
MAX_DEPTH = 8

_I32 = struct.Struct("!i")
_II = struct.Struct("!ii")


class TypeInfo(Protocol):
    """The part of the catalog :func:`type_class` reads."""

    def type_info(self, oid: int) -> tuple[str, str, int, int] | None:
        """(category, typtype, element oid, base oid) of a user-defined type, or None."""


def type_class(type_oid: int, catalog: TypeInfo | None = None, _depth: int = 0) -> int:
    """Classify a type OID for masking and scanning.

    Built-in types are classified by OID; user types through the catalog (a domain as its
    base type, an array of a type that carries no text as such). A type that is neither
    known to carry no text nor known to be text is :data:`OTHER`: read, and dropped when
    anything is found.
    """
    if type_oid in TEXT_TYPES:
        return TEXT
    if type_oid == JSON_TYPE:
        return JSON
    if type_oid == JSONB_TYPE:
        return JSONB
    if type_oid == BYTEA_TYPE:
        return BYTEA
    if type_oid in CONTAINER_TYPES:
        return CONTAINER
    if type_oid in NO_TEXT_TYPES:
        return NONE
    info = catalog.type_info(type_oid) if catalog is not None else None
    if info is None or _depth >= MAX_DEPTH:
        return OTHER
    category, typtype, elem, base = info
    if typtype == "d" and base:
        return type_class(base, catalog, _depth + 1)
    if category == "A" and elem:
        return NONE if type_class(elem, catalog, _depth + 1) == NONE else CONTAINER
    if category == "S":
        return TEXT
    if typtype == "c" or category == "A":
        return CONTAINER
    return OTHER


# --- bytea -----------------------------------------------------------------------------

_HEX = re.compile(rb"\\x[0-9A-Fa-f\s]*")
_BYTEA_ESC = re.compile(rb"\\(\\|[0-3][0-7]{2})")
# Six bytes or more (no detector matches less) of hex bytea output within other text.
_EMBEDDED_HEX = re.compile(r"\\+x((?:[0-9A-Fa-f]{2}){6,})")


def bytea_from_text(v: bytes) -> bytes | None:
    """The bytes of a ``bytea`` text output (hex or escape format), or None if *v* is not
    valid ``bytea`` output."""
    if v[:2] == b"\\x":
        if _HEX.fullmatch(v) is None:
            return None
        try:
            return bytes.fromhex(v[2:].decode("ascii"))
        except ValueError:
            return None
    if b"\\" not in v:
        return v
    rest = _BYTEA_ESC.sub(b"", v)
    if b"\\" in rest:
        return None
    return _BYTEA_ESC.sub(lambda m: b"\\" if m.group(1) == b"\\" else
                          bytes([int(m.group(1), 8)]), v)


def text_of_bytes(b: bytes) -> str:
    """Raw bytes as the detectors read them: UTF-8 (ASCII in any client encoding pgguard
    accepts), undecodable bytes as lone surrogates, which no detector matches across."""
    return b.decode("utf-8", "surrogateescape")


# --- text output of arrays, composites and ranges --------------------------------------


def _split_array(body: str) -> list[str]:
    """Elements of an array's text output without its outer braces (``a,"b c",{d,e}``),
    unquoted and unescaped; nested arrays stay whole (with braces) for the next level."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(body)
    depth = 0
    quoted = False
    while i < n:
        ch = body[i]
        if ch == "\\" and i + 1 < n:
            cur.append(body[i + 1] if depth == 0 else body[i:i + 2])
            i += 2
            continue
        if quoted:
            if ch == '"':
                quoted = False
                if depth:
                    cur.append(ch)
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
            if depth:
                cur.append(ch)
        elif ch == "{":
            depth += 1
            cur.append(ch)
        elif ch == "}":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _split_record(body: str) -> list[str]:
    """Fields of a composite's (or range's) text output without its outer parentheses:
    ``""`` in quotes is a quote, a backslash escapes the next character."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(body)
    quoted = False
    while i < n:
        ch = body[i]
        if ch == "\\" and i + 1 < n:
            cur.append(body[i + 1])
            i += 2
            continue
        if quoted:
            if ch == '"':
                if body[i + 1:i + 2] == '"':
                    cur.append('"')
                    i += 2
                    continue
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def texts_of_text(s: str, depth: int = 0) -> list[str]:
    """Every text a value's text output holds: *s* itself, the elements of an array,
    composite or range, and each of those decoded as ``bytea`` output, recursively.

    Args:
        s: the value's text output (decoded).
        depth: nesting level (internal).

    Returns:
        The texts, *s* first.
    """
    out = [s]
    if depth >= MAX_DEPTH:
        return out
    if "\\" in s:
        enc = s.encode("utf-8", "surrogateescape")
        raw = bytea_from_text(enc)
        if raw is not None and raw != enc:
            # what the bytes hold, read the same way (bytea output of bytea output, …)
            out.extend(texts_of_text(text_of_bytes(raw), depth + 1))
        # hex bytea output inside other text, behind any number of escaping backslashes
        # (an XML element of it, a bytea[] cast to text and back to bytea, …)
        for m in _EMBEDDED_HEX.finditer(s):
            if m.start() or m.end() != len(s):
                out.extend(texts_of_text(text_of_bytes(bytes.fromhex(m.group(1))),
                                         depth + 1))
    if len(s) < 2:
        return out
    body = s
    if s[0] == "[" and "={" in s:            # array with bounds: [0:1]={a,b}
        body = s[s.index("={") + 1:]
    first, last = body[0], body[-1]
    if first == "{" and last == "}":
        parts = _split_array(body[1:-1])
    elif first in "([" and last in ")]":
        parts = _split_record(body[1:-1])
    else:
        return out
    for part in parts:
        if part and part != "NULL":
            out.extend(texts_of_text(part, depth + 1))
    return out


def texts_of_json(s: str) -> list[str]:
    """Every text a JSON document holds: *s*, and each of its strings (keys too) with what
    :func:`texts_of_text` finds in it (a JSON string may hold ``bytea`` output or an
    array's text)."""
    try:
        doc = json.loads(s)
    except (ValueError, RecursionError):
        return texts_of_text(s)
    out = [s]
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            out.extend(texts_of_text(x))
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out


# --- binary format of arrays and records -----------------------------------------------


def _binary_elements(v: bytes) -> list[tuple[int, bytes]] | None:
    """(type OID, bytes) of the non-NULL elements of a binary array or record, or None
    when *v* is neither (exactly, to its last byte)."""
    n = len(v)
    # array: ndim, has-null flag, element type, ndim * (size, lower bound), elements
    if n >= 12:
        ndim, flags, elem = struct.unpack_from("!iiI", v, 0)
        if 0 <= ndim <= 6 and flags in (0, 1):
            pos = 12
            count = 1 if ndim else 0
            ok = n >= pos + 8 * ndim
            for d in range(ndim if ok else 0):
                size, _ = _II.unpack_from(v, pos + 8 * d)
                if size < 0:
                    ok = False
                    break
                count *= size
            if ok:
                pos += 8 * ndim
                elems = _sized(v, pos, count, elem)
                if elems is not None:
                    return elems
    # record: field count, then per field its type OID, length and bytes
    if n >= 4:
        (nfields,) = _I32.unpack_from(v, 0)
        if 0 <= nfields <= 1664:      # MaxTupleAttributeNumber
            out: list[tuple[int, bytes]] = []
            pos = 4
            for _ in range(nfields):
                if pos + 8 > n:
                    return None
                oid, ln = struct.unpack_from("!Ii", v, pos)
                pos += 8
                if ln >= 0:
                    if pos + ln > n:
                        return None
                    out.append((oid, v[pos:pos + ln]))
                    pos += ln
            if pos == n:
                return out
    return None


def _sized(v: bytes, pos: int, count: int, oid: int) -> list[tuple[int, bytes]] | None:
    """*count* length-prefixed elements of type *oid* from *pos* to the end of *v*."""
    n = len(v)
    out = []
    for _ in range(count):
        if pos + 4 > n:
            return None
        (ln,) = _I32.unpack_from(v, pos)
        pos += 4
        if ln >= 0:
            if pos + ln > n:
                return None
            out.append((oid, v[pos:pos + ln]))
            pos += ln
    return out if pos == n else None


def texts_of_binary(v: bytes, cls: int, catalog: TypeInfo | None = None,
                    depth: int = 0) -> list[str]:
    """Every text a binary-format value of type class *cls* holds: its bytes as text,
    and for an array or record its elements (by their type OIDs), recursively.

    Args:
        v: the value's bytes.
        cls: its type class (:data:`NONE` values hold nothing).
        catalog: to classify user types of elements.
        depth: nesting level (internal).

    Returns:
        The texts (empty for :data:`NONE`).
    """
    if cls == NONE:
        return []
    text = text_of_bytes(v)
    out = texts_of_text(text, depth) if "\\" in text else [text]
    if cls in (CONTAINER, OTHER) and depth < MAX_DEPTH:
        elems = _binary_elements(v)
        for oid, b in elems or ():
            out.extend(texts_of_binary(b, type_class(oid, catalog), catalog, depth + 1))
    return out
