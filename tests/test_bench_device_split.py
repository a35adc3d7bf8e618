"""The spleen benchmark's device split: CPU rows on the CPU, GPU rows on --device, timing synced on the batch's device."""

from __future__ import annotations

import types

import pytest
import torch

from benchmarks import measure, rows, spleen


def test_cpu_rows_stay_on_the_cpu_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = spleen.config(spleen.parse_args([]))
    assert cfg.device == "cpu" and cfg.gpu_device == "cuda"
    assert rows._device_or_none(cfg) is None  # fastpipe-cache / monai-cache chains get no ToDeviced


def test_gpu_row_uses_the_gpu_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = []
    monkeypatch.setattr(rows, "fastpipe_cache", lambda data, cfg: seen.append(cfg) or "row")
    cfg = spleen.config(spleen.parse_args(["--device", "cuda:1"]))
    assert rows.fastpipe_gpu_cache([], cfg) == "row"
    assert seen[0].device == "cuda:1" and cfg.device == "cpu"


class _FakeCuda:
    """A stand-in batch tensor that says it lives on a GPU."""

    device = torch.device("cuda", 0)
    shape = (4, 1, 96, 96, 96)


def test_timing_syncs_on_the_batch_device(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    batch = {"image": _FakeCuda(), "label": _FakeCuda()}
    cfg = rows.Config(device="cpu")
    seconds, crops = measure.throughput_epoch([batch, batch], cfg)
    assert crops == 8 and synced == [torch.device("cuda", 0)] * 2
    synced.clear()
    wall, _ = measure.step_epoch([batch], cfg, 0.0)
    assert synced == [torch.device("cuda", 0)]


def test_cpu_batch_needs_no_sync(monkeypatch):
    monkeypatch.setattr(
        torch.cuda, "synchronize", lambda device=None: pytest.fail("synchronized a CPU batch")
    )
    assert measure.sync_batch({"image": torch.zeros(1)})["image"].shape == (1,)
    assert isinstance(measure.sync_batch(types.SimpleNamespace()), types.SimpleNamespace)
