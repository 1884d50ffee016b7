"""Configuration: errors name the file and the key; check-config says so on the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pgguard import config
from pgguard.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "fixtures", "pgguard.example.toml")

GOOD = {
    "identity": {"issuer": "https://idp.example/", "audience": "pgguard"},
    "connections": [{"name": "appdb", "user": "dev", "password_env": "X",
                     "grants": [{"groups": ["analysts"], "read": "allow"}]}],
}


def _with(path: list, value) -> dict:
    import copy
    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return data


def test_example_configuration_is_valid():
    cfg = config.load(EXAMPLE)
    assert cfg.connections[0].grants[1].action("ddl") == "review"
    assert cfg.connections[0].grants[0].action("privileged") == "deny"


@pytest.mark.parametrize("path,value,key", [
    (["listen", "port"], "6432", "listen.port"),
    (["listen", "port"], 70000, "listen.port"),
    (["listen", "bogus"], 1, "listen.bogus"),
    (["listen", "startup_timeout_s"], 0, "listen.startup_timeout_s"),
    (["listen", "tls_cert"], "/nonexistent.crt", "listen.tls_"),
    (["identity", "algorithms"], ["HS256"], "identity.algorithms[0]"),
    (["identity", "algorithms"], ["none"], "identity.algorithms[0]"),
    (["connections", 0, "grants", 0, "write"], "maybe", "connections[0].grants[0].write"),
    (["connections", 0, "grants", 0, "groups"], [], "connections[0].grants[0].groups"),
    (["connections", 0, "sslmode"], "verify-full", "connections[0].sslrootcert"),
    (["connections", 0, "password"], "hunter2", "connections[0].password"),
    (["connections", 0, "name"], "pgguard", "connections[0].name"),
    (["vault", "token"], "s.abc", "vault.token"),
    (["masking", "detectors"], ["dna"], "masking.detectors[0]"),
    (["masking", "rules"], [{"columns": ["ssn"]}], "masking.rules[0].columns[0]"),
    (["masking", "rules"], [{"columns": ["t.c"], "strategy": "shred"}],
     "masking.rules[0].strategy"),
    (["approvals", "store"], "redis://x", "approvals.store"),
    (["recording", "dir"], "/tmp/x", "recording.key_file"),
    (["nonsense"], {}, "nonsense"),
])
def test_errors_name_the_key(path, value, key):
    with pytest.raises(ConfigError) as info:
        config.parse(_with(path, value), "test.toml")
    assert key in str(info.value)
    assert str(info.value).startswith("test.toml: ")
    if isinstance(value, str) and value in ("hunter2", "s.abc"):
        assert value not in str(info.value)


def test_grant_without_credentials_source_is_refused():
    data = _with(["connections", 0, "user"], None)
    del data["connections"][0]["user"]
    with pytest.raises(ConfigError, match=r"connections\[0\].grants\[0\].vault_role"):
        config.parse(data, "t.toml")


def test_duplicate_connection_names():
    data = _with(["connections"], GOOD["connections"] * 2)
    with pytest.raises(ConfigError, match=r"connections\[1\].name"):
        config.parse(data)


def test_check_config_cli(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[listen]\nport = "x"\n')
    res = subprocess.run([sys.executable, "-m", "pgguard", "check-config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"{bad}: listen.port: must be an integer" in res.stderr
    # The example is valid, but names secret files of a production host: check-config
    # now also opens them (pgguard.preflight) and says which are missing.
    config.load(EXAMPLE)
    res = subprocess.run([sys.executable, "-m", "pgguard", "check-config", EXAMPLE],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        f"pgguard: vault.token_file: cannot read /run/secrets/vault-token: "
        f"No such file or directory (in {EXAMPLE})",
        f"pgguard: recording.key_file: cannot read /run/secrets/audit-key: "
        f"No such file or directory (in {EXAMPLE})"]


def test_toml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "syntax.toml"
    bad.write_text("[listen\n")
    with pytest.raises(ConfigError, match="syntax.toml"):
        config.load(str(bad))
