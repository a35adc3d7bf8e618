"""The README's drop-in example runs as written (on the CPU, on look-alike data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastpipe.datasets import synthesize

README = Path(__file__).resolve().parent.parent / "README.md"


def _drop_in_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    matches = [b for b in blocks if "fp.CacheDataset" in b and "ThreadDataLoader" in b]
    assert matches, "README lost its drop-in example"
    return matches[0]


@pytest.mark.timeout(120)
def test_readme_drop_in_example_runs(tmp_path):
    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    code = _drop_in_block().replace('"cuda:0"', '"cpu"').replace('"data/spleen-small"', repr(str(root)))
    code = code.replace("    ...\n", "    batches.append(batch)\n")
    scope: dict = {"batches": []}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    batches = scope["batches"]
    assert len(batches) == 1
    assert tuple(batches[0]["image"].shape) == (8, 1, 96, 96, 96)
    assert tuple(batches[0]["label"].shape) == (8, 1, 96, 96, 96)
