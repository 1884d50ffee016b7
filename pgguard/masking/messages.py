"""ErrorResponse and NoticeResponse fields: withheld or scrubbed.

A message that belongs to a statement which reads masked data, or runs code whose effects
cannot be traced (user functions, triggers, unproven lineage), or to no known statement at
all, is **withheld**: PostgreSQL writes values into messages in too many shapes (quoted or
not, in hex, in XML parser detail, in the echoed input of a cast) for any scrubbing to be
sound. What is kept is an allow-list of fields that carry no text of the statement's data:

====  =====================================  ==========================================
code  field                                  withheld message
====  =====================================  ==========================================
S, V  severity (localized, non-localized)    kept (V's value for both when V is known)
C     SQLSTATE                               kept; a code PostgreSQL does not define (only
                                             user code raises one) becomes its class's
                                             ``xx000`` code, or ``P0001``
M     message                                ``pgguard: <condition> (<code>) withheld: …``
D H   detail, hint                           dropped: values, parser input
P p q position, internal position and query  dropped: point into or echo the data
W     context (PL/pgSQL, SQL function, COPY)  dropped: echoes values and arguments
s t c schema, table, column                  dropped: with the SQLSTATE they narrow down
d n   data type, constraint name             which check failed on which column, which is
                                             a bit of the value per statement
F L R source file, line, routine             dropped: they tell which branch of a check
                                             failed (more than the SQLSTATE says)
*     any other (future) field               dropped
====  =====================================  ==========================================

A message of a statement that touches no masked column keeps every field; the detectors
replace PII they find in any text field.
"""

from __future__ import annotations

from .detectors import Detectors
from .errcodes import CONDITIONS

# Fields a withheld message keeps (besides its own M).
KEPT_FIELDS = frozenset({"S", "V", "C"})
SEVERITIES = frozenset({"ERROR", "FATAL", "PANIC", "WARNING", "NOTICE", "DEBUG", "INFO",
                        "LOG"})
READS_MASKED = "the statement reads masked data"
RUNS_OPAQUE = "the statement runs code whose messages cannot be traced"


def withheld_sqlstate(code: str | None) -> str:
    """The SQLSTATE a withheld message carries: *code* if PostgreSQL defines it, else the
    generic code of its class if PostgreSQL defines the class, else ``P0001``
    (``raise_exception``, what user code raises by default); ``XX000`` when missing."""
    if not code:
        return "XX000"
    if code in CONDITIONS:
        return code
    generic = code[:2] + "000"
    return generic if generic in CONDITIONS else "P0001"


def withheld_message(code: str, reason: str = READS_MASKED) -> str:
    """The fixed text of a withheld message for SQLSTATE *code* (one PostgreSQL defines)."""
    return f"pgguard: {CONDITIONS.get(code, 'internal_error')} ({code}) withheld: {reason}"


def withhold(fields: dict[str, str], reason: str = READS_MASKED) -> dict[str, str]:
    """Only severity and SQLSTATE of *fields*, and the fixed ``pgguard:`` message.

    Args:
        fields: field code -> value, as decoded from the message.
        reason: why, for the message text.

    Returns:
        A new dict: S, V, C and M, in the order they came (M after C if it was missing).
    """
    code = withheld_sqlstate(fields.get("C"))
    sev = fields.get("V")
    if sev not in SEVERITIES:
        sev = None
    loc = fields.get("S")
    out: dict[str, str] = {}
    for k in fields:
        if k == "S":
            # The localized severity is the server's translation of V; with V known, V
            # (pgguard's message is English anyway), else only a known severity word.
            out["S"] = sev or (loc if loc in SEVERITIES else "ERROR")
        elif k == "V" and sev is not None:
            out["V"] = sev
        elif k == "C":
            out["C"] = code
        elif k == "M":
            out["M"] = withheld_message(code, reason)
    out.setdefault("C", code)
    out.setdefault("M", withheld_message(code, reason))
    return out


def mask_error_fields(fields: dict[str, str], detectors: Detectors, tainted: bool,
                      opaque: bool, identifiers: frozenset[str] = frozenset()
                      ) -> dict[str, str]:
    """Withhold or scrub an ErrorResponse/NoticeResponse field dict.

    Args:
        fields: field code -> value, as decoded from the message.
        detectors: the content detectors.
        tainted: the statement reads a masked column or data of unproven origin, or the
            message belongs to no known statement (the caller decides; with rules it
            must say True then).
        opaque: the statement runs code whose messages cannot be traced.
        identifiers: unused (names are no longer kept in withheld messages); accepted
            for the caller's signature.

    Returns:
        A new dict: :func:`withhold` when *tainted* or *opaque*, else every field with
        the detectors' markers in its text (S, V and C untouched).
    """
    if tainted or opaque:
        return withhold(fields, READS_MASKED if tainted else RUNS_OPAQUE)
    out = dict(fields)
    for code, v in fields.items():
        if code not in KEPT_FIELDS and v:
            out[code] = detectors.scan_text(v)
    return out
