"""RandCropByPosNegLabeld: patches are slices at their centres, MONAI semantics, seeds, bad input (fused suffix: test_fuse_random)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from monai.transforms import RandCropByPosNegLabeld as MonaiCrop

from fastpipe.ops.indices import fg_bg_indices
from fastpipe.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from fastpipe.transforms._fuse_random import fuse_random

SHAPE = (40, 32, 36)


def coords(shape=SHAPE, offset=0):
    """float64 volume (1, X, Y, Z) whose voxel holds offset + x*10^6 + y*10^3 + z."""
    x, y, z = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape), indexing="ij")
    return (x * 1e6 + y * 1e3 + z + offset)[None]


def item(shape=SHAPE, seed=0, offset=0, name="case"):
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros((1, *shape), dtype=torch.uint8)
    label[0, 10:20, 5:12, 20:30] = 1
    image = torch.randn((1, *shape), generator=g)
    return {"image": image, "label": label, "coords": coords(shape, offset), "name": name}


def decode(v):
    v = int(v)
    return v // 10**6 % 1000, v // 10**3 % 1000, v % 1000


def test_patches_are_slices_at_their_centres_and_label_from_same_place():
    items = [item(seed=0, offset=0, name="a"), item((30, 34, 33), seed=1, offset=1e9, name="b")]
    t = RandCropByPosNegLabeld(
        ["image", "label", "coords"], "label", (8, 10, 12), num_samples=5
    ).set_random_state(0)
    b = t.batch_call(items)
    assert b["image"].shape == (10, 1, 8, 10, 12) and b["label"].dtype == torch.uint8
    assert b["name"] == ["a"] * 5 + ["b"] * 5
    for n in range(10):
        d = items[n // 5]
        x, y, z = b["crop_starts"][n].tolist()
        sl = (slice(None), slice(x, x + 8), slice(y, y + 10), slice(z, z + 12))
        for key in ("image", "label", "coords"):
            assert torch.equal(b[key][n], d[key][sl]), (key, n)
        assert decode(b["coords"][n, 0, 0, 0, 0] - (n // 5) * 1e9) == (x, y, z)
        c = b["crop_centers"][n]
        assert torch.equal(c - torch.tensor([4, 5, 6]), b["crop_starts"][n])  # centre = start + size // 2


def test_call_returns_num_samples_dicts_like_monai():
    d = item()
    d["label_fg_indices"], d["label_bg_indices"] = fg_bg_indices(d["label"])
    crop = RandCropByPosNegLabeld(
        ["image", "label"],
        "label",
        16,
        num_samples=3,
        fg_indices_key="label_fg_indices",
        bg_indices_key="label_bg_indices",
    )
    out = crop.set_random_state(1)(d)
    assert len(out) == 3
    for o in out:
        assert set(o) == {
            "image",
            "label",
            "coords",
            "name",
        }  # index keys read are dropped, as MONAI pops them
        assert o["image"].shape == (1, 16, 16, 16) and torch.equal(o["coords"], d["coords"])
    assert out[0]["coords"] is out[1]["coords"] is not d["coords"]  # one copy, shared by the item's crops
    out = RandCropByPosNegLabeld(["image", "label"], "label", 16, num_samples=3)(
        d
    )  # keys not given: not read
    assert all("label_fg_indices" in o and "label_bg_indices" in o for o in out)  # MONAI leaves them too


def test_uses_precomputed_indices_when_present():
    d = item()
    only = 10 * SHAPE[1] * SHAPE[2] + 15 * SHAPE[2] + 17  # voxel (10, 15, 17)
    d["label_fg_indices"] = torch.tensor([only])
    d["label_bg_indices"] = torch.tensor([only], dtype=torch.int32)  # any integer dtype works
    b = (
        RandCropByPosNegLabeld(
            "image",
            "label",
            8,
            num_samples=20,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        )
        .set_random_state(0)
        .batch_call([d])
    )
    assert (b["crop_centers"] == torch.tensor([10, 15, 17])).all()
    # keys not given, or given but not both in the item: computed from the label, as MONAI does
    b = RandCropByPosNegLabeld("image", "label", 8, num_samples=20).set_random_state(0).batch_call([d])
    assert not (b["crop_centers"] == torch.tensor([10, 15, 17])).all(1).all()
    d2 = {k: v for k, v in item().items()}
    d2["fg"] = torch.tensor([only])
    crop = RandCropByPosNegLabeld(
        "image", "label", 8, num_samples=20, fg_indices_key="fg", bg_indices_key="bg"
    )
    b = crop.set_random_state(0).batch_call([d2])
    assert not (b["crop_centers"] == torch.tensor([10, 15, 17])).all(1).all()


def test_coordinate_indices_from_monai_output_shape_are_refused_not_read_as_flat():
    """MONAI's FgBgToIndicesd(output_shape=...) writes (N, 3) voxel coordinates; the crop flattened them
    into 3N "flat indices" and centred crops on voxels that are not foreground (MONAI's crop raises)."""
    from monai.transforms import FgBgToIndicesd as MonaiIndices

    d = MonaiIndices("label", output_shape=SHAPE)(item())
    assert d["label_fg_indices"].ndim == 2
    crop = RandCropByPosNegLabeld(
        "image", "label", 8, neg=0, fg_indices_key="label_fg_indices", bg_indices_key="label_bg_indices"
    )
    with pytest.raises(
        ValueError, match=r"'label_fg_indices' of .* must be a 1-D list of flat voxel indices"
    ):
        crop.batch_call([d])


@pytest.mark.parametrize("given", [{"fg_indices_key": "fg"}, {"bg_indices_key": "bg"}])
def test_an_index_key_given_alone_is_dropped_like_monai(given):
    # MONAI pops each given index key, even when the other is missing (the indices are then computed
    # from the label); fastpipe dropped them only when both keys were given, so a lone one stayed in
    # every crop
    d = {**item(), "fg": torch.tensor([0, 1]), "bg": torch.tensor([2])}
    ours = RandCropByPosNegLabeld(["image", "label"], "label", 8, num_samples=2, **given)
    theirs = MonaiCrop(["image", "label"], "label", 8, num_samples=2, **given)
    expected = sorted(map(str, theirs(dict(d))[0]))
    assert sorted(map(str, ours(dict(d))[0])) == expected
    assert sorted(k for k in ours.batch_call([d]) if k not in ("crop_centers", "crop_starts")) == expected


def test_numpy_volumes_are_cropped_like_tensors():
    # MONAI takes numpy arrays; fastpipe failed with "'str' object has no attribute 'type'" (numpy's
    # array.device is the string "cpu")
    d = item()
    arrays = {**d, "image": d["image"].numpy(), "label": d["label"].numpy(), "coords": d["coords"].numpy()}
    make = lambda: RandCropByPosNegLabeld(["image", "label"], "label", 8, num_samples=3).set_random_state(2)  # noqa: E731
    ours, ref = make()(arrays), make()(d)
    for a, b in zip(ours, ref, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("image", "label"))
    assert isinstance(arrays["image"], np.ndarray)  # the item is left as it was


def test_fg_fraction_through_the_transform():
    d = item()
    t = RandCropByPosNegLabeld(
        "label", "label", (1, 1, 1), pos=1, neg=3, num_samples=10_000
    ).set_random_state(4)
    frac = t.batch_call([d])["label"].double().mean().item()
    assert abs(frac - 0.25) <= 3 * (0.25 * 0.75 / 10_000) ** 0.5


def test_boundary_clamping_and_small_volume():
    d = item((20, 20, 20))
    d["label"].zero_()
    d["label"][0, 0, 0, 0] = d["label"][0, 19, 19, 19] = 1  # foreground only in two corners
    t = RandCropByPosNegLabeld(
        ["label", "coords"], "label", (6, 7, 8), pos=1, neg=0, num_samples=50
    ).set_random_state(0)
    b = t.batch_call([d])
    starts = {tuple(s) for s in b["crop_starts"].tolist()}
    assert starts == {(0, 0, 0), (14, 13, 12)}  # shifted inward so the patch fits, never outside
    small = item((5, 30, 30))
    small["label"][0, 2, 3, 4] = 1
    with pytest.raises(ValueError, match=r"larger than the volume \(5, 30, 30\) of case"):
        RandCropByPosNegLabeld(["image", "label"], "label", 8).batch_call([small])
    ours = RandCropByPosNegLabeld(["image", "label"], "label", 8, allow_smaller=True, num_samples=2)(small)
    theirs = MonaiCrop(["image", "label"], "label", 8, allow_smaller=True, num_samples=2)(
        {"image": small["image"], "label": small["label"].float()}
    )
    assert [o["image"].shape for o in ours] == [tuple(m["image"].shape) for m in theirs] == [(1, 5, 8, 8)] * 2


def test_empty_label_warns_and_no_location_raises():
    d = item()
    d["label"].zero_()
    with pytest.warns(UserWarning, match="0 foreground"):
        b = RandCropByPosNegLabeld("label", "label", 8, num_samples=4).batch_call([d])
    assert b["label"].sum() == 0
    d["label_fg_indices"] = d["label_bg_indices"] = torch.empty(0, dtype=torch.int64)
    with pytest.raises(ValueError, match="case has no foreground and no background"):
        RandCropByPosNegLabeld(
            "label", "label", 8, fg_indices_key="label_fg_indices", bg_indices_key="label_bg_indices"
        ).batch_call([d])


def fused_crop(size=8, num_samples=4, keys=("image", "label")):
    """The crop with the tutorial-like suffix fused in, as Compose/CacheDataset build it."""
    keys = list(keys)
    chain = [RandCropByPosNegLabeld(keys, "label", size, num_samples=num_samples), RandFlipd(keys, 0.3, 0),
             RandRotate90d(keys, 0.5), RandScaleIntensityd(keys[0], 0.2, 0.5), RandShiftIntensityd(keys[0], 0.1, prob=0.5)]  # fmt: skip
    (crop,) = fuse_random(chain)
    return crop


def test_matches_monai_shapes_and_monai_crops_are_valid_slices():
    d = item()
    keys = ["image", "label", "coords"]
    monai_in = {k: d[k] for k in keys} | {"label": d["label"].float()}
    theirs = MonaiCrop(keys, "label", (12, 9, 16), num_samples=6)(monai_in)
    ours = RandCropByPosNegLabeld(keys, "label", (12, 9, 16), num_samples=6)(d)
    assert [tuple(o["image"].shape) for o in ours] == [tuple(m["image"].shape) for m in theirs]
    for m in theirs:
        x, y, z = decode(m["coords"][0, 0, 0, 0])
        assert torch.equal(torch.as_tensor(m["coords"]), d["coords"][:, x : x + 12, y : y + 9, z : z + 16])


def test_seeding_is_reproducible_and_compose_seeds_it():
    d = item()
    t = fused_crop()
    a = t.set_random_state(5).batch_call([d])
    b = t.set_random_state(5).batch_call([d])
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["crop_centers"], b["crop_centers"])
    c1 = Compose([t]).set_random_state(11)
    first = c1(d)[0]["image"]
    assert torch.equal(Compose([t]).set_random_state(11)(d)[0]["image"], first)


