"""GPU figures the README and docs/ quote are their JSON files' (or ptxas's, or the planner's).

The H100 run's gpu-check, gpu-bench and training tables, the crop kernel's registers, the sizes and
step the multi-GPU estimates are worked out from, and the wording that says what no GPU has run.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from _doc_helpers import README, REPO, flat, readme_section, result, table_row


def test_gpu_check_table_is_its_json():
    check = result("gpu-check-nvidia-h100-80gb-hbm3.json")
    body = readme_section("### On a GPU: an earlier run")
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
    h200 = result("gpu-check-nvidia-h200.json")
    assert f"took {sum(h200['section_s'].values()):.0f} s in all" in gpu_doc
    lanes = h200["batch_kernel_gbps_by_lanes"]
    assert f"fastest ({lanes['4'] / 1000:.2f} TB/s, against {lanes['32'] / 1000:.2f} with a warp)" in gpu_doc
    va = (h200["voxel_augment_batch_ms"], h200["voxel_augment_monai_per_crop_ms"])
    assert f"(on the H200: {va[0]:.1f} ms against {va[1]:.0f} ms)" in gpu_doc


def test_gpu_bench_rows_and_time_are_their_json():
    from benchmarks.report import speedups

    rows = {r["row"]: r for r in result("gpu-bench-spleen-nvidia-h100-80gb-hbm3.json")["rows"]}
    speedups(list(rows.values()))
    body = readme_section("### On a GPU: an earlier run")
    for name, row in rows.items():
        line = table_row(body, name)
        assert f"| {row['fill_s']:.1f} s | {row['crops_per_s']['median']:.0f} |" in line, line
        assert f"| {100 * row['data_wait_fraction']['median']:.0f}% |" in line, line
        if row["peak_gpu_bytes"]:
            assert f"| {row['peak_gpu_bytes'] / 2**30:.2f} GiB |" in line, line
    runs = result("gpu-bench-nvidia-h100-80gb-hbm3.json")["runs"]
    total = round(sum(r["seconds"] for r in runs.values()))
    took = f"{total // 60} min {total % 60} s"
    assert f"commit e913f09, {took})" in body
    assert f"it took {took}" in (REPO / "docs" / "gpu-check.md").read_text()


def test_gpu_training_table_is_its_json():
    train = result("train-nvidia-h100-80gb-hbm3.json")
    body = readme_section("### On a GPU: an earlier run")
    assert f"ran **{train['config']['max_s']:.0f} s per arm" in body
    for arm in train["arms"]:
        line = table_row(body, arm["arm"]).replace("**", "")
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
    assert f"batches of {cfg['batch_size']} volumes ({crops} crops)" in flat(README)
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


def test_cache_sizes_quoted_for_many_gpus_are_worked_out_from_the_footprint_json():
    """README, docs/distributed.md and docs/DESIGN.md: spleen's cache per GPU from cache-footprint.json."""
    import math

    footprint = result("cache-footprint.json")
    fit = footprint["spleen_full_fit"]
    n, per_volume = fit["preset_volumes"], fit["compact"]["mean_bytes_per_volume"]
    whole, on8, on32 = (per_volume * k / 1e9 for k in (n, math.ceil(n / 8), math.ceil(n / 32)))
    readme, dist = flat(README), flat(REPO / "docs" / "distributed.md")
    assert f"the {n} spleen-full look-alike volumes, at the {per_volume / 1e6:.0f} MB" in readme
    assert f"{whole:.1f} GB on one GPU, {on8:.1f} GB per GPU on 8 GPUs, {on32:.2f} GB on 32" in readme
    assert (
        f"≈ {per_volume / 1e6:.0f} MB in fastpipe's cache, ≈ {fit['lists']['mean_bytes_per_volume'] / 1e6:.0f} MB"
        in dist
    )
    assert f"≈ 6 items ≈ {on8:.1f} GB per GPU instead of {whole:.1f} GB" in dist
    assert f"2 items ≈ {on32:.2f} GB per GPU" in dist
    lists, compact = (footprint["bytes"][form]["bytes_per_entry"] for form in ("lists", "compact"))
    design = flat(REPO / "docs" / "DESIGN.md")
    assert f"such an entry takes {lists / 1e6:.0f} MB, in fastpipe's form {compact / 1e6:.0f} MB" in design
    assert f"about {41 * lists / 1e9:.1f} GB and {41 * compact / 1e9:.1f} GB" in design


def test_the_step_the_all_reduce_is_weighed_against_is_the_gpu_runs():
    import statistics

    arm = next(a for a in result("train-nvidia-h100-80gb-hbm3.json")["arms"] if a["arm"] == "fastpipe")
    column = arm["steps"]["columns"].index("step_s")
    step_ms = 1000 * statistics.median(row[column] for row in arm["steps"]["rows"])
    assert f"against its {step_ms:.0f} ms step of 8 crops with AMP on the H100" in flat(README)
    assert f"step of ≈ {step_ms:.0f} ms (8 crops of 96³; the median `step_s`" in flat(
        REPO / "docs" / "distributed.md"
    )


