"""MONAI tutorial chains and their last steps (``ToTensord``, ``EnsureTyped``, ``CastToTyped``) on the batched path.

A type conversion ending a MONAI chain runs on the stacked batch of crops, so the fast path does not
end there; the values are those of the chain without it, converted as MONAI converts them (tensors
are plain with ``{key}_meta_dict`` beside them, fastpipe's documented rule, where MONAI tracks meta).
"""

from __future__ import annotations

import re
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

CROP = {"spatial_size": (16, 16, 16), "pos": 1, "neg": 1, "num_samples": 2}
WINDOW = {"a_min": -57, "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True}
SPACING = {"pixdim": (1.5, 1.5, 2.0), "mode": ("bilinear", "nearest")}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ends")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS", angle_deg=10.0 * i), seed=i) for i in range(2)]


def augment() -> list:
    return [
        *[M.RandFlipd(KEYS, spatial_axis=[a], prob=0.5) for a in range(3)],
        M.RandRotate90d(KEYS, prob=0.25, max_k=3),
        M.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
    ]


def fast_training(end: list) -> list:
    """acceleration/fast_training_tutorial: indices, EnsureTyped(track_meta=False), ToDeviced before the crop."""
    return [
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.Spacingd(KEYS, **SPACING),
        M.ScaleIntensityRanged("image", **WINDOW),
        M.CropForegroundd(KEYS, source_key="image"),
        M.FgBgToIndicesd("label", fg_postfix="_fg", bg_postfix="_bg", image_key="image"),
        M.EnsureTyped(KEYS, track_meta=False),
        M.ToDeviced(KEYS, device="cpu"),  # the tutorial's GPU
        M.RandCropByPosNegLabeld(KEYS, "label", **CROP, fg_indices_key="label_fg", bg_indices_key="label_bg"),
        *augment(),
        *end,
    ]


def spleen_3d(end: list) -> list:
    """3d_segmentation/spleen_segmentation_3d (older): crop, no augmentation, a type step at the end."""
    return [
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.ScaleIntensityRanged("image", **WINDOW),
        M.CropForegroundd(KEYS, source_key="image"),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.Spacingd(KEYS, **SPACING),
        M.RandCropByPosNegLabeld(KEYS, "label", **CROP, image_key="image", image_threshold=0),
        *end,
    ]


def btcv(end: list) -> list:
    """3d_segmentation/swin_unetr_btcv: EnsureTyped(track_meta=False) before the crop."""
    return [
        M.LoadImaged(KEYS, ensure_channel_first=True),
        M.ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
        M.CropForegroundd(KEYS, source_key="image"),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.Spacingd(KEYS, **SPACING),
        M.EnsureTyped(KEYS, device="cpu", track_meta=False),
        M.RandCropByPosNegLabeld(KEYS, "label", **CROP, image_key="image", image_threshold=0),
        *augment(),
        *end,
    ]


def unetr_btcv(end: list) -> list:
    """3d_segmentation/unetr_btcv: Spacingd before Orientationd, ToTensord (here: each end) last."""
    return [
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.Spacingd(KEYS, **SPACING),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
        M.CropForegroundd(KEYS, source_key="image"),
        M.RandCropByPosNegLabeld(KEYS, "label", **CROP, image_key="image", image_threshold=0),
        *augment(),
        *end,
    ]


ENDS = {
    "none": list,
    "ToTensord": lambda: [M.ToTensord(KEYS)],
    "ToTensord_track_meta_false": lambda: [M.ToTensord(KEYS, track_meta=False)],
    "EnsureTyped": lambda: [M.EnsureTyped(KEYS)],
    "EnsureTyped_track_meta_false": lambda: [M.EnsureTyped(KEYS, track_meta=False)],
    "EnsureTyped_device": lambda: [M.EnsureTyped(KEYS, device="cpu")],
    "EnsureTyped_float32": lambda: [M.EnsureTyped(KEYS, dtype=torch.float32)],
    "EnsureTyped_per_key": lambda: [M.EnsureTyped(KEYS, dtype=(torch.float32, torch.int64))],
    "CastToTyped": lambda: [M.CastToTyped(KEYS, dtype=(np.float32, np.uint8))],
    "CastToTyped_default": lambda: [M.CastToTyped(KEYS)],  # float32 for every key
    "SelectItemsd": lambda: [M.SelectItemsd(KEYS)],
    "DeleteItemsd": lambda: [M.DeleteItemsd(["foreground_start_coord", "foreground_end_coord"])],
    "CopyItemsd": lambda: [M.CopyItemsd("label", names="label_copy")],
    "ToDeviced": lambda: [M.ToDeviced(KEYS, device="cpu")],  # "cuda:0" in a training script
}
LABEL_DTYPE = {"EnsureTyped_float32": torch.float32, "EnsureTyped_per_key": torch.int64}
LABEL_DTYPE["CastToTyped_default"] = torch.float32  # else uint8, the integer rule (or the cast's)
CHAINS = {"fast_training": fast_training, "spleen_3d": spleen_3d, "btcv": btcv, "unetr_btcv": unetr_btcv}


def _datasets(files: list[dict], chain: list, monai_chain: list) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        ours = fp.CacheDataset(files, chain, progress=False, num_workers=1, seed=0)
        theirs = MonaiCacheDataset(files, monai_chain, progress=False)
    return ours, theirs


