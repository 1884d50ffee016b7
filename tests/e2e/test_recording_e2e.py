"""Session recording end to end: real clients through the gateway, real segment files.

Every assertion reads the log the gateway wrote: with `pgguard audit` (verify, export,
replay) as an auditor would, and independently with plain `msgpack.Unpacker` over the
segment files. Tampering is done on the bytes on disk.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import psycopg
import pytest
from harness import redteam as red
from harness.gateway import APP_PASSWORD_ENV, APP_USER, ProcessGateway, ThreadGateway

# The red-team suite's fixtures: its database and the clear values to look for.
from harness.recording import (
    KEY,
    MAX_ROWS,
    Run,
    _session_id,
    all_records,
    audit_cli,
    read_segment,
    recorded_config,
    segments,
    session_records,
    wait_sessions_ended,
    write_config,
)
from harness.redteam import clear_values, needles, pii_db  # noqa: F401

pytestmark = pytest.mark.usefixtures("app_db")


@pytest.fixture(scope="module")
def run(make_config, tokens, tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("recording")
    # Small segments so the run spans several (rotation, links between segments).
    cfg = recorded_config(make_config, tmp, segment_max_bytes=1500)
    result = Run(tmp / "rec", write_config(cfg, tmp / "pgguard.toml"))
    gw = ThreadGateway(cfg).start()
    try:
        with psycopg.connect(gw.dsn("alice"), password=tokens("alice", ["owners"]),
                             autocommit=True) as conn:
            result.sids["alice"] = _session_id(gw, "alice")
            conn.execute("SELECT id, owner FROM accounts WHERE id <= 3 ORDER BY id").fetchall()
            conn.execute("SELECT id, balance FROM accounts WHERE owner = %s",
                         ("owner7",)).fetchone()
            conn.execute("SELECT %s::text AS contact", ("mail bob@example.com now",))
            conn.execute("SELECT %s::bytea", (b"\x00\x01\x02",), binary=True)
            rows = conn.execute("SELECT g AS n FROM generate_series(1, 150) g").fetchall()
            assert len(rows) == 150
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            conn.execute("DROP TABLE IF EXISTS rec_no_such_table")  # NOTICE
        time.sleep(0.05)
        result.marks["after_alice"] = time.time()
        time.sleep(0.05)
        with psycopg.connect(gw.dsn("bob"), password=tokens("bob", ["analysts"]),
                             autocommit=True) as conn:
            result.sids["bob"] = _session_id(gw, "bob")
            assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (100,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DROP TABLE accounts")
        time.sleep(0.05)
        result.marks["after_bob"] = time.time()
        time.sleep(0.05)
        with psycopg.connect(gw.dsn("carol", "otherdb"), password=tokens("carol", ["owners"]),
                             autocommit=True) as conn:
            result.sids["carol"] = _session_id(gw, "carol")
            conn.execute("SELECT 'carol was here'").fetchone()
        wait_sessions_ended(gw)
    finally:
        gw.stop()
    assert gw.error is None
    assert len(segments(result.dir)) >= 3
    return result


def test_verify_passes_on_the_untouched_log(run):
    out = audit_cli("verify", "--config", str(run.config_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK: ")
    n = len(all_records(run.dir))
    assert f"{n} records in {len(segments(run.dir))} segments" in out.stdout


def test_session_start_statements_and_end(run):
    recs = session_records(run.dir, run.sids["bob"])
    types = [r["type"] for r in recs]
    assert types[0] == "session_start" and types[-1] == "session_end"
    start = recs[0]["fields"]
    assert start["user"] == "bob" and start["groups"] == ["analysts"]
    assert start["connection"] == "appdb" and start["tls"] is False
    assert start["client_addr"].startswith("127.0.0.1:") and start["instance"]
    stmts = [r["fields"] for r in recs if r["type"] == "statement"]
    count = next(s for s in stmts if s["sql"] == "SELECT count(*) FROM accounts")
    assert (count["decision"], count["category"], count["kind"]) == ("allow", "read", "SELECT")
    assert count["protocol"] == "simple" and count["refused"] is False
    drop = next(s for s in stmts if s["sql"] == "DROP TABLE accounts")
    assert (drop["decision"], drop["category"], drop["refused"]) == ("deny", "ddl", True)
    assert drop["reason"] == "drops database objects"
    assert drop["refusal"].startswith("pgguard: ddl statement DROP TABLE is not allowed")
    # The refusal the client got is recorded after the statement, with its SQLSTATE.
    i = recs.index(next(r for r in recs if r["fields"] is drop))
    assert recs[i + 1]["type"] == "error" and recs[i + 1]["fields"]["sqlstate"] == "42501"
    result = next(r["fields"] for r in recs if r["type"] == "result")
    assert result["columns"] == [["count", 20]] and result["rows"] == [["100"]]
    end = recs[-1]["fields"]
    assert end["reason"] in ("client terminated", "client disconnected")
    assert end["duration_s"] > 0 and end["bytes_in"] > 100 and end["bytes_out"] > 100


def test_results_params_errors_and_notices(run):
    recs = session_records(run.dir, run.sids["alice"])
    pairs = [(recs[i]["fields"], recs[i + 1]) for i in range(len(recs) - 1)
             if recs[i]["type"] == "statement"]
    by_sql = {s["sql"]: nxt for s, nxt in pairs}
    stmts = {s["sql"]: s for s, _ in pairs}
    first = by_sql["SELECT id, owner FROM accounts WHERE id <= 3 ORDER BY id"]["fields"]
    assert first["columns"] == [["id", 23], ["owner", 25]]
    assert first["rows"] == [["1", "owner1"], ["2", "owner2"], ["3", "owner3"]]
    assert first["row_count"] == 3 and first["truncated"] is False
    assert first["command_tag"] == "SELECT 3"
    # Parameters are recorded after the detectors ran over them.
    assert stmts["SELECT id, balance FROM accounts WHERE owner = $1"]["params"] == ["owner7"]
    assert stmts["SELECT $1::text AS contact"]["params"] == ["mail [email] now"]
    assert stmts["SELECT $1::bytea"]["params"] == ["<binary 3 bytes>"]
    assert by_sql["SELECT $1::bytea"]["fields"]["rows"] == [[b"\x00\x01\x02"]]
    big = by_sql["SELECT g AS n FROM generate_series(1, 150) g"]["fields"]
    assert big["row_count"] == 150 and big["truncated"] is True
    assert big["rows"] == [[str(i)] for i in range(1, MAX_ROWS + 1)]
    err = by_sql["SELECT 1/0"]
    assert err["type"] == "error" and err["fields"]["sqlstate"] == "22012"
    assert "division by zero" in err["fields"]["message"]
    notice = by_sql["DROP TABLE IF EXISTS rec_no_such_table"]
    assert notice["type"] == "notice" and "does not exist" in notice["fields"]["message"]


# --- tampering --------------------------------------------------------------------------

def _tamper_copy(run: Run, tmp_path: Path) -> tuple[Path, Path, list]:
    """A copy of the log, its second segment, and that segment's record offsets."""
    copy_dir = tmp_path / "rec"
    shutil.copytree(run.dir, copy_dir)
    seg = segments(copy_dir)[1]
    return copy_dir, seg, read_segment(seg)


