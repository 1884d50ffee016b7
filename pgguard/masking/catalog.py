"""What the masking layer needs to know about the database: relations, columns, views,
user-defined functions and types.

The gateway runs :data:`CATALOG_QUERY` on the backend connection (as the session's own
database user) and hands the rows to :meth:`SqlCatalog.from_rows`; after DDL it runs the
query again and swaps the catalog (``SessionMasking.set_catalog``). The class never does
I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})

# One statement, one result set of six text columns, so the gateway can run it with a
# simple Query and collect text-format DataRows. Kinds: r relation, a column, f user
# function (with whether any of that name returns a set), t user type, s search_path entry,
# o user operator, y name of a type whose casts may run user code (a user base type, a domain
# with constraints, a composite with a field of one, a type a user function casts to), l
# row-level security policy expressions of a relation.
CATALOG_QUERY = """\
SELECT 'r', c.oid::text, n.nspname::text, c.relname::text, c.relkind::text,
       CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            THEN pg_catalog.pg_get_viewdef(c.oid) END
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname <> 'pg_toast'
UNION ALL
SELECT 'a', a.attrelid::text, a.attnum::text, a.attname::text, a.atttypid::text, NULL
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attnum > 0 AND NOT a.attisdropped
   AND c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname <> 'pg_toast'
UNION ALL
SELECT 'f', NULL, n.nspname::text, p.proname::text, bool_or(p.proretset)::text, NULL
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
 GROUP BY n.nspname, p.proname
UNION ALL
SELECT 't', t.oid::text, t.typcategory::text, t.typtype::text, t.typelem::text,
       t.typbasetype::text
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT DISTINCT 'o', NULL, n.nspname::text, o.oprname::text, NULL, NULL
  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT DISTINCT 'y', NULL, n.nspname::text, t.typname::text, NULL, NULL
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE t.oid IN (SELECT c.casttarget FROM pg_catalog.pg_cast c
                   JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc
                   JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                  WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema'))
    OR (n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND ((t.typtype = 'b' AND t.typcategory <> 'A')
             OR (t.typtype = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                                             WHERE k.contypid IN (t.oid, t.typbasetype)))
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                          JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
                          JOIN pg_catalog.pg_namespace an ON an.oid = at.typnamespace
                         WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0
                           AND an.nspname NOT IN ('pg_catalog', 'information_schema')
                           AND ((at.typtype = 'b' AND at.typcategory <> 'A')
                                OR (at.typtype = 'd' AND EXISTS (
                                    SELECT 1 FROM pg_catalog.pg_constraint k2
                                     WHERE k2.contypid IN (at.oid, at.typbasetype)))))))
UNION ALL
SELECT 'l', p.polrelid::text, NULL, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), NULL
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
 WHERE c.relrowsecurity
UNION ALL
SELECT 's', s.ord::text, s.nsp::text, NULL, NULL, NULL
  FROM unnest(pg_catalog.current_schemas(true)) WITH ORDINALITY AS s(nsp, ord)
"""


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation (table, view, materialized view, foreign or partitioned table)."""

    oid: int
    schema: str
    name: str
    kind: str
    columns: tuple[tuple[int, str, int], ...] = ()   # (attnum, name, type oid)
    definition: str | None = field(default=None, repr=False)
    # Expressions of its row-level security policies (USING and WITH CHECK), when enabled.
    policies: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_view(self) -> bool:
        return self.kind in ("v", "m")

    def column_names(self) -> list[str]:
        return [name for _, name, _ in self.columns]


class Catalog(Protocol):
    """What lineage and row rewriting read from the database catalog."""

    def relation_by_oid(self, oid: int) -> Relation | None:
        """The relation with this OID, or None."""

    def resolve_relation(self, name: str, schema: str | None) -> list[Relation]:
        """Relations *name* may denote: the schema-qualified one, or for an unqualified
        name every schema's relation of that name, those on the search_path first."""

    def is_user_function(self, name: str, schema: str | None) -> bool:
        """True when a user-defined (non-builtin) function may answer to this name."""

    def type_info(self, oid: int) -> tuple[str, str, int, int] | None:
        """(category, typtype, element oid, base oid) of a user-defined type, or None."""

    def may_return_set(self, name: str, schema: str | None) -> bool:
        """True when a user-defined function of this name may return a set."""

    def is_user_operator(self, name: str, schema: str | None) -> bool:
        """True when a user-defined operator may answer to this name."""

    def is_user_type(self, name: str, schema: str | None) -> bool:
        """True when a cast to this type name may run user code (a user base type, a domain
        with constraints, a composite with a field of one, or a type a user function casts
        to)."""


