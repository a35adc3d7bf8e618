"""SpatialPadd absorbed into the crop's gather, and RandCropByPosNegLabeld(padding_mode=...): MONAI's values and sampling."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from monai.transforms import SpatialPadd as MonaiPad

import fastpipe as fp
from fastpipe import transforms as T
from fastpipe.ops._pad_sample import VirtualPad, pad_voxel
from fastpipe.transforms._fuse_random import fuse_random

sys.path.insert(0, str(Path(__file__).parent))
from _coords import coord_item, four_sigma  # noqa: E402

KEYS = ["image", "label"]


def shift_coords(item):
    """Coordinates + 1, so that a pad voxel (0) differs from every volume voxel."""
    item["image"][:3] += 1
    return item


@pytest.mark.parametrize("method", ["symmetric", "end"])
def test_padded_windows_equal_monai_pad_value_for_value(method):
    items = [shift_coords(coord_item((7, 12, 9), "a", ((2, 5), (3, 9), (2, 6)))),
             shift_coords(coord_item((10, 5, 11), "b", ((2, 8), (1, 4), (3, 9))))]  # fmt: skip
    size = (10, 10, 10)
    chain = [T.SpatialPadd(KEYS, size, method=method), T.FgBgToIndicesd("label"),
             T.RandCropByPosNegLabeld(KEYS, "label", size, num_samples=8),
             T.RandRotate90d(KEYS, prob=0.5), T.RandShiftIntensityd("image", 0.5, prob=0.5)]  # fmt: skip
    ds = fp.CacheDataset(items, chain, progress=False)
    assert ds.batched and not any(type(t).__name__ == "SpatialPadd" for t in ds.core.prefix)
    assert ds.cached_entry(0)["image"].shape == (5, 7, 12, 9)  # no padded copy in the cache
    batch = ds.__getitems__([0, 1]).collated
    crop = ds.suffix[0]
    reached_pad = 0
    for n in range(16):
        d = items[n // 8]
        padded = {
            k: torch.as_tensor(v)
            for k, v in MonaiPad(KEYS, size, method=method)({k: d[k] for k in KEYS}).items()
        }
        lo = [
            (p - s) // 2 if method == "symmetric" else 0
            for p, s in zip(padded["image"].shape[1:], d["image"].shape[1:], strict=True)
        ]
        x, y, z = (s + w for s, w in zip(batch["crop_starts"][n].tolist(), lo, strict=True))
        assert min(x, y, z) >= 0  # the window lies in MONAI's padded volume
        reached_pad += min(batch["crop_starts"][n].tolist()) < 0 or any(
            s + 10 > e for s, e in zip(batch["crop_starts"][n].tolist(), d["image"].shape[1:], strict=True)
        )
        # undo the fused rotation and shift, then compare with MONAI's padded window value for value
        out_img, out_lab = batch["image"][n], batch["label"][n]
        for k in range(4):
            cand = torch.rot90(out_img, -k, (1, 2))
            o = float(cand[3].flatten()[0])
            ref = padded["image"][:, x : x + 10, y : y + 10, z : z + 10]
            if torch.allclose(cand, ref + o, atol=1e-6):
                assert torch.equal(
                    torch.rot90(out_lab, -k, (1, 2)), padded["label"][:, x : x + 10, y : y + 10, z : z + 10]
                )
                break
        else:
            pytest.fail(f"crop {n} is no rotation of MONAI's padded window at {(x, y, z)}")
    assert reached_pad > 0 and crop._pad is not None


def test_every_pad_voxel_is_counted_once():
    p = VirtualPad((1, 2, 0), (3, 2, 4), (5, 6, 7), True)
    inner = {((x + 1) * 6 + y + 2) * 7 + z for x in range(3) for y in range(2) for z in range(4)}
    got = [pad_voxel(k, p) for k in range(p.n_pad)]
    assert len(set(got)) == p.n_pad == 5 * 6 * 7 - 24 and not set(got) & inner and max(got) < 5 * 6 * 7


def test_pad_voxels_are_background_with_monai_probabilities():
    """Inner volume all foreground: background centres are pad voxels, each equally likely (MONAI's bg list)."""
    d = coord_item((3, 3, 2), fg=((0, 3), (0, 3), (0, 2)))
    chain = fuse_random([T.SpatialPadd(KEYS, (5, 6, 4)), T.FgBgToIndicesd("label"),
                         T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=1, neg=3, num_samples=6000)])  # fmt: skip
    entry = chain[0](d)
    batch = chain[1].set_random_state(0).batch_call([entry])
    lo = torch.tensor([1, 1, 1])  # symmetric pad of (3, 3, 2) to (5, 6, 4)
    centres = [tuple(c) for c in (batch["crop_centers"] + lo).tolist()]
    inner = [c for c in centres if 1 <= c[0] < 4 and 1 <= c[1] < 4 and 1 <= c[2] < 3]
    assert four_sigma(len(inner), 6000, 0.25)  # pos / (pos + neg): the inner voxels are all foreground
    assert torch.equal(batch["label"].flatten().bool(), torch.tensor([c in inner for c in centres]))
    pad = Counter(c for c in centres if c not in inner)
    n_pad, n_bg = 5 * 6 * 4 - 18, 6000 - len(inner)
    assert len(pad) == n_pad  # every pad voxel is drawn ...
    assert all(four_sigma(k, n_bg, 1 / n_pad) for k in pad.values())  # ... equally often


