"""Content detectors: find PII and secrets in free text and replace them by markers.

Each detector is a precompiled regular expression plus a validation (Luhn for cards,
mod-97 for IBANs, range checks for SSNs, digit counts for phones). A cheap pre-filter
rejects most values (no digit, no ``@``, no secret prefix) before any detector runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

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

# Any PII shape needs one of these; a value without them is passed untouched.
_PREFILTER = re.compile(r"[0-9@]|-----BEGIN|eyJ|gh[pousr]_|github_pat_|xox|sk-|[sr]k_")
# The secret pattern has many alternatives: run it only where a literal prefix occurs.
_SECRET_HINT = re.compile(r"-----BEGIN|A(?:KI|SI|BI|CC|GP|ID|RO|NP)A|(?i:aws_secret)|eyJ|"
                          r"gh[pousr]_|github_pat_|xox|sk-|[sr]k_|AIza")


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


class Detectors:
    """A configured set of detectors.

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

    def __bool__(self) -> bool:
        return bool(self._finders)

    def find(self, s: str) -> list[Span]:
        """Non-overlapping ``(start, end, kind)`` spans of PII in *s*, in order."""
        if not self._finders or not _PREFILTER.search(s):
            return []
        spans: list[Span] = []
        for finder in self._finders:
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

    def scan_text(self, s: str) -> str:
        """Replace each PII span in *s* by a marker such as ``[email]``.

        Args:
            s: any text.

        Returns:
            *s* itself when nothing was found, else a new string with markers.
        """
        spans = self.find(s)
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