class SqlCatalog:
    """A :class:`Catalog` built from the rows of :data:`CATALOG_QUERY`.

    Args:
        relations: the relations.
        user_functions: (schema, name) of every function outside the system schemas.
        types: user type oid -> (category, typtype, element oid, base oid).
        search_path: effective search path (``current_schemas(true)``).
        set_returning: (schema, name) of the user functions that return a set; None when
            not known (then every user function may).
        user_operators: (schema, name) of every operator outside the system schemas.
        user_types: (schema, name) of every type a cast to which may run user code.
    """

    def __init__(self, relations: Iterable[Relation],
                 user_functions: Iterable[tuple[str, str]] = (),
                 types: dict[int, tuple[str, str, int, int]] | None = None,
                 search_path: Sequence[str] = ("pg_catalog", "public"),
                 set_returning: Iterable[tuple[str, str]] | None = None,
                 user_operators: Iterable[tuple[str, str]] = (),
                 user_types: Iterable[tuple[str, str]] = ()):
        self.relations = {r.oid: r for r in relations}
        self.search_path = tuple(search_path)
        self._by_name: dict[str, list[Relation]] = {}
        for r in self.relations.values():
            self._by_name.setdefault(r.name, []).append(r)
        rank = {s: i for i, s in enumerate(self.search_path)}
        for rels in self._by_name.values():
            # pg_temp is searched first for relations whatever the search_path says.
            rels.sort(key=lambda r: (0 if r.schema.startswith("pg_temp") else 1,
                                     rank.get(r.schema, len(rank)), r.schema))
        self.user_functions = {name for _, name in user_functions}
        self._user_functions_q = set(user_functions)
        self._set_returning = None if set_returning is None else set(set_returning)
        self.types = dict(types or {})
        self.user_operators = {name for _, name in user_operators}
        self.user_types = frozenset(user_types)
        self.identifiers = frozenset(
            {r.name for r in self.relations.values()}
            | {c for r in self.relations.values() for _, c, _ in r.columns}
            | {s for r in self.relations.values() for s in (r.schema,)})
        self.generation = 0

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str | None]]) -> SqlCatalog:
        """Build the catalog from the rows of :data:`CATALOG_QUERY` (text values).

        Args:
            rows: six-tuples as returned by the query, in text form (or psycopg values).

        Returns:
            A new catalog.
        """
        rels: dict[int, dict] = {}
        cols: dict[int, list[tuple[int, str, int]]] = {}
        funcs: list[tuple[str, str]] = []
        srfs: list[tuple[str, str]] = []
        types: dict[int, tuple[str, str, int, int]] = {}
        path: list[tuple[int, str]] = []
        ops: list[tuple[str, str]] = []
        tnames: list[tuple[str, str]] = []
        policies: dict[int, list[str]] = {}
        for kind, a, b, c, d, e in rows:
            if kind == "r":
                rels[int(a)] = {"schema": b, "name": c, "kind": d, "definition": e}
            elif kind == "a":
                cols.setdefault(int(a), []).append((int(b), c, int(d)))
            elif kind == "f":
                funcs.append((b, c))
                if d in ("true", "t", True):
                    srfs.append((b, c))
            elif kind == "t":
                types[int(a)] = (b, c, int(d), int(e))
            elif kind == "s":
                path.append((int(a), b))
            elif kind == "o":
                ops.append((b, c))
            elif kind == "y":
                tnames.append((b, c))
            elif kind == "l":
                policies.setdefault(int(a), []).extend(x for x in (c, d) if x)
        relations = []
        for oid, r in rels.items():
            columns = tuple(sorted(cols.get(oid, ())))
            relations.append(Relation(oid, r["schema"], r["name"], r["kind"], columns,
                                      r["definition"], tuple(policies.get(oid, ()))))
        return cls(relations, funcs, types, [s for _, s in sorted(path)], srfs, ops, tnames)

    def relation_by_oid(self, oid: int) -> Relation | None:
        return self.relations.get(oid)

    def resolve_relation(self, name: str, schema: str | None) -> list[Relation]:
        rels = self._by_name.get(name, [])
        if schema is not None:
            return [r for r in rels if r.schema == schema]
        return list(rels)

    def is_user_function(self, name: str, schema: str | None) -> bool:
        if schema is not None:
            return schema not in SYSTEM_SCHEMAS
        return name in self.user_functions

    def type_info(self, oid: int) -> tuple[str, str, int, int] | None:
        return self.types.get(oid)

    def is_user_operator(self, name: str, schema: str | None) -> bool:
        if schema is not None:
            return schema not in SYSTEM_SCHEMAS
        return name in self.user_operators

    def is_user_type(self, name: str, schema: str | None) -> bool:
        if schema is not None:
            return (schema, name) in self.user_types or schema not in SYSTEM_SCHEMAS
        return any(n == name for _, n in self.user_types)

    def may_return_set(self, name: str, schema: str | None) -> bool:
        if self._set_returning is None:
            return True
        if schema is not None:
            return (schema, name) in self._set_returning or (
                schema not in SYSTEM_SCHEMAS and (schema, name) not in self._user_functions_q)
        return any(n == name for _, n in self._set_returning)
