"""``fastpipe profile`` end to end on tiny synthetic spleen data: a table, a PNG, a JSON."""

from __future__ import annotations

import json
import time

import pytest
import torch

from fastpipe.datasets import synthesize
from fastpipe.profiling import profile_run


@pytest.fixture(scope="module")
def tiny_spleen(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("spleen"), "spleen-tiny", progress=False)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_profile_prints_table_and_writes_png_and_json(tiny_spleen, tmp_path, capsys):
    out = tmp_path / "out"
    argv = "--iters 4 --step-ms 5 --device cpu --batch-size 2 --num-samples 2 --roi 16 --limit 4".split()
    argv += ["--timing-items", "1", "--cache-workers", "1", "--data", str(tiny_spleen)]
    assert profile_run.main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("LoadImaged", "Spacingd", "CropForegroundd", "FgBgToIndicesd", "ToDeviced"):
        assert name in text, text
    assert "data wait" in text and "crops/s" in text and "GPU utilisation: n/a" in text
    png = out / "profile.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    doc = json.loads((out / "profile.json").read_text())
    assert len(doc["iterations"]) == 4 and doc["loader"]["batches"] == 4
    assert (
        doc["loader"]["items"] == 4 * 2 and doc["loader"]["crops"] == 4 * 2 * 2
    )  # batches x volumes x crops
    assert 0.0 <= doc["loader"]["data_wait_fraction"] <= 1.0
    step = doc["loader"]["stages"]["step"]["median_ms"]
    assert 4.5 <= step < 50, step
    assert list(doc["per_transform"])[0] == "LoadImaged" and doc["gpu"] is None


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        profile_run.main(["--data", "x", "--roi", "1", "2"])
    assert "--roi takes 1 or 3 ints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile_run.main(["--data", "x", "--step-ms", "5", "--model", "tiny-unet"])
    for flag, value in (("--iters", "0"), ("--step-ms", "-5"), ("--limit", "0"), ("--batch-size", "0")):
        with pytest.raises(SystemExit):
            profile_run.main(["--data", "x", flag, value])
        assert f"{flag} must be >=" in capsys.readouterr().err


