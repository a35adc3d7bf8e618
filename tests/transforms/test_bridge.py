"""The bridge between fastpipe's steps and a MONAI step it does not know: what the MONAI step reads."""

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


class ReadMetaDict(M.MapTransform):
    """An older MONAI chain's step: reads ``image_meta_dict`` as ``LoadImaged(image_only=False)`` leaves it."""

    def __call__(self, data):
        d = dict(data)
        md = d["image_meta_dict"]
        d["spacing"] = torch.as_tensor(np.asarray(md["pixdim"][1:4], dtype=np.float64))
        d["affine_read"] = torch.as_tensor(np.asarray(md["affine"]), dtype=torch.float64)
        d["name"] = md["filename_or_obj"]
        return d


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("bridge")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS", angle_deg=20.0), shape=(40, 36, 30), seed=0)]


@pytest.mark.timeout(120)
def test_a_monai_step_reading_the_meta_dict_of_load_image_only_false_sees_monais_values(files):
    chain = M.Compose(
        [
            M.LoadImaged(KEYS, image_only=False),
            M.EnsureChannelFirstd(KEYS),
            M.Orientationd(KEYS, axcodes="RAS"),
            M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
            ReadMetaDict(KEYS),
            M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        ours = fp.CacheDataset(files, chain, progress=False, num_workers=1)[0]
        theirs = MonaiCacheDataset(files, chain, progress=False)[0]
    assert ours["name"] == theirs["name"] == files[0]["image"]
    np.testing.assert_allclose(ours["spacing"].numpy(), theirs["spacing"].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours["affine_read"].numpy(), theirs["affine_read"].numpy(), atol=1e-4)
    np.testing.assert_allclose(ours["image"].numpy(), theirs["image"].numpy(), atol=1e-4)


class ReadAffine(M.MapTransform):
    """A user's step after the crop that reads the crop's MetaTensor affine."""

    def __call__(self, data):
        d = dict(data)
        d["crop_affine"] = torch.as_tensor(np.asarray(d["image"].affine), dtype=torch.float64)
        return d


@pytest.mark.timeout(120)
def test_a_monai_step_after_the_batched_crop_gets_metatensor_crops_with_monais_affine(files):
    size = (48, 48, 40)  # the padded volume: the crop is the whole of it, so both draws give one crop
    chain = M.Compose(
        [
            M.LoadImaged(KEYS),
            M.EnsureChannelFirstd(KEYS),
            M.Orientationd(KEYS, axcodes="RAS"),
            M.SpatialPadd(KEYS, size),
            M.RandCropByPosNegLabeld(KEYS, "label", size, pos=1, neg=1, num_samples=2),
            M.RandFlipd(KEYS, prob=1.0, spatial_axis=0),
            ReadAffine(KEYS),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = fp.CacheDataset(files, chain, progress=False, num_workers=1)
        theirs = MonaiCacheDataset(files, chain, progress=False)[0]
    assert ds.batched and "fast path: ends at step 7 ReadAffine" in ds.describe()
    for a, b in zip(ds[0], theirs, strict=True):
        np.testing.assert_allclose(a["crop_affine"].numpy(), b["crop_affine"].numpy(), atol=1e-9)
        np.testing.assert_allclose(np.asarray(a["image"].affine), np.asarray(b["image"].affine), atol=1e-9)
        np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


class ReadOtherPostfix(M.MapTransform):
    """A step reading the metadata that ``LoadImaged(meta_key_postfix="meta")`` stores at ``image_meta``."""

    def __call__(self, data):
        d = dict(data)
        d["name"] = d["image_meta"]["filename_or_obj"]
        d["shape_read"] = torch.as_tensor(np.asarray(d["image_meta"]["spatial_shape"]))
        return d


@pytest.mark.timeout(120)
def test_load_image_with_another_meta_key_postfix_stores_the_metadata_where_monai_does(files):
    chain = [M.LoadImaged(KEYS, image_only=False, meta_key_postfix="meta"), M.EnsureChannelFirstd(KEYS)]
    chain.append(ReadOtherPostfix(KEYS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fp.CacheDataset(files, chain, progress=False, num_workers=1)[0]
        theirs = MonaiCacheDataset(files, chain, progress=False)[0]
    assert ours["name"] == theirs["name"] == files[0]["image"]
    assert torch.equal(ours["shape_read"], theirs["shape_read"])
    assert "image_meta" in ours and "label_meta" in ours


def name_from_meta(d):
    """A user's plain function in a MONAI chain, reading the MetaTensor's metadata."""
    return {**d, "name": d["image"].meta["filename_or_obj"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["cached prefix", "after the batched crop"])
def test_a_plain_function_in_a_monai_chain_gets_metatensors_as_in_monai(files, where):
    chain = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS), M.Orientationd(KEYS, axcodes="RAS")]
    if where == "after the batched crop":
        chain.append(M.RandCropByPosNegLabeld(KEYS, "label", (16, 16, 8), pos=1, neg=1, num_samples=2))
    chain.append(name_from_meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = fp.CacheDataset(files, chain, progress=False, num_workers=1)
        theirs = MonaiCacheDataset(files, chain, progress=False)[0]
    ours = ds[0]
    ours, theirs = (ours, theirs) if isinstance(ours, list) else ([ours], [theirs])
    assert [o["name"] for o in ours] == [t["name"] for t in theirs] == [files[0]["image"]] * len(ours)
    assert ds.batched == (where == "after the batched crop")
