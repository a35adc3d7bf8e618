"""The line budget: modules stay small enough to read whole, functions short enough to hold in mind.

A file past the budget usually holds two ideas, a function past it two steps (CONTRIBUTING.md). The
limits are the house style's "about 300 lines a file, about 40 a function" with a little slack, so
a docstring or one more case does not force a split; the library is held to the function limit,
the benchmark scripts (argument parsers, plots) to the file limit only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 320
MAX_FUNCTION_LINES = 50  # the library's functions, docstring included


def _files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def long_functions(path: Path, limit: int) -> list[str]:
    """``name (lines)`` for each function of ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{node.name} ({lines} lines)")
    return found


@pytest.mark.parametrize("folder", ["fastpipe", "benchmarks", "profiling"])
def test_every_module_is_within_the_file_budget(folder):
    over = {
        str(p.relative_to(ROOT)): n
        for p in _files(folder)
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not over, f"modules over {MAX_FILE_LINES} lines (split them by idea): {over}"


def test_every_library_function_is_within_the_function_budget():
    over = {
        str(p.relative_to(ROOT)): f
        for p in _files("fastpipe")
        if (f := long_functions(p, MAX_FUNCTION_LINES))
    }
    assert not over, f"library functions over {MAX_FUNCTION_LINES} lines: {over}"


def test_the_budget_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "m.py"
    path.write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n    return 0\n")
    assert long_functions(path, MAX_FUNCTION_LINES) == [f"long ({MAX_FUNCTION_LINES + 2} lines)"]
