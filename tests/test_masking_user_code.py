"""User code with no function name in sight: user-defined operators, casts to user types
and domains, casts a user function implements, user aggregates. The catalog (not the
text) says which names users defined; the planner treats them as user functions: masked
operands are refused (the code may store them), other results are unproven."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from test_masking_fixtures import CFG, FIXTURE

from pgguard.masking import CATALOG_QUERY, MaskPlan, Refusal, SessionMasking, SqlCatalog

USER_CODE_SQL = """
CREATE TABLE loot (v text);
CREATE FUNCTION leak(t text) RETURNS text LANGUAGE sql
    AS 'INSERT INTO loot VALUES (t) RETURNING t';
CREATE FUNCTION leak2(a text, b text) RETURNS text LANGUAGE sql
    AS 'INSERT INTO loot VALUES (a || b) RETURNING a';
CREATE FUNCTION leak_check(t text) RETURNS boolean LANGUAGE sql
    AS 'INSERT INTO loot VALUES (t) RETURNING true';
CREATE OPERATOR ### (rightarg = text, function = leak);
CREATE OPERATOR %%% (leftarg = text, rightarg = text, function = leak2);
CREATE SCHEMA ops;
CREATE OPERATOR ops.=== (leftarg = text, rightarg = text, function = leak2);
CREATE FUNCTION leak_lt(a text, b text) RETURNS boolean LANGUAGE sql
    AS 'INSERT INTO loot VALUES (a) RETURNING a < b';
