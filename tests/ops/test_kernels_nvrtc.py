"""kernels/*.cu compile with NVRTC exactly as the CUDA backend compiles them, no GPU needed.

On a GPU, CuPy compiles the kernels at run time with NVRTC, not nvcc: no host compiler, no standard
headers, and its own options. CuPy appends ``-ftz=true`` after the options fastpipe passes, which is
why the crop kernel's float arithmetic is written in PTX without ``.ftz`` (torch keeps denormals;
bit equality with the torch path depends on it). This test runs the same compile through NVRTC's C
library (the ``nvidia-cuda-nvrtc`` wheel, which needs no driver) and reads the PTX it makes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path

import pytest

from fastpipe.ops._cuda_crop import KERNEL_NAMES, NVRTC_OPTIONS, kernel_source

#: what CuPy's RawModule adds after fastpipe's options (cupy.cuda.compiler), for an H100/H200
CUPY_ADDS = ("-ftz=true", "-arch=compute_90")


def _libnvrtc() -> ctypes.CDLL:
    spec = importlib.util.find_spec("nvidia")
    assert spec is not None and spec.submodule_search_locations, (
        "the nvidia-cuda-nvrtc wheel is a test dependency"
    )
    for root in spec.submodule_search_locations:
        libs = sorted(Path(root).glob("cu*/lib/libnvrtc.so.*"))
        if libs:
            return ctypes.CDLL(str(libs[-1]))
    raise AssertionError("libnvrtc.so not found under the nvidia package: install nvidia-cuda-nvrtc")


def _nvrtc_ptx(lib: ctypes.CDLL, source: str, name: str, options: tuple[str, ...]) -> tuple[int, str, str]:
    """``(nvrtcResult of the compile, log, PTX)`` of ``source``."""
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        assert lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) == 0
        log = ctypes.create_string_buffer(size.value)
        assert lib.nvrtcGetProgramLog(prog, log) == 0
        ptx = ""
        if rc == 0:
            assert lib.nvrtcGetPTXSize(prog, ctypes.byref(size)) == 0
            buf = ctypes.create_string_buffer(size.value)
            assert lib.nvrtcGetPTX(prog, buf) == 0
            ptx = buf.value.decode()
        return rc, log.value.decode(errors="replace"), ptx
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.fixture(scope="module")
def lib():
    return _libnvrtc()


@pytest.mark.parametrize(
    "name, entries", [("crop_pos_neg.cu", KERNEL_NAMES), ("sample_centers.cu", ["sample_centers"])]
)
def test_kernel_compiles_with_nvrtc_as_cupy_does(lib, name, entries):
    rc, log, ptx = _nvrtc_ptx(lib, kernel_source(name), name, NVRTC_OPTIONS + CUPY_ADDS)
    assert rc == 0, f"NVRTC failed on kernels/{name}:\n{log}"
    warnings = [w for w in log.splitlines() if "warning" in w.lower() and "ftz" not in w]  # ours, then CuPy's
    assert not warnings, log
    found = set(re.findall(r"\.entry\s+(\w+)\(", ptx))
    assert found == set(entries), f"kernels/{name}: PTX entries {sorted(found)}, expected {sorted(entries)}"


def test_crop_kernel_keeps_denormals_under_cupys_ftz(lib):
    """No flush-to-zero and no fused multiply-add in the crop kernel's PTX, with CuPy's ``-ftz=true``:
    the float32 intensity is a rounded ``mul`` then a rounded ``add``, as torch computes it."""
    rc, log, ptx = _nvrtc_ptx(
        lib, kernel_source("crop_pos_neg.cu"), "crop_pos_neg.cu", NVRTC_OPTIONS + CUPY_ADDS
    )
    assert rc == 0, log
    assert re.findall(r"\bmul\.rn\.f32\b", ptx) and re.findall(r"\badd\.rn\.f32\b", ptx)
    assert not re.findall(r"\.ftz\b", ptx), "flush-to-zero float arithmetic in the crop kernel"
    assert not re.findall(r"\bfma\.\w*f32\b", ptx), "a fused multiply-add rounds once, torch rounds twice"


def test_plain_float_arithmetic_would_flush_under_cupys_ftz(lib):
    """The check above can fail: plain C float arithmetic compiled with CuPy's options does flush."""
    src = 'extern "C" __global__ void k(float* x, float s, float o) { x[0] = x[0] * s + o; }'
    rc, log, ptx = _nvrtc_ptx(lib, src, "k.cu", ("-fmad=false", *CUPY_ADDS))
    assert rc == 0, log
    assert re.findall(r"\.ftz\b", ptx)


def test_nvrtc_reports_a_compile_error_with_the_kernel_file_name(lib):
    """The ``#line`` prefix makes NVRTC's errors name the ``.cu`` file (what a GPU user would read)."""
    src = kernel_source("sample_centers.cu").replace("long long c[3];", "long long c[3]; int broken = ;")
    rc, log, _ = _nvrtc_ptx(lib, src, "sample_centers.cu", NVRTC_OPTIONS + CUPY_ADDS)
    assert rc != 0 and "kernels/sample_centers.cu" in log, log