@pytest.mark.timeout(240)
@pytest.mark.parametrize("end", sorted(ENDS))
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_tutorial_chain_stays_batched_with_monais_types(files, name, end):
    """Each tutorial chain, with each usual last step, runs all of its random part as one batched op;
    the prefix gives MONAI's values, the crops MONAI's shapes and image dtype."""
    make = CHAINS[name]
    ds, ref = _datasets(files, make(ENDS[end]()), make(ENDS[end]()))
    assert ds.batched and "fast path ends" not in repr(ds), ds.describe()
    split = next(i for i, t in enumerate(make([])) if isinstance(t, M.RandomizableTrait))
    prefix = M.Compose(make([])[:split])
    for i, item in enumerate(files):
        ours, theirs = ds.cached_entry(i), prefix(dict(item))
        for key in KEYS:
            np.testing.assert_allclose(np.asarray(ours[key], np.float64), np.asarray(theirs[key]), atol=1e-5)
    batch = ds.__getitems__([0, 1])
    theirs = [c for i in range(len(files)) for c in ref[i]]
    assert len(batch) == len(theirs)
    label_dtype = LABEL_DTYPE.get(end, torch.uint8)
    for a, b in zip(batch, theirs, strict=True):
        assert type(a["image"]) is torch.Tensor  # plain, with {key}_meta_dict (the documented rule)
        assert a["image"].shape == b["image"].shape and a["image"].dtype == b["image"].dtype
        assert a["label"].shape == b["label"].shape and a["label"].dtype == label_dtype
        assert a["image"].is_contiguous() and "image_meta_dict" in a


@pytest.mark.timeout(120)
@pytest.mark.parametrize("end", ["ToTensord", "EnsureTyped_float32"])
def test_a_type_step_at_the_end_converts_the_crops_of_the_chain_without_it(files, end):
    """Same seed, same crops: the last step only converts them (one call on the stacked batch)."""
    ds, _ = _datasets(files, btcv(ENDS[end]()), [])
    ref, _ = _datasets(files, btcv(ENDS["none"]()), [])
    for a, b in zip(ds.__getitems__([0, 1]), ref.__getitems__([0, 1]), strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy().astype(a[key].numpy().dtype))
    batch = next(iter(fp.ThreadDataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (4, 1, *CROP["spatial_size"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("use_re", [False, True])
def test_deleting_the_meta_dicts_before_spacing_keeps_monais_values(files, use_re):
    """An older chain drops ``{key}_meta_dict`` (MONAI's MetaTensor still carries the affine): fastpipe's
    Spacingd must still resample with the file's affine."""
    gone = ["meta_dict"] if use_re else ["image_meta_dict", "label_meta_dict"]

    def chain() -> list:
        return [
            M.LoadImaged(KEYS, image_only=False),
            M.EnsureChannelFirstd(KEYS),
            M.DeleteItemsd(gone, use_re=use_re),
            M.Orientationd(KEYS, axcodes="RAS"),
            M.Spacingd(KEYS, **SPACING),
            M.SelectItemsd(KEYS),
        ]

    ds, ref = _datasets(files, chain(), chain())
    assert re.search(r"DeleteItemsd +MONAI -> fastpipe", ds.describe()), ds.describe()
    for i in range(len(files)):
        for key in KEYS:
            np.testing.assert_allclose(
                np.asarray(ds[i][key], np.float64), np.asarray(ref[i][key]), rtol=1e-5, atol=1e-4
            )


def test_select_delete_and_copy_items_on_one_item_and_on_a_batch():
    from fastpipe.transforms._dict_ops import CopyItemsd, DeleteItemsd, SelectItemsd

    item = {"image": torch.zeros(2, 1, 3), "image_meta_dict": [{}, {}], "extra": [1, 2]}
    assert sorted(SelectItemsd("image").apply_batch(item, {})) == ["image", "image_meta_dict"]
    with pytest.raises(KeyError, match="'label'"):
        SelectItemsd(KEYS)(item)
    assert sorted(SelectItemsd(KEYS, allow_missing_keys=True)(item)) == ["image", "image_meta_dict"]
    assert sorted(DeleteItemsd("ext", use_re=True)(item)) == ["image", "image_meta_dict"]
    assert sorted(DeleteItemsd(["image", "extra"])(item)) == ["image_meta_dict"]  # only what is named
    assert sorted(DeleteItemsd("image_meta_dict")(item)) == sorted(item)  # the kept image's metadata
    copied = CopyItemsd("image", 1, ["twin"]).apply_batch(item, {})
    assert copied["twin"] is not item["image"] and torch.equal(copied["twin"], item["image"])
    assert copied["twin_meta_dict"] == item["image_meta_dict"]  # its metadata, as a MetaTensor copy has
    with pytest.raises(KeyError, match="'extra' already exists"):
        CopyItemsd("image", 1, ["extra"])(item)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("to_numpy", ["EnsureTyped", "ToNumpyd"])
def test_arrays_before_the_crop_give_the_crops_of_tensors(files, to_numpy):
    """MONAI's crop takes numpy arrays; fastpipe's failed every batch ('str' object has no attribute
    'type': a numpy 2 array's ``device`` is a string)."""
    step = M.EnsureTyped(KEYS, data_type="numpy") if to_numpy == "EnsureTyped" else M.ToNumpyd(KEYS)
    chain = spleen_3d([])
    ds, _ = _datasets(files, [*chain[:-1], step, chain[-1]], [])
    ref, _ = _datasets(files, spleen_3d([]), [])
    for a, b in zip(ds.__getitems__([0, 1]), ref.__getitems__([0, 1]), strict=True):
        for key in KEYS:
            assert type(a[key]) is torch.Tensor
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy().astype(a[key].numpy().dtype))
    assert type(ds[0][0]["image"]) is torch.Tensor  # one item, one call
