"""One parse per statement text: libpg_query's JSON tree, parsed once and cached.

``parse(sql)`` is the one place pgguard calls pglast's parser. It uses
``pglast.parser.parse_sql_json`` (the tree is built in C and decoded by orjson or
:mod:`json`, about twenty times cheaper than pglast's Python AST) and keeps the JSON text in
one bounded LRU keyed by the exact text, so the policy classification and the masking
planner of the same statement (and of the same view definition in every session) share
one parser call. Texts longer than :data:`MAX_CACHED_TEXT` are parsed every time and never
cached: they are rarely repeated and would evict everything else.

The cache holds JSON text, not decoded trees: a string is one object the garbage collector
never walks, where thousands of cached trees of dicts made every full collection (and so
every cold classification) markedly slower, and each decode hands out a tree no other
caller shares. The last few decoded parses are kept as well, because classification and
masking ask for the same text one right after the other.

libpg_query always lexes with ``standard_conforming_strings`` on. A parse of a text that
holds a backslash is only right for a session with the setting on; the caller decides
(``policy.classify`` refuses such a text before asking for its parse when the session has
it off), so the cache key is the text alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pglast import parser as _pg

from .literals import LiteralKey
from .lru import BoundedLRU
from .nodes import LiteralValue

try:  # optional: about 3 µs faster per cold parse than the stdlib decoder
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _loads

__all__ = ["MAX_CACHED_TEXT", "Parsed", "Statement", "cache_clear", "cache_info",
           "literals_covered", "parse"]

#: Texts longer than this are parsed but never cached.
MAX_CACHED_TEXT = 64 * 1024
#: Bounds of the cache of JSON texts; the cost of an entry is its JSON plus its statement
#: text, in characters (a 230-character SELECT has 2.6 kB of JSON).
CACHE_MAX_ENTRIES = 4096
CACHE_MAX_COST = 32 * 1024 * 1024
#: The largest JSON (after IN lists are cut) of a text over MAX_CACHED_TEXT whose decoded
#: parse is kept for the next caller.
KEEP_BIG_JSON = 4 * 1024 * 1024
#: How many decoded parses are kept for the next caller asking for the same text.
RECENT_ENTRIES = 8


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a parsed text.

    Attributes:
        node: the statement's node, ``{"SelectStmt": {...}}`` (``{}`` if libpg_query gave
            none); shared, do not change it.
        text: the statement's own text, stripped (a slice of the query string).
        start: the character offset of *text* in the query string.
    """

    node: dict[str, Any]
    text: str
    start: int = 0


@dataclass(frozen=True, slots=True)
class Parsed:
    """The parse of one query string: its statements, or why it cannot be parsed.

    Attributes:
        statements: the statements in order (empty for an error, or for a text of only
            comments and semicolons).
        error: None when the text parsed, else the parser's message (or the exception's
            type name when it gave no message).
        const_locations: the byte offsets of the text's ``A_Const`` nodes, whose values
            are wrapped in :class:`pgguard.sql.nodes.LiteralValue` (empty for a text over
            :data:`MAX_CACHED_TEXT`: not tracked).
    """

    statements: tuple[Statement, ...]
    error: str | None = None
    const_locations: frozenset[int] = frozenset()


def _split(sql: str, tree: dict[str, Any]) -> tuple[Statement, ...]:
    stmts = tree.get("stmts") or ()
    ascii_text = sql.isascii()
    raw = None if ascii_text else sql.encode("utf-8")
    out = []
    for raw_stmt in stmts:
        start = raw_stmt.get("stmt_location", 0)
        length = raw_stmt.get("stmt_len", 0)
        # Offsets are in bytes of the UTF-8 text; a length of 0 means "to the end".
        if raw is None:
            text = sql[start:start + length] if length else sql[start:]
            cstart = start
        else:
            piece = raw[start:start + length] if length else raw[start:]
            text = piece.decode("utf-8", "replace")
            cstart = len(raw[:start].decode("utf-8", "replace"))
        stripped = text.strip()
        cstart += len(text) - len(text.lstrip())
        out.append(Statement(raw_stmt.get("stmt") or {}, stripped, cstart))
    return tuple(out)


def _track_constants(tree: Any) -> frozenset[int]:
    """Wrap every ``A_Const`` value in a LiteralValue (in place); their locations."""
    locations: set[int] = set()
    stack = [tree]
    pop = stack.pop
    push = stack.append
    while stack:
        node = pop()
        if type(node) is list:
            stack.extend(node)
            continue
        for key, value in node.items():
            vt = type(value)
            if vt is dict:
                if key == "A_Const":
                    for k, v in value.items():
                        if type(v) is dict:
                            value[k] = LiteralValue(v)
                    locations.add(value.get("location", -1))
                else:
                    push(value)
            elif vt is list:
                push(value)
    return frozenset(locations)


