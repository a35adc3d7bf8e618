"""Every CUDA source under kernels/ compiles with nvcc for sm_90 (skips where nvcc is absent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = sorted((Path(__file__).resolve().parents[1] / "kernels").glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_there_are_kernels():
    assert KERNELS, "no kernels/*.cu found"


@pytest.mark.skipif(
    NVCC is None, reason="nvcc not on PATH; install the CUDA toolkit to compile-check kernels/*.cu"
)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("src", KERNELS, ids=[k.name for k in KERNELS])
def test_kernel_compiles_for_sm90(src, tmp_path):
    cmd = [
        NVCC,
        "-arch=sm_90",
        "-std=c++17",
        "-Werror",
        "all-warnings",
        "-c",
        str(src),
        "-o",
        str(tmp_path / "k.o"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=220)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
