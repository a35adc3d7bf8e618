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


@pytest.mark.timeout(180)
def test_each_chain_runs_in_a_process_of_its_own(tmp_path):
    """Both chains ran in this process, MONAI's block after fastpipe's: MONAI measured on fastpipe's heap,
    fastpipe always on a fresh one (about 15% faster than after MONAI's block, a flattering ratio)."""
    import os
    from pathlib import Path

    item = preprocess.make_volume(Path(tmp_path), (48, 48, 16), 0.8, 2.5, 0)
    m = preprocess.measure(item, 1)
    assert set(m["pids"]) == {"fastpipe", "monai"}
    assert len({os.getpid(), *m["pids"].values()}) == 3
    assert len(m["samples"]["fastpipe"]["wall"]) == 1 and len(m["samples"]["monai"]["wall"][0]) == len(
        m["names"]
    )
