"""What masking does to the results of a statement, and the small pure pieces the lineage
planner (:mod:`.lineage`) builds it from.

* :class:`Lin`: the lineage of one value (the base columns it is exactly, the ones that
  feed it through a transformation, and whether its origin cannot be proven);
* :class:`MaskPlan`, :class:`OutputColumn`, :class:`CopyOptions` and :class:`Refusal`:
  the planner's results, which the session reads;
* the planner's scopes (:class:`Rte`, :class:`Scope`, :class:`Result`, :class:`Ctes`);
* :func:`mask_of` (a lineage under the rules becomes a mask), the write checks that refuse
  copying masked data in clear, and :func:`build_plan`;
* the lists of functions and relations the planner treats specially.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import PolicyDenied
from ..sql.nodes import def_boolean, def_elems, def_repeated, def_string

# Aliased: node, name, names and alias are the natural local variable names here.
from ..sql.nodes import name as _name
from ..sql.nodes import names as _names
from ..sql.nodes import node as _node
from .catalog import SYSTEM_SCHEMAS, Catalog, Relation
from .functions import (  # noqa: F401  (the planner's function lists live there)
    CLEAN_AGGREGATES,
    CONFIG_FUNCTIONS,
    OPAQUE_FUNCTIONS,
    SINK_FUNCTIONS,
)
from .rules import Mask, RuleSet

Origin = tuple[str, str, str]
_EMPTY: frozenset[Origin] = frozenset()

# System relations whose columns hold copies of table values or other sessions' query
# texts: their every column is treated as unproven.
VALUE_CARRYING_SYSTEM_RELATIONS = frozenset({
    "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data",
    "pg_stat_activity", "pg_stat_statements", "pg_stat_statements_info", "pg_largeobject",
    "pg_prepared_xacts",
})
# Set-returning builtins and the names of their output columns ("" = the function name
# or the alias, as PostgreSQL names a scalar function's column).
SRF_COLUMNS: dict[str, tuple[str, ...]] = {
    "jsonb_array_elements": ("value",), "json_array_elements": ("value",),
    "jsonb_array_elements_text": ("value",), "json_array_elements_text": ("value",),
    "jsonb_each": ("key", "value"), "json_each": ("key", "value"),
    "jsonb_each_text": ("key", "value"), "json_each_text": ("key", "value"),
    "jsonb_object_keys": ("",), "json_object_keys": ("",), "generate_series": ("",),
    "generate_subscripts": ("",), "regexp_matches": ("",), "regexp_split_to_table": ("",),
    "string_to_table": ("",), "jsonb_path_query": ("",), "unnest": ("",),
}
# Builtins that return a set (``proretset`` in pg_catalog, PostgreSQL 15 to 18, checked
# against the server by tests/e2e/test_masking_positions.py): their arguments shape how many
# rows come back, so a masked argument is refused (the client counts the rows).
SET_RETURNING_FUNCTIONS = frozenset({
    "aclexplode", "generate_series", "generate_subscripts", "json_array_elements",
    "json_array_elements_text", "json_each", "json_each_text", "json_object_keys",
    "json_populate_recordset", "json_to_recordset", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_each", "jsonb_each_text", "jsonb_object_keys",
    "jsonb_path_query", "jsonb_path_query_tz", "jsonb_populate_recordset",
    "jsonb_to_recordset", "pg_available_extension_versions", "pg_available_extensions",
    "pg_config", "pg_cursor", "pg_event_trigger_ddl_commands",
    "pg_event_trigger_dropped_objects", "pg_extension_update_paths",
    "pg_get_backend_memory_contexts", "pg_get_catalog_foreign_keys", "pg_get_keywords",
    "pg_get_multixact_members", "pg_get_publication_tables", "pg_get_replication_slots",
    "pg_get_shmem_allocations", "pg_get_wal_resource_managers", "pg_hba_file_rules",
    "pg_ident_file_mappings", "pg_listening_channels", "pg_lock_status",
    "pg_logical_slot_get_binary_changes", "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_binary_changes", "pg_logical_slot_peek_changes",
    "pg_ls_archive_statusdir", "pg_ls_dir", "pg_ls_logdir", "pg_ls_logicalmapdir",
    "pg_ls_logicalsnapdir", "pg_ls_replslotdir", "pg_ls_tmpdir", "pg_ls_waldir",
    "pg_mcv_list_items", "pg_options_to_table", "pg_partition_ancestors",
    "pg_partition_tree", "pg_prepared_statement", "pg_prepared_xact",
    "pg_show_all_file_settings", "pg_show_all_settings", "pg_show_replication_origin_status",
    "pg_snapshot_xip", "pg_stat_get_activity", "pg_stat_get_backend_idset",
    "pg_stat_get_progress_info", "pg_stat_get_recovery_prefetch", "pg_stat_get_slru",
    "pg_stat_get_subscription", "pg_stat_get_wal_senders", "pg_tablespace_databases",
    "pg_timezone_abbrevs", "pg_timezone_names", "regexp_matches", "regexp_split_to_table",
    "string_to_table", "ts_debug", "ts_parse", "ts_stat", "ts_token_type",
    "txid_snapshot_xip", "unnest",
    # PostgreSQL 16 to 18
    "pg_stat_get_io", "pg_get_wait_events", "pg_ls_summariesdir",
    "pg_available_wal_summaries", "pg_wal_summary_contents", "pg_get_loaded_modules",
    "pg_get_aios", "pg_get_shmem_allocations_numa", "pg_stat_get_backend_io",
    "pg_timezone_abbrevs_zone", "pg_timezone_abbrevs_abbrevs",
})
WRITE_KINDS = frozenset({"insert", "update", "delete", "merge", "call", "do", "unknown",
                         "copy_in", "create_table_as"})
DDL_NODES = frozenset({
    "CreateStmt", "AlterTableStmt", "DropStmt", "ViewStmt", "CreateTableAsStmt", "RenameStmt",
    "CreateFunctionStmt", "AlterFunctionStmt", "CreateSchemaStmt", "CreateExtensionStmt",
    "AlterExtensionStmt", "CreateForeignTableStmt", "ImportForeignSchemaStmt",
    "CompositeTypeStmt", "CreateDomainStmt", "AlterDomainStmt", "CreateEnumStmt",
    "AlterObjectSchemaStmt", "RefreshMatViewStmt", "CreateTrigStmt", "RuleStmt",
    "DropOwnedStmt", "ReassignOwnedStmt", "AlterOwnerStmt", "DefineStmt", "VariableSetStmt",
    "DiscardStmt", "SelectIntoStmt",
})
MAX_VIEW_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Lin:
    """Lineage of one value.

    Attributes:
        direct: base columns whose value this is, unchanged.
        mixed: base columns that feed it through a transformation.
        opaque: why its origin cannot be proven, or None.
    """

    direct: frozenset[Origin] = _EMPTY
    mixed: frozenset[Origin] = _EMPTY
    opaque: str | None = None

    def derived(self) -> Lin:
        """The lineage of a value computed from this one."""
        if not self.direct:
            return self
        return Lin(_EMPTY, self.direct | self.mixed, self.opaque)

    @property
    def origins(self) -> frozenset[Origin]:
        return self.direct | self.mixed


CLEAN = Lin()


def union(lins: Iterable[Lin]) -> Lin:
    """A value that is one of several values (UNION branches, USING columns)."""
    direct: set[Origin] = set()
    mixed: set[Origin] = set()
    opaque = None
    for lin in lins:
        direct |= lin.direct
        mixed |= lin.mixed
        opaque = opaque or lin.opaque
    if not direct and not mixed and opaque is None:
        return CLEAN
    return Lin(frozenset(direct), frozenset(mixed), opaque)


def derive(lins: Iterable[Lin]) -> Lin:
    """A value computed from several values."""
    return union(lins).derived()


def unproven(reason: str) -> Lin:
    return Lin(opaque=reason)


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """Format of a ``COPY … TO STDOUT`` as written in the statement."""

    format: str = "text"          # text | csv | binary
    delimiter: str = "\t"
    quote: str = '"'
    escape: str = '"'
    null: str = "\\N"
    header: bool = False


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One output column of a plan: its name, its mask (None = clear) and the base
    columns it is exactly, for the cross-check with RowDescription."""

    name: str
    mask: Mask | None
    direct: frozenset[Origin] = _EMPTY


