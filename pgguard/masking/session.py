"""Masking state and decisions for one client session (see the package docstring)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import MaskingConfig
from ..sql.literals import literal_key
from ..sql.nodes import literal_reads
from ..sql.parse import MAX_CACHED_TEXT, literals_covered, parse
from .catalog import Catalog, SqlCatalog
from .detectors import Detectors
from .lineage import CopyOptions, MaskPlan, Planner, Refusal
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
from .rules import Mask, RuleSet, load_hash_key, stricter

log = logging.getLogger(__name__)

UNPROVEN = Mask("redact", reason="unproven: no plan for this result")
_PLAN_CACHE_SIZE = 512
_PLAN_CACHE_MAX_SQL = 100_000


def _field(f: Any) -> tuple[str, int, int, int, int]:
    """(name, table_oid, attnum, type_oid, format) of a RowDescription field, given as an
    object with those attributes or a 7-tuple in wire order or a 5-tuple."""
    if hasattr(f, "table_oid"):
        return (f.name, f.table_oid, f.attnum, f.type_oid,
                getattr(f, "format", getattr(f, "format_code", 0)))
    if len(f) == 7:
        return f[0], f[1], f[2], f[3], f[6]
    return f[0], f[1], f[2], f[3], f[4]


class SessionMasking:
    """Masking state and decisions for one client session.

    Args:
        cfg: the ``[masking]`` configuration.
        groups: the session user's groups (from the token).
        catalog: the database catalog (may be set later with :meth:`set_catalog`).
        hash_key: HMAC key for ``hash``; read from ``cfg.hash_key_file`` when omitted.
        client_encoding: the session's client_encoding (ParameterStatus).
        on_unproven: ``mask`` (default) or ``refuse`` outputs whose origin is unproven.
    """

    def __init__(self, cfg: MaskingConfig, groups: Iterable[str],
                 catalog: Catalog | None = None, *, hash_key: bytes | None = None,
                 client_encoding: str = "UTF8", on_unproven: str = "mask"):
        self.cfg = cfg
        self.exempt = bool(set(groups) & set(cfg.exempt_groups))
        self.rules = RuleSet(() if self.exempt else cfg.rules)
        self.detectors = Detectors(() if self.exempt else cfg.detectors)
        self.key = hash_key if hash_key is not None else load_hash_key(cfg)
        self.on_unproven = on_unproven
        self.codec = ValueCodec(self.key, self.detectors, python_encoding(client_encoding))
        self.catalog: Catalog = catalog or SqlCatalog(())
        self._planner = self._new_planner()
        self._cache: OrderedDict[str, list[MaskPlan] | Refusal] = OrderedDict()
        # Plans that read no constant's value, by literal-blind key (pgguard.sql.literals).
        self._key_cache: OrderedDict[str, list[MaskPlan] | Refusal] = OrderedDict()
        #: Plans taken from the literal-blind cache (tests and benchmarks).
        self.key_hits = 0

    def _new_planner(self) -> Planner:
        return Planner(self.catalog, self.rules,
                       deny_predicates=self.cfg.deny_predicates and not self.exempt,
                       on_unproven=self.on_unproven)

    @property
    def active(self) -> bool:
        """False when nothing can ever be masked or scanned (exempt, or no rules and no
        detectors): the gateway may skip masking entirely."""
        return bool(self.rules) or bool(self.detectors)

    def set_catalog(self, catalog: Catalog) -> None:
        """Swap in a freshly loaded catalog (after DDL); drops cached plans."""
        self.catalog = catalog
        self._planner = self._new_planner()
        self._cache.clear()
        self._key_cache.clear()

    def set_client_encoding(self, client_encoding: str) -> None:
        """Follow a ParameterStatus client_encoding change."""
        self.codec = ValueCodec(self.key, self.detectors, python_encoding(client_encoding))

    # -- planning ------------------------------------------------------------------

    def plan(self, sql: str) -> list[MaskPlan] | Refusal:
        """Plan the statements of one Query or Parse message.

        Cursors and prepared statements the text itself defines are followed (``DECLARE c
        …; FETCH 2 FROM c``); those of earlier messages are the gateway's to resolve with
        :func:`rebind`, once PostgreSQL confirmed them (see ``pgguard.wire.exchange``).

        Args:
            sql: the statement text.

        Returns:
            One :class:`MaskPlan` per statement in order, or a :class:`Refusal` for the
            whole text (SQLSTATE 42501).
        """
        plans = self.peek(sql)
        if isinstance(plans, Refusal):
            log.info("masking.refused reason=%s", plans.reason)
            return plans
        if not any(p.kind in ("fetch", "move", "execute") for p in plans):
            return plans
        cursors: dict[str, MaskPlan] = {}
        prepared: dict[str, MaskPlan] = {}
        out = []
        for p in plans:
            if p.kind == "declare" and p.name is not None:
                cursors[p.name] = p
            elif p.kind == "prepare" and p.name is not None:
                prepared[p.name] = p
            elif p.kind in ("fetch", "move") and (p.name or "") in cursors:
                p = rebind(p, cursors[p.name or ""])
            elif p.kind == "execute" and (p.name or "") in prepared:
                p = rebind(p, prepared[p.name or ""])
            out.append(p)
        return out

    def peek(self, sql: str) -> list[MaskPlan] | Refusal:
        """The plans of *sql* as :meth:`plan` computes them (cached), without recording
        its DECLARE/PREPARE/CLOSE/DEALLOCATE: for a look before the statement is sent,
        which policy may still refuse."""
        plans = self._cache.get(sql)
        if plans is None:
            if len(sql) > _PLAN_CACHE_MAX_SQL:
                return self._planner.plan_sql(sql)
            # Constants are tracked only in texts the parse cache holds.
            lk = literal_key(sql) if len(sql) <= MAX_CACHED_TEXT else None
            if lk is not None and lk.spans:
                plans = self._key_cache.get(lk.key)
                if plans is not None:
                    # Not kept by exact text: a new constant every statement (pgbench)
                    # would evict everything there.
                    self._key_cache.move_to_end(lk.key)
                    self.key_hits += 1
                    return plans
            mark = literal_reads()
            plans = self._planner.plan_sql(sql)
            if lk is not None and lk.spans and literal_reads() == mark + 1 \
                    and literals_covered(sql, parse(sql), lk):
                _remember(self._key_cache, lk.key, plans)
            _remember(self._cache, sql, plans)
        else:
            self._cache.move_to_end(sql)
        return plans

    def plan_result(self, sql: str) -> MaskPlan | Refusal:
        """Plan a single-statement text (the last statement's plan if several)."""
        plans = self.plan(sql)
        if isinstance(plans, Refusal):
            return plans
        return plans[-1] if plans else MaskPlan("empty")

    # -- rows ----------------------------------------------------------------------

    def row_masker(self, plan: MaskPlan | None, fields: Sequence[Any]) -> RowMasker:
        """Build the DataRow rewriter for one RowDescription.

        Each column's mask is the stricter of the plan's (lineage) and the catalog's
        (RowDescription table OID and column number); a column whose catalog origin the
        lineage did not predict is redacted.

        Args:
            plan: the plan of the statement (None: unknown, every column is masked).
            fields: RowDescription fields (objects with ``name, table_oid, attnum,
                type_oid, format`` or tuples in wire order).

        Returns:
            A :class:`RowMasker`; ``passthrough`` when DataRows can be forwarded raw.
        """
        n = len(fields)
        if self.exempt or not self.active:
            return RowMasker([None] * n)
        actions = []
        masked = []
        for i, f in enumerate(fields):
            _, toid, attnum, typoid, fmt = _field(f)
            mask = plan.mask_for(i, n) if plan is not None else UNPROVEN
            if toid:
                direct = (plan.columns[i].direct if plan is not None and plan.columns
                          is not None and len(plan.columns) == n else None)
                mask = stricter(mask, self._catalog_mask(toid, attnum, direct))
            cls = type_class(typoid, self.catalog)
            if mask is not None:
                actions.append(self.codec.mask_action(mask, cls, fmt == 1))
                masked.append(i)
            else:
                actions.append(self.codec.scan_action(cls, fmt == 1))
        return RowMasker(actions, masked)

    def _catalog_mask(self, table_oid: int, attnum: int, direct: frozenset | None
                      ) -> Mask | None:
        rel = self.catalog.relation_by_oid(table_oid)
        if rel is None:
            return Mask("redact", reason="unproven: result column of an unknown relation")
        col = next((c for a, c, _ in rel.columns if a == attnum), None)
        if col is None:
            return Mask("redact", reason="unproven: unknown column number")
        planner = self._planner
        mask = planner.mask_of(planner._relation_column(rel, col))
        if direct and (rel.schema, rel.name, col) not in direct \
                and rel.schema not in ("pg_catalog", "information_schema"):
            log.warning("masking.lineage_mismatch relation=%s.%s column=%s",
                        rel.schema, rel.name, col)
            mask = stricter(mask, Mask("redact", reason="unproven: lineage and catalog "
                                                        "disagree"))
        return mask

    def copy_masker(self, plan: MaskPlan | None, ncols: int,
                    binary: bool | None = None) -> CopyMasker:
        """Build the CopyData rewriter for one ``COPY … TO STDOUT``.

        Args:
            plan: the COPY statement's plan (None: every column masked).
            ncols: the column count of CopyOutResponse.
            binary: the overall format of CopyOutResponse (None: as the plan says).

        Returns:
            A :class:`CopyMasker`; ``passthrough`` when CopyData can be forwarded raw.
        """
        opts = (plan.copy if plan is not None else None) or CopyOptions()
        if binary is not None and binary != (opts.format == "binary"):
            opts = CopyOptions("binary") if binary else CopyOptions()
        if self.exempt or not self.active:
            return CopyMasker([None] * ncols, opts)
        text_actions = []
        bin_actions = []
        for i in range(ncols):
            mask = plan.mask_for(i, ncols) if plan is not None else UNPROVEN
            if mask is not None:
                text_actions.append(self.codec.text_mask_action(mask))
                bin_actions.append(self.codec.mask_action(mask, OTHER, True))
            else:
                text_actions.append(self.codec.scan_action(TEXT, False))
                bin_actions.append(self.codec.scan_action(OTHER, True))
        if opts.format == "binary":
            return CopyMasker(bin_actions, opts)
        return CopyMasker(text_actions, opts)

    # -- messages ------------------------------------------------------------------

    def mask_error_fields(self, fields: dict[str, str], plan: MaskPlan | None = None
                          ) -> dict[str, str]:
        """Scrub ErrorResponse/NoticeResponse fields (see
        :func:`pgguard.masking.rewrite.mask_error_fields`).

        Args:
            fields: field code -> text.
            plan: the plan of the statement the message belongs to, if any.

        Returns:
            The fields to send.
        """
        if self.exempt:
            return fields
        # Withholding protects rule-masked columns; with detectors only, errors are
        # scrubbed by the detectors (a detectors-only gateway must not blank every error).
        tainted = bool(self.rules) and (plan is None or plan.tainted)
        opaque = bool(self.rules) and plan is not None and plan.opaque
        return mask_error_fields(fields, self.detectors, tainted, opaque,
                                 getattr(self.catalog, "identifiers", frozenset()))

    def scan_text(self, s: str) -> str:
        """Detector scan of any text (statement parameters for the audit log, notices)."""
        return self.detectors.scan_text(s) if not self.exempt else s


def _remember(cache: OrderedDict[str, list[MaskPlan] | Refusal], key: str,
              plans: list[MaskPlan] | Refusal) -> None:
    cache[key] = plans
    if len(cache) > _PLAN_CACHE_SIZE:
        cache.popitem(last=False)


def rebind(plan: MaskPlan, src: MaskPlan | None) -> MaskPlan:
    """The plan of a FETCH, MOVE or EXECUTE with the columns of its cursor's or prepared
    statement's plan *src* (None: not known, every column is masked as unproven)."""
    if src is None:
        return MaskPlan(plan.kind, None, UNPROVEN, tainted=True, name=plan.name)
    return MaskPlan(plan.kind, src.columns, src.fallback, tainted=src.tainted,
                    opaque=src.opaque, name=plan.name)
