"""Sampler GPU-path habits checked on the CPU: one packed copy of the augment parameters, one warning for per-batch indices."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastpipe.ops import sample


def test_augment_parameters_cross_in_one_copy(monkeypatch):
    copies = []
    monkeypatch.setattr(sample, "to_device", lambda t, device: copies.append(t.shape) or t.clone())
    gen = torch.Generator().manual_seed(3)
    params = sample.draw_augment(
        5, gen, "cuda", flip_prob=0.5, flip_axes=(0, 2), scale_prob=0.7, shift_prob=0.3
    )
    ref = sample.draw_augment(
        5,
        torch.Generator().manual_seed(3),
        "cpu",
        flip_prob=0.5,
        flip_axes=(0, 2),
        scale_prob=0.7,
        shift_prob=0.3,
    )
    assert copies == [(5, 5)]  # 3 flip columns + scale + shift, one host-to-device copy
    assert params.keys() == ref.keys()
    for k in ref:
        assert params[k].dtype == ref[k].dtype and params[k].shape == ref[k].shape
        assert torch.equal(params[k], ref[k]), k


def test_no_augment_no_copy(monkeypatch):
    monkeypatch.setattr(sample, "to_device", lambda t, device: pytest.fail("copied nothing worth copying"))
    assert sample.draw_augment(4, None, "cuda") == {}


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
