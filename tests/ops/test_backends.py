"""``fastpipe.ops._backends``: what the one warning says when the CUDA kernels cannot load."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastpipe.ops import _backends, _cuda_crop


@pytest.mark.parametrize(("cuda", "wheel"), [("13.0", "cupy-cuda13x"), ("12.8", "cupy-cuda12x")])
def test_missing_cupy_warning_names_the_wheel_for_this_torch(monkeypatch, cuda, wheel):
    """Not ``pip install fastpipe[gpu]``: that is an unrelated PyPI project, and ``gpu`` is CUDA 12's CuPy."""

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(_cuda_crop, "load_module", no_cupy)
    monkeypatch.setattr(_backends, "_cuda_unavailable", None)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _backends._load_cuda() is None
    (msg,) = [str(w.message) for w in caught]
    assert f"pip install {wheel}" in msg and "pip install fastpipe[" not in msg, msg


def test_a_misaligned_tensor_is_refused_naming_it_not_faulted_on():
    """A tensor from torch.frombuffer with a byte offset (or DLPack) can start off its element size;
    the kernel would stop the process with CUDA's misaligned-address fault."""
    from fastpipe.ops._cuda_crop import check_aligned

    raw = bytearray(64)
    check_aligned("out", torch.frombuffer(raw, dtype=torch.float32, count=4, offset=4))  # aligned: fine
    check_aligned("out", torch.frombuffer(raw, dtype=torch.uint8, count=4, offset=1))  # bytes: any address
    with pytest.raises(ValueError, match=r"volume 1 starts at address .* 4-byte torch.float32"):
        check_aligned("volume 1", torch.frombuffer(raw, dtype=torch.float32, count=4, offset=1))
