"""Subprocesses of the GPU check and bench that end, with everything under them, at their time limit.

``subprocess.run(..., timeout=)`` kills the first process only: a child of it (the Python under
compute-sanitizer, a training arm) lives on with the GPU, and the output so far is lost. These
kill the whole tree, found in Linux ``/proc``, keep the output, and stay in the caller's process
group, so a kill of the whole command still reaches them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``, found before any is killed and re-parented."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it."""
    for each in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def run_tree(cmd: list[str], timeout_s: float) -> tuple[int | None, str, str]:
    """``(exit code, stdout, stderr)`` of ``cmd`` run in the repository; at ``timeout_s`` it is killed
    with every process under it: ``None`` and the output so far."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        return None, out, err
