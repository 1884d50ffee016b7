"""Statement classification (table-driven corpus) and grant decisions.

No database is needed: the corpus pins what pgguard.policy.classify() says about each
statement, and the Policy tests pin how grants combine.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pgguard import config
from pgguard.policy import (
    CATEGORY_SEVERITY,
    Classification,
    Policy,
    cache_clear,
    cache_info,
    classify,
    deny_message,
    remember_prepared,
)

CORPUS = tomllib.loads((Path(__file__).parents[1] / "corpus" / "statements.toml").read_text())["case"]


def _case_id(case: dict) -> str:
    text = " ".join(case["sql"].split())[:60] or "<empty>"
    return f"{case['category']}:{text}"


def test_corpus_is_big_enough_and_covers_every_category():
    assert len(CORPUS) >= 150
    assert {c["category"] for c in CORPUS} == set(CATEGORY_SEVERITY)
    assert len({c["sql"] for c in CORPUS}) == len(CORPUS), "duplicate SQL in the corpus"


@pytest.mark.parametrize("case", CORPUS, ids=[_case_id(c) for c in CORPUS])
def test_corpus(case):
    cls = classify(case["sql"])
    assert isinstance(cls, Classification)
    detail = [(s.category, s.kind, s.reason) for s in cls.statements]
    assert cls.category == case["category"], detail
    if "kind" in case:
        assert cls.kind == case["kind"], detail
    if case.get("empty"):
        assert cls.statements == ()
    else:
        assert cls.statements, "a non-empty text must give at least one statement"
    for st in cls.statements:
        assert st.category in CATEGORY_SEVERITY
        assert st.category in st.categories
        assert st.reason


# --- details the corpus does not show ---------------------------------------------------


def test_statements_are_split_with_their_own_text():
    cls = classify("SELECT 'é';  DROP TABLE t ;\n-- trailing\nSELECT 2")
    # libpg_query starts a statement after the comments that lead it.
    assert [s.text for s in cls.statements] == ["SELECT 'é'", "DROP TABLE t", "SELECT 2"]
    assert [s.category for s in cls.statements] == ["read", "ddl", "read"]
    assert cls.category == "ddl"


def test_a_statement_keeps_every_category_it_touches():
    st = classify("CREATE TABLE t AS SELECT nextval('s')").statements[0]
    assert st.categories == {"ddl", "write"}
    assert st.category == "ddl"
    st = classify("SELECT nextval('s')").statements[0]
    assert st.reason == "calls writing function nextval()"


def test_reasons_name_the_function_and_the_cte():
    assert "pg_read_file()" in classify("SELECT pg_read_file('x')").statements[0].reason
    assert "DELETE" in classify("WITH d AS (DELETE FROM t RETURNING 1) SELECT 1").statements[0].reason


def test_unparseable_reason_quotes_the_parser_not_the_whole_text():
    secret_tail = "x" * 500
    cls = classify(f"SELEC 1 FROM {secret_tail}")
    st = cls.statements[0]
    assert st.kind == "UNPARSEABLE"
    assert st.reason.startswith("cannot parse: ")
    assert "syntax error" in st.reason
    assert secret_tail not in st.reason
    assert len(st.reason) < 260


def test_classify_never_raises_on_surrogates_and_nul():
    assert classify("SELECT '\ud800'").category == "unknown"
    assert classify("SELECT 1\x00").category == "unknown"


def test_execute_resolves_through_the_prepared_map():
    prepared: dict[str, Classification] = {}
    remember_prepared(prepared, classify("PREPARE del AS DELETE FROM t; PREPARE sel AS SELECT 1"))
    assert set(prepared) == {"del", "sel"}

    cls = classify("EXECUTE del", prepared)
    assert cls.category == "write"
    assert cls.statements[0].kind == "EXECUTE"
    assert "del" in cls.statements[0].reason
    assert classify("EXECUTE sel", prepared).category == "read"
    assert classify("EXECUTE other", prepared).category == "unknown"
    assert classify("EXPLAIN ANALYZE EXECUTE del", prepared).category == "write"
    assert classify("CREATE TABLE x AS EXECUTE sel", prepared).category == "ddl"
    # Function calls in the parameters still count.
    assert classify("EXECUTE sel(pg_read_file('x'))", prepared).category == "privileged"
    # The cached text-only result is not changed by a resolution.
    assert classify("EXECUTE del").category == "unknown"

    remember_prepared(prepared, classify("DEALLOCATE del"), completed=1)
    assert set(prepared) == {"sel"}
    remember_prepared(prepared, classify("DISCARD ALL"), completed=1)
    assert prepared == {}


def test_remember_prepared_applies_only_completed_statements_and_fails_closed():
    prepared: dict[str, Classification] = {}
    remember_prepared(prepared, classify("PREPARE p AS DELETE FROM t"))
    # The DEALLOCATE after a failing statement never ran: p is still the DELETE.
    remember_prepared(prepared, classify("SELECT 1/0; DEALLOCATE p"), completed=0)
    assert "p" in prepared
    # Before the server answered, a DEALLOCATE may not run: nothing is forgotten.
    remember_prepared(prepared, classify("SELECT 1/0; DEALLOCATE p"))
    remember_prepared(prepared, classify("DISCARD ALL"))
    assert "p" in prepared
    # Re-preparing a known name (the server refuses it) keeps both bodies.
    remember_prepared(prepared, classify("PREPARE p AS SELECT 1"))
    cls = classify("EXECUTE p", prepared)
    assert cls.category == "write"
    assert cls.statements[0].categories == {"read", "write"}
    # Once it is known that DEALLOCATE ran, the name is free again.
    remember_prepared(prepared, classify("DEALLOCATE p"), completed=1)
    remember_prepared(prepared, classify("PREPARE p AS SELECT 1"), completed=1)
    assert classify("EXECUTE p", prepared).category == "read"


def test_backslash_with_standard_strings_off_is_unknown():
    sql = "SELECT 'a\\''; DROP TABLE t; --'"
    assert classify(sql).category == "read"  # as the server reads it with the setting on
    assert classify(sql, standard_strings=False).category == "unknown"
    assert classify("SELECT 1", standard_strings=False).category == "read"


def test_cache_is_used_and_skips_huge_texts():
    cache_clear()
    first = classify("SELECT 42")
    assert classify("SELECT 42") is first
    assert cache_info()["hits"] == 1
    huge = "SELECT 1 " + " " * (70 * 1024)
    before = cache_info()["entries"]
    assert classify(huge).category == "read"
    assert cache_info()["entries"] == before


# --- Policy ------------------------------------------------------------------------------


def _connection(*grants: dict) -> config.ConnectionConfig:
    cfg = config.parse({
        "identity": {"issuer": "https://idp.example/"},
        "vault": {"url": "http://127.0.0.1:8200", "token_env": "VAULT_TOKEN"},
        "connections": [{"name": "appdb", "grants": list(grants)}],
    })
    return cfg.connections[0]


ANALYSTS = {"groups": ["analysts"], "vault_role": "ro", "read": "allow", "write": "deny",
            "ddl": "deny"}
ENGINEERS = {"groups": ["engineers"], "vault_role": "rw", "write": "allow", "ddl": "review"}
EVERYONE = {"groups": ["*"], "vault_role": "guest", "read": "allow", "write": "deny",
            "ddl": "deny"}


def test_grants_for_matches_groups_and_star():
    policy = Policy(_connection(ANALYSTS, ENGINEERS))
    assert [g.vault_role for g in policy.grants_for(["analysts"])] == ["ro"]
    assert [g.vault_role for g in policy.grants_for(["engineers", "analysts"])] == ["ro", "rw"]
    assert policy.grants_for(["nobody"]) == []
    assert policy.grants_for([]) == []
    policy = Policy(_connection(ANALYSTS, EVERYONE))
    assert [g.vault_role for g in policy.grants_for(["nobody"])] == ["guest"]


def test_read_only_grant():
    policy = Policy(_connection(ANALYSTS))
    groups = ["analysts"]
    assert policy.decide(groups, classify("SELECT 1")).action == "allow"
    assert policy.decide(groups, classify("BEGIN")).action == "allow"
    for sql in ("DROP TABLE t", "INSERT INTO t VALUES (1)", "COPY t TO PROGRAM 'x'",
                "SET ROLE admin", "EXECUTE p", "SELEC"):
        decision = policy.decide(groups, classify(sql))
        assert decision.action == "deny", sql


def test_default_actions_apply_to_unset_categories():
    policy = Policy(_connection({"groups": ["g"], "vault_role": "r"}))
    expected = {"read": "allow", "txn": "allow", "write": "review", "ddl": "review",
                "privileged": "deny", "unknown": "deny"}
    assert expected == config.DEFAULT_ACTIONS
    sample = {"read": "SELECT 1", "txn": "COMMIT", "write": "DELETE FROM t",
              "ddl": "DROP TABLE t", "privileged": "DO 'begin end'", "unknown": "EXECUTE p"}
    for category, sql in sample.items():
        decision = policy.decide(["g"], classify(sql))
        assert (decision.category, decision.action) == (category, expected[category])


def test_union_of_grants_takes_the_most_permissive_action_per_category():
    policy = Policy(_connection(ANALYSTS, ENGINEERS))
    both = ["analysts", "engineers"]
    # write: deny (analysts) + allow (engineers) -> allow
    assert policy.decide(both, classify("DELETE FROM t")).action == "allow"
    # ddl: deny + review -> review
    assert policy.decide(both, classify("DROP TABLE t")).action == "review"
    # privileged: default deny in both -> deny
    assert policy.decide(both, classify("SET ROLE x")).action == "deny"
    assert policy.actions_for(both) == {"read": "allow", "write": "allow", "ddl": "review",
                                        "privileged": "deny", "txn": "allow",
                                        "unknown": "deny"}
    # analysts alone cannot write
    assert policy.decide(["analysts"], classify("DELETE FROM t")).action == "deny"


def test_strictest_action_of_several_statements_wins():
    policy = Policy(_connection(ENGINEERS))
    groups = ["engineers"]
    d = policy.decide(groups, classify("SELECT 1; DELETE FROM t"))
    assert d.action == "allow"
    d = policy.decide(groups, classify("SELECT 1; ALTER TABLE t ADD b int; DELETE FROM t"))
    assert (d.action, d.category, d.kind) == ("review", "ddl", "ALTER TABLE")
    d = policy.decide(groups, classify("ALTER TABLE t ADD b int; SELECT 1; DO 'begin end'"))
    assert (d.action, d.category, d.kind) == ("deny", "privileged", "DO")
    assert d.statement is not None and d.statement.text == "DO 'begin end'"


def test_every_category_of_a_statement_must_be_allowed():
    # ddl allowed but write denied: a view that calls nextval() would write when read.
    policy = Policy(_connection({"groups": ["g"], "vault_role": "r", "ddl": "allow",
                                 "write": "deny"}))
    assert policy.decide(["g"], classify("CREATE VIEW v AS SELECT 1")).action == "allow"
    d = policy.decide(["g"], classify("CREATE VIEW v AS SELECT nextval('s')"))
    assert (d.action, d.category, d.kind) == ("deny", "write", "CREATE VIEW")
    assert d.reason == "calls writing function nextval()"


def test_no_matching_grant_denies_everything():
    policy = Policy(_connection(ANALYSTS))
    d = policy.decide(["strangers"], classify("SELECT 1"))
    assert d.action == "deny"
    assert "no grant" in d.reason


def test_empty_query_is_allowed():
    policy = Policy(_connection(ANALYSTS))
    d = policy.decide(["analysts"], classify(""))
    assert d.action == "allow"
    assert d.statement is None


def test_vault_role_is_the_most_permissive_matching_grant():
    policy = Policy(_connection(ANALYSTS, ENGINEERS, EVERYONE))
    # analysts match ANALYSTS and EVERYONE, equally permissive: the first one wins.
    assert policy.vault_role_for(["analysts"]) == "ro"
    assert policy.vault_role_for(["analysts", "engineers"]) == "rw"
    assert policy.vault_role_for(["nobody"]) == "guest"
    tie = Policy(_connection({"groups": ["a"], "vault_role": "first"},
                             {"groups": ["a"], "vault_role": "second"}))
    assert tie.vault_role_for(["a"]) == "first"
    assert Policy(_connection(ANALYSTS)).vault_role_for(["nobody"]) is None


def test_deny_message_names_category_kind_and_connection():
    policy = Policy(_connection(ANALYSTS, ENGINEERS))
    d = policy.decide(["analysts"], classify("DROP TABLE t"))
    assert deny_message(d, "appdb") == (
        "pgguard: ddl statement DROP TABLE is not allowed for your groups on appdb")
    d = policy.decide(["engineers"], classify("ALTER TABLE t ADD b int"))
    assert d.action == "review"
    assert deny_message(d, "appdb") == "pgguard: ddl statement ALTER TABLE requires approval"
