"""PII masking: rules, detectors, column lineage and result rewriting.

The gateway creates one :class:`SessionMasking` per client session and calls it at four
points; everything else is internal:

1. catalog: run :data:`CATALOG_QUERY` on the backend, ``set_catalog(SqlCatalog.from_rows(
   rows))``; again after a statement whose plan has ``refresh_catalog``;
2. Query / Parse: ``plan(sql)`` -> one :class:`MaskPlan` per statement, or a
   :class:`Refusal` (send ``refusal.error()`` as ErrorResponse, do not forward);
3. RowDescription: ``row_masker(plan, fields)``; if ``masker.passthrough`` forward
   DataRows raw, else ``masker.mask_datarow(body)``; CopyOutResponse:
   ``copy_masker(plan, ncols, binary)`` then ``feed(payload)`` / ``finish()``;
4. ErrorResponse / NoticeResponse: ``mask_error_fields(fields, plan)``.

Cursors (DECLARE/FETCH) and prepared statements (PREPARE/EXECUTE, Parse/Bind) are
tracked by name in the session's protocol state (``pgguard.wire.exchange``), bound once
PostgreSQL confirmed them; the gateway applies their plans with :func:`rebind`.
"""

from __future__ import annotations

from .catalog import CATALOG_QUERY, Catalog, Relation, SqlCatalog
from .detectors import Detectors, iban_ok, luhn_ok, scan_text
from .lineage import (
    CopyOptions,
    Lin,
    MaskPlan,
    OutputColumn,
    Planner,
    Refusal,
)
from .rewrite import (
    OTHER,
    TEXT,
    CopyMasker,
    RowMasker,
    ValueCodec,
    mask_error_fields,
    python_encoding,
    type_class,
)
from .rules import Mask, RuleSet, hash_token, load_hash_key, partial, stricter
from .session import UNPROVEN, SessionMasking, rebind

__all__ = [
    "CATALOG_QUERY", "Catalog", "CopyMasker", "CopyOptions", "Detectors", "Lin", "Mask",
    "MaskPlan", "OTHER", "OutputColumn", "Planner", "Refusal", "Relation", "RowMasker",
    "RuleSet", "SessionMasking", "SqlCatalog", "TEXT", "UNPROVEN", "ValueCodec",
    "hash_token", "iban_ok", "load_hash_key", "luhn_ok", "mask_error_fields", "partial",
    "python_encoding", "rebind", "scan_text", "stricter", "type_class",
]
