"""Helpers of the figure tests: a result JSON, a README section, a table row, flattened text."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"


def result(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def readme_section(heading: str, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    start = text.index(heading)
    end = text.find("\n### ", start + 1)
    return text[start : end if end > 0 else len(text)]


def table_row(body: str, name: str) -> str:
    """The table row whose first cell is ``name``, backticked or not, with any words after it."""
    pattern = rf"\| `?{re.escape(name)}`?( [^|]*)? \|"
    rows = [line for line in body.splitlines() if re.match(pattern, line)]
    assert rows, f"no row {name!r}"
    return rows[0]


def flat(path: Path) -> str:
    return " ".join(path.read_text().split())


def span(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def flat_text(text: str) -> str:
    return " ".join(text.split())