def test_pad_not_background_under_an_image_threshold():
    d = coord_item((3, 3, 2), fg=((0, 3), (0, 2), (0, 2)))
    d["image"] += 1  # every voxel above 0: inner background voxels count, pad voxels (image 0) do not
    rule = {"image_key": "image", "image_threshold": 0.0}
    for crop_kw in ({"fg_indices_key": "label_fg_indices", "bg_indices_key": "label_bg_indices"}, rule):
        # the lists named, or the crop's own rule equal to FgBgToIndicesd's (so the plan reads its lists)
        chain = [T.SpatialPadd(KEYS, (5, 6, 4)), T.FgBgToIndicesd("label", **rule),
                 T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=0, neg=1, num_samples=500, **crop_kw)]  # fmt: skip
        assert len(fuse_random(chain)) == 2
        for b in T.Compose(chain).set_random_state(1)(d):
            assert (
                float(b["image"][4].sum()) == 2.0
            )  # an inner background voxel (constant channel 1 + 1), never pad


def test_indices_before_the_pad_keep_monai_chain_as_written():
    named = {"fg_indices_key": "label_fg_indices", "bg_indices_key": "label_bg_indices"}
    chain = [
        T.FgBgToIndicesd("label"),
        T.SpatialPadd(KEYS, 10),
        T.RandCropByPosNegLabeld(KEYS, "label", 10, **named),
    ]
    assert [type(t) for t in fuse_random(chain)] == [type(t) for t in chain]  # MONAI reads the unpadded lists
    unnamed = [*chain[:2], T.RandCropByPosNegLabeld(KEYS, "label", 10)]  # MONAI computes on the padded label
    assert [type(t) for t in fuse_random(unnamed)] == [T.FgBgToIndicesd, T.RandCropByPosNegLabeld]
    chain[2] = unnamed[2]
    assert len(fuse_random([T.SpatialPadd(KEYS, 10, mode="edge"), chain[2]])) == 2
    assert len(fuse_random([T.SpatialPadd(["image"], 10), chain[2]])) == 2  # not the crop's keys
    assert len(fuse_random([T.SpatialPadd(KEYS, 10), T.ToDeviced(KEYS, "cpu"), chain[2]])) == 2


