"""The CUDA launchers queue on torch's current stream and never wait for it (GPU only).

What no host test can show: the crop and sampler kernels must run behind the work already queued on
the stream the caller made current (a side stream here, busy with a sleep and then the fill the
kernels read), their host tables travel in a pinned copy on that stream, and the call returns before
that work is done. A launch on another stream reads the volume before the fill (zeros where 7 is
expected); a launcher that synchronised would find the side stream idle on return; a staging buffer
reused before its copy ran would hand the kernel other bytes for its tables.
"""

from __future__ import annotations

import pytest
import torch

from fastpipe.ops._centers import _centers_torch

SLEEP = int(2e9)  # GPU cycles: about a second, long enough for the host to queue everything behind it


def _cupy():
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )


def _churn_pinned() -> None:
    """Pinned host blocks asked for and written while the GPU sleeps: a staging block handed back too
    early would be one of them, overwritten before its copy ran."""
    for _ in range(32):
        torch.full((1 << 12,), 0xFF, dtype=torch.uint8).pin_memory().fill_(0xAB)


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_crop_kernel_runs_behind_the_current_streams_work(cuda_device):
    _cupy()
    from fastpipe.ops import crop_batch

    vol = torch.zeros((2, 9, 10, 11), device=cuda_device)
    starts = torch.tensor([[0, 1, 2], [5, 6, 7], [-2, 3, 9]])  # host tables: one pinned copy
    vi = torch.zeros(3, dtype=torch.int64)
    kw = dict(
        pad_value=-1.0, flips=torch.tensor([[False, False, False], [True, False, True], [False, True, False]])
    )
    side = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(side):  # warm-up: compile; the pinned block and the output cached for `side`
        crop_batch([vol], starts, vi, (4, 4, 4), backend="cuda", **kw)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP)
        vol.fill_(7.0)  # queued behind the sleep: the kernel must read these values
        got = crop_batch([vol], starts, vi, (4, 4, 4), backend="cuda", check_bounds=False, **kw)
        assert not side.query(), "the launcher waited for the stream (it must only queue on it)"
        _churn_pinned()
    side.synchronize()
    want = crop_batch([torch.full_like(vol, 7.0).cpu()], starts, vi, (4, 4, 4), backend="torch", **kw)
    assert torch.equal(got.cpu(), want)


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_sample_kernel_runs_behind_the_current_streams_work(cuda_device):
    _cupy()
    from fastpipe.ops._cuda_crop import sample_centers_cuda

    shape, n = (23, 17, 29), 5
    values = torch.tensor([0, 17 * 29 + 5, 23 * 17 * 29 - 1, 4000, 9999])
    lst = torch.zeros(n, dtype=torch.int64, device=cuda_device)
    table = torch.tensor([(*shape, 2, 2, 2, 20, 14, 26, 2, 2, 2, 0)] * n)  # shape, lo, hi, half, volume
    plan = torch.cat([(lst.data_ptr() + 8 * torch.arange(n))[:, None], table], 1).to(cuda_device)
    dev_values = values.to(cuda_device)  # pageable copies wait for their stream: made before the sleep
    side = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(side):  # warm-up: compile; the outputs' blocks cached for `side`
        sample_centers_cuda(plan)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP)
        lst.copy_(dev_values)  # lands after the sleep, on `side`
        centers, starts = sample_centers_cuda(plan)
        assert not side.query(), "the launcher waited for the stream (it must only queue on it)"
    side.synchronize()
    want_c, want_s = _centers_torch(values, table)
    assert torch.equal(centers.cpu(), want_c) and torch.equal(starts.cpu(), want_s)
