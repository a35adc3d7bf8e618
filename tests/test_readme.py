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
def test_readme_drop_in_example_runs(tmp_path, capsys):
    """Verbatim but for the data folder: it picks the device itself and trains a real step."""
    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    code = _drop_in_block().replace('"data/spleen-small"', repr(str(root)))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    batch = scope["batch"]  # the loop's last batch: 2 volumes x 4 crops
    assert tuple(batch["image"].shape) == (8, 1, 96, 96, 96)
    assert tuple(batch["label"].shape) == (8, 1, 96, 96, 96)
    assert scope["loss"].requires_grad and len(scope["loader"].timings) == 1
    out = capsys.readouterr().out
    assert "data-wait report" in out and "data wait" in out and "crops/s" in out
