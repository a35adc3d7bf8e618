"""Dtypes of a translated MONAI chain where fastpipe's integer rule meets a step that needs floats."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch
from monai.data import CacheDataset as MonaiCacheDataset

import fastpipe as fp

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write_pair  # noqa: E402

SIZE = (32, 32, 40)  # the padded volume: the crop is the whole of it, so both draws give one crop


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("dtypes")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS", angle_deg=20.0), shape=(40, 36, 30), seed=0)]


def chain(after: list, load_dtype=np.float32) -> list:
    return [
        M.LoadImaged(KEYS, dtype=load_dtype),
        M.EnsureChannelFirstd(KEYS),
        M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode="nearest"),  # the int16 image too
        M.SpatialPadd(KEYS, SIZE),
        M.RandCropByPosNegLabeld(KEYS, "label", SIZE, pos=1, neg=1, num_samples=2),
        *after,
    ]


AFTER = {
    "shift": lambda: [M.RandShiftIntensityd("image", offsets=(0.25, 0.25), prob=1.0)],
    "scale": lambda: [M.RandScaleIntensityd("image", factors=(0.5, 0.5), prob=1.0)],
    "contrast": lambda: [M.RandAdjustContrastd("image", gamma=(1.5, 1.5), prob=1.0)],
    # a float dtype set at the end (after the crop) does not make the shift's input float
    "shift_then_ensure_typed": lambda: [
        M.RandShiftIntensityd("image", offsets=(0.25, 0.25), prob=1.0),
        M.EnsureTyped(KEYS, dtype=torch.float32),
    ],
    "scale_dtype_none": lambda: [M.RandScaleIntensityd("image", factors=(0.5, 0.5), prob=1.0, dtype=None)],
    "noise_dtype_none": lambda: [M.RandGaussianNoised("image", std=0.0, prob=1.0, dtype=None)],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("load_dtype", [np.float32, None], ids=["load-float32", "load-dtype-none"])
@pytest.mark.parametrize("case", sorted(AFTER))
def test_an_image_resampled_nearest_then_shifted_is_float32_with_monais_values(files, case, load_dtype):
    """MONAI's LoadImaged makes the int16 image float32, and its Spacingd returns float32 even after
    ``LoadImaged(dtype=None)``; a random intensity step after the crop needs it so (fastpipe's nearest
    rule kept it int16: the fused op refused it, or with ``dtype=None`` it cut the 0.25 shift and the
    0.5 scale off, silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        ours = fp.CacheDataset(files, chain(AFTER[case](), load_dtype), progress=False, num_workers=1)[0]
        theirs = MonaiCacheDataset(files, chain(AFTER[case](), load_dtype), progress=False)[0]
    for a, b in zip(ours, theirs, strict=True):
        assert a["image"].dtype == torch.float32
        np.testing.assert_allclose(a["image"].numpy(), b["image"].numpy(), rtol=1e-6, atol=1e-3)
        np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())


def _above_mean(x: torch.Tensor) -> torch.Tensor:
    return x > x.mean()  # torch's mean needs float voxels, as MONAI's LoadImaged gives them


@pytest.mark.timeout(120)
def test_crop_foreground_select_fn_sees_monais_float32_voxels(files):
    """A translated ``CropForegroundd`` before any float step handed the user's ``select_fn`` fastpipe's
    compact int16 voxels: ``x > x.mean()`` raised "mean(): could not infer output dtype ... Got: Short"
    where MONAI (float32 voxels) crops."""
    steps = lambda: [  # noqa: E731
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.CropForegroundd(KEYS, source_key="image", select_fn=_above_mean),
        M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fp.CacheDataset(files, steps(), progress=False, num_workers=1)[0]
        theirs = M.Compose(steps())(dict(files[0]))
    for key in KEYS:
        assert tuple(ours[key].shape) == tuple(theirs[key].shape)
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy().astype(np.float32), atol=1e-6)


def _nearest_then(after: list) -> list:
    """``LoadImaged(dtype=None)`` keeps the int16 image; MONAI's ``Spacingd`` returns float32, fastpipe's
    nearest keeps int16 (its dtype rule)."""
    return [
        M.LoadImaged(KEYS, dtype=None),
        M.EnsureChannelFirstd(KEYS),
        M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode="nearest"),
        *after,
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "after",
    [
        lambda: [M.ScaleIntensityRanged("image", -57, 164, 0.0, 1.0, clip=True, dtype=None)],
        lambda: [M.ScaleIntensityRanged("image", -57, 164, 0.0, 1.0, dtype=None), M.EnsureTyped(KEYS)],
        lambda: [M.CropForegroundd(KEYS, source_key="image", select_fn=_above_mean)],
    ],
    ids=["scale", "scale-ensure-typed", "crop-foreground-select-fn"],
)
def test_a_key_resampled_nearest_is_monais_float32_for_later_steps(files, after):
    """After a translated nearest ``Spacingd`` (int16 kept) with ``LoadImaged(dtype=None)``,
    ``ScaleIntensityRanged(dtype=None)`` kept int16 where MONAI's input is float32: every scaled voxel
    truncated to 0 or 1 (silently); a ``select_fn`` taking the mean raised on the int16 voxels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fp.CacheDataset(files, _nearest_then(after()), progress=False, num_workers=1)[0]
        theirs = M.Compose(_nearest_then(after()))(dict(files[0]))
    assert tuple(ours["image"].shape) == tuple(theirs["image"].shape)
    np.testing.assert_allclose(ours["image"].numpy(), theirs["image"].numpy(), rtol=1e-6, atol=1e-6)
