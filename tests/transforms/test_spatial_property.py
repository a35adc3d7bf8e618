"""Property-based check: LoadImaged + EnsureChannelFirstd + Orientationd + Spacingd against MONAI 1.6.

Hypothesis draws the voxel type (int16, int32, uint8, float32), the spacing of each world axis (half
of the axes exactly at the target spacing, the case of int16 CT at 1.5 mm in-plane), the stored
orientation (any permutation and signs of the axes), a small shape, and ``.nii`` or ``.nii.gz``.
fastpipe runs the chain twice: transform by transform, and through ``Compose`` (which fuses
``Orientationd`` + ``Spacingd``). Both must give MONAI's shape and affine; values must agree within
``1e-5`` of the image's amplitude for the interpolated key and exactly for the ``nearest`` key.

MONAI is configured as in ``test_equivalence_monai.py``: its defaults (``LoadImaged`` converts to
float32; the same ``Spacingd`` arguments). Examples are derandomised, so every run tests the same ones.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import monai.transforms as M
import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastpipe.transforms as T

KEYS = ["image", "label"]
MODES = ("bilinear", "nearest")
DTYPES = (np.int16, np.int32, np.uint8, np.float32)
OFF_TARGET = (0.5, 0.75, 0.8, 1.2, 2.5, 3.0, 5.0)  # spacings that differ from every target below
LETTERS = ("LR", "PA", "IS")  # (negative, positive) direction code per world axis


@st.composite
def volumes(draw) -> dict:
    """One drawn case: voxel type, target and source spacing per world axis, stored axis order/signs."""
    target = draw(st.tuples(*[st.sampled_from((1.0, 1.5, 2.0))] * 3))
    at_target = draw(st.tuples(*[st.booleans()] * 3))
    spacing = [
        t if keep else draw(st.sampled_from(OFF_TARGET)) for t, keep in zip(target, at_target, strict=True)
    ]
    return {
        "dtype": draw(st.sampled_from(DTYPES)),
        "target": target,
        "spacing": spacing,
        "perm": draw(st.permutations([0, 1, 2])),  # stored axis i runs along world axis perm[i]
        "flip": draw(st.tuples(*[st.booleans()] * 3)),  # stored axis i runs against that world axis
        "shape": draw(st.tuples(*[st.integers(2, 11)] * 3)),
        "ext": draw(st.sampled_from((".nii", ".nii.gz"))),
        "seed": draw(st.integers(0, 2**16)),
    }


def case_affine(case: dict) -> np.ndarray:
    """The stored voxel-to-world affine: axis i along world ``perm[i]``, flipped where drawn."""
    aff = np.zeros((4, 4))
    aff[:, 3] = [-12.0, 7.5, 3.0, 1.0]
    for i, w in enumerate(case["perm"]):
        aff[w, i] = (-1.0 if case["flip"][i] else 1.0) * case["spacing"][w]
    return aff


def case_data(case: dict) -> tuple[np.ndarray, np.ndarray]:
    """Image values spread over the type's range (CT-like for int16), and a label of 0..3."""
    rng = np.random.default_rng(case["seed"])
    shape, dtype = case["shape"], case["dtype"]
    if dtype == np.float32:
        image = rng.normal(0.0, 300.0, shape).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -2_000_000), min(info.max, 2_000_000)
        if dtype == np.int16:
            lo, hi = -1024, 3071
        image = rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    label = rng.integers(0, 4, shape).astype(dtype)
    return image, label


def write_case(folder: Path, case: dict) -> dict:
    image, label = case_data(case)
    item = {}
    for key, arr in zip(KEYS, (image, label), strict=True):
        path = folder / f"{key}{case['ext']}"
        nib.save(nib.Nifti1Image(arr, case_affine(case)), str(path))
        item[key] = str(path)
    return item


def chain(mod, pixdim) -> list:
    return [
        mod.LoadImaged(KEYS),
        mod.EnsureChannelFirstd(KEYS),
        mod.Orientationd(KEYS, axcodes="RAS"),
        mod.Spacingd(KEYS, pixdim=pixdim, mode=MODES),
    ]


def step_by_step(transforms: list, item: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in transforms:
            item = t(item)
    return item


def assert_same(fp: dict, mo: dict, what: str) -> None:
    img_f, img_m = fp["image"], torch.as_tensor(mo["image"]).float()
    assert tuple(img_f.shape) == tuple(img_m.shape), what
    assert tuple(fp["label"].shape) == tuple(mo["label"].shape), what
    assert img_f.dtype == torch.float32, what
    amplitude = max(1.0, img_m.abs().max().item())
    diff = (img_f - img_m).abs().max().item()
    assert diff <= 1e-5 * amplitude, f"{what}: image differs by {diff} (amplitude {amplitude})"
    lab_f, lab_m = fp["label"].float(), torch.as_tensor(mo["label"]).float()
    assert torch.equal(lab_f, lab_m), f"{what}: {(lab_f != lab_m).sum().item()} label voxels differ"
    aff_m = np.asarray(torch.as_tensor(mo["image"].affine))
    np.testing.assert_allclose(fp["image_meta_dict"]["affine"].numpy(), aff_m, atol=1e-4, err_msg=what)


@pytest.mark.timeout(180)
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=volumes())
def test_spatial_chain_matches_monai(case):
    with tempfile.TemporaryDirectory() as tmp:
        item = write_case(Path(tmp), case)
        mo = step_by_step(chain(M, case["target"]), item)
        assert_same(step_by_step(chain(T, case["target"]), item), mo, "transform by transform")
        assert_same(T.Compose(chain(T, case["target"]))(dict(item)), mo, "Compose (fused)")
