"""Issue 11, class 4: masked data in positions the lineage walk does not follow.

Every read runs as a non-exempt reader in the simple, extended, binary and pipeline modes
and must show no clear value; the same read as an exempt officer shows clear values (the
probe is real). Writes that move masked data into a clear column are read back through
the gateway. A hypothesis generator composes leaky shapes around a masked column.
"""

from __future__ import annotations

import pytest
from harness.attack import MODES, assert_leaks_clear, assert_no_leak, leaks
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("reset_victims")


# ``name`` is masked by its rule only (no detector recognises a person's name), so it shows
# what the walk misses; SSN- and card-shaped values are caught by the detectors as well.
READS = [
    pytest.param("SELECT mode() WITHIN GROUP (ORDER BY name) FROM users", id="mode"),
    pytest.param("SELECT id, mode() WITHIN GROUP (ORDER BY name) FROM users GROUP BY id",
                 id="mode-per-row"),
    pytest.param("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY name) FROM users",
                 id="percentile_disc"),
    pytest.param("SELECT percentile_disc(array[0, 0.3, 0.6, 1]) WITHIN GROUP "
                 "(ORDER BY name) FROM users", id="percentile_disc-array"),
    pytest.param("SELECT (SELECT mode() WITHIN GROUP (ORDER BY u.name)) FROM users u",
                 id="mode-subquery"),
    pytest.param("WITH t AS (SELECT id, percentile_disc(0) WITHIN GROUP (ORDER BY name) AS v "
                 "FROM users GROUP BY id) SELECT v FROM t", id="osa-cte"),
    pytest.param("SELECT id, mode() WITHIN GROUP (ORDER BY ssn) FROM users GROUP BY id",
                 id="mode-ssn-detected"),
    pytest.param("SELECT x.v FROM users u, XMLTABLE('/r' PASSING '<r/>' "
                 "COLUMNS v text PATH 'nothing' DEFAULT u.name) x", id="xmltable-default"),
    pytest.param("SELECT x.v FROM users u, XMLTABLE('/r' PASSING '<r/>' "
                 "COLUMNS v text PATH concat('string(\"', u.name, '\")')) x",
                 id="xmltable-path"),
    pytest.param("SELECT x.v FROM users u, XMLTABLE('/r' PASSING xmlelement(name r, u.name) "
                 "COLUMNS v text PATH '.') x", id="xmltable-passing"),
    pytest.param("SELECT x.* FROM users u, XMLTABLE(concat('/r[\"', u.name, '\" != \"\"]') "
                 "PASSING '<r>x</r>' COLUMNS v text PATH '.', o FOR ORDINALITY) x "
                 "WHERE u.id = 1", id="xmltable-row-control"),
    pytest.param("SELECT rank('M') WITHIN GROUP (ORDER BY name), "
                 "cume_dist('M') WITHIN GROUP (ORDER BY name) FROM users",
                 id="hypothetical-set"),
    pytest.param("SELECT o::text FROM (WITH RECURSIVE t(n, v) AS (SELECT 1, name FROM users "
                 "UNION ALL SELECT n + 1, v FROM t WHERE n < 2) SEARCH DEPTH FIRST BY v SET o "
                 "SELECT o FROM t) s", id="cte-search-column"),
    pytest.param("WITH RECURSIVE t(n, v) AS (SELECT 1, name FROM users UNION ALL "
                 "SELECT n + 1, v FROM t WHERE n < 2) CYCLE v SET c USING p "
                 "SELECT p::text FROM t", id="cte-cycle-path"),
    pytest.param("SELECT x.v FROM users u, XMLTABLE('/r' PASSING '<r/>' COLUMNS v text "
                 "PATH 'nothing' DEFAULT upper(u.name) || '') x", id="xmltable-default-expr"),
    pytest.param("SELECT * FROM users u, LATERAL jsonb_each_text(jsonb_build_object('k', "
                 "u.name)) WITH ORDINALITY e", id="srf-ordinality"),
    # Control shapes the walk follows today.
    pytest.param("SELECT min(ssn), string_agg(name, ',' ORDER BY name) FROM users",
                 id="plain-aggregates"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", READS)
def test_masked_value_in_an_unfollowed_position_is_not_clear(reader, needles, sql, mode):
    out = reader.run(sql, mode)
    assert_no_leak(out, needles)


# Probes whose clear result is not itself a masked value (a filter, a rank).
NOT_A_CLEAR_VALUE = {"xmltable-row-control", "hypothetical-set"}


@pytest.mark.parametrize("sql", [p.values[0] for p in READS if p.id not in NOT_A_CLEAR_VALUE])
def test_exempt_user_sees_clear_values_for_the_same_reads(officer, needles, sql):
    out = officer.run(sql)
    assert out.ok, out.texts[:2]
    assert_leaks_clear(out, needles)


@pytest.mark.parametrize("mode", MODES)
def test_json_table_column_definitions(reader, officer, needles, attack_db, mode):
    if int(attack_db.value("SHOW server_version_num")) < 170000:
        pytest.skip("JSON_TABLE needs PostgreSQL 17")
    sql = ("SELECT j.v FROM users u, JSON_TABLE(jsonb_build_object('k', u.ssn), '$' "
           "COLUMNS (v text PATH '$.k', w text PATH '$.none' DEFAULT u.name ON EMPTY)) j")
    assert_no_leak(reader.run(sql, mode), needles)
    assert_leaks_clear(officer.run(sql, mode), needles)


@pytest.mark.parametrize("mode", MODES)
def test_masked_value_in_tablesample_arguments_is_refused(reader, mode):
    out = reader.run("SELECT u.id, count(v.id) FROM users u, LATERAL (SELECT * FROM victims "
                     "TABLESAMPLE BERNOULLI (CASE WHEN substr(u.ssn, 1, 1) = '4' THEN 100 "
                     "ELSE 0 END)) v GROUP BY u.id", mode)
    assert out.sqlstate == "42501" and "ssn" in out.message, (out.rows[:3], out.texts[:2])


# --- writes: multi-column assignment ---------------------------------------------------------

WRITES = [
    pytest.param("UPDATE victims SET (label, id) = (SELECT u.name, victims.id FROM users u "
                 "WHERE u.id = victims.id) RETURNING label", id="update-subselect"),
    pytest.param("UPDATE victims v SET (label) = (SELECT name FROM users u WHERE u.id = v.id)",
                 id="update-one-column-subselect"),
    pytest.param("UPDATE victims v SET (label, id) = (u.name, v.id) FROM users u "
                 "WHERE u.id = v.id RETURNING v.label", id="update-row"),
    pytest.param("INSERT INTO victims AS v SELECT id, 'x' FROM users WHERE id <= 5 "
                 "ON CONFLICT (id) DO UPDATE SET (label, id) = (SELECT u.name, v.id "
                 "FROM users u WHERE u.id = v.id) RETURNING label", id="on-conflict"),
    pytest.param("MERGE INTO victims v USING users u ON u.id = v.id WHEN MATCHED THEN "
                 "UPDATE SET (label, id) = (u.name, v.id)", id="merge"),
    pytest.param("UPDATE victims v SET (id, label) = (SELECT v.id, u.name FROM users u "
                 "WHERE u.id = v.id)", id="update-subselect-second-column"),
    pytest.param("UPDATE victims v SET (id, label) = (v.id, u.name) FROM users u "
                 "WHERE u.id = v.id", id="update-row-second-column"),
    pytest.param("UPDATE victims v SET (id, label) = ROW(v.id, u.name) FROM users u "
                 "WHERE u.id = v.id", id="update-explicit-row"),
    pytest.param("INSERT INTO victims AS v SELECT id, 'x' FROM users WHERE id <= 5 "
                 "ON CONFLICT (id) DO UPDATE SET (id, label) = (SELECT v.id, u.name "
                 "FROM users u WHERE u.id = v.id)", id="on-conflict-second-column"),
    pytest.param("MERGE INTO victims v USING users u ON u.id = v.id WHEN MATCHED THEN "
                 "UPDATE SET (id, label) = (v.id, u.name)", id="merge-second-column"),
    pytest.param("UPDATE victims v SET (id, label) = (SELECT v.id, x FROM (SELECT name AS x "
                 "FROM users u WHERE u.id = v.id) s)", id="update-nested-subselect"),
    pytest.param("UPDATE victims v SET label = (SELECT name FROM users u WHERE u.id = v.id)",
                 id="control-single-assignment"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", [
    pytest.param(*p.values, id=p.id) for p in WRITES])
def test_multi_column_assignment_moves_no_masked_value_into_the_clear(
        writer, reader, needles, attack_db, sql, mode):
    out = writer.run(sql, mode)
    back = reader.run("SELECT id, label FROM victims ORDER BY id")
    assert back.ok
    stored = [label for (label,) in attack_db.query("SELECT label FROM victims")]
    assert_no_leak(out, needles)
    assert_no_leak(back, needles)
    if out.ok:  # Let through: then nothing masked may have been stored.
        assert not leaks(stored, needles), f"stored in clear: {stored}"
    else:
        assert out.sqlstate == "42501", out.texts[:2]


def test_the_write_probe_is_real(attack_db, needles):
    """The same multi-column UPDATE, run directly, stores names in clear."""
    attack_db.execute("UPDATE victims v SET (label, id) = (u.name, v.id) FROM users u "
                      "WHERE u.id = v.id")
    stored = [label for (label,) in attack_db.query("SELECT label FROM victims")]
    assert leaks(stored, needles)


# --- hypothesis: leaky shapes composed around a masked column ------------------------------

COLUMNS = ["ssn", "name", "card_number", "phone"]
SCALARS = ["{}", "upper({})", "lower({})", "reverse(reverse({}))", "({} || '')",
           "coalesce({}, '')", "substr({}, 1)", "btrim({})", "format('%s', {})",
           "left({}, 100)", "concat({}, '')", "({})::text", "CASE WHEN true THEN {} END",
           "nullif({}, '')", "greatest({}, '')"]
AGGREGATES = ["string_agg({}, ',')", "min({})", "max({})", "(array_agg({}))[1]",
              "array_agg({})::text", "json_agg({})::text"]
LEAKY_AGGREGATES = ["mode() WITHIN GROUP (ORDER BY {})",
                    "percentile_disc(0.5) WITHIN GROUP (ORDER BY {})",
                    "percentile_disc(0) WITHIN GROUP (ORDER BY {} DESC)"]
LAYERS = [
    "SELECT {f} AS c FROM ({q}) s",
    "WITH t AS ({q}) SELECT {f} AS c FROM t",
    "SELECT (SELECT {a} FROM ({q}) s) AS c",
    "SELECT {a} AS c FROM ({q}) s",
    "SELECT x.c FROM (SELECT 1) one, LATERAL ({q}) x",
    # NULL, not a constant: an aggregate above (min, max, percentile_disc … DESC) could pick
    # the constant and the probe would show no clear value to the exempt user either.
    "SELECT c FROM ({q}) s UNION ALL SELECT NULL",
    "SELECT c FROM ({q}) s ORDER BY 1",
    "SELECT DISTINCT c FROM ({q}) s",
]


def shapes(aggregates: list[str]):
    scalar = st.sampled_from(SCALARS)
    layer = st.tuples(st.sampled_from(LAYERS), scalar, st.sampled_from(aggregates))

    @st.composite
    def build(draw):
        col = draw(st.sampled_from(COLUMNS))
        sql = f"SELECT {draw(scalar).format(col)} AS c FROM users"
        for tmpl, f, a in draw(st.lists(layer, min_size=1, max_size=4)):
            sql = tmpl.format(q=sql, f=f.format("c"), a=a.format("c"))
        return sql
    return build()


SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(sql=shapes(AGGREGATES))
def test_generated_shapes_the_walk_follows_leak_nothing(reader, needles, sql):
    out = reader.run(sql)
    assert out.ok, (sql, out.texts[:2])
    assert_no_leak(out, needles)


@SETTINGS
@example(sql="SELECT (SELECT mode() WITHIN GROUP (ORDER BY c) FROM "
             "(SELECT upper(name) AS c FROM users) s) AS c")
@given(sql=shapes(AGGREGATES + LEAKY_AGGREGATES))
def test_generated_shapes_with_ordered_set_aggregates_leak_nothing(reader, needles, sql):
    out = reader.run(sql)
    assert_no_leak(out, needles)


@SETTINGS
@given(sql=shapes(AGGREGATES + LEAKY_AGGREGATES))
def test_generated_shapes_are_real_probes(officer, needles, sql):
    out = officer.run(sql)
    assert out.ok, (sql, out.texts[:2])
    assert_leaks_clear(out, needles)