def test_copies_draw_the_same_stream_independently():
    t = RandCropByPosNegLabeld("image", "label", 8, num_samples=2).set_random_state(3)
    clone = copy.deepcopy(t)  # CacheDataset gives each loader thread its own copy of the suffix
    again = pickle.loads(pickle.dumps(t))
    d = item()
    a = t.batch_call([d])["crop_centers"]
    assert torch.equal(clone.batch_call([d])["crop_centers"], a)
    assert torch.equal(again.batch_call([d])["crop_centers"], a)
    assert not torch.equal(t.batch_call([d])["crop_centers"], a)  # the original advanced on its own


def test_bad_input_names_expected_and_actual():
    with pytest.raises(
        ValueError,
        match=r"3 ints \(X, Y, Z\) or, for 2-D images, 2 ints \(X, Y\); got \(96, 96, 96, 96\) \(4 values\)",
    ):
        RandCropByPosNegLabeld("image", "label", (96, 96, 96, 96))
    with pytest.raises(
        ValueError,
        match=r"spatial_size \(96, 96\) does not match the rank of the label 'label' \(1, 40, 32, 36\)",
    ):
        RandCropByPosNegLabeld("image", "label", (96, 96)).batch_call([item()])  # a 2-D size, a 3-D label
    with pytest.raises(ValueError, match="not both 0, got pos=0 neg=0"):
        RandCropByPosNegLabeld("image", "label", 8, pos=0, neg=0)
    for pos in (float("inf"), float("nan")):  # pos / (pos + neg) is NaN: every centre would be background
        with pytest.raises(ValueError, match=f"must be finite numbers, got pos={pos} neg=1.0"):
            RandCropByPosNegLabeld("image", "label", 8, pos=pos, neg=1.0)
    d = item()
    d["label_fg_indices"], d["label_bg_indices"] = torch.tensor([1.0]), torch.tensor([2.0])
    with pytest.raises(
        TypeError, match="'label_fg_indices' of case must hold integer flat indices.*got torch.float32"
    ):
        RandCropByPosNegLabeld(
            "image", "label", 8, fg_indices_key="label_fg_indices", bg_indices_key="label_bg_indices"
        ).batch_call([d])
    d = item()
    d["image"] = d["image"][:, :-1]
    with pytest.raises(
        ValueError, match=r"'image' of case has shape \(1, 39, 32, 36\), expected \(C, \*\(40, 32, 36\)\)"
    ):
        RandCropByPosNegLabeld(["image", "label"], "label", 8).batch_call([d])
    # a float64 key under the fused intensity: MONAI's values per crop (test_fuse_random), no refusal
    assert fused_crop(keys=["coords"]).batch_call([item()])["coords"].dtype == torch.float64
    with pytest.raises(KeyError, match=r"key 'mask' missing from \['case'\]"):
        RandCropByPosNegLabeld(["image", "mask"], "label", 8).batch_call([item()])
    out = RandCropByPosNegLabeld(["image", "mask"], "label", 8, allow_missing_keys=True).batch_call([item()])
    assert "mask" not in out and out["image"].shape == (1, 1, 8, 8, 8)


