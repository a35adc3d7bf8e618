"""benchmarks.gpu_copies: the no-GPU exit, and its epoch plumbing on the CPU with a stand-in counter."""

from __future__ import annotations

import pytest
from conftest import HAS_CUDA

from benchmarks import gpu_copies
from benchmarks.cached_epoch_peers import NUM_SAMPLES, PATCH, make_volumes
from fastpipe import profiling


@pytest.mark.skipif(HAS_CUDA, reason="checks the exit where there is no GPU")
def test_without_a_gpu_it_says_so_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        gpu_copies.main(["--volumes", "1"])
    assert info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err


class _FakeCounter:
    """Stands in for CopyCounter on the CPU: counts the blocks it wraps."""

    blocks = 0

    def __enter__(self):
        _FakeCounter.blocks += 1
        return self

    def __exit__(self, *exc):
        return None

    def summary(self):
        return {"by_kind": {"HtoD": {"count": 0, "bytes": 0, "largest": 0, "unsized": 0}}, "h2d_bytes": 0}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cache_device,step_device", [("cpu", None), (None, "cpu")])
def test_epochs_run_under_the_counter_and_count_the_crop_bytes(monkeypatch, cache_device, step_device):
    monkeypatch.setattr(profiling, "CopyCounter", _FakeCounter)
    _FakeCounter.blocks = 0
    ds, loader = gpu_copies.build(make_volumes(2, (100, 100, 100)), cache_device)
    try:
        got = gpu_copies.count_epochs(loader, 2, step_device)
    finally:
        loader.close()
        ds.close()
    assert _FakeCounter.blocks == 2 and got["h2d_bytes_per_epoch"] == [0, 0]
    voxels = (
        2 * NUM_SAMPLES * PATCH[0] * PATCH[1] * PATCH[2]
    )  # 2 volumes x 4 crops, image float32 + label uint8
    assert got["crop_bytes_per_epoch"] == voxels * (4 + 1)
