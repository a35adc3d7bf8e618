"""Figures the README and docs/ quote are the ones their JSON files (or the compiler) give.

``test_readme.py`` checks the CPU tables; this file checks the GPU section, the kernel's register
counts and the other figures quoted in prose, each against the file the text names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _section(heading: str, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    start = text.index(heading)
    end = text.find("\n### ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _row(body: str, name: str) -> str:
    """The table row whose first cell is ``name``, backticked or not, with any words after it."""
    pattern = rf"\| `?{re.escape(name)}`?( [^|]*)? \|"
    rows = [line for line in body.splitlines() if re.match(pattern, line)]
    assert rows, f"no row {name!r}"
    return rows[0]


def test_gpu_check_table_is_its_json():
    check = _json("gpu-check-nvidia-h100-80gb-hbm3.json")
    body = _section("### On a GPU")
    cases = check["match_cases"]
    assert check["cuda_matches_torch"] and all(c["bit_equal"] for c in cases)
    assert f"all {len(cases)} cases equal" in body
    tests = check["pytest_gpu"]
    assert f"{tests['passed']} passed, {tests['failed']} failed" in body
    assert f"| {check['compute_sanitizer']['errors']} errors |" in body
    h2d = (
        f"{check['cached_epoch_h2d_bytes']:,} bytes in {check['cached_epoch_h2d_copies']} copies, "
        f"the largest {check['cached_epoch_largest_h2d_copy']} bytes"
    )
    assert h2d in body
    gbps = f"{check['crop_kernel_gbps'] / 1000:.2f} TB/s, against {check['d2d_copy_gbps'] / 1000:.2f} TB/s"
    assert gbps in body and f"**{100 * check['kernel_fraction_of_copy']:.0f}%**" in body
    assert f"| {check['gpu_vs_cpu_crop_speedup']:.1f}x faster |" in body
    assert f"its sections ran {sum(check['section_s'].values()):.0f} s in all" in body
    assert f"commit\n{check['tree_commit']['commit']}; its sections" in body
    gpu_doc = (REPO / "docs" / "gpu-check.md").read_text()
    assert f"took {sum(check['section_s'].values()):.0f} s in all" in gpu_doc


def test_gpu_bench_rows_and_time_are_their_json():
    from benchmarks.report import speedups

    rows = {r["row"]: r for r in _json("gpu-bench-spleen-nvidia-h100-80gb-hbm3.json")["rows"]}
    speedups(list(rows.values()))
    body = _section("### On a GPU")
    for name, row in rows.items():
        line = _row(body, name)
        assert f"| {row['fill_s']:.1f} s | {row['crops_per_s']['median']:.0f} |" in line, line
        assert f"| {100 * row['data_wait_fraction']['median']:.0f}% |" in line, line
        if row["peak_gpu_bytes"]:
            assert f"| {row['peak_gpu_bytes'] / 2**30:.2f} GiB |" in line, line
    runs = _json("gpu-bench-nvidia-h100-80gb-hbm3.json")["runs"]
    total = round(sum(r["seconds"] for r in runs.values()))
    took = f"{total // 60} min {total % 60} s"
    assert f"commit e913f09, {took})" in body
    assert f"it took {took}" in (REPO / "docs" / "gpu-check.md").read_text()


def test_gpu_training_table_is_its_json():
    train = _json("train-nvidia-h100-80gb-hbm3.json")
    body = _section("### On a GPU")
    assert f"ran **{train['config']['max_s']:.0f} s per arm" in body
    for arm in train["arms"]:
        line = _row(body, arm["arm"]).replace("**", "")
        util = [r[1] for r in arm["gpu_util"]["rows"]]
        epoch = arm["epoch_s"]["median"]
        cells = [
            f"| {arm['build_s']:.1f} s | {len(arm['epochs'])}",
            f"| {epoch:.{1 if epoch >= 10 else 2}f} s | {100 * arm['data_wait_fraction']:.0f}% |",
            f"| {sum(util) / len(util):.0f}% | {arm['best_dice']:.2f} |",
        ]
        assert all(c in line for c in cells), (cells, line)
        assert not arm["reached"]
    cfg = train["config"]  # the recipe the README says that run used
    crops = cfg["batch_size"] * cfg["num_samples"]
    assert f"batches of {cfg['batch_size']} volumes ({crops} crops)" in _flat(README)
    assert "val_roi" not in cfg  # windows of the crop's size: the recipe before 160³ windows


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH: ptxas's register counts need it")
@pytest.mark.timeout(240)
def test_the_kernels_register_counts_are_what_ptxas_reports(tmp_path):
    """docs/random-suffix.md and the README quote the crop kernel's registers and stack per thread."""
    from fastpipe.ops._cuda_crop import NVRTC_OPTIONS

    src = REPO / "kernels" / "crop_pos_neg.cu"
    cmd = [NVCC, "-arch=sm_90", *NVRTC_OPTIONS, "-ftz=true", "-Xptxas", "-v", "-c", str(src)]
    res = subprocess.run([*cmd, "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=220)
    assert res.returncode == 0, res.stderr
    found = dict(re.findall(r"entry function '(\w+)'.*?Used (\d+) registers", res.stderr, flags=re.S))
    stacks = dict(re.findall(r"Function properties for (\w+)\n\s*(\d+) bytes stack frame", res.stderr))
    doc = " ".join((REPO / "docs" / "random-suffix.md").read_text().split())
    assert f"costs registers: {found['crop_pos_neg_i32']} per thread against 38" in doc
    assert f"{found['crop_pos_neg_i64']} against 40 for the 64-bit" in doc
    assert f"a stack of {stacks['crop_pos_neg_i32']} bytes ({stacks['crop_pos_neg_i64']} in the 64-bit" in doc
    readme = " ".join(README.read_text().split())
    assert f"registers ({found['crop_pos_neg_i32']} per thread against 38" in readme


def _flat(path: Path) -> str:
    return " ".join(path.read_text().split())


def test_cache_sizes_quoted_for_many_gpus_are_worked_out_from_the_footprint_json():
    """README, docs/distributed.md and docs/DESIGN.md: spleen's cache per GPU from cache-footprint.json."""
    import math

    footprint = _json("cache-footprint.json")
    fit = footprint["spleen_full_fit"]
    n, per_volume = fit["preset_volumes"], fit["compact"]["mean_bytes_per_volume"]
    whole, on8, on32 = (per_volume * k / 1e9 for k in (n, math.ceil(n / 8), math.ceil(n / 32)))
    readme, dist = _flat(README), _flat(REPO / "docs" / "distributed.md")
    assert f"the {n} spleen-full look-alike volumes, at the {per_volume / 1e6:.0f} MB" in readme
    assert f"{whole:.1f} GB on one GPU, {on8:.1f} GB per GPU on 8 GPUs, {on32:.2f} GB on 32" in readme
    assert (
        f"≈ {per_volume / 1e6:.0f} MB in fastpipe's cache, ≈ {fit['lists']['mean_bytes_per_volume'] / 1e6:.0f} MB"
        in dist
    )
    assert f"≈ 6 items ≈ {on8:.1f} GB per GPU instead of {whole:.1f} GB" in dist
    assert f"2 items ≈ {on32:.2f} GB per GPU" in dist
    lists, compact = (footprint["bytes"][form]["bytes_per_entry"] for form in ("lists", "compact"))
    design = _flat(REPO / "docs" / "DESIGN.md")
    assert f"such an entry takes {lists / 1e6:.0f} MB, in fastpipe's form {compact / 1e6:.0f} MB" in design
    assert f"about {41 * lists / 1e9:.1f} GB and {41 * compact / 1e9:.1f} GB" in design


def test_the_step_the_all_reduce_is_weighed_against_is_the_gpu_runs():
    import statistics

    arm = next(a for a in _json("train-nvidia-h100-80gb-hbm3.json")["arms"] if a["arm"] == "fastpipe")
    column = arm["steps"]["columns"].index("step_s")
    step_ms = 1000 * statistics.median(row[column] for row in arm["steps"]["rows"])
    assert f"against its {step_ms:.0f} ms step of 8 crops with AMP on the H100" in _flat(README)
    assert f"step of ≈ {step_ms:.0f} ms (8 crops of 96³; the median `step_s`" in _flat(
        REPO / "docs" / "distributed.md"
    )


TRAIN_SEEDS = ["train-vm.json"] + [f"train-vm-seed{s}.json" for s in range(1, 10)]
ARMS = ["regular", "monai-fast", "fastpipe", "fastpipe-smartcache", "fastpipe-smartcache-persist"]


def _span(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def test_training_prose_is_the_ten_seeds_json():
    """The per-pass and time-to-target comparisons quoted around the training tables."""
    import statistics

    runs = [_json(name) for name in TRAIN_SEEDS]
    passes = [{a: r["interleaved"]["arms"][a]["per_pass_s"]["median"] for a in ARMS} for r in runs]
    arms = [{a["arm"]: a for a in r["arms"]} for r in runs]
    readme = _flat(README)
    body = _flat_text(_section("### Training to a Dice target"))
    persist = [p["fastpipe-smartcache"] / p["fastpipe-smartcache-persist"] for p in passes]
    assert f"({_span(persist)}x faster per pass than without it over ten seeds" in readme
    for arm in ARMS[2:]:
        if arm != "fastpipe-smartcache":
            vs = [p["monai-fast"] / p[arm] for p in passes]
            assert (
                f"{_span(vs)}x faster than monai-fast's in all ten seeds" in body
                or f"{_span(vs)}x faster than MONAI's fast recipe's in all ten seeds" in body
            ), arm
    for arm in ARMS:
        vs = [p["monai-fast"] / p[arm] for p in passes]
        section = _section("### Training to a Dice target").splitlines()
        line = [row for row in section if row.startswith(f"| {arm} |")][1]  # the interleaved table
        median = f"{statistics.median(vs):.2f}x"
        assert f"| {median} ({_span(vs)}x) |" in line.replace("**", "") or arm == "monai-fast", line
    times = [{a: arms_[a]["time_to_target_s"] for a in ARMS} for arms_ in arms]
    for arm in ARMS:  # the ten seeds' table: time ratio per seed, seeds won, data wait
        section = _section("### Training to a Dice target").splitlines()
        line = [row for row in section if row.startswith(f"| {arm} |")][2].replace("**", "")
        waits = sorted({round(100 * a[arm]["data_wait_fraction"]) for a in arms})
        wait = f"{waits[0]}%" if len(waits) == 1 else f"{waits[0]}-{waits[-1]}%"
        assert line.endswith(f"| {wait} |"), (arm, waits, line)
        if arm != "monai-fast":
            vs = [t["monai-fast"] / t[arm] for t in times]
            won = sum(v > 1 for v in vs)
            assert f"| {statistics.median(vs):.2f}x ({_span(vs)}x) | {won} of 10 |" in line, line
    firsts = [min(t, key=t.get) for t in times]
    count = {a: firsts.count(a) for a in ARMS}
    assert (
        f"(`fastpipe` in {count['fastpipe']}, the SmartCache arm over the persistent cache in {count['fastpipe-smartcache-persist']}, the recomputing one in {count['fastpipe-smartcache']})"
        in body
    )
    assert f"monai-fast was first in the other {count['monai-fast']}**" in body
    regular = [t["regular"] / t["fastpipe"] for t in times]
    assert f"{_span(regular, 1)}x faster than `regular` (median {statistics.median(regular):.2f}x)" in body
    fill = arms[0]["fastpipe"]["build_s"], arms[0]["monai-fast"]["build_s"]
    assert f"fill ({fill[0]:.1f} s against {fill[1]:.1f} s in seed 0)" in body
    ahead = {a: [1000 * r["interleaved"]["arms"][a]["run_ahead_bound_s"] for r in runs] for a in ARMS[2:]}
    smart = ahead["fastpipe-smartcache"] + ahead["fastpipe-smartcache-persist"]
    assert (
        f"{_span(ahead['fastpipe'], 0)} ms (fastpipe) and {_span(smart, 0)} ms (the SmartCache arms)" in body
    )


def _flat_text(text: str) -> str:
    return " ".join(text.split())


def test_make_bench_table_is_what_the_report_prints():
    """Every cell of the README's `make bench` table, as `python -m benchmarks.report` prints its JSON."""
    from benchmarks.report import format_table, speedups

    rows = _json("2026-11-27-vm.json")["rows"]
    speedups(rows)
    body = _section("### `make bench`")
    printed = format_table(rows).splitlines()
    header = [c.strip() for c in printed[0].strip("|").split("|")]
    gpu = header.index("GPU GiB")  # no GPU on that VM: the README leaves the column out
    for line in printed[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("fastpipe-gpu-cache"):
            continue  # skipped on a CPU: the README names the reason briefly
        ours = _row(body, cells[0])
        quoted = [c.strip() for c in ours.strip("|").split("|")]
        assert quoted[1:] == cells[1:gpu] + cells[gpu + 1 :], (cells, quoted)


def test_spleen_full_and_smart_cache_figures_are_their_json():
    from benchmarks.report import speedups

    rows = {r["row"]: r for r in _json("spleen-full-vm.json")["rows"]}
    fast, monai = rows["fastpipe-cache"], rows["monai-cache"]
    stored = "-".join(f"{v:.1f}" for v in fast["speedup_vs_monai_range"])
    speedups(list(rows.values()))  # recomputes the range as the report prints it
    printed = "-".join(f"{v:.1f}" for v in fast["speedup_vs_monai_range"])
    text = _flat_text(_section("### `make bench`"))
    assert f"filled in {fast['fill_s']:.0f} s against MONAI's {monai['fill_s']:.0f} s" in text
    peaks = fast["peak_rss_bytes"] / 2**30, monai["peak_rss_bytes"] / 2**30
    assert f"peaked at {peaks[0]:.1f} GiB of host memory against {peaks[1]:.1f} GiB" in text
    rates = fast["crops_per_s"]["median"], monai["crops_per_s"]["median"]
    assert f"at {rates[0]:.0f} crops/s against {rates[1]:.0f} ({fast['speedup_vs_monai']:.1f}x" in text
    assert f"range {printed}x as `python -m benchmarks.report` prints it" in text
    assert f"stored in the JSON, {stored}x" in text
    own = [f / m for f in fast["crops_per_s_samples"] for m in monai["crops_per_s_samples"]]
    assert f"the two epochs' own ratios span {_span(own, 1)}x" in text
    smart = _json("smart-cache-cpu.json")
    per_batch = {k: v["per_batch_s"]["median"] for k, v in smart["peers"].items()}
    row = _row(
        _section("### Component benchmarks"),
        "SmartCache (cache_num = N/2, replace_rate 0.25) vs a full CacheDataset / MONAI SmartCacheDataset, time per batch (`smart-cache-cpu.json`, commit 653594e)",
    )
    assert (
        f"| {per_batch['fastpipe_smart']:.3f} s | {per_batch['fastpipe_full']:.3f} s / {per_batch['monai_smart']:.3f} s |"
        in row
    )
    ratios = smart["ratios"]
    assert f"| {ratios['smart_vs_full']:.2f}x / **{ratios['monai_smart_vs_smart']:.1f}x faster** |" in row


def _tutorial_run(n: int) -> dict:
    return _json("tutorial-epoch-cpu.json" if n == 1 else f"tutorial-epoch-cpu-run{n}.json")


def test_tutorial_epoch_prose_is_its_runs():
    """The ranges over twenty-eight runs, the per-run ratios and the later runs 29-34 the README quotes."""
    import statistics

    runs = {n: _tutorial_run(n) for n in range(1, 35)}
    ratio = {n: runs[n]["ratios"] for n in runs}
    first28, last13 = range(1, 29), range(16, 29)
    text = _flat_text(_section("### The tutorial chain"))
    fast = [ratio[n]["vs_monai_best"] for n in first28]
    assert f"{_span(fast, 1)}x over twenty-eight runs" in text
    assert sum(r >= 4 for r in fast) == 22 and "twenty-two of twenty-eight" in text
    listed = re.search(r"The twenty-eight runs gave fastpipe (.*?) MONAI best practice", text).group(1)
    outside = re.sub(r"\([^)]*\)", "", listed)  # "(3.997x, a miss)" notes aside
    quoted = [float(v) for v in re.findall(r"(\d\.\d+)x", outside)]
    assert len(quoted) == 28 and all(abs(q - r) <= 0.051 for q, r in zip(quoted, fast, strict=True)), quoted
    suffix = [ratio[n]["suffix_cost"] for n in first28]
    median13 = statistics.median(ratio[n]["suffix_cost"] for n in last13)
    assert f"the suffix costs {median13:.2f}x ({_span(suffix)}x)" in text
    copy = [ratio[n]["vs_plain_copy_reused"] for n in first28]
    assert f"({_span(copy)}x; target <= 1.5x: met in all twenty-eight)" in text and max(copy) <= 1.5
    compose = [ratio[n]["monai_compose_vs_monai_best"] for n in first28]
    assert (
        f"{statistics.median(compose):.1f}x MONAI best practice ({_span(compose, 1)}x; target 3x: met in all"
        in text
    )
    floor = [ratio[n]["floor_vs_monai_best"] for n in first28]
    assert f"is only {_span(floor, 1)}x faster than MONAI best practice" in text
    crop = [ratio[n]["crop_only_vs_plain_copy"] for n in first28]
    assert f"the crop alone runs at {_span(crop)}x" in text
    first = ", ".join(f"{runs[n]['ratios_first_epoch']['vs_monai_best']:.1f}x" for n in first28)
    assert f"({first})" in text
    u8 = [f"{ratio[n]['vs_monai_best_uint8_labels']:.2f}x" for n in (29, 30, 31)]
    assert f"**{u8[0]}, {u8[1]} and {u8[2]} the same MONAI chain with uint8 labels**" in text
    for n in (32, 33, 34):
        r = ratio[n]
        assert f"{r['vs_monai_best']:.2f}x" in text and f"{r['vs_monai_best_uint8_labels']:.2f}x" in text
        assert (
            f"{r['monai_compose_vs_monai_best']:.2f}x" in text and f"{r['vs_plain_copy_reused']:.2f}x" in text
        )
    doc = _flat(REPO / "docs" / "random-suffix.md")
    assert (
        f"at {_span(suffix)}x the cost of the crop alone" in doc
        and f"median {median13:.2f}x over the last thirteen" in doc
    )
    assert f"the crop alone at {_span(crop)}x a plain copy" in doc


#: Figures with no JSON behind them, each with the words that say so within the same sentence.
UNRECORDED = [
    ("README.md", "make bench` takes about 2 minutes", "its JSON does not record"),
    ("README.md", "0.5 ms of extra busy work", "one-off measurements"),
    ("README.md", "takes 3 ms per crop", "one-off timings"),
    ("README.md", "12.7x", "one-off, no JSON"),
    ("README.md", "1.24-1.37x over several", "one-off"),
    ("README.md", "1.5x slower than torch's copy kernels", "one-off"),
    ("README.md", "crop only, 3.3-5.1x", "one-off"),
    ("README.md", "about 28 ms of CPU per volume", "one-off profile"),
    ("docs/train.md", "about 28 ms of CPU per volume", "one-off profile"),
    ("docs/train.md", "0.93 s against 0.94 s", "records were kept"),
    ("docs/train.md", "1.16-1.18x", "records were not kept"),
    ("docs/random-suffix.md", "no gain beyond noise", "not kept here"),
    ("docs/random-suffix.md", "0.97-1.10 ms", "§one-off"),  # §: said once, at the section's head
    ("docs/cache-footprint.md", "about 0.1 ms more", "one-off"),
]


@pytest.mark.parametrize(("doc", "figure", "label"), UNRECORDED, ids=lambda v: v[:30])
def test_unrecorded_figures_say_so(doc, figure, label):
    text = _flat(REPO / doc)
    at = text.index(figure)
    start = text.rfind("## ", 0, at) if label.startswith("§") else max(0, text.rfind(". ", 0, at) - 400)
    window = text[start : text.find(". ", at + len(figure)) + 200]
    label = label.lstrip("§")
    assert label in window, (doc, figure, label)


def test_gpu_check_doc_counts_the_tutorial_batch_it_draws():
    """docs/gpu-check.md: how many of the timed batch's crops the seeded tutorial suffix moves and shifts."""
    import torch

    from benchmarks._gpu_sections import tutorial_op_args

    crops = _json("gpu-check-nvidia-h100-80gb-hbm3.json")["bandwidth_config"]["crops"]
    image = tutorial_op_args(crops)["image"]
    moved = image["flips"].any(1)
    if image["axes"] is not None:
        moved |= (image["axes"] != torch.arange(3)).any(1)
    shifted = int((image["shift"] != 0).sum())
    said = f"{int(moved.sum())} of the {crops} crops flipped or turned and {shifted} shifted"
    assert said in _flat(REPO / "docs" / "gpu-check.md")


def test_prefix_row_is_the_preprocess_runs():
    runs = {
        n: _json("preprocess-cpu.json" if n == 1 else f"preprocess-cpu-run{n}.json") for n in (1, 2, 3, 4)
    }
    row = _row(
        _section("### Component benchmarks"),
        "deterministic prefix LoadImaged...FgBgToIndicesd, one 512x512x100 CT volume, every gzip CRC checked",
    )
    first, total = runs[1], runs[1]["total"]
    assert (
        f"| {total['fastpipe']['wall_s']['median']:.2f} s | MONAI 1.6: {total['monai']['wall_s']['median']:.2f} s |"
        in row
    )
    assert f"**{first['speedup_wall']:.1f}x** wall" in row and f"{first['speedup_cpu']:.1f}x CPU time" in row
    second = runs[2]
    assert (
        f"{second['speedup_wall']:.1f}x again" in row
        and f"`preprocess-cpu-run2.json` at {second['machine']['commit']}" in row
    )
    assert f"within {second['equivalence']['image_max_abs_diff']:.1e}".replace("e-0", "e-") in row
    assert second["equivalence"]["label_equal_fraction"] == 1.0
    later = f"{runs[3]['speedup_wall']:.1f}x and {runs[4]['speedup_wall']:.1f}x in two back-to-back runs at"
    assert later in row and {runs[3]["machine"]["commit"], runs[4]["machine"]["commit"]} == {"582d10d"}
    assert all(r["equivalence"]["image_max_abs_diff"] < 1e-6 for r in runs.values())


def test_cache_footprint_table_is_its_json():
    doc = _json("cache-footprint.json")
    fit, body = doc["spleen_full_fit"], _section("### Cache footprint")
    for form, name in (("lists", "index lists (MONAI's layout)"), ("compact", "fastpipe's compact entry")):
        line = _row(body, name).replace("**", "")
        cells = (
            f"| {doc['bytes'][form]['image_ratio']:.2f}x | {fit[form]['mean_bytes_per_volume'] / 2**20:.1f} MiB "
            f"| {fit[form]['fit']} |"
        )
        assert cells in line, (cells, line)
    assert f"| {doc['epoch_ratio_compact_over_lists']:.2f}x (target <= {doc['epoch_target']:.2f}x) |" in body


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md"])
def test_what_is_unproven_on_a_gpu_is_said(doc):
    """A newcomer learns that the current crop kernel and the time to Dice 0.94 have not run on a GPU."""
    check = _json("gpu-check-nvidia-h100-80gb-hbm3.json")
    text = _flat(REPO / doc)
    assert check["tree_commit"]["commit"] == "6989468" and "6989468" in text
    assert re.search(r"has not run on a GPU (again|since)|no GPU has run the crop kernel since", text)
    assert re.search(r"Dice 0\.94 at full scale.{0,40}(has not been measured|unmeasured)", text)


def test_training_seed0_passes_are_its_json():
    """The seed-0 table's passes column (epochs too, for a SmartCache arm's half epochs)."""
    section = _section("### Training to a Dice target").splitlines()
    for arm in _json("train-vm.json")["arms"]:
        line = next(row for row in section if row.startswith(f"| {arm['arm']} |"))
        passes = f"{arm['passes_to_target']:.0f}"
        if arm["epochs_to_target"] != arm["passes_to_target"]:
            passes += f" ({arm['epochs_to_target']} epochs)"
        assert f"| {passes} |" in line, (passes, line)


@pytest.mark.timeout(120)
def test_spleen_full_geometry_quoted_is_the_presets():
    """docs/spleen-data.md: median slices, thickness and extent of seed 0; the smallest volume after the prefix."""
    import statistics
    import sys

    pytest.importorskip("monai")
    sys.path.insert(0, str(REPO / "tests" / "datasets"))
    from test_synth import _prefix_shape

    from fastpipe.datasets.synth import volume_params

    def smallest(seed: int) -> tuple[int, int]:
        shapes = [_prefix_shape(volume_params("spleen-full", seed=seed, index=i)) for i in range(41)]
        return min(min(s[:2]) for s in shapes), min(s[2] for s in shapes)

    volumes = [volume_params("spleen-full", seed=0, index=i) for i in range(41)]
    slices = statistics.median(v.shape[2] for v in volumes)
    doc = _flat(REPO / "docs" / "spleen-data.md")
    assert f"With seed 0 the median is {slices:.0f} slices" in doc
    (plane, z), over = smallest(0), [smallest(s) for s in range(10)]
    assert f"the smallest volume of seed 0 is {plane} voxels in plane and {z} along z" in doc
    assert f"({min(p for p, _ in over)} and {min(q for _, q in over)} over seeds 0-9" in doc


def test_gpu_bench_plans_in_the_doc_pass_their_dry_run(capsys):
    """docs/gpu-check.md's `make gpu-bench ARGS=...` lines: each plan is accepted, with the worst case quoted."""
    import shlex

    from benchmarks import gpu_bench

    doc = (REPO / "docs" / "gpu-check.md").read_text()
    lines = re.findall(r'^make gpu-bench ARGS="([^"]+)"(?:\s+#\s*(.*))?$', doc, flags=re.M)
    assert len(lines) >= 3
    for args, comment in lines:
        assert gpu_bench.main([*shlex.split(args), "--dry-run"]) == 0, args
        worst = re.search(r"worst case (\d+) s", capsys.readouterr().out)
        quoted = re.search(r"(?:worst case|at most) (\d+) s", comment or "")
        if quoted:
            assert quoted.group(1) == worst.group(1), (args, comment, worst.group(0))
    default = gpu_bench.main(["--dry-run"]) == 0 and capsys.readouterr().out
    total = int(re.search(r"worst case (\d+) s", default).group(1))
    assert f"limits stop it at {total // 60} min {total % 60} s in the worst case" in _flat(
        REPO / "docs" / "gpu-check.md"
    )


def test_the_unet_size_the_all_reduce_model_uses():
    """README and docs/distributed.md: the tutorial's UNet holds about 19 MB of fp32 gradients."""
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    mb = f"{4 * sum(p.numel() for p in net.parameters()) / 1e6:.0f} MB"
    assert f"the tutorial's {mb} UNet" in _flat(README)
    assert f"(`P` ≈ {mb} fp32)" in _flat(REPO / "docs" / "distributed.md")