def test_metatensor_volumes_keep_their_metadata_with_each_crops_affine():
    """MONAI's LoadImaged gives MetaTensors; the crop returned plain tensors with no metadata at all (the
    affine silently gone). They now come out in fastpipe's form, with the affine MONAI's crop gives."""
    from monai.data import MetaTensor

    affine = torch.tensor(
        [[2.0, 0.3, 0, 10], [0, 3, 0, 20], [0.1, 0, 4, 30], [0, 0, 0, 1]], dtype=torch.float64
    )
    d = item()
    label = torch.zeros_like(d["label"])
    label[0, 30, 3, 20] = 1  # one foreground voxel near a border: every crop is the same, clamped one
    mt = {k: MetaTensor(v, affine=affine.clone(), meta={"filename_or_obj": f"{k}.nii"})
          for k, v in (("image", d["image"]), ("label", label))}  # fmt: skip
    ours = RandCropByPosNegLabeld(["image", "label"], "label", 8, neg=0, num_samples=2)(dict(mt))
    theirs = MonaiCrop(["image", "label"], "label", 8, neg=0, num_samples=2)(dict(mt))
    for o, t in zip(ours, theirs, strict=True):
        for key in ("image", "label"):
            assert torch.equal(torch.as_tensor(o[key]), t[key].as_tensor())
            meta = o[f"{key}_meta_dict"]
            np.testing.assert_allclose(np.asarray(meta["affine"]), t[key].affine.numpy(), atol=1e-12)
            assert meta["filename_or_obj"] == f"{key}.nii"
    assert torch.equal(mt["image"].affine, affine)  # the item is left as it was


