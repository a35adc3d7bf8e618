"""The benchmark harness end to end at a tiny scale, so that it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, spleen
from fastpipe.datasets import synthesize

ROWS = spleen.DEFAULT_ROWS  # every row the harness has


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_harness_runs_every_row_and_writes_json_and_png(tmp_path, capsys):
    root = synthesize(tmp_path / "data", preset="spleen-small", seed=0, progress=False, num_volumes=4)
    out = tmp_path / "res.json"
    rc = spleen.main(
        [
            "--data",
            str(root),
            "--rows",
            ",".join(ROWS),
            "--epochs",
            "1",
            "--step-epochs",
            "1",
            "--step-ms-per-volume",
            "5",
            "--threads",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert set(rows) == set(ROWS)
    errors = {k: v["error"] for k, v in rows.items() if "error" in v}
    assert not errors, errors
    for name, r in rows.items():
        if "skipped" in r:
            assert name == "fastpipe-gpu-cache" and "GPU" in r["skipped"]
            continue
        assert r["crops_per_epoch"] == r["items_per_epoch"] * 4, name
        assert r["crops_per_s"]["median"] > 0 and 0 <= r["data_wait_fraction"]["median"] <= 1
        assert r["peak_rss_bytes"] > 0
    assert rows["fastpipe-cache"]["matched_monai_row"] == "monai-cache"
    assert rows["fastpipe-cache-crop-only"]["matched_monai_row"] == "monai-cache-crop-only"
    assert rows["fastpipe-smartcache"]["items_per_epoch"] == 2
    assert doc["machine"]["commit"] and doc["machine"]["versions"]["torch"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "| fastpipe-cache |" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_a_row_that_outlives_its_timeout_is_published_as_an_error():
    """A hung row raised ``TimeoutExpired`` out of ``run_row`` and lost every row of the matrix."""
    res = spleen.run_row("regular", ["--data", "/nonexistent"], timeout_s=0.2)
    assert res["row"] == "regular" and "no result within 0.2 s" in res["error"]


@pytest.mark.timeout(120)
def test_the_regular_rows_close_ends_its_workers_so_their_memory_is_counted(tmp_path):
    """Its persistent DataLoader workers outlived ``row.close()``, so ``peak_rss_bytes`` (which counts
    reaped children only) left them out: 0.31 GiB published where a worker alone peaked at 0.5 GiB."""
    from benchmarks import rows
    from benchmarks.workload import load_data

    root = synthesize(tmp_path / "data", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    data = load_data(spleen.parse_args(["--data", str(root)]))
    row = rows.ROWS["regular"](data, rows.Config(batch_size=2, threads=1))
    next(iter(row.loader))
    workers = list(row.loader._iterator._workers)
    row.close()
    assert workers and all(w.exitcode is not None for w in workers)


@pytest.mark.timeout(120)
def test_a_failed_row_shows_its_exception_in_the_table():
    """The table cuts an error at 90 characters; it showed a traceback's ``File ...`` line instead."""
    from benchmarks.report import format_table

    res = spleen.run_row("fastpipe-cache", ["--data", "/nonexistent/folder"])
    assert res["error"].startswith("FileNotFoundError: MSD datalist not found"), res
    assert "Traceback" not in res["error"] and "File " in res["stderr_tail"]
    assert "error: FileNotFoundError: MSD datalist not found" in format_table([res])


def test_a_row_worker_removes_its_scratch_folder(tmp_path, monkeypatch):
    """Every row left a ``/tmp/fastpipe-bench-*`` folder behind (the dali row's .npy volumes in it)."""
    from benchmarks import measure

    seen = []

    def fake_measure_row(name, data, cfg, *rest):
        (Path(cfg.workdir) / "dali-npy").mkdir()
        seen.append(Path(cfg.workdir))
        return {"row": name}

    monkeypatch.setattr(measure, "measure_row", fake_measure_row)
    monkeypatch.setattr(spleen, "load_data", lambda args: [])
    out = tmp_path / "row.json"
    assert spleen.run_worker(spleen.parse_args(["--worker-row", "dali", "--worker-out", str(out)])) == 0
    assert json.loads(out.read_text()) == {"row": "dali"}
    assert seen and not seen[0].exists()


@pytest.mark.parametrize("arg", ["--epochs", "--batch-size", "--threads", "--num-volumes"])
def test_counts_below_one_are_refused_by_name(arg, capsys):
    """``--epochs 0`` ran every row and failed each with ``IndexError: list index out of range``."""
    with pytest.raises(SystemExit):
        spleen.parse_args([arg, "0"])
    assert f"argument {arg}: must be at least 1, got 0" in capsys.readouterr().err
    assert spleen.parse_args(["--step-epochs", "0", "--epochs", "1"]).step_epochs == 0


