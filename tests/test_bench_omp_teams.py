"""benchmarks.omp_teams: every case in its own process, end to end, and the idle thread it starts."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from benchmarks.omp_teams import CASES, _idle_thread, main


@pytest.mark.timeout(300)
def test_every_case_runs_in_its_own_process_and_is_written(tmp_path):
    out = tmp_path / "omp.json"
    main(["--rounds", "1", "--steps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["step_ms"]) == set(CASES)
    assert all(v["n"] == 1 and v["median"] > 0 for v in saved["step_ms"].values())
    assert set(saved["ratios"]) == {"idle_team_vs_alone", "idle_one_thread_vs_alone"}
    assert saved["torch_threads"] >= 1 and saved["machine"]["commit"]


def test_the_idle_thread_keeps_its_openmp_count_to_itself():
    from fastpipe.runtime import _openmp

    if not _openmp.available():
        pytest.skip("no per-thread OpenMP counts in this process")
    before = torch.get_num_threads()
    stop = threading.Event()
    t = _idle_thread(1, stop)
    assert t.is_alive()  # it waits, as a SmartCache worker between rounds
    stop.set()
    t.join(5)
    assert not t.is_alive() and torch.get_num_threads() == before
