"""``benchmarks.measure``'s memory figures: a page shared by worker processes counts once (PSS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import measure, rows, workload

REPO = Path(__file__).resolve().parent.parent

SHARED_PROBE = """
import os, sys
from benchmarks import measure

big = bytearray(96 << 20)
big[::4096] = b"x" * len(big[::4096])  # touched here, then shared copy-on-write with the children
pipes = []
for _ in range(3):
    r, w = os.pipe()
    if os.fork() == 0:
        assert big[::4096].count(b"x") > 0  # read only: the pages stay shared
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    pipes.append(w)
kids = measure.live_children()
rss = sum(measure._proc_kb(measure.Path(f"/proc/{p}/status"), "VmRSS") for p in kids)
own = measure._proc_kb(measure.Path(f"/proc/{os.getpid()}/status"), "VmRSS")
got = measure.memory_now()
for w in pipes:
    os.write(w, b"x")
for _ in pipes:
    os.wait()
print(got["memory_measure"], got["memory_processes"], got["memory_bytes"], own, rss)
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux 4.14+ smaps_rollup")
def test_memory_shared_by_worker_processes_counts_once():
    """Worker memory was summed as RSS: a cache forked into 3 workers counted 4 times (1.9 GiB
    reported for 0.5 GiB held). PSS splits each shared page among the processes that map it."""
    out = subprocess.run(
        [sys.executable, "-c", SHARED_PROBE], cwd=REPO, capture_output=True, text=True, timeout=50
    )
    assert out.returncode == 0, out.stderr
    kind, procs, pss, own, kids_rss = out.stdout.split()
    pss, own, kids_rss = int(pss), int(own), int(kids_rss)
    assert kind == "pss" and procs == "4"
    assert kids_rss >= 3 * (96 << 20)  # RSS counts the shared buffer in every child
    assert pss < own + (96 << 20)  # PSS: the parent's own memory plus well under one more copy


def test_without_smaps_rollup_rss_is_measured_and_named(monkeypatch):
    real = measure._proc_kb
    monkeypatch.setattr(
        measure, "_proc_kb", lambda path, key: None if path.name == "smaps_rollup" else real(path, key)
    )
    got = measure.memory_now()
    assert got["memory_measure"] == "rss" and got["memory_bytes"] > 0 and got["memory_processes"] >= 1


def test_a_row_result_carries_the_memory_figure_and_what_it_measured(monkeypatch):
    class Loader:
        def __iter__(self):
            crop = torch.zeros(workload.NUM_SAMPLES, 1, *workload.PATCH)
            yield {"image": crop, "label": crop}

    threads = torch.get_num_threads()
    monkeypatch.setitem(rows.ROWS, "one", lambda data, cfg: rows.Row(Loader(), items_per_epoch=1))
    try:
        res = measure.measure_row("one", [{}], rows.Config(threads=1), epochs=1, step_epochs=0, step_s=0.0)
    finally:
        torch.set_num_threads(threads)
    assert res["memory_measure"] in ("pss", "rss") and res["memory_bytes"] > 0
    assert res["peak_rss_bytes"] > 0  # the existing key keeps its meaning: summed peak RSS


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux 4.14+ smaps_rollup")
def test_an_ended_worker_not_yet_reaped_does_not_turn_pss_into_rss():
    """A zombie child (ended, not yet waited for) has an empty smaps_rollup: it flipped the whole figure
    to summed RSS, each shared page counted again."""
    probe = (
        "import os, time\n"
        "from benchmarks.measure import memory_now\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
        "print(memory_now()['memory_measure'])\n"
        "os.waitpid(pid, 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "pss"
