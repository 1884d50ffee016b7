"""The position table covers every field of every parse node a query can hold (pure: no
sockets), so that the next PostgreSQL version cannot open a hole in the lineage walk
silently; and the builtin set-returning functions are those of the server."""

from __future__ import annotations

import inspect
import json

import pglast.ast
import psycopg
import pytest
from pglast.parser import parse_sql_json

from pgguard.masking.plan import SET_RETURNING_FUNCTIONS
from pgguard.masking.positions import POSITIONS, TYPED_FIELDS, Role

# Node types that cannot occur in the raw parse tree of SELECT, VALUES, INSERT, UPDATE,
# DELETE or MERGE: other statements, DDL pieces, and the nodes of analysed queries and
# plans (the gateway only ever walks raw parse trees). A new pglast node type must go
# either here or into POSITIONS, by a decision.
NOT_IN_QUERIES = frozenset({
    # statements other than the five the lineage walk plans as queries
    "AlterCollationStmt", "AlterDatabaseRefreshCollStmt", "AlterDatabaseSetStmt",
    "AlterDatabaseStmt", "AlterDefaultPrivilegesStmt", "AlterDomainStmt", "AlterEnumStmt",
    "AlterEventTrigStmt", "AlterExtensionContentsStmt", "AlterExtensionStmt",
    "AlterFdwStmt", "AlterForeignServerStmt", "AlterFunctionStmt", "AlterObjectDependsStmt",
    "AlterObjectSchemaStmt", "AlterOpFamilyStmt", "AlterOperatorStmt", "AlterOwnerStmt",
    "AlterPolicyStmt", "AlterPublicationStmt", "AlterRoleSetStmt", "AlterRoleStmt",
    "AlterSeqStmt", "AlterStatsStmt", "AlterSubscriptionStmt", "AlterSystemStmt",
    "AlterTSConfigurationStmt", "AlterTSDictionaryStmt", "AlterTableMoveAllStmt",
    "AlterTableSpaceOptionsStmt", "AlterTableStmt", "AlterTypeStmt", "AlterUserMappingStmt",
    "CallStmt", "CheckPointStmt", "ClosePortalStmt", "ClusterStmt", "CommentStmt",
    "CompositeTypeStmt", "ConstraintsSetStmt", "CopyStmt", "CreateAmStmt", "CreateCastStmt",
    "CreateConversionStmt", "CreateDomainStmt", "CreateEnumStmt", "CreateEventTrigStmt",
    "CreateExtensionStmt", "CreateFdwStmt", "CreateForeignServerStmt",
    "CreateForeignTableStmt", "CreateFunctionStmt", "CreateOpClassStmt",
    "CreateOpFamilyStmt", "CreatePLangStmt", "CreatePolicyStmt", "CreatePublicationStmt",
    "CreateRangeStmt", "CreateRoleStmt", "CreateSchemaStmt", "CreateSeqStmt",
    "CreateStatsStmt", "CreateStmt", "CreateSubscriptionStmt", "CreateTableAsStmt",
    "CreateTableSpaceStmt", "CreateTransformStmt", "CreateTrigStmt",
    "CreateUserMappingStmt", "CreatedbStmt", "DeallocateStmt", "DeclareCursorStmt",
    "DefineStmt", "DiscardStmt", "DoStmt", "DropOwnedStmt", "DropRoleStmt", "DropStmt",
    "DropSubscriptionStmt", "DropTableSpaceStmt", "DropUserMappingStmt", "DropdbStmt",
    "ExecuteStmt", "ExplainStmt", "FetchStmt", "GrantRoleStmt", "GrantStmt",
    "ImportForeignSchemaStmt", "IndexStmt", "ListenStmt", "LoadStmt", "LockStmt",
    "NotifyStmt", "PLAssignStmt", "PrepareStmt", "RawStmt", "ReassignOwnedStmt",
    "RefreshMatViewStmt", "ReindexStmt", "RenameStmt", "ReplicaIdentityStmt", "ReturnStmt",
    "RuleStmt", "SecLabelStmt", "SetOperationStmt", "TransactionStmt", "TruncateStmt",
    "UnlistenStmt", "VacuumStmt", "VariableSetStmt", "VariableShowStmt", "ViewStmt",
    # pieces of DDL, GRANT, utility options and procedural code
    "ATAlterConstraint", "AccessPriv", "AlterTableCmd", "CallContext", "Constraint",
    "CreateOpClassItem", "DefElem", "FunctionParameter", "InlineCodeBlock",
    "ObjectWithArgs", "PartitionBoundSpec", "PartitionCmd", "PartitionElem",
    "PartitionRangeDatum", "PartitionSpec", "PublicationObjSpec", "PublicationTable",
    "RoleSpec", "StatsElem", "TableLikeClause", "TriggerTransition", "VacuumRelation",
    # analysed queries, expressions and plans (never produced by the raw parser)
    "Aggref", "AlternativeSubPlan", "ArrayCoerceExpr", "ArrayExpr", "CaseTestExpr",
    "CoerceToDomain", "CoerceToDomainValue", "CoerceViaIO", "CollateExpr",
    "ConvertRowtypeExpr", "Expr", "FieldSelect", "FieldStore", "FromExpr", "FuncExpr",
    "InferenceElem", "JsonConstructorExpr", "JsonExpr", "MergeAction", "OnConflictExpr",
    "OpExpr", "Param", "Query", "RTEPermissionInfo", "RangeTblEntry", "RangeTblFunction",
    "RangeTblRef", "RelabelType", "ReturningExpr", "RowCompareExpr", "RowMarkClause",
    "ScalarArrayOpExpr", "SortGroupClause", "SubPlan", "SubscriptingRef", "TableFunc",
    "TableSampleClause", "TargetEntry", "ValUnion", "Var", "WindowClause", "WindowFunc",
    "WindowFuncRunCondition", "WithCheckOption",
})
# Entries of the table that pglast has no class or slot for: the JSON ``List`` node,
# A_Const's value keys (pglast folds them into one ``val`` slot), and type OIDs the parser
# already sets (pglast leaves OID fields out of its slots).
JSON_ONLY = {"List": {"items"}, "A_Const": {"ival", "fval", "boolval", "sval", "bsval",
                                            "location"},
             "MergeSupportFunc": {"msftype", "msfcollid"}}


