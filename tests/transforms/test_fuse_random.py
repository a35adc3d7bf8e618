"""fuse_random: which chains fuse, and fused orientations equal MONAI's Flip/Rotate90 applied in chain order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from monai.transforms import Flip, Rotate90, ScaleIntensity, ShiftIntensity

import fastpipe as fp
from fastpipe import transforms as T
from fastpipe.transforms._fuse_random import fuse_random

sys.path.insert(0, str(Path(__file__).parent))
from _coords import coord_item  # noqa: E402

KEYS = ["image", "label"]


def cut(size=(6, 6, 6), n=6, **kw):
    return T.RandCropByPosNegLabeld(KEYS, "label", size, num_samples=n, **kw)


def windows(batch, item, size):
    for n in range(batch["image"].shape[0]):
        x, y, z = batch["crop_starts"][n].tolist()
        yield n, {k: item[k][:, x : x + size[0], y : y + size[1], z : z + size[2]] for k in KEYS}


@pytest.mark.parametrize(
    "steps,monai",
    [
        ([T.RandFlipd(KEYS, 1.0, 0), T.RandRotate90d(KEYS, 1.0, max_k=1)],
         [Flip([0]), Rotate90(1, (0, 1))]),
        ([T.RandRotate90d(KEYS, 1.0, max_k=1, spatial_axes=(0, 2)), T.RandFlipd(KEYS, 1.0, 2)],
         [Rotate90(1, (0, 2)), Flip([2])]),
        ([T.RandRotate90d(KEYS, 1.0, max_k=1, spatial_axes=(-1, 1)), T.RandFlipd(KEYS, 1.0, None),
          T.RandRotate90d(KEYS, 1.0, max_k=1)],
         [Rotate90(1, (2, 1)), Flip(None), Rotate90(1, (0, 1))]),
        ([T.RandScaleIntensityd("image", (0.25, 0.25), 1.0), T.RandShiftIntensityd("image", (-0.5, -0.5), prob=1.0),
          T.RandFlipd("label", 1.0, 1)],
         [ScaleIntensity(minv=None, maxv=None, factor=0.25), ShiftIntensity(-0.5), Flip([1])]),
    ],
)  # fmt: skip
def test_fused_orientation_and_intensity_equal_monai_in_chain_order(steps, monai):
    item = coord_item((13, 11, 12))
    ds = fp.CacheDataset([item], [cut(), *steps], progress=False)
    assert ds.batched
    batch = ds.__getitems__([0]).collated
    for n, win in windows(batch, item, (6, 6, 6)):
        for key in KEYS:
            ref = win[key]
            for step, m in zip(steps, monai, strict=True):
                if key in step.keys:
                    ref = m(ref)
            assert torch.equal(batch[key][n], torch.as_tensor(ref)), (key, n)


def test_tutorial_chain_is_one_batched_step():
    chain = [T.FgBgToIndicesd("label"), cut((8, 8, 8), 4),
             *(T.RandFlipd(KEYS, prob=0.1, spatial_axis=[a]) for a in range(3)),
             T.RandRotate90d(KEYS, prob=0.1, max_k=3), T.RandShiftIntensityd("image", offsets=0.1, prob=0.5)]  # fmt: skip
    fused = fuse_random(chain)
    assert len(fused) == 2 and len(fused[1]._augs) == 5
    ds = fp.CacheDataset([coord_item((12, 12, 12))], chain, progress=False)
    assert ds.batched


@pytest.mark.parametrize(
    "step,why",
    [
        (T.RandRotate90d(KEYS, 1.0, spatial_axes=(0, 2)), "unequal sides in the plane"),
        (T.RandFlipd(["image", "other"], 1.0), "a key the crop does not cut"),
        (T.RandShiftIntensityd("image", 0.1, channel_wise=True), "channel_wise"),
        (T.RandScaleIntensityd("image", 0.1, dtype=torch.float16), "a dtype change"),
    ],
)
def test_steps_that_cannot_join_stay_per_item(step, why):
    crop = cut((8, 8, 6))
    fused = fuse_random([crop, T.RandFlipd(KEYS, 0.5), step, T.RandFlipd(KEYS, 0.5)])
    assert [type(t) for t in fused] == [T.RandCropByPosNegLabeld, type(step), T.RandFlipd], why
    assert len(fused[0]._augs) == 1


def test_one_affine_per_key_scale_first():
    shift, scale = T.RandShiftIntensityd("image", 0.1), T.RandScaleIntensityd("image", 0.1)
    assert len(fuse_random([cut(), scale, shift])) == 1
    assert len(fuse_random([cut(), shift, scale])) == 2  # (x + o) * s is not x * s + o, bit for bit
    assert len(fuse_random([cut(), shift, T.RandShiftIntensityd("image", 0.1)])) == 2
    assert len(fuse_random([cut(), shift, T.RandScaleIntensityd("label", 0.1)])) == 1  # another key


def test_per_item_tail_after_the_fused_part_still_runs():
    item = coord_item((12, 12, 12))
    chain = [
        cut(n=3),
        T.RandShiftIntensityd("image", (1.0, 1.0), prob=1.0),
        T.RandScaleIntensityd("image", (1.0, 1.0), prob=1.0),
    ]
    out = T.Compose(chain)(item)
    for o in out:
        assert torch.equal(o["image"][3], torch.full((6, 6, 6), 2.0))  # (0 + 1) * (1 + 1): shift, then scale
    ds = fp.CacheDataset([item], chain, progress=False)
    assert ds.batched and len(ds.suffix) == 2 and ds.__getitems__([0]).collated["image"].shape[0] == 3


def test_fused_intensity_on_integer_image_says_why():
    item = coord_item((12, 12, 12))
    item["image"] = item["image"].to(torch.int16)
    ds = fp.CacheDataset([item], [cut(), T.RandShiftIntensityd("image", 0.1)], progress=False)
    with pytest.raises(
        TypeError,
        match=r"RandShiftIntensityd fused into the crop need float32 'image', got torch.int16; MONAI",
    ):
        ds.__getitems__([0])


@pytest.mark.timeout(60)
def test_smart_cache_runs_the_fused_chain_batched():
    chain = [T.FgBgToIndicesd("label"), cut((8, 8, 8), 2), T.RandFlipd(KEYS, 0.5), T.RandRotate90d(KEYS, 0.5)]
    ds = fp.SmartCacheDataset(
        [coord_item((12, 12, 12), f"c{i}") for i in range(4)], chain, cache_num=2, progress=False
    )
    try:
        assert ds.batched
        assert ds.__getitems__([0, 1]).collated["image"].shape == (4, 5, 8, 8, 8)
    finally:
        ds.close()
