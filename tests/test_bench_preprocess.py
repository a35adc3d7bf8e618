"""benchmarks.preprocess: the prefix benchmark runs end to end on a small look-alike volume."""

from __future__ import annotations

import json

import pytest

from benchmarks import preprocess


@pytest.mark.timeout(180)
def test_preprocess_benchmark_runs_and_both_chains_agree(tmp_path):
    out = tmp_path / "preprocess.json"
    preprocess.main(["--shape", "48", "48", "16", "--repeats", "1", "--out", str(out)])
    eq = json.loads(out.read_text())["equivalence"]
    assert eq["same_shape"] and eq["image_max_abs_diff"] < 1e-5 and eq["label_equal_fraction"] == 1.0
    assert eq["label_fg_indices_mismatch"] == 0 and eq["label_bg_indices_mismatch"] == 0