@dataclass(frozen=True, slots=True)
class MaskPlan:
    """What masking does to the results of one statement.

    Attributes:
        kind: statement kind (``select``, ``insert``/``update``/``delete``/``merge`` with
            RETURNING, ``copy_out``, ``declare``, ``fetch``, ``prepare``, ``execute``,
            ``explain``, ``show``, ``utility``, …).
        columns: output columns in order, or None when their number is not known.
        fallback: mask for any column not covered by *columns* (None = clear).
        tainted: the statement reads a masked column anywhere, calls a function whose
            effects cannot be seen, or writes (triggers): error and notice texts are then
            scrubbed of quoted values.
        opaque: the statement runs code whose messages cannot be traced (user functions,
            procedures, DO, triggers of writes): PL/pgSQL messages are withheld.
        copy: for ``COPY … TO STDOUT``, its format options.
        name: cursor or prepared statement name (DECLARE, FETCH, PREPARE, EXECUTE, CLOSE,
            DEALLOCATE); ``None`` with ``close``/``deallocate`` means ALL.
        refresh_catalog: the statement changes the catalog (DDL, search_path): reload it
            after it completes.
        unknown_relations: relation names not found in the catalog (a refresh may help).
    """

    kind: str
    columns: tuple[OutputColumn, ...] | None = ()
    fallback: Mask | None = None
    tainted: bool = False
    opaque: bool = False
    copy: CopyOptions | None = None
    name: str | None = None
    refresh_catalog: bool = False
    unknown_relations: tuple[str, ...] = ()

    @property
    def masks_nothing(self) -> bool:
        """True when no output column is masked (rows may still be scanned)."""
        return self.fallback is None and all(c.mask is None for c in self.columns or ())

    def mask_for(self, index: int, count: int) -> Mask | None:
        """The lineage mask of output column *index* of a result with *count* columns."""
        if self.columns is None or len(self.columns) != count:
            # A result whose shape we did not predict: every column gets the union mask.
            return self.fallback
        return self.columns[index].mask


