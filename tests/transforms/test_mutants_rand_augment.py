"""Random flips, turns, shifts and scales: behaviour that mutation testing found unchecked."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch
from monai.transforms import Flip

import fastpipe as fp
from fastpipe import transforms as T

sys.path.insert(0, str(Path(__file__).parent))
from _coords import coord_item  # noqa: E402

KEYS = ["image", "label"]


def cut(size=(4, 4, 4), n=4):
    return T.RandCropByPosNegLabeld(KEYS, "label", size, num_samples=n)


def test_intensity_reprs_name_channel_wise_only_when_set():
    """The repr enters ``RandCropByPosNegLabeld.fused``: it must say what runs."""
    plain = T.RandShiftIntensityd("image", 0.1, prob=1.0)
    assert repr(plain) == "RandShiftIntensityd(keys=['image'], prob=1.0, range=(-0.1, 0.1))"
    per_channel = T.RandScaleIntensityd("image", (0.0, 1.0), channel_wise=True)
    assert (
        repr(per_channel)
        == "RandScaleIntensityd(keys=['image'], prob=0.1, range=(0.0, 1.0), channel_wise=True)"
    )


def test_spatial_reprs_name_their_axes():
    assert repr(T.RandFlipd("image", 0.5, spatial_axis=[0, 2])).endswith("spatial_axis=[0, 2])")
    assert repr(T.RandRotate90d("image", 0.5, max_k=2, spatial_axes=(0, 2))).endswith(
        "max_k=2, spatial_axes=(0, 2))"
    )


def _meta() -> dict:
    affine = torch.tensor(
        [[0.0, 0.0, 2.0, -10.0], [0.0, 1.5, 0.0, 5.0], [-1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
    )
    return {"affine": affine, "filename_or_obj": "a.nii.gz"}


def test_a_flip_that_does_not_fire_leaves_the_meta_dict_as_it_was():
    meta = _meta()
    data = {"image": torch.rand(1, 4, 5, 6), "image_meta_dict": meta}
    out = T.RandFlipd("image", 0.0, spatial_axis=0)(data)
    assert out["image_meta_dict"] is meta and set(meta) == {"affine", "filename_or_obj"}


@pytest.mark.parametrize(
    "step", [T.RandRotate90d(KEYS, 1.0, max_k=3), T.RandFlipd(KEYS, 1.0, spatial_axis=[0, 2])]
)
def test_a_stacked_batch_moves_each_crops_affine_as_the_per_crop_call(step):
    """``apply_batch`` (the per-crop tail on a stacked batch): each crop's meta dict as ``apply`` of that crop."""
    g = torch.Generator().manual_seed(0)
    n = 4
    batch = {k: torch.rand((n, 1, 5, 5, 5), generator=g) for k in KEYS}
    batch["image_meta_dict"] = [_meta() for _ in range(n)]
    step.set_random_state(1)
    params = step.draw_batch(batch, n)
    before = {k: batch[k].clone() for k in KEYS}
    out = step.apply_batch(batch, params)  # may write into the batch
    for i in range(n):
        one = step.apply(
            {"image": before["image"][i], "label": before["label"][i], "image_meta_dict": _meta()}, params, i
        )
        assert torch.equal(out["image"][i], one["image"])
        assert torch.equal(out["image_meta_dict"][i]["affine"], one["image_meta_dict"]["affine"])
    assert not torch.equal(out["image_meta_dict"][0]["affine"], _meta()["affine"].double())


@pytest.mark.parametrize("axis", [None, -1, [-3, 1]])
def test_a_fused_flip_with_negative_or_no_axes_equals_monai(axis):
    item = coord_item((9, 8, 7))
    ds = fp.CacheDataset([item], [cut(), T.RandFlipd(KEYS, 1.0, spatial_axis=axis)], progress=False)
    batch = ds.__getitems__([0]).collated
    for n in range(batch["image"].shape[0]):
        x, y, z = batch["crop_starts"][n].tolist()
        for key in KEYS:
            want = Flip(axis)(item[key][:, x : x + 4, y : y + 4, z : z + 4])
            assert torch.equal(batch[key][n], torch.as_tensor(want)), (key, n)


def test_a_quarter_turn_keeps_a_crops_shape_only_with_equal_sides_in_its_plane():
    turn = T.RandRotate90d(KEYS, 1.0, spatial_axes=(0, 2))
    assert turn.keeps_shape((6, 4, 6)) and not turn.keeps_shape((6, 6, 4))
    assert not turn.keeps_shape((6, 6))  # a 2-D crop: never run on the stacked batch


@pytest.mark.parametrize(
    "name",
    ["RandFlipd", "RandRotate90d", "RandShiftIntensityd", "RandScaleIntensityd", "RandCropByPosNegLabeld"],
)
def test_default_arguments_are_monais(name):
    """A default (``max_k=3``, ``prob=0.1``, ``spatial_axes=(0, 1)``...) that drifts from MONAI's changes a
    written MONAI chain's behaviour silently."""
    ours = inspect.signature(getattr(T, name)).parameters
    theirs = inspect.signature(getattr(M, name)).parameters
    for arg, p in ours.items():
        if p.default is inspect.Parameter.empty or arg not in theirs:
            continue
        want = theirs[arg].default
        if arg == "dtype":  # MONAI's np.float32 is fastpipe's torch.float32
            want = getattr(torch, np.dtype(want).name)
        assert p.default == want, (name, arg)