def node_classes() -> dict[str, type]:
    return {c.__name__: c for c in vars(pglast.ast).values()
            if inspect.isclass(c) and issubclass(c, pglast.ast.Node)
            and c is not pglast.ast.Node}


def slots(cls: type) -> dict:
    s = cls.__slots__
    return s if isinstance(s, dict) else {k: None for k in s}


def test_every_node_type_is_classified_or_cannot_occur_in_a_query():
    classes = node_classes()
    unknown = sorted(set(classes) - set(POSITIONS) - NOT_IN_QUERIES)
    assert not unknown, f"classify these node types (POSITIONS or NOT_IN_QUERIES): {unknown}"
    both = sorted(set(POSITIONS) & NOT_IN_QUERIES)
    assert not both, both
    stale = sorted(set(POSITIONS) - set(classes) - set(JSON_ONLY))
    assert not stale, f"table entries pglast does not know: {stale}"


@pytest.mark.parametrize("kind", sorted(set(POSITIONS) - set(JSON_ONLY) - {"A_Const"}))
def test_every_field_of_a_classified_node_type_has_a_role(kind):
    cls = node_classes()[kind]
    missing = sorted(set(slots(cls)) - set(POSITIONS[kind]))
    assert not missing, f"{kind}: fields without a role: {missing}"
    extra = sorted(set(POSITIONS[kind]) - set(slots(cls)) - JSON_ONLY.get(kind, set()))
    assert not extra, extra
    assert all(isinstance(r, Role) for r in POSITIONS[kind].values())


def test_unwrapped_typed_fields_are_known():
    # A field of a fixed node type is written without its {"Type": …} wrapper: the walk
    # reads it through TYPED_FIELDS, so every such field that is not ignored must be there.
    classes = node_classes()
    want = {}
    for kind, fields in POSITIONS.items():
        cls = classes.get(kind)
        if cls is None:
            continue
        for name, info in slots(cls).items():
            ctype = getattr(info, "c_type", "")
            target = ctype[:-1]
            if ctype.endswith("*") and target in classes and target not in ("Node", "Expr") \
                    and fields.get(name) is not Role.IGNORE:
                want[(kind, name)] = target
    assert want == TYPED_FIELDS


