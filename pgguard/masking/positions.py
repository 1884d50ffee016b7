"""The position table: what each field of a parse node does with the data in it.

The lineage walk (:mod:`.lineage`) is driven by this table and fails closed on anything
it does not list. Each (node type, field) of the raw parse tree of a query has a role:

* ``value``: its data flows into the value of the node (an operand, an argument, a
  subquery's column, a window frame offset);
* ``predicate``: a pure filter or sort key (WHERE, JOIN ON, GROUP BY, HAVING, ORDER BY,
  DISTINCT, window PARTITION/ORDER, aggregate FILTER): one bit per row, refused on masked
  columns with ``deny_predicates``;
* ``rowcount``: it shapes how many rows come back (LIMIT/OFFSET, set-returning functions
  in FROM, TABLESAMPLE, XMLTABLE/JSON_TABLE): a masked column there is refused whatever
  ``deny_predicates`` says, since the client counts the rows;
* ``ignore``: it cannot carry table data (locations, flags, names, type names, typmods);
* ``walked``: query structure the planner follows with a dedicated rule (target lists,
  FROM items, subqueries, CTEs, column references); met anywhere else it is a value.

A field that is not in the table (a node type of a later PostgreSQL version, a new
clause) is *unclassified*: a masked column in it refuses the statement, any other
untraceable data in it taints every output column of its query level and of the levels
around it. ``tests/e2e/test_masking_positions.py`` walks pglast's node classes and fails on a
field the table does not classify, so a new version cannot open a hole silently.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VALUE = "value"
    PREDICATE = "predicate"
    ROWCOUNT = "rowcount"
    IGNORE = "ignore"
    WALKED = "walked"


V, P, R, X, W = Role.VALUE, Role.PREDICATE, Role.ROWCOUNT, Role.IGNORE, Role.WALKED


def _t(**fields: Role) -> dict[str, Role]:
    return fields


POSITIONS: dict[str, dict[str, Role]] = {
    # -- statements and their clauses --------------------------------------------------
    "SelectStmt": _t(
        distinctClause=P, intoClause=W, targetList=W, fromClause=W, whereClause=P,
        groupClause=P, groupDistinct=X, havingClause=P,
        # named windows: PARTITION/ORDER are predicates, frame offsets values of the level
        windowClause=W,
        valuesLists=W, sortClause=P, limitOffset=R, limitCount=R, limitOption=X,
        lockingClause=X, withClause=W, op=X, all=X, larg=W, rarg=W),
    "InsertStmt": _t(relation=W, cols=W, selectStmt=W, onConflictClause=W,
                     returningClause=W, withClause=W, override=X),
    "UpdateStmt": _t(relation=W, targetList=W, whereClause=P, fromClause=W,
                     returningClause=W, withClause=W),
    "DeleteStmt": _t(relation=W, usingClause=W, whereClause=P, returningClause=W,
                     withClause=W),
    "MergeStmt": _t(relation=W, sourceRelation=W, joinCondition=P, mergeWhenClauses=W,
                    returningClause=W, withClause=W),
    "MergeWhenClause": _t(matchKind=X, commandType=X, override=X, condition=P,
                          targetList=W, values=W),
    "OnConflictClause": _t(action=X, infer=P, targetList=W, whereClause=P, location=X),
    "InferClause": _t(indexElems=P, whereClause=P, conname=X, location=X),
    "IndexElem": _t(name=X, expr=V, indexcolname=X, collation=X, opclass=X, opclassopts=X,
                    ordering=X, nulls_ordering=X),
    "ReturningClause": _t(options=X, exprs=W),
    "ReturningOption": _t(option=X, value=X, location=X),
    "WithClause": _t(ctes=W, recursive=X, location=X),
    "CommonTableExpr": _t(
        ctename=X, aliascolnames=X, ctematerialized=X, ctequery=W,
        # SEARCH/CYCLE add columns computed from the listed columns (planner rule)
        search_clause=W, cycle_clause=W, location=X, cterecursive=X, cterefcount=X,
        ctecolnames=X, ctecoltypes=X, ctecoltypmods=X, ctecolcollations=X),
    "CTESearchClause": _t(search_col_list=W, search_breadth_first=X, search_seq_column=X,
                          location=X),
    "CTECycleClause": _t(cycle_col_list=W, cycle_mark_column=X, cycle_mark_value=V,
                         cycle_mark_default=V, cycle_path_column=X, location=X,
                         cycle_mark_typmod=X),
    "IntoClause": _t(rel=W, colNames=X, accessMethod=X, options=X, onCommit=X,
                     tableSpaceName=X, viewQuery=X, skipData=X),
    "LockingClause": _t(lockedRels=X, strength=X, waitPolicy=X),
    "ResTarget": _t(name=X, indirection=V, val=W, location=X),
    "MultiAssignRef": _t(source=W, colno=X, ncolumns=X),
    "SortBy": _t(node=W, sortby_dir=X, sortby_nulls=X, useOp=X, location=X),
    "WindowDef": _t(name=X, refname=X, partitionClause=P, orderClause=P, frameOptions=X,
                    startOffset=V, endOffset=V, location=X),
    "GroupingSet": _t(kind=X, content=V, location=X),
    # -- FROM items ----------------------------------------------------------------------
    "RangeVar": _t(catalogname=X, schemaname=X, relname=X, inh=X, relpersistence=X,
                   alias=X, location=X),
    "Alias": _t(aliasname=X, colnames=X),
    "RangeSubselect": _t(lateral=X, subquery=W, alias=X),
    # the calls are values of the columns and their arguments shape the row count
    "RangeFunction": _t(lateral=X, ordinality=X, is_rowsfrom=X, functions=W, alias=X,
                        coldeflist=X),
    "ColumnDef": _t(colname=X, typeName=X, compression=X, inhcount=X, is_local=X,
                    is_not_null=X, is_from_type=X, storage=X, storage_name=X,
                    raw_default=V, cooked_default=V, identity=X, identitySequence=X,
                    generated=X, collClause=X, constraints=V, fdwoptions=X, location=X),
    "RangeTableSample": _t(relation=W, method=X, args=R, repeatable=R, location=X),
    "RangeTableFunc": _t(lateral=X, docexpr=R, rowexpr=R, namespaces=R, columns=W,
                         alias=X, location=X),
    "RangeTableFuncCol": _t(colname=X, typeName=X, for_ordinality=X, is_not_null=X,
                            colexpr=R, coldefexpr=R, location=X),
    "JsonTable": _t(context_item=R, pathspec=R, passing=R, columns=W, on_error=R, alias=X,
                    lateral=X, location=X),
    "JsonTableColumn": _t(coltype=X, name=X, typeName=X, pathspec=R, format=X, wrapper=X,
                          quotes=X, columns=W, on_empty=R, on_error=R, location=X),
    "JsonTablePathSpec": _t(string=V, name=X, name_location=X, location=X),
    "JoinExpr": _t(jointype=X, isNatural=X, larg=W, rarg=W, usingClause=W,
                   join_using_alias=X, quals=P, alias=X, rtindex=X),
    # -- expressions ---------------------------------------------------------------------
    "ColumnRef": _t(fields=W, location=X),
    "ParamRef": _t(number=X, location=X),
    "A_Const": _t(isnull=X, val=X, ival=X, fval=X, boolval=X, sval=X, bsval=X, location=X),
    "A_Expr": _t(kind=X, name=X, lexpr=V, rexpr=V, rexpr_list_start=X, rexpr_list_end=X,
                 location=X),
    "BoolExpr": _t(boolop=X, args=V, location=X),
    "NullTest": _t(arg=V, nulltesttype=X, argisrow=X, location=X),
    "BooleanTest": _t(arg=V, booltesttype=X, location=X),
    "TypeCast": _t(arg=V, typeName=X, location=X),
    "TypeName": _t(names=X, setof=X, pct_type=X, typmods=X, typemod=X,
                   arrayBounds=X, location=X),
    "CollateClause": _t(arg=V, collname=X, location=X),
    # agg_order: the value of an ordered-set aggregate (WITHIN GROUP), a sort otherwise
    "FuncCall": _t(funcname=X, args=V, agg_order=W, agg_filter=P, over=W,
                   agg_within_group=X, agg_star=X, agg_distinct=X, func_variadic=X,
                   funcformat=X, location=X),
    "NamedArgExpr": _t(arg=V, name=X, argnumber=X, location=X),
    "A_Indices": _t(is_slice=X, lidx=V, uidx=V),
    "A_Indirection": _t(arg=V, indirection=V),
    "A_ArrayExpr": _t(elements=V, list_start=X, list_end=X, location=X),
    "A_Star": _t(),
    "SubLink": _t(subLinkType=X, subLinkId=X, testexpr=V, operName=X, subselect=W,
                  location=X),
    "CaseExpr": _t(arg=V, args=V, defresult=V, location=X),
    "CaseWhen": _t(expr=V, result=V, location=X),
    "CoalesceExpr": _t(args=V, location=X),
    "MinMaxExpr": _t(op=X, args=V,
                     location=X),
    "RowExpr": _t(args=V, row_format=X, colnames=X, location=X),
    "SQLValueFunction": _t(op=X, typmod=X, location=X),
    "XmlExpr": _t(op=X, name=X, named_args=V, arg_names=X, args=V, xmloption=X, indent=X,
                  typmod=X, location=X),
    "XmlSerialize": _t(xmloption=X, expr=V, typeName=X, indent=X, location=X),
    "GroupingFunc": _t(args=V, refs=X, agglevelsup=X, location=X),
    "SetToDefault": _t(typeMod=X, location=X),
    "CurrentOfExpr": _t(cvarno=X, cursor_name=X, cursor_param=X),
    "MergeSupportFunc": _t(msftype=X, msfcollid=X, location=X),
    "String": _t(sval=X),
    "Integer": _t(ival=X),
    "Float": _t(fval=X),
    "Boolean": _t(boolval=X),
    "BitString": _t(bsval=X),
    "List": _t(items=V),
    # -- SQL/JSON ------------------------------------------------------------------------
    "JsonFuncExpr": _t(op=X, column_name=X, context_item=V, pathspec=V, passing=V,
                       output=X, on_empty=V, on_error=V, wrapper=X, quotes=X, location=X),
    "JsonValueExpr": _t(raw_expr=V, formatted_expr=V, format=X),
    "JsonFormat": _t(format_type=X, encoding=X, location=X),
    "JsonReturning": _t(format=X, typmod=X),
    "JsonOutput": _t(typeName=X, returning=X),
    "JsonBehavior": _t(btype=X, expr=V, coerce=X, location=X),
    "JsonArgument": _t(val=V, name=X),
    "JsonObjectConstructor": _t(exprs=V, output=X, absent_on_null=X, unique=X, location=X),
    "JsonArrayConstructor": _t(exprs=V, output=X, absent_on_null=X, location=X),
    "JsonArrayQueryConstructor": _t(query=V, output=X, format=X, absent_on_null=X,
                                    location=X),
    "JsonAggConstructor": _t(output=X, agg_filter=P, agg_order=P, over=W, location=X),
    "JsonObjectAgg": _t(constructor=V, arg=V, absent_on_null=X, unique=X),
    "JsonArrayAgg": _t(constructor=V, arg=V, absent_on_null=X),
    "JsonKeyValue": _t(key=V, value=V),
    "JsonIsPredicate": _t(expr=V, format=X, item_type=X, unique_keys=X, location=X),
    "JsonParseExpr": _t(expr=V, output=X, unique_keys=X, location=X),
    "JsonScalarExpr": _t(expr=V, output=X, location=X),
    "JsonSerializeExpr": _t(expr=V, output=X, location=X),
}

# Fields that hold one node of a fixed type, which the JSON parse tree writes without its
# ``{"Type": …}`` wrapper (pglast's slot type ``Type*``): the walk needs the type to read
# them. A field holding such an unwrapped node that is not here is walked as unclassified.
TYPED_FIELDS: dict[tuple[str, str], str] = {
    ("CommonTableExpr", "cycle_clause"): "CTECycleClause",
    ("CommonTableExpr", "search_clause"): "CTESearchClause",
    ("DeleteStmt", "relation"): "RangeVar",
    ("DeleteStmt", "returningClause"): "ReturningClause",
    ("DeleteStmt", "withClause"): "WithClause",
    ("FuncCall", "over"): "WindowDef",
    ("InsertStmt", "onConflictClause"): "OnConflictClause",
    ("InsertStmt", "relation"): "RangeVar",
    ("InsertStmt", "returningClause"): "ReturningClause",
    ("InsertStmt", "withClause"): "WithClause",
    ("IntoClause", "rel"): "RangeVar",
    ("JsonAggConstructor", "over"): "WindowDef",
    ("JsonArgument", "val"): "JsonValueExpr",
    ("JsonArrayAgg", "arg"): "JsonValueExpr",
    ("JsonArrayAgg", "constructor"): "JsonAggConstructor",
    ("JsonFuncExpr", "context_item"): "JsonValueExpr",
    ("JsonFuncExpr", "on_empty"): "JsonBehavior",
    ("JsonFuncExpr", "on_error"): "JsonBehavior",
    ("JsonKeyValue", "value"): "JsonValueExpr",
    ("JsonObjectAgg", "arg"): "JsonKeyValue",
    ("JsonObjectAgg", "constructor"): "JsonAggConstructor",
    ("JsonParseExpr", "expr"): "JsonValueExpr",
    ("JsonSerializeExpr", "expr"): "JsonValueExpr",
    ("JsonTable", "context_item"): "JsonValueExpr",
    ("JsonTable", "on_error"): "JsonBehavior",
    ("JsonTable", "pathspec"): "JsonTablePathSpec",
    ("JsonTableColumn", "on_empty"): "JsonBehavior",
    ("JsonTableColumn", "on_error"): "JsonBehavior",
    ("JsonTableColumn", "pathspec"): "JsonTablePathSpec",
    ("MergeStmt", "relation"): "RangeVar",
    ("MergeStmt", "returningClause"): "ReturningClause",
    ("MergeStmt", "withClause"): "WithClause",
    ("OnConflictClause", "infer"): "InferClause",
    ("SelectStmt", "intoClause"): "IntoClause",
    ("SelectStmt", "larg"): "SelectStmt",
    ("SelectStmt", "rarg"): "SelectStmt",
    ("SelectStmt", "withClause"): "WithClause",
    ("UpdateStmt", "relation"): "RangeVar",
    ("UpdateStmt", "returningClause"): "ReturningClause",
    ("UpdateStmt", "withClause"): "WithClause",
}


def unclassified(kind: str, body: dict) -> list[str]:
    """The fields of a node *body* of type *kind* that the table does not classify."""
    known = POSITIONS.get(kind)
    if known is None:
        return list(body)
    return [k for k in body if k not in known]


def role(kind: str, field: str) -> Role | None:
    """The role of *field* of node type *kind*, or None when it is unclassified."""
    return POSITIONS.get(kind, {}).get(field)
