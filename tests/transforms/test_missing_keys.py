"""Every transform reports a key the item lacks the same way: ``KeyError`` naming the transform and the key."""

from __future__ import annotations

import pytest
import torch

from fastpipe import transforms as T


def _item() -> dict:
    vol = torch.zeros(1, 8, 8, 8)
    vol[0, 2:6, 2:6, 2:6] = 1
    return {
        "image": vol,
        "label": vol.clone(),
        "image_meta_dict": {"affine": torch.eye(4, dtype=torch.float64)},
    }


TRANSFORMS = {
    "LoadImaged": lambda: T.LoadImaged(["mask"]),
    "EnsureChannelFirstd": lambda: T.EnsureChannelFirstd(["image", "mask"]),
    "ScaleIntensityRanged": lambda: T.ScaleIntensityRanged(["image", "mask"], a_min=0, a_max=1),
    "CropForegroundd": lambda: T.CropForegroundd(["image", "mask"], source_key="image"),
    "FgBgToIndicesd": lambda: T.FgBgToIndicesd("mask"),
    "ToDeviced": lambda: T.ToDeviced(["image", "mask"], "cpu"),
    "EnsureTyped": lambda: T.EnsureTyped(["image", "mask"]),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_missing_key_is_a_key_error_naming_transform_and_key(name):
    item = _item()
    if name == "LoadImaged":
        item = {"image": "unused.nii.gz"}
    with pytest.raises(KeyError, match=rf"{name}: key 'mask' missing from"):
        TRANSFORMS[name]()(item)


def test_batched_crop_missing_key_is_a_key_error():
    crop = T.RandCropByPosNegLabeld(["image", "mask"], "label", 4, num_samples=1)
    with pytest.raises(KeyError, match=r"RandCropByPosNegLabeld: key 'mask' missing from"):
        crop.batch_call([_item()])
    lost_label = T.RandCropByPosNegLabeld(["image"], "seg", 4, num_samples=1)
    with pytest.raises(KeyError, match=r"RandCropByPosNegLabeld: key 'seg' missing from"):
        lost_label.batch_call([_item()])
