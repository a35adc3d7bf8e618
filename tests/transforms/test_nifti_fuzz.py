"""Fuzz test: corrupted NIfTI files end as correct output or a named error that names the file.

About 1,300 seeded cases (``_nifti_fuzz_cases.py``): truncations, byte flips anywhere in gzip
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
from pathlib import Path

import pytest

import fastpipe

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_fuzz_cases import all_cases  # noqa: E402

WORKER = Path(__file__).with_name("_nifti_fuzz_worker.py")
CHILDREN = 2
CHILD_TIMEOUT_S = 100
HEADROOM = 1 << 30  # bytes a child may allocate beyond its size after imports


def run_children(cases: list[dict], tmp: Path) -> tuple[dict[int, dict], list[str]]:
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
            str(WORKER),
            str(tmp / f"cases{k}.json"),
            str(tmp / f"results{k}.jsonl"),
            str(HEADROOM),
        ]
        procs.append(subprocess.Popen(args, env=env, cwd=root, stderr=subprocess.PIPE, text=True))
    results, broken = {}, []
    for k, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        lines = [json.loads(s) for s in (tmp / f"results{k}.jsonl").read_text().splitlines()]
        started = {r["id"] for r in lines if r.get("start")}
        results |= {r["id"]: r for r in lines if not r.get("start")}
        if proc.returncode != 0 or started - results.keys():
            stuck = sorted(started - results.keys())
            broken.append(f"child {k}: exit {proc.returncode}, stuck in cases {stuck}; stderr: {err[-2000:]}")
    return results, broken


@pytest.mark.timeout(240)
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
