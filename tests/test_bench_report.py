"""`make bench` output: ratio ranges, noise verdicts, the PNG's title and rows, where results go."""

from __future__ import annotations

from benchmarks import common, spleen
from benchmarks.report import format_table, noise_note, speedups
from benchmarks.spleen_plot import plot_rows, title


def row(name: str, samples: list[float], step_s: float = 0.1) -> dict:
    med = sorted(samples)[len(samples) // 2]
    epoch = [8 / s for s in samples]
    emed = sorted(epoch)[len(epoch) // 2]
    return {
        "row": name,
        "fill_s": 1.0,
        "epoch_s": {"median": emed, "iqr": max(epoch) - min(epoch), "min": min(epoch), "max": max(epoch)},
        "crops_per_s": {"median": med, "min": min(samples), "max": max(samples), "iqr": 0.0},
        "crops_per_s_samples": samples,
        "data_wait_fraction": {"median": 0.0},
        "peak_rss_bytes": 2**30,
        "peak_gpu_bytes": 0,
        "step_s": step_s,
    }


def rows() -> list[dict]:
    return [
        row("regular", [10.0, 10.5, 11.0, 10.2]),
        row("monai-cache", [100.0, 101.0, 99.0, 100.5]),
        row("fastpipe-cache", [400.0, 800.0, 500.0, 900.0]),  # a busy machine: epochs spread widely
        {"row": "fastpipe-gpu-cache", "skipped": "needs a CUDA GPU; none on this machine"},
    ]


def test_ratio_has_a_range_and_noisy_rows_are_named():
    rs = rows()
    speedups(rs)
    fp = rs[2]
    lo, hi = fp["speedup_vs_monai_range"]
    assert lo < fp["speedup_vs_monai"] < hi and 3.5 < lo < 5.5 and 8 < hi < 9.5
    assert fp["noisy"] and not rs[1]["noisy"]
    table = format_table(rs)
    assert (
        "x MONAI (range)" in table and "~" in table.splitlines()[4] and "skipped: needs a CUDA GPU" in table
    )
    note = noise_note(rs)
    assert "fastpipe-cache" in note and "Too noisy to trust" in note and "monai-cache" not in note


def test_machine_drift_is_reported():
    rs = rows()[:2]
    speedups(rs)
    assert noise_note(rs, drift=1.05) == ""
    assert "drifted 1.60x" in noise_note(rs, drift=1.6)


def test_png_title_names_gpu_step_commit_and_keeps_skipped_rows(tmp_path):
    rs = rows()
    speedups(rs)
    doc = {
        "machine": {"cpu": "Some CPU", "cpu_count": 2, "gpu": None, "commit": "abc1234"},
        "config": {"data": "None", "preset": "spleen-small"},
        "machine_drift": 2.0,
    }
    text = title(doc, rs)
    assert "Some CPU x2" in text and "GPU: none" in text and "step 100 ms per batch" in text
    assert "commit abc1234" in text
    png = plot_rows(rs, tmp_path / "m.png", doc)
    assert png.stat().st_size > 10_000


def test_results_go_outside_the_tracked_folder_unless_saved():
    assert common.out_dir(False) == common.BENCH_OUT and common.BENCH_OUT.name == "bench-out"
    assert common.out_dir(True) == common.RESULTS_DIR
    gitignore = (common.BENCH_OUT.parent / ".gitignore").read_text().split()
    assert "bench-out/" in gitignore
    assert spleen.parse_args(["--save"]).save and not spleen.parse_args([]).save


def test_speed_probe_is_quick_and_positive():
    assert 0 < spleen.speed_probe_s(repeats=1) < 5


def test_a_fastpipe_row_listed_before_its_monai_peer_is_compared():
    """``--rows fastpipe-cache,monai-cache`` lists the fastpipe row first (it crashed with KeyError 'noisy')."""
    rs = [row("fastpipe-cache", [400.0, 410.0, 405.0]), row("monai-cache", [100.0, 101.0, 99.0])]
    speedups(rs)
    assert 3.9 < rs[0]["speedup_vs_monai"] < 4.2 and rs[0]["speedup_vs_monai_noisy"] is False


def test_ratio_range_of_two_epochs_stays_within_the_measured_ratios():
    """With two timed epochs the range extrapolated past both ends (down to a negative speed-up)."""
    rs = [row("monai-cache", [30.0, 30.0]), row("fastpipe-cache", [100.0, 1000.0])]
    speedups(rs)
    lo, hi = rs[1]["speedup_vs_monai_range"]
    assert 100 / 30 <= lo <= hi <= 1000 / 30