def test_gpu_check_doc_counts_the_tutorial_batch_it_draws():
    """docs/gpu-check.md: how many of the timed batch's crops the seeded tutorial suffix moves and shifts."""
    import torch

    from benchmarks._gpu_sections import tutorial_op_args

    crops = result("gpu-check-nvidia-h100-80gb-hbm3.json")["bandwidth_config"]["crops"]
    image = tutorial_op_args(crops)["image"]
    moved = image["flips"].any(1)
    if image["axes"] is not None:
        moved |= (image["axes"] != torch.arange(3)).any(1)
    shifted = int((image["shift"] != 0).sum())
    said = f"{int(moved.sum())} of the {crops} crops flipped or turned and {shifted} shifted"
    assert said in flat(REPO / "docs" / "gpu-check.md")


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md"])
def test_what_is_unproven_on_a_gpu_is_said(doc):
    """A newcomer learns that the kernel misses its bandwidth goal and the time to Dice 0.94 was not measured."""
    check = result("gpu-check-nvidia-h200.json")
    text = flat(REPO / doc)
    assert not check["goals"]["kernel_at_least_70pct_of_copy"] and check["machine"]["commit"] in text
    assert f"{100 * check['kernel_fraction_of_copy']:.0f}% of a" in text and "70%" in text
    assert re.search(r"Dice 0\.94 at full scale.{0,40}(has not been measured|unmeasured)", text)


def test_the_h200_section_is_its_json():
    check, first = result("gpu-check-nvidia-h200.json"), result("gpu-check-nvidia-h200-run1.json")
    train = result("train-nvidia-h200.json")
    body = readme_section("### On a GPU: one NVIDIA H200")
    assert check["cuda_matches_torch"] and f"all {len(check['match_cases'])} cases equal" in body
    goals = dict(check["goals"], kernel_at_least_70pct_of_copy=True)
    assert all(goals.values()) and all(
        first["goals"][k] for k in goals if k != "kernel_at_least_70pct_of_copy"
    )
    assert f"{check['pytest_gpu']['passed']} passed, {check['pytest_gpu']['failed']} failed" in body
    assert (
        f"{check['cached_epoch_h2d_bytes']:,} bytes, the largest copy {check['cached_epoch_largest_h2d_copy']} bytes"
        in body
    )
    tb = lambda v: f"{v / 1000:.2f} TB/s"  # noqa: E731
    assert f"{tb(check['crop_kernel_gbps'])}, against {tb(check['d2d_copy_gbps'])}" in body
    lanes, old = check["batch_kernel_gbps_by_lanes"], first["batch_kernel_gbps_by_lanes"]
    assert max(lanes, key=lanes.get) == "4" and max(old, key=old.get) == "4"  # the default the sweeps chose
    said = f"{old['4'] / 1000:.2f} TB/s with 4 threads per row, {old['8'] / 1000:.2f} with 8"
    assert said in flat(README)
    arms = {a["arm"]: a for a in train["arms"]}
    assert not any(a["reached"] for a in arms.values()) and train["machine"]["commit"] in body
    for name, a in arms.items():
        row = table_row(body, name)
        assert f"| {a['best_dice']:.2f} |" in row and f"| {100 * a['data_wait_fraction']:.0f}% |" in row, name
        assert f"| {a['gpu_util']['summary']['gpu_util_mean_pct']:.0f}% |" in row, name
    best = max(arms, key=lambda k: arms[k]["best_dice"])
    busiest = max(arms, key=lambda k: arms[k]["gpu_util"]["summary"]["gpu_util_mean_pct"])
    assert best == busiest == "fastpipe"
    rerun = result("train-nvidia-h200-fastpipe-rerun.json")
    (a,) = rerun["arms"]
    said = f"best Dice {a['best_dice']:.2f}, median epoch {a['epoch_s']['median']:.2f} s, data wait"
    assert a["arm"] == "fastpipe" and not a["reached"] and said in flat(README)


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
    assert f"limits stop it at {total // 60} min {total % 60} s in the worst case" in flat(
        REPO / "docs" / "gpu-check.md"
    )


def test_the_unet_size_the_all_reduce_model_uses():
    """README and docs/distributed.md: the tutorial's UNet holds about 19 MB of fp32 gradients."""
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    mb = f"{4 * sum(p.numel() for p in net.parameters()) / 1e6:.0f} MB"
    assert f"the tutorial's {mb} UNet" in flat(README)
    assert f"(`P` ≈ {mb} fp32)" in flat(REPO / "docs" / "distributed.md")
