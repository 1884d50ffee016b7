"""The package's shape: imports point down (no cycles), and no module grows too large.

Every import counts, module-level, function-local and under ``if TYPE_CHECKING:``: a
cycle hidden behind one is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pgguard"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The pgguard modules *module* imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            # "from . import x" / "from .pkg import mod" may name a submodule.
            names = [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("pgguard"):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: imports_of(m, p, known) for m, p in mods.items()}
    for m in graph:
        # Importing pgguard.x.y runs pgguard.x/__init__ first, but that edge is the
        # package's, not the importer's: re-exporting packages would otherwise form
        # cycles with every submodule that imports a sibling.
        graph[m] = {t for t in graph[m]
                    if not m.startswith(t + ".")}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_the_limit():
    root = PACKAGE.parent
    over = {str(p.relative_to(root)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_local_and_type_checking_imports_count(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from pgguard.net import listener\n"
                   "def f():\n    from pgguard import config\n")
    found = imports_of("pgguard.x", src, {"pgguard.net.listener", "pgguard.config",
                                          "pgguard.net"})
    assert found == {"pgguard.net.listener", "pgguard.config"}


def test_the_wire_layer_imports_only_itself_and_errors():
    graph = _graph()
    wire = {m: t for m, t in graph.items() if m.startswith("pgguard.wire")}
    # _speedups (the framer's compiled walk and its pure twin) sits below wire.
    outside = {m: sorted(x for x in t if not x.startswith(("pgguard.wire", "pgguard._speedups"))
                         and x != "pgguard.errors")
               for m, t in wire.items()}
    assert not {m: t for m, t in outside.items() if t}


def test_speedups_import_nothing_of_ours():
    graph = _graph()
    fast = {m: sorted(x for x in t if not x.startswith("pgguard._speedups"))
            for m, t in graph.items() if m.startswith("pgguard._speedups")}
    assert fast and not {m: t for m, t in fast.items() if t}
