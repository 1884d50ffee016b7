"""Issue 11, class 5: values carried by row counts.

Masked data in a set-returning function's arguments, LIMIT/OFFSET or a row source makes
the number of rows equal a character code: ``count(*)``, ``WITH ORDINALITY`` or the
rows themselves give the whole value back in one statement (with ``deny_predicates`` too).
Expected: refused (42501, naming the masked column), or nothing to reconstruct the value
from. The exempt officer reconstructs clear values with the same statements.
"""

from __future__ import annotations

import re

import pytest
from harness.attack import MODES, OFFICER, READER, leaks

# Each gives rows (user id, position, character code) for every character of ``name`` (or
# ``ssn``); positions come from a clean series, past the end the code is 0 or no row.
WHOLE_VALUE = {
    "lateral-count": (
        "SELECT u.id, i, count(g) FROM users u, generate_series(1, 30) i, "
        "LATERAL generate_series(1, ascii(substr(u.name, i, 1))) g GROUP BY 1, 2"),
    "scalar-count": (
        "SELECT u.id, i, (SELECT count(*) FROM generate_series(1, ascii(substr(u.name, i, 1))))"
        " FROM users u, generate_series(1, 30) i"),
    "ordinality": (
        "SELECT u.id, i, max(o) FROM users u, generate_series(1, 30) i, "
        "LATERAL generate_series(1, ascii(substr(u.name, i, 1))) WITH ORDINALITY AS g(v, o) "
        "GROUP BY 1, 2"),
    "limit": (
        "SELECT u.id, i, (SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 1000) "
        "LIMIT ascii(substr(u.name, i, 1))) s) FROM users u, generate_series(1, 30) i"),
    "offset": (
        "SELECT u.id, i, 1000 - (SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 1000) "
        "OFFSET ascii(substr(u.name, i, 1))) s) FROM users u, "
        "generate_series(1, 30) i"),
    "fetch-first": (
        "SELECT u.id, i, (SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 1000) "
        "FETCH FIRST ascii(substr(u.ssn, i, 1)) ROWS ONLY) s) FROM users u, "
        "generate_series(1, 30) i"),
    "rows-themselves": (
        "SELECT u.id, i, g FROM users u, generate_series(1, 30) i, "
        "LATERAL generate_series(1, ascii(substr(u.ssn, i, 1))) g"),
    # more of the class: other row sources and set-returning positions
    "target-list-srf": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, "
        "LATERAL (SELECT generate_series(1, ascii(substr(u.name, i, 1)))) g GROUP BY 1, 2"),
    "rows-from": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, "
        "ROWS FROM (generate_series(1, ascii(substr(u.name, i, 1)))) g GROUP BY 1, 2"),
    "unnest": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, LATERAL "
        "unnest(array_fill(0, ARRAY[ascii(substr(u.name, i, 1))])) x GROUP BY 1, 2"),
    "string_to_table": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, LATERAL "
        "string_to_table(repeat('x', ascii(substr(u.name, i, 1))), NULL) t GROUP BY 1, 2"),
    "regexp_matches": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, LATERAL "
        "regexp_matches(repeat('x', ascii(substr(u.name, i, 1))), 'x', 'g') m GROUP BY 1, 2"),
    "xmltable-rows": (
        "SELECT u.id, i, count(*) FROM users u, generate_series(1, 30) i, XMLTABLE('/r/x' "
        "PASSING xmlparse(document '<r>' || repeat('<x/>', ascii(substr(u.name, i, 1))) "
        "|| '</r>') COLUMNS v text PATH '.') x GROUP BY 1, 2"),
    "cte-limit": (
        "WITH s AS (SELECT 1 FROM generate_series(1, 1000)) SELECT u.id, i, (SELECT count(*) "
        "FROM (SELECT * FROM s LIMIT ascii(substr(u.name, i, 1))) z) FROM users u, "
        "generate_series(1, 30) i"),
    "array-of-srf": (
        "SELECT u.id, i, cardinality(ARRAY(SELECT generate_series(1, "
        "ascii(substr(u.name, i, 1))))) FROM users u, generate_series(1, 30) i"),
    "window-frame": (
        "SELECT u.id, i, (SELECT max(c) - 1 FROM (SELECT count(*) OVER (ROWS BETWEEN "
        "ascii(substr(u.name, i, 1)) PRECEDING AND CURRENT ROW) AS c "
        "FROM generate_series(1, 1000)) w) FROM users u, generate_series(1, 30) i"),
}


def reconstruct(rows: list) -> list[str]:
    """Strings rebuilt from (id, position, code) rows: for each id, chr(code) at each
    position; when the code column is withheld (NULL), the number of rows is the code."""
    codes: dict = {}
    for uid, pos, code in rows:
        by_pos = codes.setdefault(uid, {})
        by_pos[pos] = by_pos.get(pos, 0) + 1 if code is None else int(code)
    out = []
    for by_pos in codes.values():
        try:
            out.append("".join(chr(by_pos[p]) for p in sorted(by_pos) if by_pos[p]))
        except (ValueError, OverflowError):
            pass
    return out


