"""The training experiment (benchmarks/train*.py): MONAI's recipe objects, every arm end to end, the JSON."""

from __future__ import annotations

import json
import time

import pytest
import torch

from benchmarks import train
from benchmarks.train_arms import ARMS
from benchmarks.train_recipe import Validator, config, make_loss, make_model, make_optimizer
from benchmarks.train_suffix import fastpipe_suffix, monai_suffix
from fastpipe.datasets import synthesize

ARM_KEYS = {"arm", "target", "reached", "time_to_target_s", "best_dice", "epoch_s", "data_wait_fraction"}


def test_recipe_objects_are_monai_classes():
    from monai import transforms as M
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet
    from monai.optimizers import Novograd

    cfg = config("tutorial")
    model = make_model(cfg)
    assert type(model) is UNet and model.channels == (16, 32, 64, 128, 256) and model.strides == (2, 2, 2, 2)
    assert model.num_res_units == 2 and model.out_channels == 2
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    loss = make_loss()
    assert type(loss) is DiceCELoss and loss.dice.to_onehot_y and loss.dice.softmax
    assert type(make_optimizer(model, cfg)) is Novograd
    assert type(Validator([], cfg, torch.device("cpu"), False).metric) is DiceMetric
    assert not Validator([], cfg, torch.device("cpu"), False).metric.include_background
    suffix = monai_suffix(cfg)
    assert [type(t) for t in suffix] == [M.RandCropByPosNegLabeld, *[M.RandFlipd] * 3, M.RandRotate90d,
                                         M.RandShiftIntensityd]  # fmt: skip
    assert [t.flipper.spatial_axis for t in suffix[1:4]] == [[0], [1], [2]]
    fp_suffix = fastpipe_suffix(cfg)
    assert [type(t).__name__ for t in fp_suffix] == [type(t).__name__ for t in suffix]
    assert [t.prob for t in fp_suffix[1:]] == [t.prob for t in suffix[1:]] == [0.1, 0.1, 0.1, 0.1, 0.5]
    small = make_model(config("cpu"))
    assert type(small) is UNet and small.channels == config("cpu").channels


def test_tutorial_scale_follows_the_tutorial():
    """Batch of 4 volumes, 160^3 validation windows 4 at a time, background only inside the body."""
    from monai import transforms as M

    from benchmarks.train_recipe import prefix

    cfg = config("tutorial")
    assert (cfg.batch_size, cfg.num_samples, cfg.patch) == (4, 4, (96, 96, 96))
    assert (cfg.val_roi, cfg.sw_batch_size, cfg.pixdim, cfg.lr) == ((160, 160, 160), 4, (1.5, 1.5, 2.0), 2e-3)
    indices = prefix(M, cfg)[-1]
    assert type(indices) is M.FgBgToIndicesd and indices.image_key == "image"

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def forward(self, x):
            self.shapes.append(tuple(x.shape))
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    recorder = Recorder()
    item = {"image": torch.zeros(1, 40, 40, 40), "label": torch.zeros(1, 40, 40, 40)}
    Validator([item], config("cpu"), torch.device("cpu"), False)(recorder)
    assert recorder.shapes == [(1, 1, 48, 48, 48)]  # one 48^3 window (padded) over a 40^3 volume


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("tiny"), "spleen-tiny", seed=0, progress=False, num_volumes=3)