def test_an_image_key_the_pad_leaves_unpadded_is_refused_as_monai_refuses_it():
    """SpatialPadd(keys) then a crop whose image_key is another key: MONAI's crop raises (a padded label
    against an unpadded image); the absorbed pad read both unpadded and cropped silently."""
    from monai.transforms import Compose as MonaiCompose
    from monai.transforms import RandCropByPosNegLabeld as MonaiCrop

    d = {**coord_item((5, 6, 3)), "mask": torch.rand(1, 5, 6, 3)}
    rule = {"image_key": "mask", "image_threshold": 0.5}
    with pytest.raises(RuntimeError):  # MONAI: shapes of the image and the padded label differ
        MonaiCompose([MonaiPad(KEYS, (8, 8, 6)), MonaiCrop(KEYS, "label", 4, **rule)])(dict(d))
    chain = [T.SpatialPadd(KEYS, (8, 8, 6)), T.RandCropByPosNegLabeld(KEYS, "label", 4, **rule)]
    assert len(fuse_random(chain)) == 2  # the pad stays a step
    with pytest.raises(
        ValueError, match=r"image 'mask' of .* spatial shape \(5, 6, 3\), the label \(8, 8, 6\)"
    ):
        T.Compose(chain)(dict(d))
    with pytest.raises(ValueError, match=r"image_key 'mask' is not one of them"):
        T.RandCropByPosNegLabeld(KEYS, "label", 4, padding_mode="constant", **rule)


@pytest.mark.timeout(60)
def test_padding_mode_lets_mixed_sizes_stack_through_the_loader():
    items = [
        coord_item(s, f"c{i}", ((1, 4), (1, 4), (1, 4)))
        for i, s in enumerate([(6, 12, 9), (12, 12, 12), (9, 5, 14)])
    ]
    crop = T.RandCropByPosNegLabeld(KEYS, "label", (10, 10, 10), num_samples=2, padding_mode="constant")
    loader = fp.ThreadDataLoader(fp.CacheDataset(items, [crop], progress=False), batch_size=3)
    try:
        batches = list(loader)
    finally:
        loader.close()
    assert batches[0]["image"].shape == (6, 5, 10, 10, 10)
    counts = Counter(tuple(s < 0 for s in st) for st in batches[0]["crop_starts"].tolist())
    assert any(any(k) for k in counts)  # some windows start in the pad


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
@pytest.mark.parametrize("method", ["symmetric", "end"])
def test_standalone_spatial_padd_equals_monai(mode, method):
    d = {"image": torch.randn(2, 3, 6, 7), "label": torch.arange(126, dtype=torch.int16).reshape(1, 3, 6, 7)}
    kw = {"value": 2.0} if mode == "constant" else {}
    ours = T.SpatialPadd(KEYS, (5, -1, 9), method=method, mode=mode, **kw)(dict(d))
    theirs = MonaiPad(KEYS, (5, -1, 9), method=method, mode=mode, **kw)(dict(d))
    for key in KEYS:
        assert ours[key].dtype == d[key].dtype and torch.equal(ours[key], torch.as_tensor(theirs[key])), key
    assert ours["image"].shape == (2, 5, 6, 9)


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
def test_spatial_padd_keeps_large_integers_exactly(mode):
    # integers above 2**24 have no float32: a pad through float32 changed the label values
    lab = torch.full((1, 3, 3, 3), 2**24 + 1, dtype=torch.int32)
    lab[0, 0, 0, 0] = 2**31 - 1
    ours = T.SpatialPadd("label", (5, 5, 5), mode=mode)({"label": lab})["label"]
    theirs = torch.as_tensor(MonaiPad("label", (5, 5, 5), mode=mode)({"label": lab})["label"])
    assert ours.dtype == torch.int32 and torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.bool])
def test_spatial_padd_wraps_more_than_once_as_monai(dtype):
    # torch refuses a circular pad wider than the axis; MONAI then pads with numpy, so must we
    img = (torch.arange(2 * 7 * 4 * 3).reshape(2, 7, 4, 3) % 5).to(dtype)
    ours = T.SpatialPadd("image", (7, 15, 3), mode="wrap")({"image": img})["image"]
    theirs = torch.as_tensor(MonaiPad("image", (7, 15, 3), mode="wrap")({"image": img})["image"])
    assert ours.shape == (2, 7, 15, 3) and ours.dtype == dtype and torch.equal(ours, theirs)


def test_spatial_padd_reflect_wider_than_the_axis_names_the_pad():
    with pytest.raises(ValueError, match=r"mode 'reflect' cannot pad \(1, 2, 4, 4\)"):
        T.SpatialPadd("image", (7, 4, 4), mode="reflect")({"image": torch.zeros(1, 2, 4, 4)})
