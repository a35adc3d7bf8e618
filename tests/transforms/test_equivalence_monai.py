"""fastpipe's spleen prefix (LoadImaged ... FgBgToIndicesd) against MONAI 1.6's on the same files."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch

import fastpipe.transforms as T

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write, write_pair  # noqa: E402

PIXDIM = (1.5, 1.5, 2.0)


def chain(mod, pixdim=PIXDIM) -> list:
    return [
        mod.LoadImaged(KEYS),
        mod.EnsureChannelFirstd(KEYS),
        mod.Orientationd(KEYS, axcodes="RAS"),
        mod.Spacingd(KEYS, pixdim=pixdim, mode=("bilinear", "nearest")),
        mod.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        mod.CropForegroundd(KEYS, source_key="image", allow_smaller=True),
        mod.FgBgToIndicesd("label"),
    ]


def run(mod, item, pixdim=PIXDIM) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = dict(item)
        for t in chain(mod, pixdim):
            d = t(d)
    return d


def indices_agree(a: torch.Tensor, b, total: int) -> float:
    """Fraction of the volume on which two index sets agree (1 - symmetric difference / voxels)."""
    return 1.0 - len(np.setxor1d(a.numpy(), np.asarray(torch.as_tensor(b)))) / total


def assert_equivalent(fp: dict, mo: dict) -> None:
    a, b = fp["image"], torch.as_tensor(mo["image"]).float()
    assert tuple(a.shape) == tuple(b.shape)
    assert tuple(fp["label"].shape) == tuple(mo["label"].shape)
    assert a.dtype == torch.float32
    diff = (a - b).abs()
    assert diff.mean().item() <= 1e-4, diff.mean().item()
    assert diff.max().item() <= 1e-2, diff.max().item()
    labels_equal = (fp["label"].float() == torch.as_tensor(mo["label"]).float()).float().mean().item()
    assert labels_equal >= 0.999, labels_equal
    total = a[0].numel()
    for k in ("label_fg_indices", "label_bg_indices"):
        assert fp[k].dtype == torch.int64
        assert indices_agree(fp[k], mo[k], total) >= 0.999, k
    aff_m = np.asarray(torch.as_tensor(mo["image"].affine))
    np.testing.assert_allclose(fp["image_meta_dict"]["affine"].numpy(), aff_m, atol=1e-4)


CASES = {
    # name: (spacing, axis codes, rotation deg, shear, extension, label dtype)
    "ras-gz-uint8": ((0.8, 0.8, 2.5), "RAS", 0.0, 0.0, ".nii.gz", np.uint8),
    "lps-gz-uint8": ((0.8, 0.8, 2.5), "LPS", 0.0, 0.0, ".nii.gz", np.uint8),
    "lps-nii-int16-ties": ((1.0, 1.0, 4.0), "LPS", 0.0, 0.0, ".nii", np.int16),  # many nearest ties
    "ras-nii-float-thin": ((0.75, 0.75, 1.0), "RAS", 0.0, 0.0, ".nii", np.float32),
    "las-gz-anisotropic": ((1.2, 0.9, 5.0), "LAS", 0.0, 0.0, ".nii.gz", np.uint8),
    "same-spacing": ((1.5, 1.5, 2.0), "RAS", 0.0, 0.0, ".nii.gz", np.uint8),
    "oblique-lps": ((0.9, 0.9, 2.5), "LPS", 12.0, 0.0, ".nii.gz", np.uint8),
    "sheared-grid-path": ((0.9, 0.9, 2.5), "RAS", 0.0, 0.15, ".nii.gz", np.int16),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CASES))
def test_chain_matches_monai(tmp_path, case):
    spacing, codes, angle, shear, ext, label_dtype = CASES[case]
    item = write_pair(tmp_path, affine(spacing, codes, angle, shear), ext, label_dtype=label_dtype)
    fp, mo = run(T, item), run(M, item)
    assert fp["label"].dtype == torch.from_numpy(np.zeros(0, label_dtype)).dtype  # labels keep their dtype
    assert_equivalent(fp, mo)


@pytest.mark.timeout(60)
def test_permuted_axes_file(tmp_path):
    """A file stored with swapped axes (e.g. sagittal acquisition): Orientationd permutes, MONAI agrees."""
    aff = affine((0.9, 1.1, 2.0), "RAS")
    aff[:3, :3] = aff[:3, [2, 0, 1]]
    item = write_pair(tmp_path, aff, ".nii.gz", shape=(20, 60, 50))
    assert_equivalent(run(T, item), run(M, item))


@pytest.mark.timeout(60)
def test_nearest_ties_round_like_grid_sample(tmp_path):
    """Spacing ratios that put output voxels exactly halfway: labels must round as grid_sample does."""
    rng = np.random.default_rng(3)
    item = write_pair(tmp_path, affine((1.0, 0.75, 1.0), "RAS"), ".nii", shape=(40, 40, 30))
    lab = rng.integers(0, 3, (40, 40, 30)).astype(np.uint8)  # labels change at every voxel: ties show
    item["label"] = write(tmp_path / "noisy_label.nii", lab, affine((1.0, 0.75, 1.0), "RAS"))
    keys = ["image", "label"]
    fp = T.Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))
    mo = M.Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))
    a = fp(T.EnsureChannelFirstd(keys)(T.LoadImaged(keys)(item)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = mo(M.EnsureChannelFirstd(keys)(M.LoadImaged(keys)(item)))
    assert torch.equal(a["label"].float(), torch.as_tensor(b["label"]).float())
    assert (a["image"] - torch.as_tensor(b["image"])).abs().max().item() < 1e-3
