"""``kernels/crop_pos_neg.cu`` run on the host (shim + serial grid loop) with the launcher's own tables."""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from _host_cuda import compile_host

from fastpipe.ops._cuda_crop import _BITWISE, BLOCK, INT_MAX, _tables, pad_bits

WRAPPERS = r"""
#define LAUNCH(NAME, T)                                                                                  \
  extern "C" void run_##NAME(const long long* v, const long long* c, const float* in, int* err, void* o, \
                             int C, int O0, int O1, int O2, int nvols, int u, int up, long long pad,       \
                             long long rows, unsigned bx, unsigned by, unsigned grid) {                   \
    blockDim = {bx, by, 1};                                                                              \
    for (unsigned b = 0; b < grid; ++b)                                                                  \
      for (unsigned ty = 0; ty < by; ++ty)                                                               \
        for (unsigned tx = 0; tx < bx; ++tx) {                                                           \
          blockIdx = {b, 0, 0}; threadIdx = {tx, ty, 0};                                                 \
          NAME(v, c, in, err, (T*)o, C, O0, O1, O2, nvols, u, up, pad, rows);                            \
        }                                                                                                \
  }
LAUNCH(crop_pos_neg_f32, float)
LAUNCH(crop_pos_neg_b1, unsigned char)
LAUNCH(crop_pos_neg_b2, unsigned short)
LAUNCH(crop_pos_neg_b4, unsigned int)
LAUNCH(crop_pos_neg_b8, unsigned long long)
"""


def build(workdir: Path) -> ctypes.CDLL:
    return compile_host("crop_pos_neg.cu", WRAPPERS, workdir)


def run(lib, vols, starts, vi, size, flips=None, scale=None, shift=None, axes=None, pad_value=None):
    """Launch the emulated kernel on CPU tensors; returns ``(out, flagged crop or None)``."""
    n, c = starts.shape[0], vols[0].shape[0]
    dtype = vols[0].dtype
    out = torch.full((n, c, *size), 0, dtype=dtype)
    table, crops, inten, use = _tables(vols, starts, vi, flips, scale, shift, n, torch.device("cpu"), axes)
    err = torch.full((1,), INT_MAX, dtype=torch.int32)
    rows = n * c * size[0] * size[1]
    suffix = "f32" if dtype == torch.float32 else _BITWISE[dtype.itemsize][0]
    fn = getattr(lib, f"run_crop_pos_neg_{suffix}")
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn(ptr(table.data_ptr()), ptr(crops.data_ptr()), ptr(inten.data_ptr()), ptr(err.data_ptr()),
       ptr(out.data_ptr()), *(i32(s) for s in (c, *size, len(vols), use, pad_value is not None)),
       ctypes.c_longlong(pad_bits(dtype, pad_value)), ctypes.c_longlong(rows),
       ctypes.c_uint(BLOCK[0]), ctypes.c_uint(BLOCK[1]), ctypes.c_uint(-(-rows // BLOCK[1])))  # fmt: skip
    bad = int(err.item())
    return out, (None if bad == INT_MAX else bad)
