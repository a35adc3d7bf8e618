"""The data-wait report: summarize() on known timings, and on the real ThreadDataLoader."""

from __future__ import annotations

import time

import pytest
import torch

from fastpipe.profiling import format_table, summarize


def test_summarize_known_timings():
    timings = [
        {"wait_s": 0.03, "fetch_s": 0.02, "collate_s": 0.001, "h2d_s": 0.0, "batch_size": 2, "num_crops": 8},
        {"wait_s": 0.01, "fetch_s": 0.04, "collate_s": 0.003, "h2d_s": 0.0, "batch_size": 2, "num_crops": 8},
        {"wait_s": 0.02, "fetch_s": 0.03, "collate_s": 0.002, "h2d_s": 0.0, "batch_size": 1, "num_crops": 4},
    ]
    s = summarize(timings, wall_s=0.5)
    assert s["batches"] == 3 and s["items"] == 5 and s["crops"] == 20
    assert s["data_wait_s"] == pytest.approx(0.06)
    assert s["data_wait_fraction"] == pytest.approx(0.12)
    assert s["batches_per_s"] == pytest.approx(6.0) and s["crops_per_s"] == pytest.approx(40.0)
    assert s["first_wait_s"] == pytest.approx(0.03)
    assert list(s["stages"]) == ["wait", "fetch", "collate", "h2d"]
    assert s["stages"]["fetch"]["median_ms"] == pytest.approx(30.0)
    assert s["stages"]["fetch"]["mean_ms"] == pytest.approx(30.0)
    assert s["stages"]["collate"]["max_ms"] == pytest.approx(3.0)
    assert s["stages"]["wait"]["total_s"] == pytest.approx(0.06)
    table = format_table(s)
    assert "fetch" in table and "12.0% of wall" in table and "40.00 crops/s" in table


def test_wall_time_from_iteration_or_step_times():
    with_iter = [{"wait_s": 0.1, "iter_s": 0.4, "num_crops": 4}] * 4
    assert summarize(with_iter)["data_wait_fraction"] == pytest.approx(0.25)
    with_step = [{"wait_s": 0.3, "step_s": 0.1, "batch_size": 1}] * 2
    s = summarize(with_step)
    assert s["wall_s"] == pytest.approx(0.8) and s["data_wait_fraction"] == pytest.approx(0.75)
    assert s["crops"] == 2  # no num_crops: one crop per item
    unknown = summarize([{"wait_s": 0.1, "fetch_s": 0.2}])
    assert unknown["data_wait_fraction"] is None and unknown["crops_per_s"] is None
    assert "n/a" in format_table(unknown)


def test_read_inside_the_loop_leaves_the_open_batch_out():
    closed = [{"wait_s": 0.1, "iter_s": 0.4, "num_crops": 4}] * 3
    s = summarize([*closed, {"wait_s": 0.3, "num_crops": 4}])  # the batch the loop holds: no iter_s yet
    assert (
        s["batches"] == 3
        and s["wall_s"] == pytest.approx(1.2)
        and s["data_wait_fraction"] == pytest.approx(0.25)
    )


def test_empty_and_invalid():
    s = summarize([])
    assert s["batches"] == 0 and s["stages"] == {} and s["data_wait_fraction"] is None
    with pytest.raises(ValueError, match="wall_s"):
        summarize([], wall_s=0)


class SleepyDataset:
    """A map-style dataset whose every item costs ``delay_s`` of wall time."""

    def __init__(self, n: int, delay_s: float) -> None:
        self.n, self.delay_s = n, delay_s

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.delay_s)
        return {"x": torch.full((4,), float(i))}


def consume(loader, step_s: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for _batch in loader:
        time.sleep(step_s)
        n += 1
    return time.perf_counter() - t0, n


@pytest.mark.timeout(60)
def test_slow_dataset_fast_consumer_waits_almost_all_the_time():
    from fastpipe import ThreadDataLoader

    loader = ThreadDataLoader(SleepyDataset(24, delay_s=0.02), batch_size=2, num_workers=1)
    wall, n = consume(loader, step_s=0.0)
    assert n == 12 and len(loader.timings) == 12
    s = summarize(loader.timings, wall_s=wall)
    assert s["data_wait_fraction"] > 0.85, format_table(s)
    assert s["stages"]["fetch"]["median_ms"] > 30  # two 20 ms items per batch
    assert loader.stats()["batches"] == 12


@pytest.mark.timeout(60)
def test_fast_dataset_slow_consumer_hardly_waits():
    from fastpipe import ThreadDataLoader

    loader = ThreadDataLoader(SleepyDataset(24, delay_s=0.0), batch_size=2, num_workers=1)
    wall, n = consume(loader, step_s=0.03)
    assert n == 12
    s = summarize(loader.timings, wall_s=wall)
    assert s["data_wait_fraction"] < 0.15, format_table(s)
