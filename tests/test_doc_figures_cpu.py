"""CPU figures the README and docs/ quote are the ones their JSON files give, or are labelled as not recorded.

``test_readme.py`` checks the tables it always did; this file checks the rest of the 2-core VM's
figures: the make bench table cell by cell, the spleen-full run, the training and tutorial prose,
the component rows, the presets' geometry, and the labels on figures no JSON holds.
"""

from __future__ import annotations

import re
import statistics

import pytest
from _doc_helpers import README, REPO, flat, flat_text, readme_section, result, span, table_row

TRAIN_SEEDS = ["train-vm.json"] + [f"train-vm-seed{s}.json" for s in range(1, 10)]
ARMS = ["regular", "monai-fast", "fastpipe", "fastpipe-smartcache", "fastpipe-smartcache-persist"]


def test_training_prose_is_the_ten_seeds_json():
    """The per-pass and time-to-target comparisons quoted around the training tables."""
    import statistics

    runs = [result(name) for name in TRAIN_SEEDS]
    passes = [{a: r["interleaved"]["arms"][a]["per_pass_s"]["median"] for a in ARMS} for r in runs]
    arms = [{a["arm"]: a for a in r["arms"]} for r in runs]
    readme = flat(README)
    body = flat_text(readme_section("### Training to a Dice target"))
    persist = [p["fastpipe-smartcache"] / p["fastpipe-smartcache-persist"] for p in passes]
    assert f"({span(persist)}x faster per pass than without it over ten seeds" in readme
    for arm in ARMS[2:]:
        if arm != "fastpipe-smartcache":
            vs = [p["monai-fast"] / p[arm] for p in passes]
            assert (
                f"{span(vs)}x faster than monai-fast's in all ten seeds" in body
                or f"{span(vs)}x faster than MONAI's fast recipe's in all ten seeds" in body
            ), arm
    for arm in ARMS:
        vs = [p["monai-fast"] / p[arm] for p in passes]
        section = readme_section("### Training to a Dice target").splitlines()
        line = [row for row in section if row.startswith(f"| {arm} |")][1]  # the interleaved table
        median = f"{statistics.median(vs):.2f}x"
        assert f"| {median} ({span(vs)}x) |" in line.replace("**", "") or arm == "monai-fast", line
    times = [{a: arms_[a]["time_to_target_s"] for a in ARMS} for arms_ in arms]
    for arm in ARMS:  # the ten seeds' table: time ratio per seed, seeds won, data wait
        section = readme_section("### Training to a Dice target").splitlines()
        line = [row for row in section if row.startswith(f"| {arm} |")][2].replace("**", "")
        waits = sorted({round(100 * a[arm]["data_wait_fraction"]) for a in arms})
        wait = f"{waits[0]}%" if len(waits) == 1 else f"{waits[0]}-{waits[-1]}%"
        assert line.endswith(f"| {wait} |"), (arm, waits, line)
        if arm != "monai-fast":
            vs = [t["monai-fast"] / t[arm] for t in times]
            won = sum(v > 1 for v in vs)
            assert f"| {statistics.median(vs):.2f}x ({span(vs)}x) | {won} of 10 |" in line, line
    firsts = [min(t, key=t.get) for t in times]
    count = {a: firsts.count(a) for a in ARMS}
    assert (
        f"(`fastpipe` in {count['fastpipe']}, the SmartCache arm over the persistent cache in {count['fastpipe-smartcache-persist']}, the recomputing one in {count['fastpipe-smartcache']})"
        in body
    )
    assert f"monai-fast was first in the other {count['monai-fast']}**" in body
    regular = [t["regular"] / t["fastpipe"] for t in times]
    assert f"{span(regular, 1)}x faster than `regular` (median {statistics.median(regular):.2f}x)" in body
    fill = arms[0]["fastpipe"]["build_s"], arms[0]["monai-fast"]["build_s"]
    assert f"fill ({fill[0]:.1f} s against {fill[1]:.1f} s in seed 0)" in body
    ahead = {a: [1000 * r["interleaved"]["arms"][a]["run_ahead_bound_s"] for r in runs] for a in ARMS[2:]}
    smart = ahead["fastpipe-smartcache"] + ahead["fastpipe-smartcache-persist"]
    assert f"{span(ahead['fastpipe'], 0)} ms (fastpipe) and {span(smart, 0)} ms (the SmartCache arms)" in body


