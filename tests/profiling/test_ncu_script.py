"""profiling/ncu_crop.sh picks its interpreter as ``make gpu-check`` does (run with a stand-in ncu)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "profiling" / "ncu_crop.sh"


def profiled_interpreter(tmp_path: Path, env: dict[str, str], venv: bool = False) -> str:
    """The interpreter ncu_crop.sh hands to ncu, in a copy of the tree with or without ``.venv``."""
    (tmp_path / "profiling").mkdir()
    shutil.copy(SCRIPT, tmp_path / "profiling" / "ncu_crop.sh")
    if venv:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "bin" / "python").symlink_to(shutil.which("sh"))
    ncu = tmp_path / "ncu"
    ncu.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/args\n')
    ncu.chmod(0o755)
    base = {"PATH": "/usr/bin:/bin", "NCU": str(ncu), "OUT": str(tmp_path / "out")}
    subprocess.run(["bash", "profiling/ncu_crop.sh"], cwd=tmp_path, env=base | env, check=True, timeout=30)
    first = (tmp_path / "args").read_text().splitlines()[0].split()
    return first[first.index("-o") + 2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("env", "venv", "expected"),
    [
        ({"GPU_PY": "/opt/py/bin/python3"}, True, "/opt/py/bin/python3"),
        ({"PY": "/opt/py/bin/python3"}, True, "/opt/py/bin/python3"),
        ({}, True, ".venv/bin/python"),
        ({}, False, "python3"),  # a GPU machine without `make install`, as gpu-check runs
    ],
)
def test_ncu_script_honours_gpu_py_and_py(tmp_path, env, venv, expected):
    assert profiled_interpreter(tmp_path, env, venv) == expected
