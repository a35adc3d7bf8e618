"""Behaviour of the batched crop that mutation testing found unchecked (``rand_crop``, ``_crop_suffix``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpipe import transforms as T
from fastpipe.transforms._crop_suffix import check_turned_size
from fastpipe.transforms._fuse_random import fuse_random

KEYS = ["image", "label"]


def _item(shape=(8, 8, 8), **extra) -> dict:
    label = torch.zeros((1, *shape))
    label[0, 3:5, 3:5, 3:5] = 1
    return {"image": torch.rand((1, *shape)), "label": label, **extra}


def test_fused_names_the_absorbed_pad_and_the_fused_transforms_and_repr_shows_them():
    crop = T.RandCropByPosNegLabeld(KEYS, "label", 4, padding_mode="constant")
    assert crop.fused == ("pad to (4, 4, 4) (symmetric, constant 0)",)
    assert "fused=[pad to (4, 4, 4) (symmetric, constant 0)]" in repr(crop)
    plain = T.RandCropByPosNegLabeld(KEYS, "label", 4)
    assert plain.fused == () and "fused" not in repr(plain)
    flip = T.RandFlipd(KEYS, 1.0, 0)
    fused = fuse_random([plain, flip])[0]
    assert fused.fused == (repr(flip),)


def test_a_meta_dict_without_affine_passes_through_the_crop_and_a_flip_unchanged():
    """Unchanged but for MONAI's per-crop ``patch_index`` and ``crop_center`` (which MONAI sets on any crop)."""
    meta = {"filename_or_obj": "a.nii.gz", "spatial_shape": [8, 8, 8]}
    crop = T.RandCropByPosNegLabeld(KEYS, "label", 4, num_samples=2).set_random_state(0)
    out = crop.batch_call([_item(image_meta_dict=meta)])
    centers = [tuple(c) for c in out["crop_centers"].tolist()]
    assert out["image_meta_dict"] == [{**meta, "patch_index": i, "crop_center": centers[i]} for i in (0, 1)]
    for i, one in enumerate(crop(_item(image_meta_dict=meta))):
        extra = {k: one["image_meta_dict"][k] for k in ("patch_index", "crop_center")}
        assert one["image_meta_dict"] == {**meta, **extra} and extra["patch_index"] == i
    flipped = T.RandFlipd(KEYS, 1.0, 0)({**_item(), "image_meta_dict": meta})
    assert flipped["image_meta_dict"] == meta


def test_a_turn_in_a_plane_of_unequal_sides_is_refused_and_a_square_plane_is_kept():
    turn = torch.tensor([[1, 0, 2], [0, 1, 2]])  # a quarter turn in the (0, 1) plane, then none
    with pytest.raises(ValueError, match="turns 'image' crops of size"):
        check_turned_size({"axes": turn}, (3, 4, 4), "image")
    check_turned_size({"axes": turn}, (4, 4, 3), "image")  # the turned plane is square
    check_turned_size({"axes": None}, (3, 4, 5), "image")


def test_index_keys_are_both_or_none():
    assert T.RandCropByPosNegLabeld(KEYS, "label", 4, fg_indices_key="fg").index_keys == ()
    assert T.RandCropByPosNegLabeld(KEYS, "label", 4, bg_indices_key="bg").index_keys == ()
    both = T.RandCropByPosNegLabeld(KEYS, "label", 4, fg_indices_key="fg", bg_indices_key="bg")
    assert both.index_keys == ("fg", "bg")


def test_a_numpy_image_key_outside_the_cropped_keys_draws_as_its_tensor():
    item = _item()
    rule = np.random.default_rng(0).random((1, 8, 8, 8)).astype(np.float32)
    crop = T.RandCropByPosNegLabeld(KEYS, "label", 4, num_samples=4, image_key="rule", image_threshold=0.5)
    a = crop.set_random_state(0).batch_call([{**item, "rule": rule}])
    b = crop.set_random_state(0).batch_call([{**item, "rule": torch.from_numpy(rule)}])
    assert torch.equal(a["crop_starts"], b["crop_starts"]) and torch.equal(a["image"], b["image"])
