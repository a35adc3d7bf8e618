"""The README as a reader meets it: the drop-in example runs as written (on the CPU, on look-alike data)
and prints what the README shows; its transform table says what the plan does; its figures are the
ones the JSON files it cites hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastpipe.datasets import synthesize

README = Path(__file__).resolve().parent.parent / "README.md"


def _drop_in_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    matches = [b for b in blocks if "fp.CacheDataset" in b and "ThreadDataLoader" in b]
    assert matches, "README lost its drop-in example"
    return matches[0]


@pytest.mark.timeout(120)
def test_readme_drop_in_example_runs(tmp_path, capsys):
    """Verbatim but for the data folder: it picks the device itself and trains a real step."""
    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    code = _drop_in_block().replace('"data/spleen-small"', repr(str(root)))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    batch = scope["batch"]  # the loop's last batch: 2 volumes x 4 crops
    assert tuple(batch["image"].shape) == (8, 1, 96, 96, 96)
    assert tuple(batch["label"].shape) == (8, 1, 96, 96, 96)
    assert scope["loss"].requires_grad and len(scope["loader"].timings) == 1
    out = capsys.readouterr().out
    assert "data-wait report" in out and "data wait" in out and "crops/s" in out
    # the sample output the README shows lists the stages and summary lines the code prints
    sample = [
        b
        for b in re.findall(r"```text\n(.*?)```", README.read_text(), flags=re.S)
        if b.startswith("data-wait")
    ]
    assert sample, "README lost its sample data-wait report"
    assert _row_labels(sample[0]) == _row_labels(out)


def _row_labels(text: str) -> list[str]:
    """The first word of each line of a data-wait report: its stage rows and summary lines."""
    start = text.index("data-wait report")
    lines = text[start:].splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("throughput"))
    return [line.split()[0] for line in lines[: end + 1] if line.strip()]


def _transform_rows() -> dict[str, str]:
    """README's "Supported transforms" table: each transform name in a row's first cell -> the row."""
    text = README.read_text()
    table = text[text.index("### Supported transforms") :].split("\n\n")[1]
    rows = {}
    for row in table.splitlines()[2:]:
        for name in re.findall(r"`(\w+)`", row.split("|")[1]):
            rows.setdefault(name, row)
    return rows


def test_readme_transform_table_lists_every_translated_monai_transform():
    """A MONAI transform fastpipe swaps for its own is not "any other MONAI transform" (per item)."""
    from fastpipe.transforms._translate import REGISTRY

    assert set(REGISTRY) <= set(_transform_rows()), set(REGISTRY) - set(_transform_rows())


@pytest.mark.timeout(120)
def test_readme_transform_table_says_where_each_runs_after_the_crop(tmp_path):
    """The plan puts each transform after the crop where its README row says (fused, or the stacked batch)."""
    monai_transforms = pytest.importorskip("monai.transforms")
    import fastpipe as fp

    m, keys = monai_transforms, ["image", "label"]
    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=1)
    after_crop = {  # transform -> (its README row's name, the words of the row that must say where it runs)
        "flip": (m.RandFlipd(keys, prob=0.5), "RandFlipd", "fused into the crop"),
        "turn": (m.RandRotate90d(keys, prob=0.5), "RandRotate90d", "fused into the crop"),
        "scale": (
            m.RandScaleIntensityd("image", 0.1, prob=0.5),
            "RandScaleIntensityd",
            "fused into the crop",
        ),
        "scale-cw": (
            m.RandScaleIntensityd("image", 0.1, prob=0.5, channel_wise=True),
            "RandScaleIntensityd",
            "`channel_wise=True` or another `dtype` on the stacked batch",
        ),
        "shift-cw": (
            m.RandShiftIntensityd("image", 0.1, prob=0.5, channel_wise=True),
            "RandShiftIntensityd",
            "`channel_wise=True` on the stacked batch",
        ),
        "noise": (m.RandGaussianNoised("image", prob=0.5), "RandGaussianNoised", "on the stacked batch"),
        "contrast": (m.RandAdjustContrastd("image", prob=0.5), "RandAdjustContrastd", "on the stacked batch"),
        "to-tensor": (m.ToTensord(keys), "ToTensord", "on the stacked batch"),
        "cast": (m.CastToTyped("image"), "CastToTyped", "on the stacked batch"),
        "select": (m.SelectItemsd(keys), "SelectItemsd", "on the stacked batch"),
    }
    rows = _transform_rows()
    data = fp.datasets.load_decathlon_datalist(root)
    for tag, (transform, name, words) in after_crop.items():
        crop = m.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(64, 64, 64), num_samples=2)
        chain = [m.LoadImaged(keys), m.EnsureChannelFirstd(keys), crop, transform]
        ds = fp.CacheDataset(data, chain, num_workers=1, progress=False)
        note = ds.describe().splitlines()[-2]  # the step after the crop
        ds.close()
        assert name in note and ("fused into" in note) == ("fused" in words), (tag, note)
        assert ("on the stacked batch" in note) == ("stacked batch" in words), (tag, note)
        assert words in rows[name], (tag, rows[name])


@pytest.mark.parametrize(
    ("section", "result"),
    [
        ("### `make bench`", "2026-11-27-vm.json"),
        ("### On a GPU: an earlier run", "gpu-bench-spleen-nvidia-h100-80gb-hbm3.json"),
    ],
)
def test_readme_ratios_are_what_the_report_prints(section, result):
    """Each "x MONAI (range)" the README quotes is the one ``python -m benchmarks.report`` prints from its JSON."""
    import json

    from benchmarks.report import format_table, speedups

    rows = json.loads((README.parent / "benchmarks" / "results" / result).read_text())["rows"]
    speedups(rows)
    text = README.read_text()
    start = text.index(section)
    quoted = text[start : text.index("\n### ", start + 1)]
    assert result in quoted, f"the section quoting {result} does not name it"
    checked = 0
    for line in format_table(rows).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[-1].endswith("x)"):
            ours = [q for q in quoted.splitlines() if re.match(rf"\| `?{re.escape(cells[0])}`?[ |]", q)]
            assert ours and ours[0].rstrip(" |").endswith(cells[-1]), (cells[0], cells[-1], ours)
            checked += 1
    assert checked >= 2


def _result(name: str, *path: str) -> float:
    import json

    value = json.loads((README.parent / "benchmarks" / "results" / name).read_text())
    for key in path:
        value = value[key]
    return value


#: Component-benchmark figures the README quotes: (JSON, keys to the value, how the README writes it).
COMPONENT_FIGURES = [
    ("crop-speed-cpu.json", ("results", "per_volume_ms", "fastpipe"), "| {:.1f} ms |"),
    ("crop-speed-cpu.json", ("results", "per_volume_ms", "copy"), "preallocated buffers: {:.1f} ms"),
    ("crop-speed-cpu.json", ("results", "per_volume_ms", "monai"), "default MetaTensor: {:.1f} / "),
    ("crop-speed-cpu.json", ("results", "per_volume_ms", "monai_meta"), " / {:.1f} ms |"),
    ("crop-speed-cpu.json", ("results", "ratios", "fastpipe_over_copy"), "| {:.2f}x the copy ("),
    ("cached-epoch-cpu.json", ("peers", "fastpipe", "ms_per_volume"), "| {:.1f} ms | MONAI best practice"),
    ("cached-epoch-cpu.json", ("peers", "monai_best", "ms_per_volume"), "ThreadDataLoader): {:.1f} ms"),
    (
        "cached-epoch-cpu.json",
        ("peers", "monai_best_no_meta", "ms_per_volume"),
        "`set_track_meta(False)`: {:.1f} ms",
    ),
    ("cached-epoch-cpu.json", ("peers", "monai_default", "ms_per_volume"), "(`copy_cache=True`): {:.0f} ms"),
    ("cached-epoch-cpu.json", ("peers", "plain_copy", "ms_per_volume"), "same crop bytes: {:.1f} ms"),
    ("cached-epoch-cpu.json", ("ratios", "vs_monai_best_no_meta"), "| {:.1f}x |"),
    ("cached-epoch-cpu.json", ("ratios", "vs_monai_default"), "**{:.1f}x** (target 15x)"),
    ("cached-epoch-cpu.json", ("ratios", "vs_plain_copy"), "| {:.2f}x the copy (target"),
]


@pytest.mark.parametrize(
    ("result", "path", "written"), COMPONENT_FIGURES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_readme_component_figures_match_their_json(result, path, written):
    expected = written.format(_result(result, *path))
    assert expected in README.read_text(), (result, path, expected)


#: The tutorial-epoch table: its row's opening words -> the peer in the runs' JSON.
TUTORIAL_PEERS = {
    "fastpipe, chain written with fastpipe's transforms": "fastpipe",
    "the same without the suffix (crop only)": "fastpipe_crop_only",
    "the same MONAI `Compose` handed to `fp.CacheDataset`": "monai_compose",
    "the same dataset read by MONAI's `ThreadDataLoader`": "monai_compose_monai_loader",
    "MONAI best practice: `CacheDataset(copy_cache=False)`": "monai_best",
    "plain copy of the crop bytes into new batch tensors": "plain_copy",
    "plain copy of the crop bytes into one reused batch": "plain_copy_reused",
}


def test_readme_tutorial_epoch_table_is_the_median_of_its_runs():
    """The tutorial table quotes medians over runs 16-28: each ms per volume and the headline ratio."""
    import statistics

    runs = [f"tutorial-epoch-cpu-run{n}.json" for n in range(16, 29)]
    text = README.read_text()
    assert "`-run16.json` to `-run28.json`" in text
    for opening, peer in TUTORIAL_PEERS.items():
        ms = statistics.median(_result(r, "peers", peer, "ms_per_volume") for r in runs)
        row = next(line for line in text.splitlines() if line.startswith(f"| {opening}"))
        assert f"| {ms:.2f} |" in row, (peer, ms, row)
    ratios = [_result(r, "ratios", "vs_monai_best") for r in runs]
    assert f"**{statistics.median(ratios):.2f}x faster** (median of the thirteen" in text
    assert sum(r >= 4.0 for r in ratios) == 11 and "met in **eleven of the thirteen**" in text


TRAIN_SEEDS = ["train-vm.json"] + [f"train-vm-seed{s}.json" for s in range(1, 10)]


def _arm(result: str, arm: str) -> dict:
    return next(a for a in _result(result, "arms") if a["arm"] == arm)


def _section_rows(section: str, arm: str) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    body = text[start : text.index("\n### ", start + 1)]
    return [line for line in body.splitlines() if line.startswith(f"| {arm} |")]


@pytest.mark.parametrize(
    "arm", ["regular", "monai-fast", "fastpipe", "fastpipe-smartcache", "fastpipe-smartcache-persist"]
)
def test_readme_training_tables_match_their_json(arm):
    """Seed 0's time to Dice, the interleaved pass of seed 0, and the ten seeds' median and range."""
    import statistics

    seed0, interleaved, seeds = _section_rows("### Training to a Dice target", arm)[
        :3
    ]  # then the ten seeds again
    a = _arm("train-vm.json", arm)
    assert f"{a['time_to_target_s']:.1f} s" in seed0 and f"{a['epoch_s']['median']:.2f} s" in seed0, seed0
    assert f"{100 * a['data_wait_fraction']:.0f}%" in seed0, seed0
    per_pass = _result("train-vm.json", "interleaved", "arms", arm, "per_pass_s", "median")
    assert f"| {per_pass:.2f} s" in interleaved.replace("**", ""), interleaved
    times = [_arm(r, arm)["time_to_target_s"] for r in TRAIN_SEEDS]
    median, span = statistics.median(times), f"{min(times):.1f}-{max(times):.1f} s"
    assert f"| {median:.1f} s |" in seeds.replace("**", "") and span in seeds, (median, span, seeds)
