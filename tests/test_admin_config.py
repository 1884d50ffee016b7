"""``[admin] groups``: its default, its validation."""

from __future__ import annotations

import pytest

from pgguard import config
from pgguard.errors import ConfigError


def test_admin_groups_default_to_approver_groups():
    cfg = config.parse({"approvals": {"approver_groups": ["dba", "ops"]}})
    assert cfg.admin.groups == ("dba", "ops")
    assert config.parse({}).admin.groups == ()


def test_admin_groups_given():
    cfg = config.parse({"approvals": {"approver_groups": ["dba"]},
                        "admin": {"groups": ["sre"]}})
    assert cfg.admin.groups == ("sre",) and cfg.approvals.approver_groups == ("dba",)
    assert config.parse({"admin": {"groups": "sre"}}).admin.groups == ("sre",)
    assert config.parse({"admin": {"groups": []}}).admin.groups == ()


@pytest.mark.parametrize("admin,key", [
    ({"groups": ["*"]}, "admin.groups[0]"),
    ({"groups": [""]}, "admin.groups[0]"),
    ({"groups": ["sre", 3]}, "admin.groups[1]"),
    ({"groups": 3}, "admin.groups"),
    ({"bogus": 1}, "admin.bogus"),
])
def test_admin_errors_name_the_key(admin, key):
    with pytest.raises(ConfigError) as info:
        config.parse({"admin": admin}, "t.toml")
    assert key in str(info.value)
