"""Mutation fuzz test: a damaged NIfTI file never loads as data the intact file does not hold.

Seeded byte mutations (``_nifti_mutations.py``: flipped bits, overwritten bytes, inserted and deleted
bytes, truncation, junk appended) of small valid files: eight dtypes, NIfTI-2, scaling, qform-only,
big-endian, each as ``.nii`` and as plain, optional-header-field, multi-member and stored gzip. Each
damaged file goes through ``LoadImaged``, which must either raise a ``ValueError``/``TypeError``
naming the file, or return what the intact file holds. The one exception is damage no reader can
see by design: an uncompressed ``.nii`` carries no checksum, so an overwritten byte there loads as
nibabel loads it (a voxel byte changes a voxel, a header byte what nibabel reads from that header);
one such damage that changes the file's length is still always refused. Every gzip case, having
CRC32 and size trailers, must load as the intact file or be refused. Runs in a few seconds, also
with 61-byte reads so that member headers and trailers straddle reads.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest

import fastpipe.transforms._gzip as gz
import fastpipe.transforms._nifti as nifti
from fastpipe.transforms import LoadImaged

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_fuzz_worker import compare, reference  # noqa: E402
from _nifti_mutations import LENGTH_CHANGING, clean_files, mutate  # noqa: E402

NAMED = (ValueError, TypeError)


def run_case(path: Path, intact, kind: str) -> tuple[str, str | None]:
    """``(outcome, failure)``: outcome ``refused``, ``intact`` or ``undetectable``; failure None if fine."""
    try:
        out = LoadImaged(["img"], dtype=None)({"img": str(path)})
    except NAMED as err:
        return "refused", None if str(path) in str(err) else f"error does not name the file: {err!r}"
    except Exception as err:  # an unnamed error type is a finding
        return "crash", f"{type(err).__name__}: {err}"
    arr, aff = out["img"].numpy(), out["img_meta_dict"]["affine"].numpy()
    if compare(arr, aff, intact) is None:
        return "intact", None
    if path.name.endswith(".gz"):
        return "wrong", f"loaded data the intact file does not hold ({compare(arr, aff, intact)})"
    if kind in LENGTH_CHANGING:
        return "wrong", f"a .nii whose length changed ({kind}) loaded ({compare(arr, aff, intact)})"
    problem = compare(arr, aff, reference(str(path), {}))
    return ("undetectable", None) if problem is None else ("wrong", f"differs from nibabel's read: {problem}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("chunk", "cases"), [(None, 2500), (61, 800)], ids=["1MiB_reads", "61B_reads"])
def test_damaged_files_load_intact_or_are_refused(tmp_path, monkeypatch, chunk, cases):
    if chunk:
        monkeypatch.setattr(gz, "CHUNK", chunk)
        monkeypatch.setattr(nifti, "CHUNK", chunk)
    files = clean_files(tmp_path)
    intact = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        intact[name] = reference(str(tmp_path / name), {})
    names, rng = sorted(files), np.random.default_rng(2026)
    tally, failures = collections.Counter(), []
    for i in range(cases):
        name = names[int(rng.integers(0, len(names)))]
        damaged, kind, pos = mutate(files[name], rng)
        path = tmp_path / f"case{i}_{name}"
        path.write_bytes(damaged)
        outcome, failure = run_case(path, intact[name], kind)
        tally[outcome, "gz" if name.endswith(".gz") else "nii"] += 1
        if failure:
            failures.append(f"{name} {kind} at byte {pos}: {failure}")
        path.unlink()
    assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:30])
    # not vacuous: most damage is refused, some (gzip mtime, an unchanged overwrite) loads intact,
    # and overwritten .nii voxel or header bytes load as nibabel reads them
    assert tally["refused", "gz"] > cases / 3 and tally["refused", "nii"] > cases / 20, tally
    assert tally["intact", "gz"] > 0 and tally["undetectable", "nii"] > 0, tally