@pytest.mark.parametrize("size", [4, (4, 3), (4, -1)])
def test_2d_images_are_cropped_as_monai_crops_them(size):
    """MONAI crops 2-D images (C, X, Y) (an int or 2 sizes); fastpipe refused them ("3 ints", "(C, X, Y, Z)"),
    and a MONAI 2-D chain handed to a dataset as a list was translated into that crop and failed."""
    g = torch.Generator().manual_seed(0)
    lab = (torch.rand(1, 12, 10, generator=g) > 0.8).to(torch.uint8)
    d = {"image": torch.rand(2, 12, 10, generator=g), "label": lab}
    ours = RandCropByPosNegLabeld(["image", "label"], "label", size, num_samples=3).set_random_state(0)
    theirs = MonaiCrop(["image", "label"], "label", size, num_samples=3)(dict(d))
    assert [tuple(o["image"].shape) for o in ours(dict(d))] == [tuple(t["image"].shape) for t in theirs]
    b = ours.batch_call([d, d])
    assert b["crop_starts"].shape == (6, 2)
    for n, (x, y) in enumerate(b["crop_starts"].tolist()):
        ex, ey = b["image"].shape[2:]
        assert torch.equal(b["image"][n], d["image"][:, x : x + ex, y : y + ey])
        assert torch.equal(b["label"][n], lab[:, x : x + ex, y : y + ey])


