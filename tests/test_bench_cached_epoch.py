"""benchmarks.cached_epoch: every peer runs end to end on tiny volumes; the round orders are fair permutations."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import cached_epoch_plot
from benchmarks.cached_epoch import (
    NUM_SAMPLES,
    PEERS,
    fill_counts,
    fill_volume_count,
    main,
)
from benchmarks.common import interleaved, round_orders


def test_every_round_holds_every_peer_once_in_varying_order():
    names = list(PEERS)
    orders = round_orders(names, 20, order="shuffle")
    assert all(sorted(o) == sorted(names) for o in orders)
    assert len({tuple(o) for o in orders}) > 10  # not one fixed order, not a plain rotation of one
    assert orders == round_orders(names, 20, order="shuffle")  # seeded
    followers = {o[o.index("monai_default") + 1] for o in orders if o[-1] != "monai_default"}
    assert len(followers) > 2  # MONAI defaults' aftermath does not always land on the same peer


def test_interleaved_keeps_rounds_after_the_warmup_in_each_order():
    calls: list[str] = []
    out = interleaved(
        ["a", "b", "c"], lambda n: (calls.append(n), len(calls))[1], rounds=2, warmup=1, order="alternate"
    )
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert out == {"a": [6, 7], "b": [5, 8], "c": [4, 9]}
    assert round_orders(["a", "b"], 2) == [["a", "b"], ["a", "b"]]


def test_fill_scaling_covers_every_doubling_up_to_all_cores_with_two_volumes_each():
    assert fill_counts(1) == [1]
    assert fill_counts(2) == [1, 2]
    assert fill_counts(6) == [1, 2, 4, 6]
    assert fill_counts(16) == [1, 2, 4, 8, 16]
    assert fill_volume_count(8, 16) == 32  # 8 volumes could never keep 16 workers busy
    assert fill_volume_count(8, 2) == 8


@pytest.mark.timeout(300)
def test_the_benchmark_runs_every_peer_and_writes_its_json(tmp_path, monkeypatch):
    pytest.importorskip("monai")
    titles: list[str] = []
    real_plot = cached_epoch_plot.plot
    monkeypatch.setattr(
        cached_epoch_plot,
        "plot",
        lambda r, p: (titles.append(cached_epoch_plot.title(r)), real_plot(r, p))[1],
    )
    out = tmp_path / "ce.json"
    argv = ["--volumes", "2", "--shape", "100", "100", "100", "--epochs", "2", "--warmup", "0"]
    result = main([*argv, "--fill-repeats", "1", "--workers", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["peers"]) == set(PEERS)
    for name, row in saved["peers"].items():
        assert row["crops_per_epoch"] == 2 * NUM_SAMPLES, name
        assert row["epoch_s"]["n"] == 2 and row["epoch_s"]["median"] > 0
    assert set(saved["ratios"]) == {
        "vs_monai_best",
        "vs_monai_best_no_meta",
        "vs_monai_default",
        "vs_plain_copy",
    }
    assert all(v > 0 for v in saved["ratios"].values())
    cores = os.cpu_count() or 1
    assert list(saved["fill_scaling"]) == [str(w) for w in fill_counts(cores)]
    assert saved["fill_scaling"]["1"]["speedup_vs_1"] == 1.0
    assert saved["config"]["fill_scaling_volumes"] == max(2, 2 * cores)
    for w, row in saved["fill_scaling"].items():
        assert row["threads"] == int(w) and row["volumes"] == max(2, 2 * cores)
    assert saved["machine"]["commit"] and result["ratios"] == saved["ratios"]
    assert all(len(row["epoch_samples_s"]) == 2 for row in saved["peers"].values())
    assert all(len(row["samples_s"]) == 1 for row in saved["fill_scaling"].values())
    png = out.with_suffix(".png")
    assert result["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert titles == [cached_epoch_plot.title(saved)] and "commit ?" not in titles[0]  # names the machine
    replot = cached_epoch_plot.main([str(out), "--out", str(tmp_path / "again.png")])  # from the JSON alone
    assert replot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_epoch_in_any_peer_is_an_error_not_a_fast_epoch():
    from benchmarks.peer_epochs import _time_interleaved

    class Fake:
        def __init__(self, crops):
            self.crops = iter(crops)

        def call(self, what):
            return 0.01, 0.01, next(self.crops)

    ok = _time_interleaved(
        {"a": Fake([8] * 6), "b": Fake([8] * 6)}, epochs=4, warmup=1, turn=2, expected_crops=8
    )
    assert ok["a"]["crops_min"] == ok["a"]["crops_max"] == 8
    with pytest.raises(RuntimeError, match="peer b: epoch yielded 4 crops, expected 8"):
        _time_interleaved(
            {"a": Fake([8] * 6), "b": Fake([8, 8, 8, 4, 8, 8])}, epochs=4, warmup=1, turn=2, expected_crops=8
        )
