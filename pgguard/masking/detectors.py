"""Content detectors: find PII and secrets in free text and replace them by markers.

Each detector is a precompiled regular expression plus a validation (Luhn for cards,
mod-97 for IBANs, range checks for SSNs, digit counts for phones). A per-detector
pre-filter (length, digit count, ``@``, secret prefixes) runs only the detectors a value
could satisfy and rejects most values outright, for ASCII values on the raw bytes without
decoding; it is provably conservative (see the minimums below and the property tests).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .._speedups import ByteGate
from ..config import DETECTORS

Span = tuple[int, int, str]


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ISO 13616 lengths of the countries that issue IBANs (the common ones); others are
# accepted at any length from 15 to 34 if the checksum holds.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22,
    "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_ok(iban: str) -> bool:
    """True when *iban* (no spaces, upper case) passes the ISO 7064 mod-97 check."""
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    moved = iban[4:] + iban[:4]
    try:
        number = "".join(str(int(ch, 36)) for ch in moved)
    except ValueError:
        return False
    return int(number) % 97 == 1


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
    r"[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])")
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_CARD = re.compile(r"(?<![\w-])[2-6]\d(?:[ -]?\d){11,17}(?![\w-])")
_PHONE = re.compile(
    r"(?<![\w+-])(?:"
    r"\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}[ .-]?\d{2,6}"     # E.164, spaced or not
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"                             # (415) 555-2671
    r"|\d{3}[.-]\d{3}[.-]\d{4}"                                    # 415-555-2671
    r"|\d{3} \d{3} \d{4}"                                          # 415 555 2671
    r"|0[1-9](?:[ .]\d{2}){4}"                                     # 06 12 34 56 78
    r"|0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,4}"                           # 030 1234567, 020 7946 0958
    r")(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}")
_SECRET = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    r"|(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}(?![A-Za-z0-9])"
    r"|(?i:aws_secret_access_key)\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}"
    r"|eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?<![A-Za-z0-9])sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{35}")

# The secret pattern has many alternatives: run it only where a literal prefix occurs.
# Every alternative of _SECRET begins with (or, for the case-insensitive AWS key name,
# is) one of these literals, so a value without a match cannot hold a secret.
_SECRET_HINT = re.compile(r"-----BEGIN|A(?:KI|SI|BI|CC|GP|ID|RO|NP)A|(?i:aws_secret)|eyJ|"
                          r"gh[pousr]_|github_pat_|xox|sk-|[sr]k_|AIza")
# Substrings one of which every hint match contains ("_" for the AWS key name in any case
# folding and gh*_, github_pat_, sk_/rk_; "A" for AKIA… and AIza; "k-" for sk-): ``in``
# tests are far cheaper than the hint regex, which then runs on the few values left.
_HINT_BITS = ("_", "A", "-----BEGIN", "eyJ", "xox", "k-")

# Minimum lengths (in characters) and digit counts each detector needs; the pre-filter
# (Detectors._wanted) skips a detector whose minimum a value does not reach. "Digit" means
# what ``\d`` matches in a str pattern (any Unicode decimal digit), so the counts are exact
# for ASCII text and counted with _DIGIT otherwise. Derivations:
#   secret: shortest alternative is xox?- plus 10 characters = 15 characters;
#   iban:   2 letters, 2 digits and at least 11 more characters = 15, two digits;
#   card:   [2-6] and 12 more digits = 13 digits; ssn: 3 + 2 + 4 = 9 digits;
#   phone:  the match must hold 7 to 15 digits (checked after matching) = 7 digits;
#   email:  needs an "@".
SECRET_MIN_LEN = 15
IBAN_MIN_LEN, IBAN_MIN_DIGITS = 15, 2
CARD_MIN_DIGITS, SSN_MIN_DIGITS, PHONE_MIN_DIGITS = 13, 9, 7
# card, ssn and phone need 7 digits (at least) with at most 3 of ``( ) . + / -`` and space
# between consecutive ones: phone's widest gap is ``)-(`` between E.164 groups.
_DIGIT_RUN = re.compile(r"\d(?:[ ().+/-]{0,3}\d){6}")
_DIGIT_RUN_B = re.compile(rb"[0-9](?:[ ().+/-]{0,3}[0-9]){6}")
# Below this length neither a secret nor an IBAN fits.
_LONG_MIN = min(SECRET_MIN_LEN, IBAN_MIN_LEN)
# Below this length only an e-mail address fits (a@b.cc): 6 characters.
_MIN_LEN = 6
_DIGIT = re.compile(r"\d")
# An IBAN starts with two capital letters and two digits: a value without them has none.
_IBAN_START = re.compile(r"[A-Z]{2}\d{2}")
_ASCII_DIGITS = b"0123456789"
# Values are cached up to this length; longer ones are rarely repeated and costly to hold.
CACHE_SIZE = 4096
CACHE_MAX_LEN = 512


def _find_email(s: str) -> Iterable[Span]:
    if "@" not in s:
        return ()
    return [(m.start(), m.end(), "email") for m in _EMAIL.finditer(s)]


def _find_ssn(s: str) -> Iterable[Span]:
    out = []
    for m in _SSN.finditer(s):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        if area in ("000", "666") or group == "00" or serial == "0000":
            continue
        out.append((m.start(), m.end(), "ssn"))
    return out


def _find_card(s: str) -> Iterable[Span]:
    out = []
    for m in _CARD.finditer(s):
        text = m.group()
        digits = text.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append((m.start(), m.end(), "card"))
    return out


def _find_phone(s: str) -> Iterable[Span]:
    out = []
    for m in _PHONE.finditer(s):
        n = sum(ch.isdigit() for ch in m.group())
        if 7 <= n <= 15:
            out.append((m.start(), m.end(), "phone"))
    return out


def _find_iban(s: str) -> Iterable[Span]:
    out = []
    for m in _IBAN.finditer(s):
        text = m.group()
        # Positions of the compact characters, so a valid prefix can be cut out of a
        # greedy match that ran into following words.
        pos = [i for i, ch in enumerate(text) if ch != " "]
        compact = text.replace(" ", "")
        country = compact[:2]
        lengths = ([IBAN_LENGTHS[country]] if country in IBAN_LENGTHS
                   else range(min(34, len(compact)), 14, -1))
        for n in lengths:
            if n <= len(compact) and iban_ok(compact[:n]):
                out.append((m.start(), m.start() + pos[n - 1] + 1, "iban"))
                break
    return out


def _find_secret(s: str) -> Iterable[Span]:
    if not _SECRET_HINT.search(s):
        return ()
    return [(m.start(), m.end(), "secret") for m in _SECRET.finditer(s)]


# Order decides which marker wins when spans overlap: secrets first (a JWT may hold
# digits), then the most specific shapes.
FINDERS: dict[str, Callable[[str], Iterable[Span]]] = {
    "secret": _find_secret,
    "email": _find_email,
    "iban": _find_iban,
    "card": _find_card,
    "ssn": _find_ssn,
    "phone": _find_phone,
}


def _has_hint(s: str) -> bool:
    for bit in _HINT_BITS:
        if bit in s:
            return _SECRET_HINT.search(s) is not None
    return False


class Detectors:
    """A configured set of detectors.

    A pre-filter picks, per value, only the detectors whose necessary conditions (an
    ``@``, enough digits, enough length, a secret prefix) the value meets; it is
    conservative: a detector it skips could not have matched. Scan results of short
    values are kept in a bounded LRU cache, since result values repeat a lot.

    Args:
        names: detector names from ``masking.detectors`` (any of
            ``email ssn card phone iban secret``).
    """

    def __init__(self, names: Iterable[str] = DETECTORS):
        names = set(names)
        unknown = names - set(FINDERS)
        if unknown:
            raise ValueError(f"unknown detectors: {', '.join(sorted(unknown))}")
        self.names = tuple(n for n in FINDERS if n in names)
        self._finders = [FINDERS[n] for n in self.names]
        self._on = frozenset(self.names)
        # Digits needed by the detectors that have no length gate (iban has one).
        self._digit_min = min([m for n, m in (("phone", PHONE_MIN_DIGITS),
                                              ("ssn", SSN_MIN_DIGITS),
                                              ("card", CARD_MIN_DIGITS))
                               if n in self._on] or [1 << 30])
        self._long = bool(self._on & {"secret", "iban"})
        self._email = "email" in self._on
        # The byte-level pre-filter: True when an encoded value certainly holds nothing
        # a detector finds (ASCII values only; others are decoded and scanned). It lives in
        # pgguard._speedups, compiled where the build had Cython, with a pure twin.
        self.skips_bytes = ByteGate(self.names)
        self._cache: OrderedDict[str, str] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._finders)

    def _wanted(self, s: str) -> list[Callable[[str], Iterable[Span]]]:
        """The finders that could match *s*, in priority order (the pre-filter)."""
        n = len(s)
        if n < _MIN_LEN:
            return []
        on = self._on
        at = "@" in s and "email" in on
        long = n >= _LONG_MIN and self._long
        if s.isascii():
            b = s.encode("ascii")
            digits = n - len(b.translate(None, _ASCII_DIGITS))
        elif _DIGIT.search(s) is None:
            digits = 0
        else:
            digits = len(_DIGIT.findall(s))
        if digits >= self._digit_min and _DIGIT_RUN.search(s) is None:
            digits = min(digits, PHONE_MIN_DIGITS - 1)   # no card, ssn or phone can fit
        if not at and not long and digits < self._digit_min:
            return []
        out = []
        if long and n >= SECRET_MIN_LEN and "secret" in on and _has_hint(s):
            out.append(_find_secret)
        if at:
            out.append(_find_email)
        if long and n >= IBAN_MIN_LEN and digits >= IBAN_MIN_DIGITS and "iban" in on and \
                _IBAN_START.search(s) is not None:
            out.append(_find_iban)
        if digits >= CARD_MIN_DIGITS and "card" in on:
            out.append(_find_card)
        if digits >= SSN_MIN_DIGITS and "ssn" in on:
            out.append(_find_ssn)
        if digits >= PHONE_MIN_DIGITS and "phone" in on:
            out.append(_find_phone)
        return out

    def find(self, s: str, *, prefilter: bool = True) -> list[Span]:
        """Non-overlapping ``(start, end, kind)`` spans of PII in *s*, in order.

        Args:
            s: any text.
            prefilter: skip the detectors that cannot match (False: run them all; the
                result is the same, which the tests check).

        Returns:
            The spans, sorted.
        """
        finders = self._wanted(s) if prefilter else self._finders
        if not finders:
            return []
        spans: list[Span] = []
        for finder in finders:
            spans.extend(finder(s))
        if len(spans) <= 1:
            return spans
        # Earlier finders win overlaps: keep a span only if it overlaps none kept so far.
        kept: list[Span] = []
        for span in spans:
            if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
                kept.append(span)
        kept.sort()
        return kept

    def scan_text(self, s: str, *, prefilter: bool = True) -> str:
        """Replace each PII span in *s* by a marker such as ``[email]``.

        Args:
            s: any text.
            prefilter: as for :meth:`find` (False also bypasses the cache).

        Returns:
            *s* itself when nothing was found, else a new string with markers.
        """
        if not prefilter:
            return self._replace(s, self.find(s, prefilter=False))
        cache = self._cache
        cacheable = len(s) <= CACHE_MAX_LEN
        if cacheable:
            hit = cache.get(s)
            if hit is not None:
                try:
                    cache.move_to_end(s)
                except KeyError:     # evicted by another thread (the recorder's)
                    pass
                # Hand back the caller's own object when nothing changed: callers test
                # ``out is s`` to know whether to re-encode.
                return s if hit == s else hit
        out = self._replace(s, self.find(s))
        if cacheable and len(s) >= _MIN_LEN:
            cache[s] = out
            if len(cache) > CACHE_SIZE:
                try:
                    cache.popitem(last=False)
                except KeyError:
                    pass
        return out

    @staticmethod
    def _replace(s: str, spans: list[Span]) -> str:
        if not spans:
            return s
        parts = []
        last = 0
        for start, end, kind in spans:
            parts.append(s[last:start])
            parts.append(f"[{kind}]")
            last = end
        parts.append(s[last:])
        return "".join(parts)


ALL = Detectors(DETECTORS)


def scan_text(s: str, detectors: Detectors = ALL) -> str:
    """Replace PII in *s* by markers with the given (default: all) detectors."""
    return detectors.scan_text(s)
