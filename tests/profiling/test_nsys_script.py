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