def test_without_matplotlib_the_json_is_written_and_the_pngs_skipped(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = {"per_transform": {}, "iterations": [], "loader": {}}
    paths = profile_run.write_outputs(result, None, tmp_path)
    assert paths == [tmp_path / "profile.json"] and (tmp_path / "profile.json").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert profile_run.main(["--data", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    assert "fastpipe synth" in capsys.readouterr().err


def test_tiny_unet_step_runs_on_cpu():
    import torch

    step = profile_run.make_step(0.0, "tiny-unet", torch.device("cpu"))
    batch = {"image": torch.rand(1, 1, 4, 4, 4), "label": (torch.rand(1, 1, 4, 4, 4) > 0.5).float()}
    step(batch)  # forward, backward, optimizer step; raises on any shape mismatch


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{bad", "malformed JSON at line 1"), ('{"training": []}', "lists no volumes")],
)
def test_a_bad_dataset_json_is_a_clear_error_not_a_traceback(tmp_path, capsys, content, expected):
    (tmp_path / "dataset.json").write_text(content)
    assert profile_run.main(["--data", str(tmp_path), "--device", "cpu", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastpipe profile: ") and expected in err, err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_a_crop_larger_than_the_volumes_is_a_clear_error_not_a_traceback(tiny_spleen, tmp_path, capsys):
    argv = ["--data", str(tiny_spleen), "--device", "cpu", "--iters", "1", "--limit", "2", "--roi", "200"]
    assert profile_run.main([*argv, "--timing-items", "0", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastpipe profile: RandCropByPosNegLabeld failed") and "spleen_" in err, err
    assert "Traceback" not in err and "larger than the volume" in err


def test_an_out_folder_that_cannot_be_made_is_an_error_before_the_run(tiny_spleen, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["--data", str(tiny_spleen), "--device", "cpu", "--iters", "1", "--out", str(blocker / "out")]
    assert profile_run.main(argv) == 2
    out, err = capsys.readouterr()
    assert (
        err.startswith(f"fastpipe profile: cannot write --out {blocker / 'out'}: ") and "Traceback" not in err
    )
    assert out == ""  # said before the run, not after it


@pytest.mark.timeout(60)
def test_timing_items_zero_skips_the_per_transform_timing(tiny_spleen, tmp_path, capsys):
    argv = ["--data", str(tiny_spleen), "--device", "cpu", "--iters", "1", "--limit", "2", "--roi", "16"]
    assert profile_run.main([*argv, "--timing-items", "0", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "profile.json").read_text())
    assert doc["per_transform"] == {}  # it timed one volume anyway
    assert (tmp_path / "profile.png").is_file()


@pytest.mark.timeout(60)
def test_a_chain_error_while_timing_the_prefix_is_a_clear_error_not_a_traceback(
    tiny_spleen, tmp_path, capsys
):
    image = tiny_spleen / "imagesTr" / "spleen_1.nii.gz"
    data = tmp_path / "no-labels"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"training": [{"image": str(image)}]}))
    argv = ["--data", str(data), "--device", "cpu", "--iters", "1", "--roi", "16", "--out", str(tmp_path)]
    assert profile_run.main(argv) == 1  # the per-transform timing (default 2 items) runs the chain first
    err = capsys.readouterr().err
    assert err.startswith("fastpipe profile: LoadImaged failed on item 0") and str(image) in err, err
    assert "'label' missing" in err and "Traceback" not in err


class _SwappingDataset(torch.utils.data.Dataset):
    """Four items; every epoch's end waits 0.2 s, as a SmartCache window swap does."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.zeros(2)

    def loader_update_cache(self, token: object = None) -> None:
        time.sleep(0.2)


@pytest.mark.timeout(60)
def test_run_loop_counts_the_wait_for_an_epochs_end_as_data_wait():
    from fastpipe import ThreadDataLoader
    from fastpipe.profiling.report import summarize

    loader = ThreadDataLoader(_SwappingDataset(), batch_size=2)
    iterations = profile_run.run_loop(loader, 6, lambda batch: None)  # 3 epochs of 2: two epoch ends
    loader.close()
    waited = summarize(iterations)["data_wait_s"]
    assert waited >= 0.35, waited  # the copies taken at once reported ~0 s of data wait
    assert waited == pytest.approx(sum(t["wait_s"] for t in loader.timings))
    assert all(
        t["wait_s"] <= t["iter_s"] for t in iterations
    )  # an iteration never waits longer than it lasts


class _SlowMonitor:
    """A GpuMonitor stand-in whose start and stop take 0.3 s each, as NVML's init and shutdown may."""

    records: list = []

    def __init__(self, **kwargs) -> None:
        pass

    def __enter__(self) -> _SlowMonitor:
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)


@pytest.mark.timeout(60)
def test_the_gpu_monitors_start_and_stop_are_not_counted_in_the_loops_wall_time(monkeypatch):
    import argparse

    monkeypatch.setattr(profile_run, "GpuMonitor", _SlowMonitor)  # the cuda path, on any machine
    monkeypatch.setattr(profile_run, "build_chain", lambda device, roi, n: [lambda d: {**d, "x": d["x"] * 2}])
    args = argparse.Namespace(
        device="cuda", nvtx=False, roi=[4], num_samples=1, timing_items=0, cache_workers=1, seed=0,
        batch_size=2, loader_workers=0, step_ms=20.0, model=None, iters=10,
    )  # fmt: skip
    result, _ = profile_run.profile(args, [{"x": torch.zeros(3)} for _ in range(4)])
    loop_s = sum(t["iter_s"] for t in result["iterations"])
    assert result["loader"]["wall_s"] == pytest.approx(loop_s, abs=0.1)  # was loop_s + 0.6 s


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_step_ms_that_is_not_finite_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as exit_info:  # was accepted, then time.sleep raised a traceback
        profile_run.main(["--data", "x", "--step-ms", value])
    assert exit_info.value.code == 2
    assert f"--step-ms must be a finite number of milliseconds, got {value}" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_gpu_without_utilisation_figures_still_gets_its_report(tiny_spleen, tmp_path, capsys, monkeypatch):
    from fastpipe.profiling.gpu_monitor import GpuMonitor
    from fastpipe.profiling.report import summarize

    monitor = GpuMonitor()
    monitor.records = [{"t_s": 0.0, "gpu_util_pct": None, "mem_used_mib": 100.0}]  # NVML: NotSupported (MIG)
    result = {"device": "cuda", "per_transform": {}, "iterations": [], "gpu": monitor.summary()}
    result["loader"] = summarize([{"wait_s": 0.01, "step_s": 0.09, "batch_size": 2}])
    monkeypatch.setattr(profile_run, "profile", lambda args, data: (result, monitor))
    argv = ["--data", str(tiny_spleen), "--device", "cpu", "--iters", "1", "--out", str(tmp_path)]
    assert profile_run.main(argv) == 0  # was a TypeError formatting None, before any output was written
    assert "GPU utilisation: n/a (this device does not report it" in capsys.readouterr().out
    assert (tmp_path / "profile.json").is_file() and (tmp_path / "gpu.csv").is_file()


def test_time_prefix_gives_every_transform_of_one_name_its_own_row():
    def Scale(d):  # noqa: N802 - three transforms named alike, as three Spacingd would be
        return d

    rows = profile_run.time_prefix([Scale, Scale, Scale], [{"x": 1}, {"x": 2}], torch.device("cpu"))
    assert {name: row["calls"] for name, row in rows.items()} == {"Scale": 2, "Scale#2": 2, "Scale#3": 2}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timing_items", ["2", "0"])  # the volume is first read by the timing, or by the fill
def test_a_missing_volume_gets_no_hint_to_synth_over_the_data(tmp_path, capsys, timing_items):
    data = synthesize(tmp_path / "Task09", "spleen-tiny", progress=False)
    (data / "imagesTr" / "spleen_2.nii.gz").unlink()
    argv = ["--data", str(data), "--device", "cpu", "--iters", "1", "--roi", "16", "--out", str(tmp_path)]
    assert profile_run.main([*argv, "--timing-items", timing_items]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastpipe profile: ") and "spleen_2.nii.gz" in err and "Traceback" not in err
    # following that hint would replace this folder's dataset.json and overwrite its volumes
    assert "fastpipe synth" not in err