def _check_refused_or_useless(out, needles, column: str) -> None:
    rebuilt = reconstruct(out.rows) if out.ok else []
    found = leaks(rebuilt, needles)
    assert not found, f"rebuilt from row counts: {found[:3]}"
    if not out.ok:
        assert out.sqlstate == "42501" and column in out.message, out.texts[:2]


@pytest.fixture(scope="module")
def strict_reader(make_attack_gateway, client_factory):
    """A reader on a gateway with masking.deny_predicates = true."""
    return client_factory(READER, gw=make_attack_gateway(deny_predicates=True))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", WHOLE_VALUE)
def test_whole_value_from_row_counts(reader, needles, shape, mode):
    sql = WHOLE_VALUE[shape]
    _check_refused_or_useless(reader.run(sql, mode), needles,
                              "ssn" if "u.ssn" in sql else "name")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", WHOLE_VALUE)
def test_whole_value_from_row_counts_with_deny_predicates(strict_reader, needles, shape, mode):
    sql = WHOLE_VALUE[shape]
    _check_refused_or_useless(strict_reader.run(sql, mode), needles,
                              "ssn" if "u.ssn" in sql else "name")


@pytest.mark.parametrize("shape", WHOLE_VALUE)
def test_the_row_count_probes_are_real(officer, needles, shape):
    out = officer.run(WHOLE_VALUE[shape])
    assert out.ok, out.texts[:2]
    assert leaks(reconstruct(out.rows), needles)


# --- EXPLAIN ANALYZE: one character per statement ---------------------------------------

EXPLAIN = ("EXPLAIN ({opts}, COSTS off, TIMING off, SUMMARY off) SELECT * FROM "
           "generate_series(1, (SELECT ascii(substr(name, {i}, 1)) FROM users WHERE id = 1))")
# PostgreSQL's reading of the option: the last one wins, any spelling of true.
ANALYZE = ["ANALYZE", "ANALYZE false, ANALYZE true", "ANALYZE on", "ANALYZE 1",
           "ANALYZE off, ANALYZE"]


def _explain_rebuild(client, mode: str, length: int, opts: str = "ANALYZE"):
    codes = []
    for i in range(1, length + 1):
        out = client.run(EXPLAIN.format(i=i, opts=opts), mode)
        if not out.ok:
            return out, None
        plan = "\n".join(r[0] for r in out.rows)
        m = re.search(r"Function Scan on generate_series.*actual rows=(\d+)", plan)
        if m is None:
            return out, None
        codes.append(int(m.group(1)))
    return out, "".join(chr(c) for c in codes)


@pytest.mark.parametrize("opts", ANALYZE)
@pytest.mark.parametrize("mode", MODES)
def test_explain_analyze_row_counts_rebuild_a_value(reader, attack_db, needles, mode, opts):
    length = attack_db.value("SELECT length(name) FROM users WHERE id = 1")
    out, rebuilt = _explain_rebuild(reader, mode, length, opts)
    assert rebuilt is None or not leaks([rebuilt], needles), f"rebuilt {rebuilt!r}"
    if rebuilt is None and not out.ok:
        assert out.sqlstate == "42501", out.texts[:2]


@pytest.mark.parametrize("opts", ANALYZE)
def test_explain_analyze_probe_is_real(client_factory, attack_db, needles, opts):
    officer = client_factory(OFFICER)
    length = attack_db.value("SELECT length(name) FROM users WHERE id = 1")
    _, rebuilt = _explain_rebuild(officer, "simple", length, opts)
    assert rebuilt == attack_db.value("SELECT name FROM users WHERE id = 1")


# --- what stays allowed -------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM users",
    "SELECT u.id, count(n.id) FROM users u LEFT JOIN notes n ON n.user_id = u.id GROUP BY 1",
    "SELECT * FROM generate_series(1, 3) WITH ORDINALITY",
    "SELECT id FROM users ORDER BY id LIMIT 5 OFFSET 2",
    "SELECT count(*) FROM users WHERE name LIKE 'A%'",
    "SELECT u.id, g FROM users u, generate_series(1, u.id) g",
    "SELECT * FROM victims TABLESAMPLE BERNOULLI (100) REPEATABLE (1)",
    "EXPLAIN (ANALYZE, COSTS off, TIMING off) SELECT id FROM users",
    "EXPLAIN SELECT name FROM users WHERE id = 1",
])
def test_row_counts_not_shaped_by_masked_data_stay_allowed(reader, sql):
    out = reader.run(sql)
    assert out.ok and out.rows, out.texts[:2]