@pytest.mark.timeout(300)
def test_every_arm_steps_validates_and_writes_the_json(tiny_data, tmp_path):
    out = tmp_path / "train.json"
    argv = [
        "--config",
        "smoke",
        "--data",
        str(tiny_data),
        "--target",
        "0.0",
        "--in-process",
        "--out",
        str(out),
    ]
    assert train.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "train" and doc["machine"]["commit"]
    assert doc["split"] == {"train": 2, "val": 1}
    arms = {a["arm"]: a for a in doc["arms"]}
    assert list(arms) == list(ARMS)
    for name, a in arms.items():
        assert "error" not in a, a
        assert ARM_KEYS <= set(a), name
        assert a["target"] == 0.0 and a["reached"] is True and a["time_to_target_s"] > 0
        assert 0.0 <= a["best_dice"] <= 1.0 and 0.0 <= a["data_wait_fraction"] <= 1.0
        assert a["epoch_s"]["median"] > 0 and a["peak_rss_bytes"] > 0
        assert a["memory_bytes"] > 0 and a["memory_measure"] in ("pss", "rss") and a["memory_processes"] >= 1
        assert len(a["validation"]) == 1 and a["steps"]["rows"], name
        smart = name.startswith("fastpipe-smartcache")
        per_epoch = 2 if smart else 4  # smartcache: half the 2 volumes x 2 crops
        assert a["epochs"][0]["crops"] == per_epoch, name
        # every arm validates after one pass over the training volumes: the SmartCache arm after 2 epochs
        assert a["validation"][0]["passes"] == 1.0, name
        assert a["validation"][0]["epoch"] == (2 if smart else 1), name
        # the same training data to the target in every arm, however many epochs it took
        assert a["passes_to_target"] == 1.0 and a["epochs_to_target"] == (2 if smart else 1), name
        # per pass over the training volumes: two SmartCache epochs make one
        per_pass = [e["s"] * (2 if smart else 1) for e in a["epochs"][1:] or a["epochs"]]
        assert a["per_pass_s"]["median"] == pytest.approx(sorted(per_pass)[len(per_pass) // 2]), name
    assert set(doc["ratios_time_to_target"]) == {"vs_regular", "vs_monai-fast"}
    assert doc["ratios_epoch_s"]["vs_regular"]["regular"] == 1.0 and len(
        doc["ratios_epoch_s"]["vs_regular"]
    ) == len(ARMS)
    assert {p["hardware"] for p in doc["published"]} >= {"NVIDIA A100", "NVIDIA V100"}
    assert doc["published"][0]["time_to_target_s"] == {"regular": 13063, "fast": 120}
    for suffix in ("-dice.png", "-utilisation.png"):
        assert (tmp_path / f"train{suffix}").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_arm_in_its_own_process_reports_an_unreached_target(tiny_data, tmp_path):
    out = tmp_path / "train.json"
    argv = ["--config", "smoke", "--data", str(tiny_data), "--arms", "fastpipe", "--target", "1.01"]
    assert train.main([*argv, "--max-epochs", "1", "--out", str(out), "--no-plot"]) == 0
    (arm,) = json.loads(out.read_text())["arms"]
    assert "error" not in arm, arm
    assert arm["reached"] is False and arm["time_to_target_s"] is None and len(arm["validation"]) == 1


def test_epoch_ratios_compare_passes_over_the_training_volumes_not_smartcache_half_epochs(tmp_path):
    """A SmartCache epoch covers half the volumes: twice as fast per epoch is the same speed per pass."""

    def arm(name: str, epoch_s: float, crops: int) -> dict:
        per_pass = {"median": epoch_s * 8 / crops}
        return {"arm": name, "reached": False, "epoch_s": {"median": epoch_s}, "per_pass_s": per_pass}

    arms = [arm("regular", 4.0, 8), arm("monai-fast", 1.0, 8), arm("fastpipe-smartcache", 0.5, 4)]
    doc = train._document(config("smoke"), torch.device("cpu"), tmp_path, [{}] * 4, [{}], arms, ["regular"])
    assert doc["ratios_epoch_s"]["vs_monai-fast"]["fastpipe-smartcache"] == 1.0
    assert doc["ratios_epoch_s"]["vs_regular"] == {
        "regular": 1.0,
        "monai-fast": 4.0,
        "fastpipe-smartcache": 4.0,
    }


PEAK_RSS_PROBE = """
import resource, subprocess, sys
from benchmarks.train_loop import _peak_rss_bytes
hold = "b = bytearray(b'x') * (120 << 20); print('ready', flush=True); input()"
kids = [subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)]
assert all(k.stdout.readline().strip() == "ready" for k in kids)
print(_peak_rss_bytes() - resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
for k in kids:
    k.communicate("\\n", timeout=30)
"""


@pytest.mark.timeout(120)
def test_peak_rss_counts_every_live_worker_process():
    """The regular arm's DataLoader workers are alive when it ends: each one's memory counts, not none."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(train.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_PROBE], cwd=repo, capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 2 * (120 << 20)  # a fresh interpreter: no child reaped before


def test_the_utilisation_chart_falls_back_to_the_timeline_without_utilisation_samples(tmp_path):
    """NVML without utilisation (a MIG slice) gives samples of None: the chart shows the data-wait timeline."""
    from benchmarks.train_plot import plot_utilisation

    arm = {
        "arm": "fastpipe",
        "data_wait_fraction": 0.1,
        "validation": [{"t_s": 2.0, "val_s": 0.5, "dice": 0.1}],
        "steps": {"rows": [[0.5, 0.1, 0.2], [0.9, 0.0, 0.2]]},
        "gpu_util": {"columns": ["t_s", "gpu_util_pct"], "rows": [[0.0, None], [0.2, None]], "summary": {}},
    }
    doc = {"arms": [arm, {**arm, "arm": "regular"}], "machine": {"gpu": "A100 MIG 1g.10gb"}, "config": {}}
    assert plot_utilisation(doc, tmp_path / "u.png").stat().st_size > 1000


def test_the_matrix_training_on_a_gpu_keeps_volumes_to_train_on(tmp_path, monkeypatch):
    """make bench ARGS=--train on a GPU: the tutorial config validates on 9, the matrix has 8 volumes."""
    import argparse

    root = synthesize(tmp_path / "d", "spleen-tiny", seed=0, progress=False, num_volumes=8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got: list[list[str]] = []
    monkeypatch.setattr(train, "main", got.append)
    args = argparse.Namespace(threads=2, train_epochs=1, train_max_s=None, dice_target=None, no_plot=True)
    train.train_from_matrix(root, args, tmp_path / "train.json")
    parsed = train.parse_args(got[0])
    cfg = train._config(parsed)
    assert cfg.patch == (96, 96, 96)  # the tutorial config, as on a GPU
    tr, val, _ = train.load_split(parsed, cfg)
    assert (len(tr), len(val)) == (6, 2)


def test_unknown_arm_and_config_are_named():
    with pytest.raises(ValueError, match="unknown train config 'huge'"):
        config("huge")
    with pytest.raises(SystemExit, match="unknown arms"):
        train.main(["--config", "smoke", "--arms", "nope", "--data", "/nonexistent"])


@pytest.mark.timeout(300)
def test_interleaved_epochs_share_one_step_and_report_each_arm(tiny_data, tmp_path):
    """The drift-free comparison: the arms' epochs in one process, shuffled per round, each fully cropped."""
    out = tmp_path / "train.json"
    argv = ["--config", "smoke", "--data", str(tiny_data), "--arms", "fastpipe,monai-fast,fastpipe-smartcache",
            "--target", "0.0", "--interleaved-rounds", "2", "--in-process", "--no-plot", "--out", str(out)]  # fmt: skip
    assert train.main(argv) == 0
    inter = json.loads(out.read_text())["interleaved"]
    # the chosen arms, in the module's order (regular was not chosen)
    assert list(inter["arms"]) == ["monai-fast", "fastpipe", "fastpipe-smartcache"] and inter["rounds"] == 2
    for name, row in inter["arms"].items():
        assert row["epoch_s"]["n"] == 2 and row["epoch_s"]["median"] > 0, name
        # a SmartCache epoch covers its window, half the volumes: two of its epochs make one pass
        per_pass = 2 if name == "fastpipe-smartcache" else 1
        assert row["per_pass_s"]["median"] == pytest.approx(per_pass * row["epoch_s"]["median"]), name
        assert 0 < row["mean_step_s"]["median"] <= row["epoch_s"]["max"], name
        assert 0.0 <= row["data_wait_fraction"] < 1.0, name
    assert inter["arms"]["monai-fast"]["run_ahead_bound_s"] == 0.0
    assert inter["arms"]["fastpipe"]["run_ahead_bound_s"] > 0.0  # persistent: it may make batches ahead
    vs = inter["ratios_per_pass"]["vs_monai-fast"]
    assert vs["monai-fast"] == 1.0 and vs["fastpipe"] > 0 and vs["fastpipe-smartcache"] > 0


def test_interleaved_rounds_default_by_config():
    assert config("cpu").interleaved_rounds == 6
    assert config("tutorial").interleaved_rounds == 0 and config("smoke").interleaved_rounds == 0


@pytest.mark.timeout(300)
def test_the_persistent_smartcache_arm_reads_reentering_items_back_and_removes_its_folder(
    tiny_data, tmp_path
):
    """Every item runs the prefix once; its later entries into the window load the persistent entry."""
    from pathlib import Path

    from benchmarks.train_arms import build
    from fastpipe.datasets import load_decathlon_datalist

    cfg = config("smoke")
    items = load_decathlon_datalist(tiny_data)
    train_items, val_items = items[:2], items[2:]
    arm = build("fastpipe-smartcache-persist", train_items, val_items, cfg, torch.device("cpu"))
    folder = Path(arm.info["persist_dir"])
    try:
        ds = arm.loader.dataset
        assert ds.core.persist is not None and folder.is_dir()
        for _ in range(6):  # a window of 1 of the 2 volumes, one swap per epoch: each enters 3 times
            crops = sum(int(b["image"].shape[0]) for b in arm.loader)
            assert crops == arm.crops_per_epoch
        ds.wait_replacements(timeout=60)
        assert ds.core.computed == len(train_items)  # computed once each, then read back
        assert len(list(folder.rglob("*"))) > 0
    finally:
        arm.close()
    assert not folder.exists()


def test_an_arm_reports_its_timeline_after_every_validation(tiny_data):
    from benchmarks.train_loop import train_arm
    from fastpipe.datasets import load_decathlon_datalist

    items = load_decathlon_datalist(tiny_data)
    cfg = config("smoke", max_epochs=2, target=1.01)
    seen: list[dict] = []
    res = train_arm("fastpipe", items[:2], items[2:], cfg, torch.device("cpu"), seen.append)
    assert [len(p["validation"]) for p in seen] == [1, 2]  # the timeline so far, after each validation
    assert seen[-1]["validation"] == res["validation"] and seen[-1]["arm"] == "fastpipe"


@pytest.mark.timeout(300)
def test_the_epoch_budget_gives_the_smartcache_arm_as_many_passes_as_the_others(tiny_data):
    """--max-epochs 2 is two passes over the training volumes for every arm, four SmartCache half epochs."""
    from benchmarks.train_loop import train_arm
    from fastpipe.datasets import load_decathlon_datalist

    items = load_decathlon_datalist(tiny_data)
    cfg = config("smoke", max_epochs=2, target=1.01)
    res = train_arm("fastpipe-smartcache", items[:2], items[2:], cfg, torch.device("cpu"))
    assert [v["passes"] for v in res["validation"]] == [1.0, 2.0]
    assert len(res["epochs"]) == 4


def test_the_build_time_waits_for_the_device(tiny_data, monkeypatch):
    """A GPU cache fill queues asynchronous copies: build_s is read after they finish (here 0.5 s of them)."""
    from benchmarks import train_loop
    from fastpipe.datasets import load_decathlon_datalist

    queued = [0.5]  # seconds of device work the build left queued

    def sync(device=None):
        time.sleep(queued.pop() if queued else 0.0)

    monkeypatch.setattr(train_loop, "sync", sync)
    items = load_decathlon_datalist(tiny_data)
    res = train_loop.train_arm(
        "fastpipe", items[:2], items[2:], config("smoke", max_epochs=1), torch.device("cpu")
    )
    assert res["build_s"] >= 0.5


def test_a_killed_arm_keeps_the_timeline_its_worker_kept(monkeypatch):
    """An arm whose process runs past its limit is an error, but the validations it made stay in the JSON."""
    import subprocess

    def run_then_hang(cmd, **kwargs):
        out = cmd[cmd.index("--worker-out") + 1]
        (train._partial_path(__import__("pathlib").Path(out))).write_text(
            json.dumps({"arm": "fastpipe", "validation": [{"epoch": 1, "dice": 0.5}], "epochs": 1})
        )
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", run_then_hang)
    res = train._run_arm("fastpipe", [], timeout_s=7)
    assert res["error"] == "timed out after 7 s"
    assert res["partial"]["validation"] == [{"epoch": 1, "dice": 0.5}]
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: (_ for _ in ()).throw(subprocess.TimeoutExpired(cmd, 7))
    )
    assert "partial" not in train._run_arm("fastpipe", [], timeout_s=7)  # nothing kept: nothing claimed


def test_a_crashed_arm_keeps_the_timeline_its_worker_kept(monkeypatch):
    """An arm whose process dies (a CUDA out-of-memory error at epoch 5) keeps the validations it made."""
    import subprocess
    from pathlib import Path

    def validate_then_crash(cmd, **kwargs):
        out = cmd[cmd.index("--worker-out") + 1]
        train._partial_path(Path(out)).write_text(
            json.dumps({"arm": "regular", "validation": [{"dice": 0.4}]})
        )
        return subprocess.CompletedProcess(cmd, 1, "", "torch.OutOfMemoryError: CUDA out of memory")

    monkeypatch.setattr(subprocess, "run", validate_then_crash)
    res = train._run_arm("regular", [], timeout_s=7)
    assert res["error"] == "torch.OutOfMemoryError: CUDA out of memory"
    assert res["partial"]["validation"] == [{"dice": 0.4}]


def test_the_result_names_the_commit_the_arms_started_on(tmp_path, monkeypatch):
    """The JSON, written after every arm, read the commit then: a commit (or edit) during a run of
    many minutes relabelled every arm's figures with a tree none of them ran on."""
    from benchmarks import common

    commits = iter(["abc1234-dirty", "def5678", "def5678", "def5678"])
    now = {"commit": next(commits)}
    monkeypatch.setattr(common, "git_commit", lambda: now["commit"])
    monkeypatch.setattr(train, "load_split", lambda args, cfg: ([{}] * 2, [{}], tmp_path))

    def fake_arm(name, *rest, **kw):
        now["commit"] = next(commits)  # someone commits while the arm trains
        return {"arm": name, "error": "stand-in"}

    monkeypatch.setattr(train, "_in_process", fake_arm)
    out = tmp_path / "train.json"
    argv = ["--config", "smoke", "--arms", "fastpipe,regular", "--in-process", "--no-plot", "--out", str(out)]
    assert train.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["machine"]["commit"] == "abc1234-dirty" and doc["commit_at_end"] == "def5678"


class _SlowEnds:
    """A loader whose epoch start and end block on the data side, as a SmartCache window swap does."""

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s

    def __iter__(self):
        time.sleep(self.start_s)
        return self._batches()

    def _batches(self):
        for _ in range(2):
            yield {"image": torch.rand(2, 1, 8, 8, 8), "label": torch.randint(0, 2, (2, 1, 8, 8, 8))}
        time.sleep(self.end_s)


def test_the_data_wait_counts_the_epochs_start_and_end():
    """A SmartCache arm waits for its window swap in the request that ends the epoch: that is data wait,
    not training (it was left out, and an arm that waited most of its epoch published ~0% data wait)."""
    from benchmarks.train_loop import _Steps

    steps = _Steps(torch.nn.Conv3d(1, 2, 1), config("smoke"), torch.device("cpu"), time.perf_counter())
    t0 = time.perf_counter()
    crops, waited = steps.epoch(_SlowEnds(0.2, 0.3))
    wall = time.perf_counter() - t0
    assert crops == 4
    assert 0.5 <= waited <= wall


def test_on_a_gpu_the_kernels_are_compiled_before_any_arms_clock(monkeypatch):
    """CuPy keeps the compiled kernels on disk: on a fresh GPU the first fastpipe arm alone paid the
    NVRTC compile in its time to target. It is done with the imports, before the clock starts."""
    import fastpipe.ops
    from benchmarks import train_loop

    compiled: list[bool] = []
    monkeypatch.setattr(fastpipe.ops, "cuda_kernels_available", lambda: compiled.append(True) or True)
    train_loop._import_libraries(torch.device("cpu"))
    assert compiled == []
    train_loop._import_libraries(torch.device("cuda"))
    assert compiled == [True]