# Statements exercising every clause of the five query statements: the JSON the parser
# writes has no node type or field outside the table.
CORPUS = [
    "WITH RECURSIVE t(a) AS MATERIALIZED (SELECT 1 UNION ALL SELECT a + 1 FROM t WHERE a < 3)"
    " SEARCH BREADTH FIRST BY a SET o CYCLE a SET c TO true DEFAULT false USING p "
    "SELECT DISTINCT ON (a) a, o, count(*) FILTER (WHERE a > 1) OVER w, "
    "mode() WITHIN GROUP (ORDER BY a DESC NULLS LAST), GROUPING(a), "
    "row_number() OVER (PARTITION BY a ORDER BY a RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) "
    "FROM t TABLESAMPLE BERNOULLI (50) REPEATABLE (1) "
    "WHERE a IN (SELECT 1) AND EXISTS (SELECT 1) AND a = ANY (ARRAY[1]) AND a IS NOT NULL "
    "AND (a > 0) IS TRUE AND a BETWEEN 1 AND 2 "
    "GROUP BY GROUPING SETS ((a), ROLLUP (a), CUBE (a), ()) HAVING count(*) > 0 "
    "WINDOW w AS (ORDER BY a ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) "
    "ORDER BY 1 USING < LIMIT 1 OFFSET 0 FOR UPDATE OF t SKIP LOCKED",
    "SELECT x.*, j.*, f.*, s.* FROM (VALUES (1, 'a')) x(a, b) "
    "JOIN LATERAL XMLTABLE(XMLNAMESPACES('http://x' AS n), '/r' PASSING '<r/>' "
    "COLUMNS v text PATH 'v' DEFAULT 'd' NOT NULL, o FOR ORDINALITY) j ON true "
    "NATURAL LEFT JOIN ROWS FROM (generate_series(1, 2), json_to_recordset('[]') "
    "AS (k int)) WITH ORDINALITY f(a, b, c) "
    "JOIN (SELECT 1 a) s USING (a) AS ua",
    "SELECT JSON_OBJECT('a': 1 RETURNING jsonb), JSON_ARRAY(1, 2 ABSENT ON NULL), "
    "JSON_ARRAY(SELECT 1), JSON_OBJECTAGG(k VALUE v), JSON_ARRAYAGG(v ORDER BY v), "
    "JSON_QUERY(jsonb '{}', '$.a' PASSING 1 AS x WITH WRAPPER ERROR ON ERROR), "
    "JSON_VALUE(jsonb '{}', '$' DEFAULT 1 ON EMPTY), JSON_EXISTS(jsonb '{}', '$'), "
    "JSON('{}' WITH UNIQUE KEYS), JSON_SCALAR(1), JSON_SERIALIZE('{}' RETURNING text), "
    "'{}' IS JSON OBJECT WITH UNIQUE KEYS, "
    "jt.* FROM (VALUES ('a', 1)) AS t(k, v), JSON_TABLE(jsonb '[]', '$[*]' AS p "
    "PASSING 1 AS x COLUMNS (i FOR ORDINALITY, a int PATH '$.a' DEFAULT 1 ON EMPTY, "
    "b jsonb FORMAT JSON PATH '$.b' WITH WRAPPER, e bool EXISTS PATH '$.e', "
    "NESTED PATH '$.n[*]' AS q COLUMNS (c text PATH '$')) ERROR ON ERROR) jt",
    "SELECT CASE WHEN a THEN 1 ELSE 2 END, CASE a WHEN 1 THEN 2 END, coalesce(a, b), "
    "greatest(a, b), nullif(a, b), a::int, CAST(a AS varchar(3)), a COLLATE \"C\", "
    "(a).b, a[1], a[1:2], (a).*, ROW(a, b), xmlelement(name x, xmlattributes(a AS b), a), "
    "xmlserialize(content a AS text), xmlforest(a), xmlpi(name x, 'y'), "
    "current_date, current_user, $1, f(a => 1, VARIADIC ARRAY[1]), count(DISTINCT a), "
    "count(*), a IS DISTINCT FROM b, a IS DOCUMENT, B'101', 1.5, true, NULL "
    "FROM t",
    "INSERT INTO t AS x (a, b[1], c.d) OVERRIDING SYSTEM VALUE VALUES (1, DEFAULT, 2) "
    "ON CONFLICT (a COLLATE \"C\" text_ops, (lower(b))) WHERE a > 0 DO UPDATE "
    "SET (a, b) = (SELECT 1, 2), c = excluded.c WHERE x.a > 0 RETURNING *",
    "INSERT INTO t SELECT 1 ON CONFLICT ON CONSTRAINT k DO NOTHING RETURNING a",
    "WITH d AS (DELETE FROM u RETURNING *) UPDATE ONLY t SET a[1] = 1, (b, c) = ROW(1, 2) "
    "FROM d WHERE t.a = d.a RETURNING t.*",
    "UPDATE t SET a = 1 WHERE CURRENT OF c",
    "DELETE FROM t USING u WHERE t.a = u.a RETURNING t.a",
    "MERGE INTO t USING (SELECT 1 a) s ON t.a = s.a "
    "WHEN MATCHED AND t.a > 0 THEN UPDATE SET a = s.a, (b, c) = (1, 2) "
    "WHEN NOT MATCHED BY SOURCE THEN DELETE "
    "WHEN NOT MATCHED THEN INSERT (a) OVERRIDING USER VALUE VALUES (s.a) "
    "WHEN MATCHED THEN DO NOTHING RETURNING merge_action(), t.*",
    "SELECT a FROM t ORDER BY a FETCH FIRST 2 ROWS WITH TIES",
    "VALUES (1, 2), (3, 4) ORDER BY 1 LIMIT ALL",
    "SELECT 1 UNION ALL SELECT 2 INTERSECT SELECT 3 EXCEPT DISTINCT SELECT 4",
    "SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.a = t.a) s, unnest(t.a) WITH "
    "ORDINALITY",
    "SELECT a INTO TEMP x FROM t",
]


