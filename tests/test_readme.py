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


def _row_labels(text: str) -> list[str]:
    """The first word of each line of a data-wait report: its stage rows and summary lines."""
    start = text.index("data-wait report")
    lines = text[start:].splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("throughput"))
    return [line.split()[0] for line in lines[: end + 1] if line.strip()]


@pytest.mark.timeout(120)
def test_readme_sample_report_has_the_rows_the_loader_prints(tmp_path, capsys):
    """The README's printed data-wait report lists the stages and summary lines the code prints."""
    blocks = re.findall(r"```text\n(.*?)```", README.read_text(), flags=re.S)
    sample = [b for b in blocks if b.startswith("data-wait report")]
    assert sample, "README lost its sample data-wait report"
    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    exec(compile(_drop_in_block().replace('"data/spleen-small"', repr(str(root))), str(README), "exec"), {})  # noqa: S102
    assert _row_labels(sample[0]) == _row_labels(capsys.readouterr().out)
