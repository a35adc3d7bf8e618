"""CuPy extras per CUDA major version: pyproject declares them, and the chooser follows torch.version.cuda."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastpipe.runtime._cuda_extra import PACKAGES, cupy_extra, cupy_mismatch

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_has_one_extra_per_cuda_major():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for extra, package in PACKAGES.items():
        assert any(dep.startswith(package) for dep in extras[extra]), (extra, extras[extra])


@pytest.mark.parametrize(
    ("cuda", "extra"), [("12.8", "gpu-cu12"), ("13.0", "gpu-cu13"), (None, None), ("", None)]
)
def test_extra_follows_torch_cuda(cuda, extra):
    assert cupy_extra(cuda) == extra


def test_unknown_cuda_major_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA 11.8"):
        cupy_extra("11.8")


def test_mismatch_names_the_extra_to_install():
    assert cupy_mismatch("13.0", 13000) is None and cupy_mismatch(None, 12080) is None
    msg = cupy_mismatch("13.0", 12080)
    assert "fastpipe[gpu-cu13]" in msg and "cupy-cuda13x" in msg


def test_script_prints_the_extra_for_this_torch():
    import subprocess
    import sys

    import torch

    script = PYPROJECT.parent / "fastpipe" / "runtime" / "_cuda_extra.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (cupy_extra(torch.version.cuda) or "")


def test_install_hint_names_the_wheel_and_never_the_pypi_name():
    from fastpipe.runtime._cuda_extra import install_hint

    assert install_hint("13.0").startswith("pip install cupy-cuda13x ") and '".[gpu-cu13]"' in install_hint(
        "13.0"
    )
    assert install_hint("12.4").startswith("pip install cupy-cuda12x ")
    assert "CPU-only" in install_hint(None) and "CUDA 11.8" in install_hint("11.8")
    assert not any("pip install fastpipe[" in install_hint(c) for c in ("12.4", "13.0", None, "11.8"))
