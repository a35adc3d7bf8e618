"""profiling/nsys_spleen.sh (TARGET=profile) makes its data and hands nsys a command that runs (stand-in nsys)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.timeout(60)
def test_profile_target_writes_its_data_and_profiles_a_real_command(tmp_path):
    nsys = tmp_path / "nsys"
    nsys.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    nsys.chmod(0o755)
    data = tmp_path / "data"
    env = {**os.environ, "NSYS": str(nsys), "PY": sys.executable, "OUT": str(tmp_path / "out")}
    env |= {"TARGET": "profile", "DATA": str(data), "PRESET": "spleen-tiny", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", "profiling/nsys_spleen.sh"], cwd=REPO, env=env, timeout=60, capture_output=True)
    assert (data / "dataset.json").is_file()  # `python -m fastpipe.cli synth` did nothing, exit 0
    args = (tmp_path / "args").read_text().splitlines()
    module = args[args.index("-m") + 1]
    helped = subprocess.run(
        [sys.executable, "-m", module, "profile", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "usage: fastpipe profile" in helped.stdout, (module, helped.stdout, helped.stderr)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("env", "venv", "expected"),
    [
        ({"GPU_PY": "/opt/py/bin/python3"}, True, "/opt/py/bin/python3"),
        ({"PY": "/opt/py/bin/python3"}, True, "/opt/py/bin/python3"),
        ({}, True, ".venv/bin/python"),
        ({}, False, "python3"),  # a GPU machine without `make install`: there is no .venv/bin/python
    ],
)
def test_nsys_script_picks_its_interpreter_as_gpu_check_does(tmp_path, env, venv, expected):
    """The script hard-wired ``.venv/bin/python``: on a GPU image without ``make install`` nsys profiled
    a missing file and the report step died with ``No such file or directory`` (exit 127)."""
    (tmp_path / "profiling").mkdir()
    shutil.copy(REPO / "profiling" / "nsys_spleen.sh", tmp_path / "profiling" / "nsys_spleen.sh")
    if venv:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "bin" / "python").symlink_to(shutil.which("true"))
    nsys = tmp_path / "nsys"
    nsys.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/args\n')
    nsys.chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").symlink_to(shutil.which("true"))  # a stand-in for the report step
    base = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "NSYS": str(nsys), "OUT": str(tmp_path / "out")}
    out = subprocess.run(
        ["bash", "profiling/nsys_spleen.sh"],
        cwd=tmp_path,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    first = (tmp_path / "args").read_text().split()
    assert first[first.index("-o") + 2] == expected
    if not expected.startswith("/opt"):  # that one is not on this machine: only what nsys was handed counts
        assert out.returncode == 0, out.stderr