def test_monai_2d_chain_given_as_a_list_runs_as_monai():
    """A list of MONAI transforms is translated: a 2-D MONAI crop with an int size became fastpipe's
    3-D-only crop, which failed at the first batch where MONAI's ran."""
    from monai.transforms import RandFlipd as MonaiFlip

    from fastpipe.cache.cache_dataset import CacheDataset

    lab = torch.zeros(1, 12, 10)
    lab[0, 3:6, 2:5] = 1
    items = [{"image": torch.rand(1, 12, 10), "label": lab}] * 2
    chain = [MonaiCrop(["image", "label"], "label", 4, num_samples=2), MonaiFlip(["image", "label"], 0.5, 0)]
    ds = CacheDataset(items, chain, progress=False)
    assert ds.__getitems__([0, 1]).collated["image"].shape == (4, 1, 4, 4)


def test_2d_crops_get_the_fused_suffix_and_affine_as_monai():
    from monai.data import MetaTensor
    from monai.transforms import Compose as MonaiCompose
    from monai.transforms import RandFlipd as MonaiFlip
    from monai.transforms import RandRotate90d as MonaiRot

    keys = ["image", "label"]
    affine = torch.tensor(
        [[2.0, 0.3, 0, 10], [0, 3, 0, 20], [0.1, 0, 4, 30], [0, 0, 0, 1]], dtype=torch.float64
    )
    lab = torch.zeros(1, 12, 10)
    lab[0, 9, 2] = 1  # one foreground voxel near a border: every crop is the same, clamped one

    def mk():
        return {
            k: MetaTensor(v.clone(), affine=affine.clone())
            for k, v in (("image", torch.rand(1, 12, 10)), ("label", lab))
        }

    d = mk()
    ours = Compose([RandCropByPosNegLabeld(keys, "label", 4, neg=0, num_samples=2), RandFlipd(keys, 1.0, -1),
                    RandRotate90d(keys, 1.0, max_k=1)])(dict(d))  # fmt: skip
    assert (
        len(
            fuse_random(
                Compose([RandCropByPosNegLabeld(keys, "label", 4), RandFlipd(keys, 1.0, -1)]).transforms
            )
        )
        == 1
    )
    theirs = MonaiCompose([MonaiCrop(keys, "label", 4, neg=0, num_samples=2), MonaiFlip(keys, 1.0, -1),
                           MonaiRot(keys, 1.0, max_k=1)])(dict(d))  # fmt: skip
    for o, t in zip(ours, theirs, strict=True):
        for key in keys:
            assert torch.equal(o[key], t[key].as_tensor())
            np.testing.assert_allclose(
                np.asarray(o[f"{key}_meta_dict"]["affine"]), t[key].affine.numpy(), atol=1e-12
            )


