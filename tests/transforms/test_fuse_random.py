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
        (T.RandShiftIntensityd("image", 0.1, safe=True), "safe: MONAI clamps float32 to its range"),
    ],
)
def test_steps_that_cannot_join_stay_per_item(step, why):
    crop = cut((8, 8, 6))
    fused = fuse_random([crop, T.RandFlipd(KEYS, 0.5), step, T.RandFlipd(KEYS, 0.5)])
    assert [type(t) for t in fused] == [T.RandCropByPosNegLabeld, type(step), T.RandFlipd], why
    assert len(fused[0]._augs) == 1


def test_safe_shift_after_the_crop_clamps_float32_like_monai():
    """MONAI's safe=True clamps a float32 shift to float32's range (inf and overflow -> 3.4e38); the
    fused gather's x + o cannot, so such a shift must not join it."""
    import monai.transforms as M

    def item():
        img = torch.zeros(1, 6, 6, 6)
        img[0, 0, 0, :2] = torch.tensor([float("inf"), 3.3e38])
        label = torch.zeros(1, 6, 6, 6)
        label[0, 2:4, 2:4, 2:4] = 1
        return {"image": img, "label": label}

    def chain(mod):
        return [mod.RandCropByPosNegLabeld(KEYS, "label", (6, 6, 6), num_samples=2),
                mod.RandShiftIntensityd("image", offsets=(1e38, 1e38), safe=True, prob=1.0)]  # fmt: skip

    want = M.Compose(chain(M))(item())[0]["image"].as_tensor()
    assert want[0, 0, 0, 0] == torch.finfo(torch.float32).max  # MONAI's clamp, not inf
    ds = fp.CacheDataset([item()], chain(T), progress=False)
    batch = ds.__getitems__([0]).collated["image"]
    assert all(torch.equal(row, want) for row in batch)
    assert all(torch.equal(o["image"], want) for o in T.Compose(chain(T))(item()))


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


DTYPES = [torch.float16, torch.bfloat16, torch.int16, torch.uint8, torch.float64]


def dtype_item(dtype):
    """A (2, 6, 6, 6) image of ``dtype`` (values that round, wrap and truncate) and a 6^3 label."""
    img = torch.rand((2, 6, 6, 6), generator=torch.Generator().manual_seed(0))
    spread = {torch.uint8: (0.0, 250.0), torch.int16: (-0.5, 3000.0)}.get(dtype, (-0.5, 7.0))
    label = torch.zeros((1, 6, 6, 6))
    label[0, 1:4, 1:4, 1:4] = 1
    return {"image": ((img + spread[0]) * spread[1]).to(dtype), "label": label}


def intensity_chain(mod, prob, scale_dtype=torch.float32):
    """A whole-volume crop (so MONAI's and fastpipe's crops are the same voxels), then a fused scale and shift."""
    return [mod.RandCropByPosNegLabeld(KEYS, "label", (6, 6, 6), num_samples=8),
            mod.RandScaleIntensityd("image", factors=(0.37, 0.37), prob=prob, dtype=scale_dtype),
            mod.RandShiftIntensityd("image", offsets=(2.6, 2.6), prob=prob)]  # fmt: skip


@pytest.mark.parametrize("scale_dtype", [torch.float32, None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_intensity_on_other_dtypes_gives_monai_values_and_dtype(dtype, scale_dtype):
    import monai.transforms as M
    from monai.data import list_data_collate

    ours = T.Compose(intensity_chain(T, 1.0, scale_dtype))(dtype_item(dtype))
    theirs = M.Compose(intensity_chain(M, 1.0, scale_dtype))(dtype_item(dtype))
    for a, b in zip(ours, theirs, strict=True):
        assert a["image"].dtype == b["image"].dtype, (a["image"].dtype, b["image"].dtype)
        assert torch.equal(a["image"], b["image"].as_tensor())
    ds = fp.CacheDataset([dtype_item(dtype)], intensity_chain(T, 1.0, scale_dtype), progress=False)
    assert ds.batched and len(ds.suffix) == 1  # still fused: the key's intensity runs per crop
    assert "keys of another dtype per crop" in ds.describe()
    batch, want = ds.__getitems__([0]).collated["image"], list_data_collate(theirs)["image"].as_tensor()
    assert batch.dtype == want.dtype and torch.equal(batch, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_intensity_on_other_dtypes_mixed_fires_stack_like_monai_crops(dtype):
    import monai.transforms as M

    d = dtype_item(dtype)
    crop = d["image"]
    scale, shift = M.ScaleIntensity(None, None, factor=0.37, dtype=torch.float32), M.ShiftIntensity(2.6)
    options = [crop, shift(crop), scale(crop), shift(scale(crop))]
    chain = [t.set_random_state(3 + i) for i, t in enumerate(intensity_chain(T, 0.5))]
    ds = fp.CacheDataset([d], chain, progress=False)
    batch = ds.__getitems__([0]).collated["image"]
    picked = []
    for row in batch:
        hits = [j for j, o in enumerate(options) if torch.equal(row, torch.as_tensor(o).to(batch.dtype))]
        assert hits, "a crop is none of MONAI's four outcomes"
        picked.append(hits[0])
    assert len(set(picked)) > 1
    stacked = torch.stack([torch.as_tensor(options[j]) for j in picked])  # what collating MONAI's crops gives
    assert batch.dtype == stacked.dtype and torch.equal(batch, stacked)


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
