"""The audit package's layout: each module imports, none is over 800 lines, and no module
imports one that imports it back. Imports are read from the source with ``ast``, so
function-local and ``TYPE_CHECKING`` imports count as much as the ones at the top."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = "pgguard.audit"
ROOT = Path(__file__).resolve().parents[2] / "pgguard" / "audit"
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))  # "__init__" stands for the package


def _dotted(stem: str) -> str:
    return PACKAGE if stem == "__init__" else f"{PACKAGE}.{stem}"


def _deps(source: str, stems: set[str]) -> set[str]:
    """The modules of the package (by stem) that *source*, a file in it, imports anywhere."""
    known = {_dotted(s): s for s in stems}

    def resolve(dotted: str) -> str | None:
        # The longest prefix that names one of the package's modules: ``x.format.AuditError``
        # is the module ``format``; ``pgguard.audit`` itself is its ``__init__``.
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            stem = known.get(".".join(parts[:n]))
            if stem is not None:
                return stem
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # every file sits directly in the package
                anchor = PACKAGE.split(".")[: PACKAGE.count(".") + 2 - node.level]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # ``from X import y`` needs X.y when y is a module, else X itself.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(stem for stem in map(resolve, targets) if stem is not None)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in *graph* as a path that ends where it starts, or None."""
    def walk(node: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph.get(node, ())):
            if dep == path[0]:
                return [*path, dep]
            if dep not in path:
                found = walk(dep, [*path, dep])
                if found:
                    return found
        return None

    for start in sorted(graph):
        found = walk(start, [start])
        if found:
            return found
    return None


@pytest.mark.parametrize("stem", [m for m in MODULES if m != "__main__"])
def test_module_imports_and_is_small(stem: str) -> None:
    importlib.import_module(_dotted(stem))
    lines = (ROOT / f"{stem}.py").read_text().count("\n")
    assert lines <= 800, f"pgguard/audit/{stem}.py has {lines} lines"


def test_no_import_cycle_within_the_package() -> None:
    stems = set(MODULES)
    graph = {s: _deps((ROOT / f"{s}.py").read_text(), stems) - {s} for s in stems}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or ())
    # The arrows the package promises (docs in pgguard/audit/__init__.py).
    assert graph["format"] == set()
    assert "verify" not in graph["writer"] | graph["recorder"]
    assert "recorder" not in graph["verify"] | graph["export"] | graph["cli"]


def test_the_walk_sees_hidden_imports() -> None:
    # A cycle hidden behind TYPE_CHECKING and a function-local import is still a cycle.
    sources = {
        "format": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from .writer import SegmentWriter\n",
        "writer": "def f():\n    from . import format\n",
        "cli": "from pgguard.audit.export import export\nfrom .. import config\n",
        "export": "import pgguard.audit\n",
    }
    graph = {s: _deps(src, set(sources) | {"__init__"}) for s, src in sources.items()}
    assert graph == {"format": {"writer"}, "writer": {"format"}, "cli": {"export"},
                     "export": {"__init__"}}
    assert _cycle(graph) == ["format", "writer", "format"]
