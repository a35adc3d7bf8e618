"""Child process of the NIfTI fuzz test: runs cases under a memory limit and writes one JSON line each.

Usage: ``python _nifti_fuzz_worker.py CASES.json RESULTS.jsonl HEADROOM_BYTES``. Before each case a
``{"id": N, "start": true}`` line is written and flushed, so the parent can name the case a crash
or a hang happened in. The address-space limit is the size after imports plus ``HEADROOM_BYTES``:
an attempt to allocate more is a ``MemoryError``, which counts as a failure (not a named error).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

import nibabel as nib
import numpy as np
import torch
from _memory_limit import limit_address_space

from fastpipe.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from fastpipe.transforms._nifti import read_nifti

NAMED = (ValueError, TypeError, FileNotFoundError, IsADirectoryError)
KEYS = ["image", "label"]


def reference(path: str, cache: dict) -> tuple[np.ndarray, np.ndarray] | str:
    """nibabel's voxels (trailing singleton dims dropped) and affine, the affine as MONAI's reader
    rectifies it (an sform that disagrees with pixdim gives way to the qform), or why nibabel failed."""
    from monai.data.utils import correct_nifti_header_if_necessary

    if path not in cache:
        try:
            img = correct_nifti_header_if_necessary(nib.load(path))
            arr = np.asanyarray(img.dataobj)
            while arr.ndim > 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            cache[path] = (arr, np.asarray(img.affine, dtype=np.float64))
        except Exception as err:  # any failure of the reference is reported, not raised
            cache[path] = f"nibabel cannot read it: {type(err).__name__}: {err}"
    return cache[path]


def compare(arr: np.ndarray, aff: np.ndarray, ref) -> str | None:
    """None when ``arr``/``aff`` equal the reference; else what differs."""
    if isinstance(ref, str):
        return f"loaded, but {ref}"
    want, want_aff = ref
    if arr.shape != want.shape:
        return f"shape {arr.shape} != nibabel's {want.shape}"
    if arr.dtype == np.float32 and want.dtype != np.float32:  # scaled: nibabel's float64 values
        want = want.astype(np.float32)  # as MONAI's LoadImaged (dtype float32) gives them: exactly
    ok = np.array_equal(arr, want)
    if not ok:
        return f"voxels differ from nibabel's in {int(np.count_nonzero(arr != want))} of {arr.size}"
    if not np.allclose(aff, want_aff, atol=1e-5):
        return f"affine {aff.tolist()} != nibabel's {want_aff.tolist()}"
    return None


def run_file(case: dict, cache: dict) -> dict:
    path, oracle = case["path"], case["oracle"]
    try:
        vol = read_nifti(path)
    except NAMED as err:
        if path not in str(err):
            return {"fail": f"{type(err).__name__} does not name the file: {err}"}
        if oracle == "load":
            return {"fail": f"refused a good file: {err}"}
        return {"outcome": "refused", "type": type(err).__name__, "msg": str(err)}
    if oracle == "error":
        return {"fail": f"accepted, shape {vol.array.shape} {vol.array.dtype}"}
    problem = compare(vol.array, vol.affine, reference(case["ref"] if oracle != "self" else path, cache))
    return {"fail": problem} if problem else {"outcome": "loaded"}


def run_chain(case: dict) -> dict:
    chain = Compose(
        [
            LoadImaged(KEYS),
            EnsureChannelFirstd(KEYS),
            Orientationd(KEYS, axcodes="RAS"),
            Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        ]
    )
    try:
        out = chain(dict(case["item"]))
    except NAMED as err:
        if case["oracle"] == "chain_ok":
            return {"fail": f"refused a good pair: {err}"}
        if case["names"] not in str(err):
            return {"fail": f"error does not name {case['names']}: {err}"}
        return {"outcome": "refused", "type": type(err).__name__, "msg": str(err)}
    if case["oracle"] == "chain":
        return {"fail": f"accepted, image {tuple(out['image'].shape)} label {tuple(out['label'].shape)}"}
    return {"outcome": "loaded"}


def main() -> None:
    cases_file, results_file, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.disable(logging.CRITICAL)  # nibabel logs every header it would "fix"
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    with open(cases_file) as f:
        cases = json.load(f)
    cache: dict = {}
    limit_address_space(headroom)
    with open(results_file, "w") as out:
        for case in cases:
            out.write(json.dumps({"id": case["id"], "start": True}) + "\n")
            out.flush()
            try:
                result = run_chain(case) if "item" in case else run_file(case, cache)
            except BaseException as err:  # an unnamed error type is a finding
                result = {"fail": f"unnamed error {type(err).__name__}: {err}"}
            out.write(json.dumps({"id": case["id"], **result}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
