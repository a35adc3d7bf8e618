"""The subprocess sections of ``benchmarks.gpu_check``: ``pytest -m gpu`` and compute-sanitizer, each
ended with every process under it at its time limit (:func:`benchmarks._gpu_procs.run_tree`)."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks._gpu_procs import run_tree


def run_pytest_gpu(timeout_s: float, tests: str = "tests") -> dict[str, Any]:
    """Section ``pytest_gpu``: ``pytest -m gpu tests`` in a subprocess, counted from its JUnit XML. A
    test module that cannot be imported (a package the GPU image lacks) counts as an error, and the
    GPU tests of the others still run."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", tests, "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={xml}"]  # fmt: skip
        rc, out, _ = run_tree(cmd, timeout_s)
        counts = junit_counts(xml.read_text()) if xml.exists() else {}
    tail = out.strip().splitlines()[-15:]  # at a timeout: the file whose test hung, last
    timed_out = {} if rc is not None else {"timed_out": f"killed after {timeout_s:.0f} s"}
    return {"pytest_gpu": {**counts, "exit_code": rc, "tail": tail, **timed_out}}


def junit_counts(xml_text: str) -> dict[str, Any]:
    """``{passed, failed, skipped, errors, failed_tests}`` from a pytest JUnit XML report."""
    root = ET.fromstring(xml_text)
    failed, skipped, errors, total = [], 0, 0, 0
    for case in root.iter("testcase"):
        total += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            failed.append(name)
        elif case.find("error") is not None:
            errors += 1
            failed.append(name)
        elif case.find("skipped") is not None:
            skipped += 1
    passed = total - len(failed) - skipped
    return {"passed": passed, "failed": len(failed) - errors, "skipped": skipped, "errors": errors,
            "failed_tests": failed}  # fmt: skip


def run_sanitizer(timeout_s: float) -> dict[str, Any]:
    """Section ``compute_sanitizer``: memcheck over :func:`benchmarks._gpu_cases.sanitize_target`."""
    exe = shutil.which("compute-sanitizer") or next(
        (str(p) for p in Path("/usr/local").glob("cuda*/bin/compute-sanitizer") if p.exists()), None
    )
    if exe is None:
        return {"compute_sanitizer": "not found"}
    cmd = [exe, "--tool", "memcheck", "--error-exitcode", "9", sys.executable, "-m", "benchmarks.gpu_check",
           "--sanitize-target"]  # fmt: skip
    rc, out, err = run_tree(cmd, timeout_s)
    text = out + err
    if rc is None:
        return {"compute_sanitizer": {"status": f"timed out after {timeout_s:.0f} s",
                                      "tail": text.strip().splitlines()[-12:]}}  # fmt: skip
    found = re.search(r"ERROR SUMMARY: (\d+) error", text)
    errors = int(found.group(1)) if found else None
    status = "clean" if rc == 0 and errors == 0 else "errors" if errors else "failed"
    return {"compute_sanitizer": {"status": status, "errors": errors, "exit_code": rc,
                                  "tail": text.strip().splitlines()[-12:]}}  # fmt: skip