def _verify_dir(directory: Path) -> subprocess.CompletedProcess:
    key = directory.parent / "k"
    key.write_bytes(KEY)
    return audit_cli("verify", "--key-file", str(key), str(directory))


@pytest.mark.parametrize("how", ["flip", "delete", "swap", "truncate", "cut_mid"])
def test_tampering_is_detected_and_located(run, tmp_path, how):
    directory, seg, recs = _tamper_copy(run, tmp_path)
    data = bytearray(seg.read_bytes())
    assert len(recs) >= 4
    s1, e1, _ = recs[2]
    s2, e2, _ = recs[3]
    if how == "flip":
        data[s1 + (e1 - s1) // 2] ^= 0x01
        where = 2
    elif how == "delete":
        del data[s1:e1]
        where = 2
    elif how == "swap":
        data[s1:e2] = data[s2:e2] + data[s1:e1]
        where = 2
    elif how == "truncate":  # cut the seal off a sealed segment, at a record boundary
        assert recs[-1][2]["type"] == "segment_seal"
        del data[recs[-1][0]:]
        where = None
    else:  # cut inside the last record
        del data[recs[-1][0] + 5:]
        where = None
    seg.write_bytes(bytes(data))
    out = _verify_dir(directory)
    assert out.returncode == 1, out.stdout + out.stderr
    line = out.stdout.strip()
    assert seg.name in line
    if where is not None:
        assert f"{seg.name}:{where}:" in line
    elif how == "truncate":
        assert "not sealed" in line
    else:
        assert "torn" in line


def test_verify_of_an_untouched_copy_passes(run, tmp_path):
    # The tamper tests' baseline: the copy itself verifies.
    directory, _, _ = _tamper_copy(run, tmp_path)
    out = _verify_dir(directory)
    assert out.returncode == 0, out.stdout


# --- export and replay -----------------------------------------------------------------

def _export(run: Run, tmp_path: Path, *filters: str) -> list[dict[str, Any]]:
    out_file = tmp_path / "export.msgpack"
    out = audit_cli("export", "--config", str(run.config_path), *filters, "-o", str(out_file))
    assert out.returncode == 0, out.stderr
    with open(out_file, "rb") as f:
        items = list(msgpack.Unpacker(f, raw=False))
    header, records = items[0], items[1:]
    assert header["format"] == "pgguard-audit-export" and header["version"] == 1
    assert header["verified"] is True
    return records


def _expected(run: Run, keep) -> list[tuple[str, int]]:
    starts: dict[str, dict[str, Any]] = {}
    out = []
    for name, rec in all_records(run.dir):
        if rec["type"] == "session_start":
            starts[rec["session"]] = rec["fields"]
        if rec["type"] in ("segment_start", "segment_seal"):
            continue
        if keep(rec, starts.get(rec["session"], {})):
            out.append((name, rec["seq"]))
    return out


@pytest.mark.parametrize("flt", ["since", "until", "user", "connection", "session", "all"])
def test_export_filters_return_exactly_the_matching_records(run, tmp_path, flt):
    after_alice, after_bob = run.marks["after_alice"], run.marks["after_bob"]
    args, keep = {
        "since": (["--since", repr(after_bob)], lambda r, s: r["ts"] >= after_bob),
        "until": (["--until", repr(after_alice)], lambda r, s: r["ts"] < after_alice),
        "user": (["--user", "bob"], lambda r, s: s.get("user") == "bob"),
        "connection": (["--connection", "otherdb"],
                       lambda r, s: s.get("connection") == "otherdb"),
        "session": (["--session", run.sids["alice"]],
                    lambda r, s: r["session"] == run.sids["alice"]),
        "all": ([], lambda r, s: True),
    }[flt]
    got = _export(run, tmp_path, *args)
    expected = _expected(run, keep)
    assert expected, "the filter must select something to be a test"
    assert [(r["segment"], r["seq"]) for r in got] == expected
    if flt == "since":
        assert {r["session"] for r in got} == {run.sids["carol"]}
    if flt == "until":
        assert {r["session"] for r in got} == {run.sids["alice"]}
    if flt == "connection":
        assert {r["user"] for r in got} == {"carol"}


def test_replay_shows_statements_decisions_and_results(run):
    out = audit_cli("replay", "--config", str(run.config_path), run.sids["bob"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "user        bob (groups: analysts)" in text
    assert "SELECT count(*) FROM accounts" in text and "DROP TABLE accounts" in text
    assert "statement (simple): deny, ddl/DROP TABLE" in text
    assert "reason: drops database objects" in text
    lines = text.splitlines()
    i = lines.index("   count")  # the result table as the client saw it
    assert lines[i + 2].strip() == "100"
    assert "error 42501" in text and "Session ended" in text


# --- crash ------------------------------------------------------------------------------

def test_sigkill_mid_session_loses_no_result_the_client_received(make_config, tokens,
                                                                 tmp_path):
    # fsync="always" is the mode that promises this (docs/audit-format.md, Durability):
    # the tap awaits the write of a result's record before the client gets the result.
    cfg = recorded_config(make_config, tmp_path, fsync="always")
    work = tmp_path / "work"
    work.mkdir()
    gw = ProcessGateway(cfg, str(work)).start()
    received: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with psycopg.connect(gw.dsn("dave"), password=tokens("dave", ["owners"]),
                                 autocommit=True) as conn:
                i = 0
                while not stop.is_set():
                    marker = f"mk-{i:06d}"
                    row = conn.execute(f"SELECT '{marker}' AS m, {i} AS n").fetchone()
                    received.append(row[0])
                    i += 1
        except psycopg.OperationalError:
            pass  # the gateway died under us: expected
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(received) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(received) >= 200, gw.read_log()[-2000:]
        gw.stop(signal.SIGKILL)
        t.join(10)
        assert not t.is_alive()
    finally:
        stop.set()
    assert not errors, errors
    got = list(received)
    # Restart: recovery seals the crashed segment; the log verifies.
    gw2 = ProcessGateway(cfg, str(work)).start()
    try:
        out = audit_cli("verify", "--config", gw2.path)
        assert out.returncode == 0, out.stdout + out.stderr
        recorded = set()
        for _, rec in all_records(Path(cfg["recording"]["dir"])):
            if rec["type"] == "result":
                for row in rec["fields"]["rows"]:
                    recorded.add(row[0])
        missing = [m for m in got if m not in recorded]
        assert not missing, f"{len(missing)} of {len(got)} received results not in the log"
        seals = [rec["fields"] for _, rec in all_records(Path(cfg["recording"]["dir"]))
                 if rec["type"] == "segment_seal"]
        assert any(s["reason"] == "recovered" for s in seals)
    finally:
        gw2.stop()
    out = audit_cli("verify", "--config", gw2.path)
    assert out.returncode == 0, out.stdout + out.stderr


# --- masking ----------------------------------------------------------------------------

CLEAR_SSNS = ["123-45-6789", "987-65-4321", "555-12-3456"]


def test_no_clear_masked_value_under_recording_dir(make_config, tokens, tmp_path, app_db):
    app_db.psql("DROP TABLE IF EXISTS rec_secret;"
                "CREATE TABLE rec_secret (id int PRIMARY KEY, name text, ssn text);"
                "INSERT INTO rec_secret VALUES " + ", ".join(
                    f"({i}, 'person{i}', '{s}')" for i, s in enumerate(CLEAR_SSNS, 1)) + ";"
                "ALTER TABLE rec_secret OWNER TO app_owner;", dbname="app")
    cfg = recorded_config(make_config, tmp_path)
    cfg["masking"] = {"rules": [{"columns": ["*.rec_secret.ssn"], "strategy": "redact"}]}
    gw = ThreadGateway(cfg).start()
    try:
        with psycopg.connect(gw.dsn("erin"), password=tokens("erin", ["analysts"]),
                             autocommit=True) as conn:
            rows = conn.execute("SELECT id, name, ssn FROM rec_secret ORDER BY id").fetchall()
            assert [r[2] for r in rows] == ["***"] * 3
            conn.execute("SELECT * FROM rec_secret").fetchall()
            conn.execute("SELECT ssn AS x, upper(ssn) FROM rec_secret WHERE id = %s", (1,))
            conn.execute("SELECT s.ssn FROM (SELECT ssn FROM rec_secret) s").fetchall()
            cur = conn.cursor(binary=True)
            cur.execute("SELECT ssn FROM rec_secret")
            cur.fetchall()
            with conn.cursor().copy("COPY (SELECT ssn FROM rec_secret) TO STDOUT") as cp:
                for _ in cp:
                    pass
        wait_sessions_ended(gw)
    finally:
        gw.stop()
    recs = all_records(Path(cfg["recording"]["dir"]))
    assert any(r["type"] == "result" and ["1", "person1", "***"] in r["fields"]["rows"]
               for _, r in recs)
    blob = b"".join(p.read_bytes() for p in Path(cfg["recording"]["dir"]).rglob("*")
                    if p.is_file())
    for clear in CLEAR_SSNS:
        assert clear.encode() not in blob
        assert clear.replace("-", "").encode() not in blob


def test_no_clear_masked_value_under_recording_dir_after_the_red_team_suite(
        make_config, tokens, tmp_path, request):
    """The masking red-team corpus (tests/e2e/test_masking_e2e.py) through a recorded gateway:
    no clear value of a masked column, in any form the corpus looks for, is in the log."""
    pii = request.getfixturevalue("pii_db")
    clear = request.getfixturevalue("needles")
    cfg = recorded_config(make_config, tmp_path)
    key = tmp_path / "hash.key"
    key.write_text("e2e-test-hash-key\n")
    cfg["connections"] = [{
        "name": red.CONN, "host": pii.host, "port": pii.port, "dbname": red.DBNAME,
        "sslmode": "disable", "user": APP_USER, "password_env": APP_PASSWORD_ENV,
        "grants": [{"groups": ["readers"], "read": "allow", "write": "deny", "ddl": "deny"}],
    }]
    cfg["masking"] = {"hash_key_file": str(key), "rules": red.RULES}
    gw = ThreadGateway(cfg).start()
    try:
        client = red.Client(gw, "rita", tokens("rita", ["readers"]))
        try:
            for mode, sql, params, _ in red.CASES:
                red.run_case(client, mode, sql, params)
            sid = _session_id(gw, "rita")
        finally:
            client.close()
        wait_sessions_ended(gw)
    finally:
        gw.stop()
    rec_dir = Path(cfg["recording"]["dir"])
    recs = session_records(rec_dir, sid)
    assert sum(r["type"] == "statement" for r in recs) >= len(red.CASES)
    assert sum(r["type"] == "result" for r in recs) >= len(red.CASES) // 2
    assert recs[-1]["type"] == "session_end"
    blob = b"\n".join(p.read_bytes() for p in rec_dir.rglob("*") if p.is_file())
    low = blob.lower()
    leaked = [n for n in clear if n.encode() in blob or n.lower().encode() in low]
    assert not leaked, leaked[:10]


def test_gateway_shutdown_records_the_end_of_live_sessions(make_config, tokens, tmp_path):
    cfg = recorded_config(make_config, tmp_path)
    gw = ThreadGateway(cfg).start()
    conn = psycopg.connect(gw.dsn("gina"), password=tokens("gina", ["owners"]),
                           autocommit=True)
    try:
        conn.execute("SELECT 1").fetchone()
        sid = _session_id(gw, "gina")
        gw.stop()
    finally:
        conn.close()
    recs = session_records(Path(cfg["recording"]["dir"]), sid)
    assert recs[0]["type"] == "session_start"
    assert recs[-1]["type"] == "session_end"


def test_approvals_and_cancels_are_recorded(make_config, tokens, tmp_path, app_db):
    app_db.psql("DROP TABLE IF EXISTS rec_approved", dbname="app")
    cfg = recorded_config(make_config, tmp_path)
    cfg["approvals"] = {"approver_groups": ["dba"], "timeout_s": 10, "poll_interval_s": 0.1,
                        "store": f"sqlite:///{tmp_path}/approvals.db"}
    gw = ThreadGateway(cfg).start()
    notices: list[str] = []
    try:
        with psycopg.connect(gw.dsn("hank"), password=tokens("hank", ["engineers"]),
                             autocommit=True) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            sid = _session_id(gw, "hank")
            done: list[Any] = []
            t = threading.Thread(target=lambda: done.append(
                conn.execute("CREATE TABLE rec_approved (id int)").statusmessage))
            t.start()
            deadline = time.monotonic() + 10
            prefix = "pgguard: statement held for approval as request "
            while not any(n.startswith(prefix) for n in notices):
                assert time.monotonic() < deadline, notices
                time.sleep(0.02)
            rid = int(next(n for n in notices if n.startswith(prefix))[len(prefix):])
            with psycopg.connect(gw.dsn("ivy", "pgguard"), password=tokens("ivy", ["dba"]),
                                 autocommit=True, cursor_factory=psycopg.ClientCursor) as dba:
                dba.execute(f"APPROVE {rid} 'looks fine'")
            t.join(10)
            assert done == ["CREATE TABLE"]
            # A client cancel of a running statement.
            t = threading.Thread(target=lambda: done.append(
                pytest.raises(psycopg.errors.QueryCanceled, conn.execute,
                              "SELECT pg_sleep(10)")))
            t.start()
            time.sleep(0.3)
            conn.cancel_safe(timeout=10)  # PQcancel would hold the GIL the gateway needs
            t.join(10)
            assert not t.is_alive()
        wait_sessions_ended(gw)
    finally:
        gw.stop()
        if gw.gateway is not None and gw.gateway.approvals is not None:
            gw.gateway.approvals.close()
    recs = session_records(Path(cfg["recording"]["dir"]), sid)
    types = [r["type"] for r in recs]
    i = types.index("approval_request")
    assert types[i:i + 4] == ["approval_request", "approval_decision", "statement", "result"]
    req, dec, stmt, res = (r["fields"] for r in recs[i:i + 4])
    assert req["request_id"] == rid and req["category"] == "ddl"
    assert (dec["request_id"], dec["decision"], dec["approver"]) == (rid, "approved", "ivy")
    assert stmt["sql"] == "CREATE TABLE rec_approved (id int)"
    assert (stmt["decision"], stmt["refused"], stmt["request_id"]) == ("review", False, rid)
    assert res["command_tag"] == "CREATE TABLE"
    j = types.index("cancel")
    assert recs[j - 1]["fields"]["sql"] == "SELECT pg_sleep(10)"
    assert recs[j + 1]["type"] == "error" and recs[j + 1]["fields"]["sqlstate"] == "57014"


def test_binary_rows_of_a_statement_described_before_bind(make_config, tokens, tmp_path):
    """asyncpg describes the statement, then binds with binary result formats and no
    portal Describe: the recorded rows are the binary values the client got."""
    import asyncio

    import asyncpg

    cfg = recorded_config(make_config, tmp_path)
    gw = ThreadGateway(cfg).start()

    async def main() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user="jack",
                                     database="appdb", password=tokens("jack", ["owners"]),
                                     ssl=False, timeout=10)
        try:
            assert await conn.fetchrow("SELECT $1::int4 AS n, owner FROM accounts "
                                       "WHERE id = $1", 5) == (5, "owner5")
        finally:
            await conn.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 20))
        wait_sessions_ended(gw)
    finally:
        gw.stop()
    results = [rec["fields"] for _, rec in all_records(Path(cfg["recording"]["dir"]))
               if rec["type"] == "result" and rec["fields"]["rows"]
               and rec["fields"]["columns"] == [["n", 23], ["owner", 25]]]
    assert [r["rows"] for r in results] == [[[b"\x00\x00\x00\x05", b"owner5"]]]