@dataclass(frozen=True, slots=True)
class Refusal:
    """A statement masking refuses to let run (SQLSTATE 42501)."""

    reason: str
    sqlstate: str = "42501"

    def error(self) -> PolicyDenied:
        """The exception the session turns into an ErrorResponse."""
        return PolicyDenied(f"pgguard: masking: {self.reason}")


class Refused(Exception):
    """Raised inside the planner to refuse the whole statement (becomes a Refusal)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- scopes ---------------------------------------------------------------------------

@dataclass(slots=True)
class Rte:
    """A FROM item as seen by column references."""

    name: str | None
    cols: list[tuple[str, Lin]]
    any_col: Lin | None = None          # columns of unknown name resolve to this
    relation: Relation | None = None

    def lookup(self, col: str) -> Lin | None:
        found = [lin for name, lin in self.cols if name == col]
        if found:
            return union(found)
        return self.any_col

    def whole(self) -> Lin:
        lins = [lin for _, lin in self.cols]
        if self.any_col is not None:
            lins.append(self.any_col)
        return derive(lins)


@dataclass(slots=True)
class Scope:
    rtes: list[Rte] = field(default_factory=list)
    star: list[tuple[str, Lin]] | None = field(default_factory=list)
    merged: dict[str, Lin] = field(default_factory=dict)
    parent: Scope | None = None

    def find_rte(self, name: str) -> Rte | None:
        """The FROM item named *name*, innermost query level first."""
        s: Scope | None = self
        while s is not None:
            for rte in reversed(s.rtes):
                if rte.name == name:
                    return rte
            s = s.parent
        return None

    def has_column(self, name: str) -> bool:
        """True when a FROM item of this level has a column named *name*."""
        return any(n == name for r in self.rtes for n, _ in r.cols)

    def resolve(self, names: list[str]) -> Lin | None:
        """The lineage of the column reference *names* (``["u", "email"]``) in this scope.

        Returns None for ``a.b`` where no FROM item is named ``a``: a field of a composite
        column ``a``, which the planner resolves (it records the columns it reads).
        """
        if len(names) == 1:
            col = names[0]
            s: Scope | None = self
            while s is not None:
                if col in s.merged:
                    return s.merged[col]
                found = [lin for r in s.rtes if (lin := r.lookup(col)) is not None]
                if found:
                    return union(found)
                for rte in reversed(s.rtes):
                    if rte.name == col:
                        return rte.whole()     # whole-row reference: SELECT u FROM users u
                s = s.parent
            return unproven(f"unknown column {col}")
        if names[-1] == "*":
            rte = self.find_rte(names[-2])
            return rte.whole() if rte else unproven(f"unknown relation {names[-2]}")
        rel, col = names[-2], names[-1]
        rte = self.find_rte(rel)
        if rte is not None:
            lin = rte.lookup(col)
            if lin is not None:
                return lin
            return unproven(f"unknown column {rel}.{col}")
        if len(names) == 2:
            return None
        return unproven(f"unknown relation {rel}")


@dataclass(slots=True)
class Result:
    cols: list[tuple[str, Lin]]
    known: bool = True

    def all(self) -> Lin:
        return union(lin for _, lin in self.cols)


class Ctes:
    def __init__(self, parent: Ctes | None = None):
        self.parent = parent
        self.defs: dict[str, Result] = {}

    def get(self, name: str) -> Result | None:
        c: Ctes | None = self
        while c is not None:
            if name in c.defs:
                return c.defs[name]
            c = c.parent
        return None


def rename(cols: list[tuple[str, Lin]], names: list[str]) -> list[tuple[str, Lin]]:
    """*cols* with the first ones renamed by the column aliases *names*."""
    return [(names[i] if i < len(names) else n, lin) for i, (n, lin) in enumerate(cols)]


def colname(val: dict | None) -> str:
    """PostgreSQL's FigureColname, for the kinds of expressions that matter."""
    if not val:
        return "?column?"
    kind, body = _node(val)
    if kind == "ColumnRef":
        names = _names(body.get("fields", []))
        return names[-1] if names else "?column?"
    if kind == "FuncCall":
        return _names(body.get("funcname", []))[-1]
    if kind == "TypeCast":
        inner = colname(body.get("arg"))
        if inner != "?column?":
            return inner
        names = _names(body.get("typeName", {}).get("names", []))
        return names[-1] if names else "?column?"
    if kind == "A_Indirection":
        ind = body.get("indirection", [])
        if ind and "String" in ind[-1]:
            return _name(ind[-1])
        return colname(body.get("arg"))
    if kind == "CollateClause":
        return colname(body.get("arg"))
    if kind == "SubLink":
        t = body.get("subLinkType")
        if t == "EXISTS_SUBLINK":
            return "exists"
        if t == "ARRAY_SUBLINK":
            return "array"
        if t == "EXPR_SUBLINK":
            sel = body.get("subselect", {}).get("SelectStmt", {})
            tl = sel.get("targetList") or []
            if tl:
                rt = tl[0]["ResTarget"]
                return rt.get("name") or colname(rt.get("val"))
        return "?column?"
    return {"CaseExpr": "case", "CoalesceExpr": "coalesce", "A_ArrayExpr": "array",
            "RowExpr": "row", "XmlExpr": "xmlelement", "XmlSerialize": "xmlserialize",
            }.get(kind, "?column?")