CREATE OPERATOR === (leftarg = text, rightarg = text, function = leak_lt);
CREATE OPERATOR = (leftarg = text, rightarg = text, function = leak_lt);
CREATE DOMAIN checked AS text CHECK (leak_check(VALUE));
CREATE TYPE wrapped AS (v checked);
CREATE TYPE feeling AS ENUM ('ok');
CREATE DOMAIN plain AS text;
CREATE TYPE boxed AS (v text);
CREATE FUNCTION unbox(boxed) RETURNS text LANGUAGE sql AS 'SELECT leak($1.v)';
CREATE CAST (boxed AS text) WITH FUNCTION unbox(boxed);
CREATE FUNCTION agg_step(s text, v text) RETURNS text LANGUAGE sql AS 'SELECT leak(v)';
CREATE AGGREGATE grab(text) (sfunc = agg_step, stype = text);
CREATE VIEW leaky AS SELECT id, leak(ssn) AS x FROM users;
CREATE VIEW leaky_op AS SELECT id, ### email AS x FROM users;
CREATE VIEW over_leaky AS SELECT id FROM leaky;
CREATE TABLE guarded (id int, email text);
CREATE POLICY snoop ON guarded USING (leak(email) IS NOT NULL);
ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
CREATE TABLE fenced (id int, email text);
CREATE POLICY own ON fenced USING (id > 0) WITH CHECK (id < 1000);
ALTER TABLE fenced ENABLE ROW LEVEL SECURITY;
"""


@pytest.fixture(scope="module")
def user_code_db(pg):
    name = f"user_code_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
            with open(FIXTURE) as f:
                conn.execute(f.read())
            conn.execute(USER_CODE_SQL)
        yield pg.dsn(name)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def catalog(user_code_db) -> SqlCatalog:
    with psycopg.connect(user_code_db) as conn:
        return SqlCatalog.from_rows(conn.execute(CATALOG_QUERY).fetchall())


@pytest.fixture()
def session(catalog) -> SessionMasking:
    return SessionMasking(CFG, ["analysts"], catalog, hash_key=b"unit-test-key")


def test_catalog_knows_row_level_security_policies(catalog):
    assert catalog.resolve_relation("guarded", None)[0].policies == (
        "(leak(email) IS NOT NULL)",)
    assert len(catalog.resolve_relation("fenced", None)[0].policies) == 2
    assert catalog.resolve_relation("users", None)[0].policies == ()


def test_catalog_knows_user_operators_and_types(catalog):
    assert catalog.is_user_operator("###", None) and catalog.is_user_operator("%%%", None)
    assert catalog.is_user_operator("===", None) and catalog.is_user_operator("+", "ops")
    assert not catalog.is_user_operator("+", None)
    assert not catalog.is_user_operator("||", "pg_catalog")
    assert catalog.is_user_type("checked", None) and catalog.is_user_type("checked", "public")
    assert catalog.is_user_type("wrapped", None)        # a composite with a checked field
    # no code runs when a value becomes a plain composite, an enum or an unchecked domain
    assert not any(catalog.is_user_type(t, None) for t in ("boxed", "feeling", "plain"))
    # text is the target of a cast a user function implements
    assert catalog.is_user_type("text", None) and catalog.is_user_type("text", "pg_catalog")
    assert not catalog.is_user_type("int4", "pg_catalog")


@pytest.mark.parametrize("sql", [
    "SELECT ### ssn FROM users",
    "SELECT ssn %%% 'x' FROM users",
    "SELECT 'x' %%% email FROM users",
    "SELECT ssn OPERATOR(ops.===) 'x' FROM users",
    "SELECT ssn === 'x' FROM users",
    "SELECT id FROM users WHERE ### ssn IS NOT NULL",
    "SELECT id FROM users ORDER BY ssn %%% 'x'",
    "SELECT id FROM users ORDER BY ssn USING ===",
    "SELECT row_number() OVER (ORDER BY email USING ===) FROM users",
    "SELECT string_agg(id::varchar, ',' ORDER BY ssn USING ===) FROM users",
    "SELECT CASE ssn WHEN 'a' THEN 1 END FROM users",
    "SELECT id FROM users WHERE ssn = ANY (SELECT body FROM notes)",
    "SELECT id FROM users WHERE ssn IN ('a', 'b')",
    "SELECT ssn::checked FROM users",
    "SELECT CAST(ssn AS public.checked) FROM users",
    "SELECT ROW(ssn)::wrapped FROM users",
    "SELECT ROW(ssn)::boxed::text FROM users",
    # a user function casts boxed to text: which cast runs is the server's choice, so a
    # cast to text may be user code in this database
    "SELECT ssn::text FROM users",
    "SELECT grab(ssn) FROM users",
    "SELECT (SELECT ### ssn FROM users LIMIT 1)",
    "SELECT x FROM (SELECT ### ssn AS x FROM users) s",
    "SELECT leak(ssn) FROM users",
    "SELECT public.leak(email) FROM users",
    # a view runs its code when it is read
    "SELECT x FROM leaky",
    "SELECT id FROM leaky",
    "SELECT * FROM leaky_op",
    "SELECT id FROM over_leaky",
    # a row-level security policy runs its code on every row read
    "SELECT id FROM guarded",
    "SELECT count(*) FROM guarded",
    "SELECT 1 FROM notes JOIN guarded g ON g.id = notes.id",
    "UPDATE notes SET body = ### body WHERE user_id IN (SELECT id FROM users "
    "WHERE ### ssn = 'a')",
])
def test_user_code_given_masked_data_is_refused(session, sql):
    plan = session.plan_result(sql)
    assert isinstance(plan, Refusal), plan
    assert plan.sqlstate == "42501" and (".users." in plan.reason
                                         or ".guarded.email" in plan.reason), plan.reason


@pytest.mark.parametrize("sql", [
    "SELECT ### 'x'",
    "SELECT 'a' %%% 'b'",
    "SELECT 'x'::checked",
    "SELECT ### body FROM notes",
    "SELECT grab(body) FROM notes",
])
def test_user_code_results_are_unproven(session, sql):
    plan = session.plan_result(sql)
    assert isinstance(plan, MaskPlan), plan
    assert plan.opaque and plan.columns[0].mask is not None
    assert "unproven" in plan.columns[0].mask.reason


@pytest.mark.parametrize("sql", [
    "SELECT ssn || 'x' FROM users",
    "SELECT ssn::varchar FROM users",
    "SELECT id + 1 FROM users",
    "SELECT id FROM users WHERE ssn LIKE '1%' AND id BETWEEN 1 AND 3",
    "SELECT id, email FROM fenced",
    "SELECT ssn::plain, 'ok'::feeling, ROW(ssn)::boxed FROM users",
])
def test_builtin_operators_and_casts_stay_traced(session, sql):
    plan = session.plan_result(sql)
    assert isinstance(plan, MaskPlan) and not plan.opaque, plan
