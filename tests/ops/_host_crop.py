"""``kernels/crop_pos_neg.cu`` run on the host (shim + serial grid loop) with the launcher's own arguments."""

from __future__ import annotations

import contextlib
import ctypes
import types
from pathlib import Path

import numpy as np
import torch
from _host_cuda import compile_host

from fastpipe.ops._cuda_crop import BLOCK, INT_MAX, launch_args

WRAPPERS = r"""
#define LAUNCH(NAME)                                                                                      \
  extern "C" void run_##NAME(const long long* desc, int nkeys, unsigned bx, unsigned by, unsigned grid) { \
    blockDim = {bx, by, 1};                                                                               \
    for (unsigned b = 0; b < grid; ++b)                                                                   \
      for (unsigned ty = 0; ty < by; ++ty)                                                                \
        for (unsigned tx = 0; tx < bx; ++tx) {                                                            \
          blockIdx = {b, 0, 0}; threadIdx = {tx, ty, 0};                                                  \
          NAME(desc, nkeys);                                                                              \
        }                                                                                                 \
  }
LAUNCH(crop_pos_neg_i32)
LAUNCH(crop_pos_neg_i64)
// one thread of the grid: block b, thread t of the block (x = t % bx, y = t / bx)
#define ONE(NAME)                                                                                  \
  extern "C" void one_##NAME(const long long* desc, int nkeys, unsigned bx, unsigned by, unsigned b, \
                             unsigned t) {                                                         \
    blockDim = {bx, by, 1}; blockIdx = {b, 0, 0}; threadIdx = {t % bx, t / bx, 0};                 \
    NAME(desc, nkeys);                                                                             \
  }
ONE(crop_pos_neg_i32)
ONE(crop_pos_neg_i64)
"""


def build(workdir: Path) -> ctypes.CDLL:
    return compile_host("crop_pos_neg.cu", WRAPPERS, workdir)


def store8_counts(lib) -> tuple[int, int]:
    """``(8-byte stores, misaligned ones)`` the emulated kernels made so far in ``lib``."""
    counts = (ctypes.c_longlong * 2)()
    lib.host_store8_counts(counts)
    return counts[0], counts[1]


class _Pointers:
    """Stands in for CuPy in ``launch_args``: a tensor becomes its address (the host kernel reads it in place)."""

    @staticmethod
    def from_dlpack(t: torch.Tensor) -> ctypes.c_void_p:
        return ctypes.c_void_p(t.data_ptr())


def _c(arg):
    if isinstance(arg, ctypes.c_void_p):
        return arg
    return ctypes.c_longlong(int(arg)) if isinstance(arg, np.int64) else ctypes.c_int(int(arg))


def run(
    lib, vols, starts, vi, size, flips=None, scale=None, shift=None, axes=None, pad_value=None, out=None,
    index=None,
):  # fmt: skip
    """Launch the emulated kernel with the launcher's own arguments (``launch_args``) on CPU tensors.

    ``out`` (default: a new zeroed tensor) may be a misaligned view; ``index`` forces the ``"i32"`` or
    ``"i64"`` kernel. Returns ``(out, flagged crop or None, kernel name)``.
    """
    if out is None:
        out = torch.zeros((starts.shape[0], vols[0].shape[0], *size), dtype=vols[0].dtype)
    call = dict(volumes=vols, starts=starts, vol_index=vi, out=out, flips=flips, scale=scale, shift=shift,
                axes=axes, pad_value=pad_value)  # fmt: skip
    name, grid, args, launch = launch_args(_Pointers, [call])
    if index is not None:
        name = f"crop_pos_neg_{index}"
    run_launch(lib, name, grid, BLOCK, args)
    bad = int(launch.errs[0].item())
    return out, (None if bad == INT_MAX else bad), name


def run_launch(lib, name, grid, block, args) -> None:
    """Run one emulated launch: the grid serially on the host."""
    getattr(lib, f"run_{name}")(*(_c(a) for a in args), *(ctypes.c_uint(b) for b in (*block[:2], grid[0])))


class HostKernels:
    """Stands in for the compiled CuPy kernels: ``kernels[name](grid, block, args)`` runs the host build."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib, self.launched = lib, []

    def __getitem__(self, name: str):
        def launch(grid, block, args):
            self.launched.append(name)
            run_launch(self.lib, name, grid, block, args)

        return launch


#: stands in for CuPy in the launcher: tensors become addresses, devices and streams do nothing
FAKE_CUPY = types.SimpleNamespace(
    from_dlpack=_Pointers.from_dlpack,
    cuda=types.SimpleNamespace(
        Device=lambda *a: contextlib.nullcontext(), ExternalStream=lambda *a: contextlib.nullcontext()
    ),
)


def host_as_cuda(monkeypatch, lib: ctypes.CDLL) -> HostKernels:
    """Run ``_cuda_crop.crop_batches_cuda`` on CPU tensors with the host kernels (no CuPy, no GPU)."""
    from fastpipe.ops import _cuda_crop

    kernels = HostKernels(lib)
    monkeypatch.setattr(_cuda_crop, "load_module", lambda: (FAKE_CUPY, kernels))
    monkeypatch.setattr(_cuda_crop, "_is_cuda", lambda dev: True)
    monkeypatch.setattr(_cuda_crop, "_stream_handle", lambda dev: 0)
    return kernels