#: COPY's options (PostgreSQL 15 … 17); every one may be given once only.
_COPY_OPTIONS = frozenset({
    "format", "freeze", "delimiter", "null", "default", "header", "quote", "escape",
    "force_quote", "force_not_null", "force_null", "convert_selectively", "encoding",
    "on_error", "log_verbosity",
})


def copy_options(options: list) -> CopyOptions:
    """The format options of a COPY statement's ``options`` list, read as PostgreSQL's
    ``ProcessCopyOptions`` reads them: names and format words compared exactly, defaults
    by format (CSV: ``,`` and an empty NULL; text: tab and ``\\N``; ESCAPE defaults to QUOTE),
    HEADER as ``defGetCopyHeaderChoice``.

    Raises:
        Refused: a list PostgreSQL rejects (an option given twice, an unknown option or
            format, a value of the wrong kind): the statement would not run, and masking
            does not guess how its rows would be laid out. Also ENCODING, which would
            send the rows in another encoding than the session's.
    """
    repeated = def_repeated(options)
    if repeated:
        raise Refused(f"COPY option {sorted(repeated)[0]} given more than once")
    opts: dict[str, object] = {}
    for name, arg in def_elems(options):
        if name not in _COPY_OPTIONS:
            raise Refused(f"COPY option {name!r} is not one PostgreSQL knows")
        opts[name] = arg
    if "encoding" in opts:
        # The rows would be in that encoding, not the session's the masker decodes with.
        raise Refused("COPY … ENCODING is not supported with masking: the rows would not "
                      "be in the session's client_encoding")
    fmt = "text"
    if "format" in opts:
        fmt = def_string(opts["format"]) or ""
        if fmt not in ("text", "csv", "binary"):
            raise Refused(f"COPY format {fmt!r} is not one PostgreSQL knows")

    def text(key: str, default: str) -> str:
        if key not in opts:
            return default
        value = def_string(opts[key])
        if value is None:
            raise Refused(f"COPY option {key} has a value pgguard cannot read")
        return value

    header = False
    if "header" in opts:
        arg = opts["header"]
        header_value = def_boolean(arg)
        if header_value is None and isinstance(arg, dict) and "Integer" not in arg \
                and (def_string(arg) or "").lower() == "match":
            header_value = True  # COPY FROM only; masking reads COPY TO
        if header_value is None:
            raise Refused("COPY option header has a value PostgreSQL rejects")
        header = header_value
    if fmt == "csv":
        quote = text("quote", '"')
        return CopyOptions("csv", text("delimiter", ","), quote, text("escape", quote),
                           text("null", ""), header)
    return CopyOptions(fmt, text("delimiter", "\t"), '"', '"', text("null", "\\N"), header)


