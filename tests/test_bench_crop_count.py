"""The harness counts the crops each epoch yields: a short epoch is an error row, never a fast one."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import measure, rows, spleen
from benchmarks import workload as chains
from fastpipe.datasets import synthesize


class _ShortLoader:
    """Yields ``batches`` of 4 crops per epoch whatever the dataset size (an epoch that ended early)."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __iter__(self):
        for _ in range(self.batches):
            crop = torch.zeros(chains.NUM_SAMPLES, 1, *chains.PATCH)
            yield {"image": crop, "label": crop}


def test_short_epoch_raises_with_the_counts(monkeypatch):
    monkeypatch.setitem(rows.ROWS, "short", lambda data, cfg: rows.Row(_ShortLoader(1), items_per_epoch=2))
    with pytest.raises(RuntimeError, match="epoch yielded 4 crops, expected 8"):
        measure.measure_row("short", [{}, {}], rows.Config(threads=1), epochs=1, step_epochs=0, step_s=0.0)


def test_full_epochs_pass_the_count(monkeypatch):
    monkeypatch.setitem(rows.ROWS, "full", lambda data, cfg: rows.Row(_ShortLoader(2), items_per_epoch=2))
    res = measure.measure_row("full", [{}, {}], rows.Config(threads=1), epochs=1, step_epochs=1, step_s=0.0)
    assert res["crops_per_epoch"] == 8


@pytest.mark.timeout(240)
def test_monai_row_on_volumes_smaller_than_the_crop_is_an_error_row(tmp_path):
    """spleen-tiny volumes are smaller than a 96^3 crop: MONAI's loader ends its epochs early.

    The harness must publish that row as an error naming the crop count (it used to divide by zero).
    """
    root = synthesize(tmp_path / "data", preset="spleen-tiny", seed=0, progress=False, num_volumes=2)
    out = tmp_path / "res.json"
    argv = ["--data", str(root), "--rows", "monai-cache", "--epochs", "1", "--step-epochs", "1"]
    assert spleen.main([*argv, "--threads", "1", "--out", str(out), "--no-plot"]) == 1  # a row failed
    (row,) = json.loads(out.read_text())["rows"]
    assert "error" in row, row
    assert "epoch yielded 0 crops, expected 8" in row["error"], row["error"]


class _PaddedPipe:
    """Stands in for a DALI pipeline whose reader pads the last batch (``pad_last_batch=True``)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def run(self):
        class _Out:
            def as_array(_self):
                return torch.zeros(self.batch_size, chains.NUM_SAMPLES, 1, 2, 2, 2).numpy()

        return _Out(), _Out()


def test_dali_epoch_of_an_odd_volume_count_yields_each_volume_once():
    """41 volumes (spleen-full) in batches of 2: the padded last batch gave 168 crops, an error row."""
    from benchmarks.dali_peer import DaliLoader

    loader = DaliLoader(_PaddedPipe(2), n_items=41, batch_size=2)
    crops = sum(b["image"].shape[0] for b in loader)
    measure.check_epoch_crops(crops, 41 * chains.NUM_SAMPLES)