def walk(v, kind: str | None = None, field: str | None = None, out=None):
    """(node type, field) pairs of a JSON parse tree that the table does not classify."""
    out = [] if out is None else out
    if isinstance(v, list):
        for x in v:
            walk(x, kind, field, out)
    elif isinstance(v, dict):
        if len(v) == 1 and next(iter(v))[:1].isupper():
            (k, body), = v.items()
            if k not in POSITIONS:
                out.append((k, None))
                return out
            for f, x in body.items():
                if f not in POSITIONS[k]:
                    out.append((k, f))
                elif POSITIONS[k][f] is not Role.IGNORE:   # the planner skips them too
                    walk(x, k, f, out)
        elif v:
            typed = TYPED_FIELDS.get((kind, field))
            if typed is None:
                out.append((f"{kind}.{field}", "unwrapped node of unknown type"))
                return out
            walk({typed: v}, out=out)
    return out


@pytest.mark.parametrize("sql", CORPUS, ids=[s[:40] for s in CORPUS])
def test_parse_trees_of_queries_hold_only_classified_positions(sql):
    stmts = json.loads(parse_sql_json(sql))["stmts"]
    for s in stmts:
        kind, body = next(iter(s["stmt"].items()))
        assert kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")
        assert walk(s["stmt"]) == []


def test_the_walk_of_the_test_sees_unclassified_fields():
    tree = {"SelectStmt": {"targetList": [], "newClause": {"ColumnRef": {"fields": []}}}}
    assert walk(tree) == [("SelectStmt", "newClause")]
    assert walk({"NewNode": {}}) == [("NewNode", None)]


def test_builtin_set_returning_functions_are_those_of_the_server(pg):
    with psycopg.connect(pg.dsn()) as conn:
        rows = conn.execute(
            "SELECT DISTINCT proname FROM pg_proc WHERE proretset "
            "AND pronamespace IN ('pg_catalog'::regnamespace)").fetchall()
    missing = sorted({r[0] for r in rows} - SET_RETURNING_FUNCTIONS)
    assert not missing, f"set-returning builtins missing from SET_RETURNING_FUNCTIONS: {missing}"
