"""The tests' own layout: shared fixtures and helpers live in tests/harness, so no test
module imports another one (which would run, or collect twice, the other's tests)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):  # function-local imports included
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_test_module_imports_another_test_module():
    found = []
    for path in sorted(TESTS.rglob("test_*.py")) + sorted((TESTS / "harness").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for name in _imported_modules(tree):
            if any(part.startswith("test_") for part in name.split(".")):
                found.append(f"{path.relative_to(TESTS)}: {name}")
    assert not found, found


def test_unit_and_e2e_tests_are_the_only_test_modules():
    stray = [p.name for p in TESTS.glob("test_*.py")]
    assert not stray, f"put these under tests/unit or tests/e2e: {stray}"
