"""benchmarks.copy_threads runs both processes end to end and writes its JSON."""

from __future__ import annotations

import json

import pytest

from benchmarks.copy_threads import main


@pytest.mark.timeout(300)
def test_both_processes_measure_both_modes(tmp_path):
    out = tmp_path / "ct.json"
    main(["--shape", "100", "100", "100", "--rounds", "2", "--reps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    for scenario in ("main_thread_has_team", "main_thread_no_team"):
        row = saved[scenario]
        assert set(row["ms_per_batch"]) == {"split", "torch_team"}
        assert all(v["n"] == 2 and v["median"] > 0 for v in row["ms_per_batch"].values())
        assert row["split_speedup"] > 0
    assert saved["machine"]["commit"]
