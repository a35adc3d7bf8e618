"""Fuzz test: corrupted NIfTI files end as correct output or a named error that names the file.

About 2,000 seeded cases (``_nifti_fuzz_cases.py``): truncations, byte flips anywhere in gzip
streams, gzip member layouts, header field flips (dims, datatype, bitpix, pixdim, vox_offset,
qform/sform codes, quaternion, srow, scaling, magic), huge dims, wrong extensions, empty files,
directories, a FIFO, NaN/inf voxels, 1D/2D/4D/5D data and image/label pairs through the prefix chain.
They run in a few child processes, each under an address-space limit and a timeout, so a crash,
a hang or a huge allocation fails the test with the case that caused it.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastpipe

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_fuzz_cases import all_cases  # noqa: E402

WORKER = Path(__file__).with_name("_nifti_fuzz_worker.py")
CHILDREN = 2
DEADLINE_S = 100  # all children together; a run takes about 20 s on two busy cores
HEADROOM = 1 << 30  # bytes a child may allocate beyond its size after imports
pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the memory limit reads /proc and sets RLIMIT_AS (Linux only)"
)


def run_children(
    cases: list[dict], tmp: Path, worker: Path = WORKER, deadline_s: float = DEADLINE_S
) -> tuple[dict[int, dict], list[str]]:
    """Results by case id, and one line per child that crashed or hung (naming its case)."""
    root = Path(fastpipe.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(WORKER.parent)])}
    env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for k in range(CHILDREN):
        share = cases[k::CHILDREN]
        (tmp / f"cases{k}.json").write_text(json.dumps(share))
        args = [
            sys.executable,
            str(worker),
            str(tmp / f"cases{k}.json"),
            str(tmp / f"results{k}.jsonl"),
            str(HEADROOM),
        ]
        procs.append(subprocess.Popen(args, env=env, cwd=root, stderr=subprocess.PIPE, text=True))
    results, broken = {}, []
    deadline = time.monotonic() + deadline_s
    for k, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out = tmp / f"results{k}.jsonl"
        lines = [json.loads(s) for s in out.read_text().splitlines()] if out.exists() else []
        started = {r["id"] for r in lines if r.get("start")}
        results |= {r["id"]: r for r in lines if not r.get("start")}
        if proc.returncode != 0 or not out.exists() or started - results.keys():
            stuck = sorted(started - results.keys())
            broken.append(f"child {k}: exit {proc.returncode}, stuck in cases {stuck}; stderr: {err[-2000:]}")
    return results, broken


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_corrupt_nifti_files_end_correct_or_named(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    cases = all_cases(files)
    results, broken = run_children(cases, tmp_path)
    assert not broken, broken
    by_id = {c["id"]: c for c in cases}
    missing = sorted(by_id.keys() - results.keys())
    assert not missing, f"{len(missing)} cases never ran, e.g. {[by_id[i] for i in missing[:3]]}"
    failures = [
        f"{by_id[i]['kind']} {by_id[i].get('path') or by_id[i]['item']}: {r['fail']}"
        for i, r in results.items()
        if "fail" in r
    ]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])
    tally = collections.Counter((by_id[i]["kind"], r["outcome"]) for i, r in results.items())
    crc = sum("CRC check failed" in r.get("msg", "") for r in results.values())
    # the test is not vacuous: flips are mostly refused (some land in the gzip header's mtime/OS
    # fields and load equal), header flips both load and are refused, and CRC checks fire
    assert tally["gzip_flip", "refused"] >= 150 and tally["header_flip", "loaded"] >= 50, tally
    assert tally["header_flip", "refused"] >= 300 and crc >= 50, (tally, crc)


FAKE_WORKER = """
import json, os, sys, time
from _memory_limit import limit_address_space
cases = json.load(open(sys.argv[1]))
limit_address_space(int(sys.argv[3]))
with open(sys.argv[2], "w") as out:
    for case in cases:
        out.write(json.dumps({"id": case["id"], "start": True}) + "\\n")
        out.flush()
        if case["do"] == "abort":
            os.abort()
        if case["do"] == "hang":
            time.sleep(600)
        try:
            block = bytearray(2 << 30)
            result = {"fail": "allocated 2 GiB"}
        except MemoryError:
            result = {"outcome": "refused"}
        out.write(json.dumps({"id": case["id"], **result}) + "\\n")
"""


@pytest.mark.timeout(60)
def test_harness_reports_crash_hang_and_huge_allocation(tmp_path):
    """The fuzz harness is not vacuous: a crash or a hang names its case, 2 GiB cannot be allocated."""
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    cases = [{"id": 0, "do": "alloc"}, {"id": 1, "do": "abort"}, {"id": 2, "do": "hang"}]
    results, broken = run_children(cases, tmp_path, worker, deadline_s=5)
    assert results == {0: {"id": 0, "outcome": "refused"}}
    assert len(broken) == 2
    assert "stuck in cases [2]" in broken[0] and "stuck in cases [1]" in broken[1], broken