def mask_of(rules: RuleSet, lin: Lin) -> Mask | None:
    """The mask a value of lineage *lin* gets under the rules (None = clear)."""
    if lin.opaque:
        return Mask("redact", reason=f"unproven: {lin.opaque}")
    mixed = [m for o in lin.mixed if (m := rules.match(*o))]
    direct = [m for o in lin.direct if (m := rules.match(*o))]
    if not mixed and not direct:
        return None
    if not mixed and len(set(direct)) == 1:
        return direct[0]
    masks = mixed + direct
    names = ", ".join(sorted({m.reason.removeprefix("rule ") for m in masks}))
    strategy = "null" if any(m.strategy == "null" for m in masks) else "redact"
    return Mask(strategy, reason=f"derived from {names}")


def check_write(rules: RuleSet, catalog: Catalog, rel: Relation | None, rv: dict,
                col: str | None, lin: Lin) -> None:
    """Refuse writing a value of lineage *lin* into column *col* of the relation *rel*
    (or the RangeVar *rv* when the relation is not known) unless it is masked alike there.

    Raises:
        Refused: the write would copy masked data where it is read in clear.
    """
    masked = [o for o in lin.origins if rules.match(*o)]
    if not masked:
        return
    source = mask_of(rules, lin)
    if rel is not None and col is not None:
        dest = rules.match(rel.schema, rel.name, col)
    else:
        schema = rv.get("schemaname") or next(
            (s for s in getattr(catalog, "search_path", ("public",))
             if s not in SYSTEM_SCHEMAS), "public")
        dest = rules.match(schema, rv["relname"], col or "?column?")
    if dest is not None and (dest == source or dest.strategy == "null"
                             or (dest.strategy == "redact" and source is not None
                                 and source.strategy != "null")):
        return
    s, t, c = sorted(masked)[0]
    raise Refused(f"statement would copy masked column {s}.{t}.{c} into "
                  f"{rv.get('relname')}.{col} where it is not masked alike")


def check_into(rules: RuleSet, catalog: Catalog, into: dict, res: Result) -> None:
    """:func:`check_write` for every column of a ``SELECT INTO`` / ``CREATE TABLE AS``."""
    rv = into["rel"]
    colnames = [_name(c) for c in into.get("colNames", [])]
    cols = rename(res.cols, colnames)
    for name, lin in cols:
        check_write(rules, catalog, None, rv, name, lin if res.known else res.all())


def tainted_by(lin: Lin, taint: Lin) -> Lin:
    """*lin* fed as well by *taint* (data read in a position that carries values into
    every output column of a query level)."""
    if taint is CLEAN or (not taint.origins and taint.opaque is None):
        return lin
    return Lin(lin.direct, lin.mixed | taint.origins, lin.opaque or taint.opaque)


def check_no_masked(rules: RuleSet, lin: Lin, what: str) -> None:
    """Refuse *what* (a COPY to a file or program) when *lin* may hold masked data."""
    masked = sorted(o for o in lin.origins if rules.match(*o))
    if masked or (lin.opaque and rules):
        name = ".".join(masked[0]) if masked else "(unproven)"
        raise Refused(f"{what} would write masked column {name} in clear")


