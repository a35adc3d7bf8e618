"""Deterministic ops with two backends: pure torch (CPU path and reference) and CUDA via CuPy."""

from fastpipe.ops._backends import crop_batch, cuda_kernels_available
from fastpipe.ops.crop import crop_batch_torch
from fastpipe.ops.indices import fg_bg_indices
from fastpipe.ops.rand_params import Orientation, draw_k, draw_uniform
from fastpipe.ops.sample import CropSample, sample_crops

__all__ = [
    "CropSample",
    "Orientation",
    "crop_batch",
    "crop_batch_torch",
    "cuda_kernels_available",
    "draw_k",
    "draw_uniform",
    "fg_bg_indices",
    "sample_crops",
]