def test_label_without_channel_axis_is_named_not_the_image():
    """A (X, Y, Z) label is the label's fault: the error names it, not the (C, X, Y, Z) image against it."""
    d = item()
    d["label"] = d["label"][0]
    with pytest.raises(ValueError, match=r"label 'label' of case must be \(C, X, Y, Z\), got \(40, 32, 36\)"):
        RandCropByPosNegLabeld(["image", "label"], "label", 8).batch_call([d])


def test_items_of_different_dtypes_batch_as_monai_crops_collate():
    """Label files of different dtypes (uint8 and int16; LoadImaged keeps the file's) made the batched
    gather raise ValueError for the batch; MONAI crops each item in its dtype and collating promotes."""
    a, b = item(seed=1, name="a"), item(seed=2, name="b")
    b["label"] = b["label"].to(torch.int16)
    b["image"] = (b["image"] * 100).to(torch.int16)
    a["only_a"] = 1  # a key one item lacks: None for its crops, as one batched gather gives
    (crop,) = fuse_random([RandCropByPosNegLabeld(["image", "label", "coords"], "label", 8, num_samples=3),
                           RandFlipd(["image", "label", "coords"], 1.0, None),
                           RandShiftIntensityd("image", (2.5, 2.5), prob=1.0)])  # fmt: skip
    out = crop.set_random_state(0).batch_call([a, b])
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.int16
    assert out["image"].shape == (6, 1, 8, 8, 8) and out["name"] == ["a"] * 3 + ["b"] * 3
    assert out["only_a"] == [1] * 3 + [None] * 3
    for n in range(6):
        src = (a, b)[n // 3]
        x, y, z = out["crop_starts"][n].tolist()
        win = {
            k: src[k][:, x : x + 8, y : y + 8, z : z + 8].flip([1, 2, 3])
            for k in ("image", "label", "coords")
        }
        assert torch.equal(out["coords"][n], win["coords"])
        assert torch.equal(out["label"][n], win["label"].to(torch.int16))
        # the int16 image is shifted in its own dtype (2.5 truncated away), as MONAI shifts its crop
        assert torch.equal(out["image"][n], (win["image"] + 2.5).to(src["image"].dtype).to(torch.float32))


@pytest.mark.gpu
def test_gpu_batch_equals_cpu_batch(cuda_device):
    items = [item(seed=s, name=f"c{s}") for s in range(3)]
    gpu_items = [{k: (v.to(cuda_device) if torch.is_tensor(v) else v) for k, v in d.items()} for d in items]
    cpu = fused_crop(16).set_random_state(8).batch_call(items)
    gpu = fused_crop(16).set_random_state(8).batch_call(gpu_items)
    assert gpu["image"].is_cuda
    for key in ("image", "label", "crop_centers", "crop_starts"):
        assert torch.equal(cpu[key], gpu[key].cpu()), key


@pytest.mark.timeout(60)
def test_cache_dataset_and_thread_loader_get_one_batched_dict():
    from fastpipe.cache.cache_dataset import CacheDataset
    from fastpipe.loader.thread_loader import ThreadDataLoader

    crop = RandCropByPosNegLabeld(["image", "label"], "label", 16, num_samples=4)
    ds = CacheDataset([item((24, 26, 28), seed=i, name=f"c{i}") for i in range(5)], [crop], progress=False)
    assert ds.batched  # the suffix is this transform alone: __getitems__ calls batch_call once per batch
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=1)
    try:
        batches = list(loader)
    finally:
        loader.close()
    assert [b["image"].shape[0] for b in batches] == [8, 8, 4]
    for b in batches:
        for n in range(b["image"].shape[0]):
            x, y, z = b["crop_starts"][n].tolist()
            src = ds.cached_entry(int(b["name"][n][1:]))
            for key in ("image", "label"):
                assert torch.equal(b[key][n], src[key][:, x : x + 16, y : y + 16, z : z + 16])
