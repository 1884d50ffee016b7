"""Shared fixtures: each harness module owns the fixtures of one real component."""

pytest_plugins = [
    "harness.pg_fixtures",
    "harness.bao_fixtures",
    "harness.gateway_fixtures",
    "harness.attack",
    "harness.leftovers",
    "harness.logcheck",
]