def test_make_bench_table_is_what_the_report_prints():
    """Every cell of the README's `make bench` table, as `python -m benchmarks.report` prints its JSON."""
    from benchmarks.report import format_table, speedups

    rows = result("2026-11-27-vm.json")["rows"]
    speedups(rows)
    body = readme_section("### `make bench`")
    printed = format_table(rows).splitlines()
    header = [c.strip() for c in printed[0].strip("|").split("|")]
    gpu = header.index("GPU GiB")  # no GPU on that VM: the README leaves the column out
    for line in printed[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("fastpipe-gpu-cache"):
            continue  # skipped on a CPU: the README names the reason briefly
        ours = table_row(body, cells[0])
        quoted = [c.strip() for c in ours.strip("|").split("|")]
        assert quoted[1:] == cells[1:gpu] + cells[gpu + 1 :], (cells, quoted)


def test_spleen_full_and_smart_cache_figures_are_their_json():
    from benchmarks.report import speedups

    rows = {r["row"]: r for r in result("spleen-full-vm.json")["rows"]}
    fast, monai = rows["fastpipe-cache"], rows["monai-cache"]
    stored = "-".join(f"{v:.1f}" for v in fast["speedup_vs_monai_range"])
    speedups(list(rows.values()))  # recomputes the range as the report prints it
    printed = "-".join(f"{v:.1f}" for v in fast["speedup_vs_monai_range"])
    text = flat_text(readme_section("### `make bench`"))
    assert f"filled in {fast['fill_s']:.0f} s against MONAI's {monai['fill_s']:.0f} s" in text
    peaks = fast["peak_rss_bytes"] / 2**30, monai["peak_rss_bytes"] / 2**30
    assert f"peaked at {peaks[0]:.1f} GiB of host memory against {peaks[1]:.1f} GiB" in text
    rates = fast["crops_per_s"]["median"], monai["crops_per_s"]["median"]
    assert f"at {rates[0]:.0f} crops/s against {rates[1]:.0f} ({fast['speedup_vs_monai']:.1f}x" in text
    assert f"range {printed}x as `python -m benchmarks.report` prints it" in text
    assert f"stored in the JSON, {stored}x" in text
    own = [f / m for f in fast["crops_per_s_samples"] for m in monai["crops_per_s_samples"]]
    assert f"the two epochs' own ratios span {span(own, 1)}x" in text
    rows = {
        "smart-cache-cpu.json": "SmartCache (cache_num = N/2, replace_rate 0.25) vs a full CacheDataset / MONAI SmartCacheDataset, time per batch (`smart-cache-cpu.json`, commit 653594e)",
        "smart-cache-cpu-run2.json": "same, each peer in a process of its own (the row above ran them in one process, MONAI's last; `smart-cache-cpu-run2.json`, commit 28c4096)",
    }
    for name, first_cell in rows.items():
        smart = result(name)
        per_batch = {k: v["per_batch_s"]["median"] for k, v in smart["peers"].items()}
        row = table_row(readme_section("### Component benchmarks"), first_cell)
        assert (
            f"| {per_batch['fastpipe_smart']:.3f} s | {per_batch['fastpipe_full']:.3f} s / {per_batch['monai_smart']:.3f} s |"
            in row
        )
        ratios = smart["ratios"]
        assert f"| {ratios['smart_vs_full']:.2f}x / **{ratios['monai_smart_vs_smart']:.1f}x faster** |" in row


def _tutorial_run(n: int) -> dict:
    return result("tutorial-epoch-cpu.json" if n == 1 else f"tutorial-epoch-cpu-run{n}.json")


def test_tutorial_epoch_prose_is_its_runs():
    """The ranges over twenty-eight runs, the per-run ratios and the later runs 29-34 the README quotes."""
    import statistics

    runs = {n: _tutorial_run(n) for n in range(1, 35)}
    ratio = {n: runs[n]["ratios"] for n in runs}
    first28, last13 = range(1, 29), range(16, 29)
    text = flat_text(readme_section("### The tutorial chain"))
    fast = [ratio[n]["vs_monai_best"] for n in first28]
    assert f"{span(fast, 1)}x over twenty-eight runs" in text
    assert sum(r >= 4 for r in fast) == 22 and "twenty-two of twenty-eight" in text
    listed = re.search(r"The twenty-eight runs gave fastpipe (.*?) MONAI best practice", text).group(1)
    outside = re.sub(r"\([^)]*\)", "", listed)  # "(3.997x, a miss)" notes aside
    quoted = [float(v) for v in re.findall(r"(\d\.\d+)x", outside)]
    assert len(quoted) == 28 and all(abs(q - r) <= 0.051 for q, r in zip(quoted, fast, strict=True)), quoted
    suffix = [ratio[n]["suffix_cost"] for n in first28]
    median13 = statistics.median(ratio[n]["suffix_cost"] for n in last13)
    assert f"the suffix costs {median13:.2f}x ({span(suffix)}x)" in text
    copy = [ratio[n]["vs_plain_copy_reused"] for n in first28]
    assert f"({span(copy)}x; target <= 1.5x: met in all twenty-eight)" in text and max(copy) <= 1.5
    compose = [ratio[n]["monai_compose_vs_monai_best"] for n in first28]
    assert (
        f"{statistics.median(compose):.1f}x MONAI best practice ({span(compose, 1)}x; target 3x: met in all"
        in text
    )
    floor = [ratio[n]["floor_vs_monai_best"] for n in first28]
    assert f"is only {span(floor, 1)}x faster than MONAI best practice" in text
    crop = [ratio[n]["crop_only_vs_plain_copy"] for n in first28]
    assert f"the crop alone runs at {span(crop)}x" in text
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
    doc = flat(REPO / "docs" / "random-suffix.md")
    assert (
        f"at {span(suffix)}x the cost of the crop alone" in doc
        and f"median {median13:.2f}x over the last thirteen" in doc
    )
    assert f"the crop alone at {span(crop)}x a plain copy" in doc


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
    text = flat(REPO / doc)
    at = text.index(figure)
    start = text.rfind("## ", 0, at) if label.startswith("§") else max(0, text.rfind(". ", 0, at) - 400)
    window = text[start : text.find(". ", at + len(figure)) + 200]
    label = label.lstrip("§")
    assert label in window, (doc, figure, label)


def test_prefix_row_is_the_preprocess_runs():
    runs = {
        n: result("preprocess-cpu.json" if n == 1 else f"preprocess-cpu-run{n}.json") for n in (1, 2, 3, 4)
    }
    row = table_row(
        readme_section("### Component benchmarks"),
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
    doc = result("cache-footprint.json")
    fit, body = doc["spleen_full_fit"], readme_section("### Cache footprint")
    for form, name in (("lists", "index lists (MONAI's layout)"), ("compact", "fastpipe's compact entry")):
        line = table_row(body, name).replace("**", "")
        cells = (
            f"| {doc['bytes'][form]['image_ratio']:.2f}x | {fit[form]['mean_bytes_per_volume'] / 2**20:.1f} MiB "
            f"| {fit[form]['fit']} |"
        )
        assert cells in line, (cells, line)
    assert f"| {doc['epoch_ratio_compact_over_lists']:.2f}x (target <= {doc['epoch_target']:.2f}x) |" in body


def test_training_seed0_passes_are_its_json():
    """The seed-0 table's passes column (epochs too, for a SmartCache arm's half epochs)."""
    section = readme_section("### Training to a Dice target").splitlines()
    for arm in result("train-vm.json")["arms"]:
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
    doc = flat(REPO / "docs" / "spleen-data.md")
    assert f"With seed 0 the median is {slices:.0f} slices" in doc
    (plane, z), over = smallest(0), [smallest(s) for s in range(10)]
    assert f"the smallest volume of seed 0 is {plane} voxels in plane and {z} along z" in doc
    assert f"({min(p for p, _ in over)} and {min(q for _, q in over)} over seeds 0-9" in doc


def test_the_final_commits_reruns_are_their_json():
    """Run 35, preprocess run 5 and seed 0 again: the README's figures are those JSONs' (and commit)."""
    text = flat(README)
    run = result("tutorial-epoch-cpu-run35.json")
    r, commit = run["ratios"], run["machine"]["commit"]
    figures = [r[k] for k in ("vs_monai_best", "vs_monai_best_uint8_labels", "monai_compose_vs_monai_best")]
    assert f"run 35 (`-run35.json`, at {commit}," in text
    assert (
        "gave {:.2f}x (MONAI best practice flagged noisy), {:.2f}x, {:.2f}x and {:.2f}x".format(
            *figures, r["vs_plain_copy"]
        )
        in text
    )
    pre = result("preprocess-cpu-run5.json")
    assert (
        f"**{pre['speedup_wall']:.1f}x** with each chain in a process of its own, `-run5.json` at {pre['machine']['commit']}"
        in text
    )
    seeds = ["train-vm-rerun.json"] + [f"train-vm-rerun-seed{k}.json" for k in range(1, 10)]
    runs = [result(name) for name in seeds]
    assert f"(`train-vm-rerun.json` at {runs[0]['machine']['commit']}," in text
    assert f"... `-seed9.json` at {runs[1]['machine']['commit']};" in text
    assert {r["machine"]["commit"] for r in runs[1:]} == {runs[1]["machine"]["commit"]}
    assert all(a["reached"] for r in runs for a in r["arms"])
    times = {a["arm"]: [] for a in runs[0]["arms"]}
    firsts = dict.fromkeys(times, 0)
    for r in runs:
        t = {a["arm"]: a["time_to_target_s"] for a in r["arms"]}
        for arm, v in t.items():
            times[arm].append(v)
        firsts[min(t, key=t.get)] += 1
    table = README.read_text().split("**Ten seeds again at the current code**", 1)[1]
    for arm, ts in times.items():
        row = table_row(table, arm)
        ratios = [m / x for m, x in zip(times["monai-fast"], ts, strict=True)]
        assert f"{statistics.median(ts):.1f} s" in row and f"{min(ts):.1f}-{max(ts):.1f} s" in row, row
        assert f"| {firsts[arm]} |" in row, row
        if arm != "monai-fast":
            assert f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)" in row, row
    assert sum(v for k, v in firsts.items() if k.startswith("fastpipe")) == len(runs)
    assert "A fastpipe arm reached the target first in all ten seeds" in text


def test_runs_36_and_37_are_their_json():
    text = flat(README)
    a, b = result("tutorial-epoch-cpu-run36.json"), result("tutorial-epoch-cpu-run37.json")
    assert a["machine"]["commit"] == b["machine"]["commit"]
    assert f"Two runs at {a['machine']['commit']}, back to back (`-run36.json`, `-run37.json`)" in text
    ra, rb = a["ratios"], b["ratios"]
    assert not a["passed"]["vs_monai_best"] and b["passed"]["vs_monai_best"]
    assert f"gave {ra['vs_monai_best']:.2f}x (the 4x target missed) and {rb['vs_monai_best']:.2f}x" in text
    c = (ra["monai_compose_vs_monai_best"], rb["monai_compose_vs_monai_best"])
    assert f"at {c[0]:.2f}x and {c[1]:.2f}x" in text


def test_the_last_two_tutorial_runs_are_their_json():
    text = flat(README)
    a, b = result("tutorial-epoch-cpu-run38.json"), result("tutorial-epoch-cpu-run39.json")
    assert a["machine"]["commit"] == b["machine"]["commit"]
    assert f"Two runs at {a['machine']['commit']}, after fixes to MONAI dtypes" in text
    ra, rb = a["ratios"], b["ratios"]
    assert a["passed"]["vs_monai_best"] and not b["passed"]["vs_monai_best"]
    assert f"gave {ra['vs_monai_best']:.2f}x and {rb['vs_monai_best']:.2f}x (the 4x target missed" in text
    c = (ra["monai_compose_vs_monai_best"], rb["monai_compose_vs_monai_best"])
    floor = (ra["vs_plain_copy"], rb["vs_plain_copy"])
    assert (
        f"handed in at {c[0]:.2f}x and {c[1]:.2f}x and {floor[0]:.2f}x and {floor[1]:.2f}x the copy floor"
        in text
    )
    e38, e37 = a["peers"]["fastpipe"]["epoch_s"]["median"], result("tutorial-epoch-cpu-run37.json")
    assert (
        f"run 38, {e38 * 1000:.1f} ms, is run 37's {e37['peers']['fastpipe']['epoch_s']['median'] * 1000:.1f} ms"
        in text
    )


def test_the_training_check_is_its_json():
    """The seed-0 check after the last fixes: times, order and memory are the JSON's."""
    run = result("train-vm-check.json")
    arms = {a["arm"]: a for a in run["arms"]}
    text = flat(README)
    assert f"A check at {run['machine']['commit']}, after further fixes" in text
    assert all(a["reached"] for a in arms.values())
    t = {k: f"{a['time_to_target_s']:.1f} s" for k, a in arms.items()}
    first = f"SmartCache-persist {t['fastpipe-smartcache-persist']}, fastpipe {t['fastpipe']}, SmartCache {t['fastpipe-smartcache']}"
    assert f"{first}, then monai-fast {t['monai-fast']} and regular {t['regular']}" in text
    fast = [arms[k]["time_to_target_s"] for k in arms if k.startswith("fastpipe")]
    assert max(fast) < arms["monai-fast"]["time_to_target_s"]
    gib = {k: (a["peak_rss_bytes"] / 2**30, a["memory_bytes"] / 2**30) for k, a in arms.items()}
    assert all(a["memory_measure"] == "pss" for a in arms.values())
    assert f"says {gib['regular'][0]:.2f} GiB, its PSS at the end {gib['regular'][1]:.2f} GiB" in text
    assert f"fastpipe held {gib['fastpipe'][1]:.2f} GiB, monai-fast {gib['monai-fast'][1]:.2f} GiB" in text
