"""Plugins for every test, unit and end to end alike: they import nothing heavier than the
base install (the heavy fixtures are brought in by tests/e2e/conftest.py)."""

pytest_plugins = [
    "harness.leftovers",
    "harness.logcheck",
]
