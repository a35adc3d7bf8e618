"""Run a kernels/*.cu source on the CPU: a CUDA-syntax shim, g++, ctypes (tests the kernel's own code).

The shim maps ``__global__``/``__device__`` away, emulates ``threadIdx``/``blockIdx``/``blockDim`` as
globals and ``__fmul_rn``/``__fadd_rn`` as separately rounded float ops; a test appends C wrappers
that loop serially over the grid (valid for kernels without ``__syncthreads``).
"""

from __future__ import annotations

import ctypes
import mmap
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

KERNELS = Path(__file__).resolve().parents[2] / "kernels"

SHIM = r"""
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
struct Dim3 { unsigned x, y, z; };
static Dim3 threadIdx, blockIdx, blockDim;
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline int atomicMin(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
static long long host_store8 = 0, host_store8_misaligned = 0;  // 8-byte stores (a GPU faults on misaligned)
#define FASTPIPE_HOST_STORE8(p) (++host_store8, host_store8_misaligned += ((unsigned long long)(p) & 7) != 0)
extern "C" void host_store8_counts(long long* out) { out[0] = host_store8; out[1] = host_store8_misaligned; }
#include KERNEL_PATH
"""


def compile_host(kernel: str, wrappers: str, workdir: Path) -> ctypes.CDLL:
    """Compile ``kernels/<kernel>`` plus C ``wrappers`` into a shared library (skips without g++/clang++)."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip(f"needs g++ or clang++ to run kernels/{kernel} on the host; none on PATH")
    src, lib = workdir / "shim.cpp", workdir / "libkernel.so"
    src.write_text(SHIM + wrappers)
    cmd = [
        cxx,
        "-O1",
        "-ffp-contract=off",
        "-shared",
        "-fPIC",
        f'-DKERNEL_PATH="{KERNELS / kernel}"',
        str(src),
    ]
    res = subprocess.run([*cmd, "-o", str(lib)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"host compile of kernels/{kernel} failed:\n{res.stderr}"
    return ctypes.CDLL(str(lib))


def sparse_tensor(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A zeroed host tensor of ``numel`` elements whose pages exist only once written (an anonymous
    ``MAP_NORESERVE`` mapping): a table many GiB long of which a test touches a few entries."""
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)  # 3.13+
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except OSError as err:
        pytest.skip(f"cannot map {nbytes / 2**30:.1f} GiB of address space here: {err}")
    return torch.frombuffer(buf, dtype=dtype)
