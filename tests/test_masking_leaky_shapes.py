"""Hypothesis composes leaky shapes around a masked column (functions, aggregates,
ordered-set aggregates, window frames, subqueries, CTEs, LATERAL, VALUES, ordinality,
set-returning functions, LIMIT/OFFSET, TABLESAMPLE, XMLTABLE) and checks the plan: every
output column that can carry the value is masked, and a count whose rows were generated
from it is refused. Pure: a hand-made catalog, no database."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgguard.config import MaskRule
from pgguard.masking.catalog import Relation, SqlCatalog
from pgguard.masking.lineage import Planner
from pgguard.masking.plan import MaskPlan, Refusal
from pgguard.masking.rules import RuleSet
from pgguard.sql.parse import parse

TEXT, INT = 25, 23
CATALOG = SqlCatalog([
    Relation(1, "public", "users", "r", ((1, "id", INT), (2, "name", TEXT), (3, "ssn", TEXT),
                                         (4, "email", TEXT))),
    Relation(2, "public", "notes", "r", ((1, "id", INT), (2, "user_id", INT),
                                         (3, "body", TEXT))),
], search_path=("pg_catalog", "public"), set_returning=())
RULES = RuleSet([MaskRule(columns=("users.ssn",), strategy="partial", keep=4),
                 MaskRule(columns=("users.email",), strategy="hash"),
                 MaskRule(columns=("users.name",), strategy="null")])

COLUMNS = ["ssn", "email", "name"]
SCALARS = ["{}", "upper({})", "({})::text", "coalesce({}, '')", "substr({}, 1)",
           "CASE WHEN true THEN {} END", "format('%s', {})", "({} || '')", "nullif({}, '')",
           "(ARRAY[{}])[1]", "ROW({})::text", "xmlelement(name x, {})::text",
           "json_build_object('k', {})::text", "({} COLLATE \"C\")", "reverse(reverse({}))"]
AGGREGATES = ["min({})", "string_agg({}, ',')", "mode() WITHIN GROUP (ORDER BY {})",
              "percentile_disc(0.5) WITHIN GROUP (ORDER BY {})", "(array_agg({}))[1]",
              "json_agg({})::text", "max({}) OVER ()",
              "first_value({}) OVER (ORDER BY 1 ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
              "jsonb_agg({} ORDER BY 1)::text"]
# Layers that carry the value on in column c.
VALUE_LAYERS = [
    "SELECT {f} AS c FROM ({q}) s",
    "WITH t AS ({q}) SELECT {f} AS c FROM t",
    "WITH t AS MATERIALIZED ({q}) SELECT {a} AS c FROM t",
    "SELECT (SELECT {a} FROM ({q}) s) AS c",
    "SELECT {a} AS c FROM ({q}) s",
    "SELECT x.c FROM (SELECT 1) one, LATERAL ({q}) x",
    "SELECT c FROM ({q}) s UNION ALL SELECT 'x'",
    "SELECT DISTINCT c FROM ({q}) s",
    "SELECT c FROM ({q}) s ORDER BY 1 LIMIT 3 OFFSET 1",
    "SELECT * FROM ({q}) s(c)",
    "SELECT s.c FROM ({q}) s JOIN notes n ON n.id = 1",
    "SELECT v.c FROM ({q}) s, LATERAL (VALUES (s.c)) v(c)",
    "SELECT (SELECT c FROM ({q}) s LIMIT 1) AS c",
    "SELECT ARRAY(SELECT c FROM ({q}) s)::text AS c",
    "SELECT c FROM ({q}) s WHERE c IS NOT NULL",
    "SELECT c FROM ({q}) s GROUP BY c HAVING count(*) > 0",
]
# Layers whose column c is a count of rows generated from the value: must be refused.
ROWCOUNT_LAYERS = [
    "SELECT count(*) AS c FROM ({q}) s, LATERAL generate_series(1, ascii(s.c)) g",
    "SELECT (SELECT count(*) FROM generate_series(1, ascii(s.c))) AS c FROM ({q}) s",
    "SELECT count(*) AS c FROM (SELECT 1 FROM notes LIMIT (SELECT ascii(c) FROM ({q}) s "
    "LIMIT 1)) z",
    "SELECT max(o) AS c FROM ({q}) s, LATERAL unnest(string_to_array(s.c, '')) "
    "WITH ORDINALITY u(x, o)",
    "SELECT count(*) AS c FROM ({q}) s, LATERAL regexp_matches(s.c, '.', 'g') m",
    "SELECT count(*) AS c FROM ({q}) s, LATERAL (SELECT 1 FROM notes OFFSET ascii(s.c)) z",
    "SELECT count(*) AS c FROM ({q}) s, LATERAL (SELECT * FROM notes TABLESAMPLE "
    "BERNOULLI (ascii(s.c))) z",
    "SELECT count(*) AS c FROM ({q}) s, XMLTABLE('/r/x' PASSING xmlparse(document s.c) "
    "COLUMNS v text PATH '.') x",
    "SELECT count(g) AS c FROM ({q}) s, ROWS FROM (generate_series(1, length(s.c))) g",
    "SELECT count(*) AS c FROM (SELECT generate_series(1, ascii(c)) FROM ({q}) s) z",
    "SELECT count(*) AS c FROM ({q}) s, LATERAL string_to_table(s.c, '-') t",
    "SELECT count(*) AS c FROM ({q}) s, LATERAL (SELECT 1 FROM notes FETCH FIRST "
    "ascii(s.c) ROWS ONLY) z",
]


@st.composite
def shapes(draw, rowcount: bool):
    col = draw(st.sampled_from(COLUMNS))
    sql = f"SELECT {draw(st.sampled_from(SCALARS)).format(col)} AS c FROM users"
    layer = st.tuples(st.sampled_from(VALUE_LAYERS), st.sampled_from(SCALARS),
                      st.sampled_from(AGGREGATES))
    for tmpl, f, a in draw(st.lists(layer, min_size=0 if rowcount else 1, max_size=4)):
        sql = tmpl.format(q=sql, f=f.format("c"), a=a.format("c"))
    if rowcount:
        sql = draw(st.sampled_from(ROWCOUNT_LAYERS)).format(q=sql)
        for tmpl in draw(st.lists(st.sampled_from(VALUE_LAYERS[:8]), max_size=2)):
            sql = tmpl.format(q=sql, f="c", a="max(c)")
    return sql


SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def plan(sql: str, rules: RuleSet = RULES, deny_predicates: bool = False):
    return Planner(CATALOG, rules, deny_predicates=deny_predicates).plan_stmt(
        parse(sql).statements[0].node)


@SETTINGS
@given(sql=shapes(rowcount=False))
def test_every_column_that_can_carry_the_value_is_masked(sql):
    p = plan(sql)
    if isinstance(p, Refusal):
        return
    assert p.columns, (sql, p)
    assert all(c.mask is not None for c in p.columns), (sql, p.columns)
    # an exempt user (no rules) gets the same statement in clear
    clear = plan(sql, RuleSet([]))
    assert isinstance(clear, MaskPlan) and clear.masks_nothing, (sql, clear)


@SETTINGS
@given(sql=shapes(rowcount=True), deny=st.booleans())
def test_counts_of_rows_generated_from_the_value_are_refused(sql, deny):
    p = plan(sql, deny_predicates=deny)
    assert isinstance(p, Refusal), (sql, p)
    assert "masked column public.users." in p.reason and "number of rows" in p.reason, p.reason
    assert p.sqlstate == "42501"
    clear = plan(sql, RuleSet([]))
    assert isinstance(clear, MaskPlan) and clear.masks_nothing, (sql, clear)


def test_a_count_of_rows_filtered_by_a_masked_predicate_is_the_predicate_channel():
    sql = "SELECT count(*) FROM users WHERE ssn LIKE '1%'"
    p = plan(sql)
    assert isinstance(p, MaskPlan) and p.masks_nothing and p.tainted
    assert isinstance(plan(sql, deny_predicates=True), Refusal)