@dataclass(slots=True)
class Findings:
    """What the planner saw while walking one statement.

    Attributes:
        pred: base columns used in predicates (WHERE, JOIN ON, GROUP BY, ORDER BY, ...).
        seen: base columns read anywhere.
        opaque_calls: a function whose effects cannot be traced was called.
        unknown: relation names not found in the catalog.
        rowcount_unproven: why data of unproven origin shapes how many rows come back
            (refused, unless an unknown relation asks for a catalog refresh first).
        unproven: a column of unproven origin was read anywhere (it may hold masked
            values, e.g. pg_stats' histograms): the statement counts as touching masked
            data, so its errors are withheld.
    """

    pred: set[Origin] = field(default_factory=set)
    seen: set[Origin] = field(default_factory=set)
    opaque_calls: bool = False
    unknown: set[str] = field(default_factory=set)
    rowcount_unproven: str | None = None
    unproven: bool = False


def build_plan(rules: RuleSet, found: Findings, kind: str, result: Result | None,
               copy: CopyOptions | None, name: str | None, refresh: bool, *,
               deny_predicates: bool, on_unproven: str) -> MaskPlan | Refusal:
    """The plan of one statement from its output columns and what the walk found.

    Args:
        rules: the masking rules.
        found: the walk's findings (``seen`` gains the output columns' origins).
        kind: the statement kind (``select``, ``copy_out``, ...).
        result: the output columns, or None for a statement without rows.
        copy: the format options of a ``COPY … TO STDOUT``.
        name: the cursor or prepared statement name.
        refresh: the statement changes the catalog.
        deny_predicates: refuse predicates on masked columns.
        on_unproven: ``mask`` or ``refuse`` outputs whose origin is unproven.

    Returns:
        The plan, or a Refusal.
    """
    if found.rowcount_unproven and rules and not found.unknown:
        return Refusal(f"data of unproven origin shapes the number of rows "
                       f"({found.rowcount_unproven}): the client would count them")
    masked_pred = sorted(f"{s}.{t}.{c}" for s, t, c in found.pred if rules.match(s, t, c))
    if deny_predicates and masked_pred:
        return Refusal(f"statement filters, groups or sorts on masked column "
                       f"{masked_pred[0]} (masking.deny_predicates)")
    if result is not None:
        found.seen |= result.all().origins
    unproven_read = found.unproven or (result is not None
                                       and result.all().opaque is not None)
    tainted = (kind in WRITE_KINDS or found.opaque_calls or bool(masked_pred)
               or any(rules.match(*o) for o in found.seen)
               or (unproven_read and bool(rules)))
    columns: tuple[OutputColumn, ...] | None = ()
    fallback = None
    if result is not None:
        if on_unproven == "refuse":
            for cname, lin in result.cols:
                if lin.opaque:
                    return Refusal(f"cannot prove the origin of column {cname!r}: "
                                   f"{lin.opaque}")
        columns = tuple(OutputColumn(n, mask_of(rules, lin), lin.direct)
                        for n, lin in result.cols)
        fallback = mask_of(rules, result.all().derived() if len(result.cols) > 1
                           else result.all())
        if not result.known:
            columns = None
            if fallback is None and any(lin.opaque for _, lin in result.cols):
                fallback = Mask("redact", reason="unproven: result shape unknown")
    return MaskPlan(kind, columns, fallback, tainted=tainted,
                    opaque=found.opaque_calls or kind in WRITE_KINDS, copy=copy, name=name,
                    refresh_catalog=refresh, unknown_relations=tuple(sorted(found.unknown)))


def explain_analyze(options: list) -> bool:
    """Whether an EXPLAIN with these options runs its statement, read as PostgreSQL reads
    them: the last ``analyze`` wins, no value means true; a value PostgreSQL would reject
    counts as true (fail closed)."""
    analyze = False
    for o in options:
        d = _node(o)[1]
        if str(d.get("defname", "")).lower() != "analyze":
            continue
        arg = d.get("arg")
        if arg is None:
            analyze = True
            continue
        akind, abody = _node(arg)
        if akind == "Boolean":
            analyze = bool(abody.get("boolval", False))
        elif akind == "Integer":
            analyze = abody.get("ival", 0) != 0
        else:
            analyze = str(abody.get("sval", abody.get("fval", ""))).lower() not in (
                "false", "off", "0")
    return analyze
