"""Shared fixtures: devices (GPU cases skip with a reason), seeds, tiny volumes."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
GPU_SKIP_REASON = "needs a CUDA GPU; none on this machine (run `make test-gpu` on a GPU machine)"

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason=GPU_SKIP_REASON)]
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every available device; the CUDA case skips with a reason where there is no GPU."""
    return torch.device(request.param)


def pytest_collection_modifyitems(config, items) -> None:
    """A test that takes ``cuda_device`` is a GPU test: marked ``gpu`` so ``pytest -m gpu`` (``make
    test-gpu``, ``make gpu-check``) selects it even where its ``@pytest.mark.gpu`` was forgotten."""
    for item in items:
        if "cuda_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def cuda_device() -> torch.device:
    """A CUDA device, or skip with a reason."""
    if not HAS_CUDA:
        pytest.skip(GPU_SKIP_REASON)
    return torch.device("cuda")


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets torch's intra-op thread count for this test; the old count comes back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def restore_track_meta():
    """MONAI's global ``set_track_meta`` comes back to what it was after the test (peers switch it off)."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    yield
    set_track_meta(before)
