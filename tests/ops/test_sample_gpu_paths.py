"""Sampler GPU-path habits checked on the CPU: one warning for per-batch indices."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastpipe.ops import sample


def test_gpu_indices_warn_once_per_process(monkeypatch):
    monkeypatch.setattr(sample, "_gpu_indices_warned", type(sample._gpu_indices_warned)())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample._warn_gpu_indices_once(torch.device("cpu"))
        sample._warn_gpu_indices_once(torch.device("cuda", 0))
        sample._warn_gpu_indices_once(torch.device("cuda", 0))
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "FgBgToIndicesd" in msgs[0] and "host sync" in msgs[0]


def test_cpu_indices_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fg, bg = sample.fg_bg_indices(torch.ones(1, 4, 4, 4))
    assert fg.numel() == 64 and bg.numel() == 0


@pytest.mark.gpu
def test_gpu_indices_warn(cuda_device, monkeypatch):
    monkeypatch.setattr(sample, "_gpu_indices_warned", type(sample._gpu_indices_warned)())
    with pytest.warns(RuntimeWarning, match="FgBgToIndicesd"):
        sample.fg_bg_indices(torch.ones(1, 4, 4, 4, device=cuda_device))
