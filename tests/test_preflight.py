"""Start-up checks: ``pgguard check-config`` and ``serve`` on bad configurations print one
``pgguard: <key>: ...`` line per problem, exit non-zero, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomli_w
import trustme

from pgguard import config
from pgguard.preflight import Problem, check

IDENTITY = {"issuer": "https://idp.example", "jwks_url": "https://idp.example/jwks"}


@pytest.fixture
def write(tmp_path):
    def write(doc: dict) -> str:
        path = tmp_path / "pgguard.toml"
        path.write_bytes(tomli_w.dumps(doc).encode())
        return str(path)
    return write


@pytest.fixture
def keyfile(tmp_path) -> str:
    path = tmp_path / "audit.key"
    path.write_bytes(os.urandom(32))
    return str(path)


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgguard", *argv], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line(res: subprocess.CompletedProcess, key: str, *words: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"pgguard: {key}: "), lines[0]
    for w in words:
        assert w in lines[0]


def base(**sections) -> dict:
    doc = {"listen": {"port": 0, "allow_plaintext": True}, "identity": dict(IDENTITY)}
    doc.update(sections)
    return doc


def test_good_config_passes(write, keyfile, tmp_path):
    path = write(base(recording={"dir": str(tmp_path / "rec" / "new"), "key_file": keyfile}))
    res = run("check-config", path)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr
    assert not (tmp_path / "rec").exists()  # checking creates nothing


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_missing_identity(write, command):
    doc = base()
    del doc["identity"]
    argv = ("check-config", write(doc)) if command == "check-config" else \
        ("serve", "--config", write(doc))
    assert_one_line(run(*argv), "identity", "required")


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_unreadable_recording_key(write, tmp_path, command):
    missing = str(tmp_path / "no-such-key")
    path = write(base(recording={"dir": str(tmp_path / "rec"), "key_file": missing}))
    argv = ("check-config", path) if command == "check-config" else ("serve", "--config", path)
    assert_one_line(run(*argv), "recording.key_file", missing, "No such file")


def test_key_file_that_is_a_folder(write, tmp_path):
    path = write(base(masking={"hash_key_file": str(tmp_path)}))
    assert_one_line(run("check-config", path), "masking.hash_key_file", "Is a directory")


def test_empty_key_file(write, tmp_path):
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    path = write(base(masking={"hash_key_file": str(empty)}))
    assert_one_line(run("check-config", path), "masking.hash_key_file", "empty")


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_unwritable_recording_dir(write, keyfile, tmp_path, command):
    # Root writes anywhere permissions allow nothing, so: a folder under a regular file.
    blocker = tmp_path / "plainfile"
    blocker.write_text("x")
    rec = str(blocker / "recordings")
    path = write(base(recording={"dir": rec, "key_file": keyfile}))
    argv = ("check-config", path) if command == "check-config" else ("serve", "--config", path)
    assert_one_line(run(*argv), "recording.dir", rec, "not a folder")


def test_unwritable_recording_dir_read_only_mount(keyfile):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    cfg = config.parse(base(recording={"dir": "/proc/self", "key_file": keyfile}))
    (problem,) = check(cfg)
    assert problem.key == "recording.dir" and "cannot write in /proc/self" in problem.message


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_bad_tls_file(write, tmp_path, command):
    ca = trustme.CA()
    cert = tmp_path / "cert.pem"
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(cert))
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    path = write(base(listen={"port": 0, "tls_cert": str(cert), "tls_key": str(key)}))
    argv = ("check-config", path) if command == "check-config" else ("serve", "--config", path)
    assert_one_line(run(*argv), "listen.tls_cert", str(cert), str(key))


def test_approvals_store_folder_missing(write, tmp_path):
    store = f"sqlite:///{tmp_path}/gone/approvals.db"
    path = write(base(approvals={"store": store, "approver_groups": ["dba"]}))
    assert_one_line(run("check-config", path), "approvals.store", "does not exist")


def test_approvals_store_not_a_database(write, tmp_path):
    bogus = tmp_path / "approvals.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    path = write(base(approvals={"store": f"sqlite:///{bogus}", "approver_groups": ["dba"]}))
    assert_one_line(run("serve", "--config", path), "approvals.store", str(bogus))


def test_postgres_store_unreachable_is_reported_quickly():
    port = __import__("harness.postgres", fromlist=["free_port"]).free_port()
    cfg = config.parse(base(approvals={"store": f"postgresql://u@127.0.0.1:{port}/db",
                                       "approver_groups": ["dba"]}))
    (problem,) = check(cfg)
    assert problem.key == "approvals.store" and "cannot connect" in problem.message


def test_every_problem_is_listed_and_files_named(tmp_path):
    cfg = config.parse({
        "identity": {},
        "vault": {"url": "http://127.0.0.1:1", "token_file": str(tmp_path / "tok")},
        "masking": {"hash_key_file": str(tmp_path / "hash")},
        "recording": {"dir": str(tmp_path), "key_file": str(tmp_path / "rk")},
    })
    problems = check(cfg)
    assert [p.key for p in problems] == ["identity", "vault.token_file",
                                         "masking.hash_key_file", "recording.key_file"]
    assert str(problems[1]) == (f"pgguard: vault.token_file: cannot read {tmp_path}/tok: "
                                "No such file or directory")


def test_static_password_env_unset(monkeypatch):
    monkeypatch.delenv("PGGUARD_NO_SUCH_VAR", raising=False)
    cfg = config.parse(base(connections=[{
        "name": "appdb", "user": "app", "password_env": "PGGUARD_NO_SUCH_VAR",
        "grants": [{"groups": ["*"]}]}]))
    assert check(cfg) == [Problem("connections[0].password_env",
                                  "environment variable PGGUARD_NO_SUCH_VAR is not set")]
