"""pytest-benchmark microbenchmarks of the batched crop op (``make bench-micro``).

CPU: 2 volumes x 4 crops of 96^3 float32 into a preallocated batch tensor, with and without the
fused flip + intensity terms, and with quarter turns. GPU (skips with a reason without one, or without CuPy): 8 volumes x 4
crops through the CUDA kernel, synchronised inside the timed call.
"""

from __future__ import annotations

import pytest
import torch

from fastpipe.ops import crop_batch

HAS_CUDA = torch.cuda.is_available()
SHAPE, PATCH, SAMPLES = (160, 150, 170), (96, 96, 96), 4


def batch_args(volumes: int, device: str, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vols = [torch.rand((1, *SHAPE), generator=g).to(dtype).to(device) for _ in range(volumes)]
    n = volumes * SAMPLES
    starts = torch.stack(
        [torch.randint(0, s - p + 1, (n,), generator=g) for s, p in zip(SHAPE, PATCH, strict=True)], 1
    )
    vol_index = torch.arange(volumes).repeat_interleave(SAMPLES)
    out = torch.empty((n, 1, *PATCH), dtype=dtype, device=device)
    return vols, starts.to(device), vol_index.to(device), out


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=["f32", "u8"])
def test_crop_cpu(benchmark, dtype):
    vols, starts, vi, out = batch_args(2, "cpu", dtype)
    benchmark(crop_batch, vols, starts, vi, PATCH, out=out)


def test_crop_cpu_fused_flip_intensity(benchmark):
    vols, starts, vi, out = batch_args(2, "cpu")
    n = starts.shape[0]
    flips = torch.rand(n, 3) < 0.5
    scale, shift = torch.rand(n) * 0.2 + 0.9, torch.rand(n) * 0.2 - 0.1
    benchmark(crop_batch, vols, starts, vi, PATCH, out=out, flips=flips, scale=scale, shift=shift)


def test_crop_cpu_fused_turn_flip_intensity(benchmark):
    """Every crop turned a quarter in (0, 1), flipped and shifted: the window's first axis lands on
    the output's second, the case the multiply-then-add's slab axis matters for."""
    vols, starts, vi, out = batch_args(2, "cpu")
    n = starts.shape[0]
    flips = torch.zeros(n, 3, dtype=torch.bool)
    flips[:, 0] = True  # with axes (1, 0, 2): rot90 k=1 in (0, 1)
    axes = torch.tensor([[1, 0, 2]] * n)
    shift = torch.rand(n) * 0.2 - 0.1
    benchmark(crop_batch, vols, starts, vi, PATCH, out=out, flips=flips, shift=shift, axes=axes)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU; none on this machine")
@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_crop_gpu(benchmark, backend):
    if backend == "cuda":
        pytest.importorskip("cupy", reason="CuPy not installed (pip install cupy-cuda13x/12x)")
    vols, starts, vi, out = batch_args(8, "cuda")

    def run():
        crop_batch(vols, starts, vi, PATCH, out=out, backend=backend)
        torch.cuda.synchronize()

    benchmark(run)