def literals_covered(sql: str, parsed: Parsed, lk: LiteralKey) -> bool:
    """Whether every constant the scanner found in *sql* is an ``A_Const`` of *parsed*
    (at the constant's byte offset, or at the minus sign libpg_query folded into it), so
    its value is reached only through a LiteralValue. A constant the grammar consumed
    (``FETCH 5``, ``float(30)``, a COPY file name, a function body, an option value that
    became a ``String``) is not, and makes every analysis of the text depend on it.
    """
    if parsed.error is not None:
        return False
    locs = parsed.const_locations
    ascii_text = sql.isascii()
    byte = 0
    prev = 0
    for start, _ in lk.spans:
        if ascii_text:
            byte = start
        else:
            byte += len(sql[prev:start].encode("utf-8", "surrogatepass"))
            prev = start
        if byte in locs:
            continue
        j = start - 1
        while j >= 0 and sql[j] in " \t\n\r\f\v":
            j -= 1
        if j < 0 or sql[j] != "-" or (byte - (start - j)) not in locs:
            return False
    return True


def _parse_json(sql: str) -> tuple[str | None, str | None]:
    """(JSON text, None) of *sql*, or (None, the parser's message)."""
    _STATS.parses += 1
    try:
        return _pg.parse_sql_json(sql), None
    except Exception as exc:  # noqa: BLE001 - ParseError, encoding errors alike
        return None, _message(exc)


def _message(exc: Exception) -> str:
    message = getattr(exc, "args", None) and exc.args[0]
    return message if isinstance(message, str) else type(exc).__name__


# One constant of an IN list as libpg_query writes it: {"A_Const":{"ival":{"ival":5},
# "location":50}} (a zero or empty value is an empty object, NULL is "isnull":true).
_CONST = (r'\{"A_Const":\{(?:"(?:ival|fval|boolval|bsval|sval)":\{(?:"\w+":(?:-?\d+|true|false'
          r'|"(?:[^"\\]|\\.)*+"))?\},)?(?:"isnull":true,)?"location":-?\d+\}\}')
# An IN list of more than 16 constants (the only A_Expr whose rexpr is a List that long;
# BETWEEN's has two): all but the first are dropped from the JSON.
_LONG_IN_LIST = re.compile(r'("rexpr":\{"List":\{"items":\[' + _CONST + r')(?:,' + _CONST + r'){16,}+(?=\])')


def _shrink(js: str) -> str:
    """The JSON of a huge text with each long IN list of constants cut to its first.

    ``x IN (1, 2, …)`` is classified and planned alike whatever the number of constants
    (neither analysis reads a constant of an IN list for more than its presence), and
    decoding a million of them is most of the cost of a 7 MB statement.
    """
    return _LONG_IN_LIST.sub(r"\1", js)


def _decode(sql: str, js: str | None, error: str | None, track: bool = True) -> Parsed:
    if js is None:
        return Parsed((), error)
    try:
        tree = _loads(js)
    except Exception as exc:  # noqa: BLE001 - a tree nested too deep to decode
        return Parsed((), _message(exc))
    locations = _track_constants(tree) if track else frozenset()
    return Parsed(_split(sql, tree), None, locations)


class _Stats:
    __slots__ = ("parses",)

    def __init__(self) -> None:
        self.parses = 0


_STATS = _Stats()


_CACHE = BoundedLRU(CACHE_MAX_ENTRIES, CACHE_MAX_COST)
# The last decoded parses (a plain dict: a lost race only costs a decode).
_RECENT: dict[str, Parsed] = {}
# The last parse of a text over MAX_CACHED_TEXT, for the analysis after the first.
_LAST_BIG: tuple[str, Parsed] | None = None


def parse(sql: str) -> Parsed:
    """Parse a query string (cached by its exact text).

    Never raises: a text libpg_query rejects (or that cannot be encoded, or nests too
    deep to decode) gives a :class:`Parsed` with ``error`` set.

    Args:
        sql: the query string, as the client sent it (decoded from the client encoding).

    Returns:
        The parse (the last few are shared with the next caller: do not change its nodes).
    """
    if len(sql) > MAX_CACHED_TEXT:
        # Parsed once for classification and masking, and not kept beyond the next one.
        # The kept parse is dropped when taken, and one whose JSON is still large after
        # the IN lists were cut (a huge VALUES list) is not kept at all.
        global _LAST_BIG
        last = _LAST_BIG
        if last is not None and last[0] == sql:
            _LAST_BIG = None
            return last[1]
        js, error = _parse_json(sql)
        if js is not None:
            js = _shrink(js)
        parsed = _decode(sql, js, error, track=False)
        _LAST_BIG = (sql, parsed) if js is None or len(js) <= KEEP_BIG_JSON else None
        return parsed
    parsed = _RECENT.get(sql)
    if parsed is not None:
        return parsed
    entry = _CACHE.get(sql)
    if entry is None:
        entry = _parse_json(sql)
        js, error = entry
        _CACHE.put(sql, entry, len(sql) + len(js or error or ""))
    parsed = _decode(sql, *entry)
    if len(_RECENT) >= RECENT_ENTRIES:
        _RECENT.clear()
    _RECENT[sql] = parsed
    return parsed


def cache_clear() -> None:
    """Empty the parse cache and zero its counters (tests and benchmarks)."""
    global _LAST_BIG
    _CACHE.clear()
    _RECENT.clear()
    _LAST_BIG = None


def cache_info() -> dict[str, int]:
    """Entries, cost (JSON plus text characters), hits and misses of the parse cache, and
    ``parses``: how many times the parser ran since the process started (cached or not),
    for tests that count parser calls."""
    info = _CACHE.info()
    info["parses"] = _STATS.parses
    return info
