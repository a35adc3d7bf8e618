"""The import graph of ``fastpipe/`` and ``benchmarks/`` has no cycles, and ``fastpipe/`` stays small at the top.

Imports are read with ``ast`` from every module, function-level (lazy) imports included: a lazy
import is still a tie between two modules. Importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` first, so it is also an edge to each package on the way that is not already an
ancestor of the importing module (those are initialised before the importer runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fastpipe", "benchmarks")
MAX_TOP_MODULES = 8


def _module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the scanned packages."""
    names = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imported(node: ast.AST, module: str, modules: dict[str, Path]) -> set[str]:
    """Dotted names one import statement can load, resolved against ``module``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        here = module.split(".")
        if not _is_package(module, modules):
            here = here[:-1]
        here = here[: len(here) - node.level + 1]
        base = ".".join(here + ([base] if base else []))
    names = {base}
    names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def _edges(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    if _is_package(module, modules):
        ancestors.add(module)
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for name in _imported(node, module, modules):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix not in ancestors and prefix != module:
                    targets.add(prefix)
    return targets


def import_graph() -> dict[str, set[str]]:
    """Module -> the scanned modules it imports (at any level of its body)."""
    modules = _module_names()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_sees_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_fastpipe_top_level_is_small():
    top = sorted(p.name for p in (ROOT / "fastpipe").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in fastpipe/: {top}"