def test_the_result_names_the_commit_the_rows_ran_on(tmp_path, monkeypatch):
    """The commit was read after every row had run: a commit (or edit) during a long run relabelled
    figures measured on the earlier tree."""
    commits = iter(["abc1234-dirty", "def5678", "def5678"])
    now = {"commit": next(commits)}
    monkeypatch.setattr(common, "git_commit", lambda: now["commit"])
    monkeypatch.setattr(spleen, "git_commit", lambda: now["commit"])

    def fake_run_row(name, argv):
        now["commit"] = next(commits)  # someone commits while the row runs
        return {"row": name, "skipped": "stand-in"}

    monkeypatch.setattr(spleen, "run_row", fake_run_row)
    out = tmp_path / "res.json"
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "i.nii.gz", "label": "l.nii.gz"}]})
    )
    argv = ["--data", str(tmp_path), "--rows", "fastpipe-cache", "--out", str(out), "--no-plot"]
    assert spleen.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["machine"]["commit"] == "abc1234-dirty" and doc["commit_at_end"] == "def5678"


@pytest.mark.timeout(180)
def test_the_regular_rows_workers_draw_their_own_crops(tmp_path):
    """torch's DataLoader forked one random state into every worker: two workers given the same volume
    cut the same crops, so the regular row's epochs repeated each other's draws (and ignored the seed)."""
    import torch

    from benchmarks import rows
    from benchmarks.workload import load_data

    root = synthesize(tmp_path / "data", preset="spleen-small", seed=0, progress=False, num_volumes=1)
    one = load_data(spleen.parse_args(["--data", str(root)]))[0]
    cfg = rows.Config(batch_size=1, threads=2, tutorial=False)

    def epoch() -> list:
        row = rows.ROWS["regular"]([one, dict(one)], cfg)  # the same volume twice: one per worker
        try:
            return [b["image"] for b in row.loader]
        finally:
            row.close()

    a, b = epoch(), epoch()
    assert not torch.equal(a[0], a[1]), "both workers cut the same crops"
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), "the row ignores its seed"


@pytest.mark.timeout(180)
def test_the_monai_cache_rows_draws_follow_the_seed(tmp_path):
    """MONAI's ``DataLoader`` with ``num_workers=0`` reseeds the chain from torch's global generator,
    unseeded in a row's process: ``set_random_state(cfg.seed)`` was overridden and every run of a MONAI
    row cut other crops in another order than the seed it recorded, unlike fastpipe's rows."""
    import torch

    from benchmarks import rows
    from benchmarks.workload import load_data

    root = synthesize(tmp_path / "data", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    data = load_data(spleen.parse_args(["--data", str(root)]))
    cfg = rows.Config(batch_size=1, threads=1, tutorial=False)

    def epoch(global_seed: int) -> list:
        torch.manual_seed(global_seed)  # torch's global generator: not the same in two runs
        row = rows.ROWS["monai-cache"](data, cfg)
        try:
            return [b["image"] for b in row.loader]
        finally:
            row.close()

    a, b = epoch(1), epoch(2)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


ROW_RSS_PROBE = """
import resource, subprocess, sys
import torch
from benchmarks import measure, rows, workload

hold = "b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); input()"


class Workers:
    # a loader whose worker processes live until the row closes (the regular row's persistent workers)
    def __init__(self):
        self.kids = [subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True) for _ in range(3)]
        assert all(k.stdout.readline().strip() == "ready" for k in self.kids)

    def __iter__(self):
        crop = torch.zeros(workload.NUM_SAMPLES, 1, *workload.PATCH)
        yield {"image": crop, "label": crop}

    def close(self):
        for k in self.kids:
            k.communicate("\\n", timeout=30)


def build(data, cfg):
    loader = Workers()
    return rows.Row(loader, items_per_epoch=1, close=loader.close)


rows.ROWS["workers"] = build
res = measure.measure_row("workers", [{}], rows.Config(threads=1), epochs=1, step_epochs=0, step_s=0.0)
print(res["peak_rss_bytes"] - resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.timeout(120)
def test_a_rows_peak_rss_counts_every_worker_process():
    """Read after close, the peak counted the largest reaped worker only: the regular row's 2-8 workers
    published as one. It is read while they live, each one's peak summed (a fresh interpreter: no child
    reaped before)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(spleen.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", ROW_RSS_PROBE], cwd=repo, capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 3 * (120 << 20)
