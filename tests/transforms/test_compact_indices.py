"""Compact crop indices: a fastpipe chain caches the foreground list and a background count, and the
crop draws background centres by rejection with the distribution of MONAI's lists."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

import fastpipe as fp
from fastpipe import transforms as T
from fastpipe.ops.indices import fg_bg_indices
from fastpipe.transforms._fuse_random import fuse_random

sys.path.insert(0, str(Path(__file__).parent))
from _coords import four_sigma  # noqa: E402

KEYS = ["image", "label"]


def blob_item(shape=(32, 28, 24), seed=0, name="case"):
    """float32 image, uint8 label with a foreground box and speckles: bins hold unequal background counts."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros((1, *shape), dtype=torch.uint8)
    label[0, 3:11, 4:12, 2:9] = 1
    label[0] |= (torch.rand(shape, generator=g) < 0.01).to(torch.uint8)
    image = torch.rand((1, *shape), generator=g)
    return {"image": image, "label": label, "name": name}


NAMED = {"fg_indices_key": "label_fg_indices", "bg_indices_key": "label_bg_indices"}


def chain_of(pos=1.0, neg=1.0, num_samples=4, size=(1, 1, 1), **crop_kw):
    """``FgBgToIndicesd`` (with the image rule given) and a crop reading its lists by name."""
    fg_kw = {k: crop_kw.pop(k) for k in ("image_key", "image_threshold") if k in crop_kw}
    return fuse_random([T.FgBgToIndicesd("label", **fg_kw),
                        T.RandCropByPosNegLabeld(KEYS, "label", size, pos=pos, neg=neg, num_samples=num_samples,
                                                 **NAMED, **crop_kw)])  # fmt: skip


def centres(chain, items, rounds=1, seed=0):
    entries = [chain[0](d) for d in items]
    crop = chain[1].set_random_state(seed)
    return torch.cat([crop.sample(entries)[0].centers for _ in range(rounds)])


def test_cached_entry_is_within_1_3x_the_image_bytes():
    """Fails on the list layout: the int64 background list alone is 2x a float32 image."""
    items = [blob_item(seed=s, name=f"c{s}") for s in range(2)]
    ds = fp.CacheDataset(items, list(chain_of(size=(8, 8, 8))), progress=False)
    entry = ds.cached_entry(0)
    image_bytes = entry["image"].numel() * 4
    tensors = sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, torch.Tensor))
    assert tensors <= 1.3 * image_bytes, {k: tuple(v.shape) for k, v in entry.items() if hasattr(v, "shape")}
    assert entry["label_fg_indices"].dtype == torch.int32 and entry["label_bg_indices"].ndim == 0
    eb = ds.stats()["entry_bytes"]
    assert eb["entries"] == 2 and eb["background"] == {"rejection": 2, "list": 0}
    assert eb["by_tensor"]["label_bg_indices"] == 8 and eb["by_tensor"]["image"] == image_bytes
    assert "label_fg_indices" in ds.describe() and "background count" in ds.describe()


def test_standalone_fgbg_writes_monai_lists():
    d = T.FgBgToIndicesd("label")(blob_item())
    fg, bg = fg_bg_indices(d["label"])
    assert d["label_bg_indices"].dtype == torch.int64 and torch.equal(d["label_bg_indices"], bg)
    assert torch.equal(d["label_fg_indices"], fg)


def test_foreground_fraction_over_2400_crops_is_pos_ratio():
    items = [blob_item(seed=s, name=f"c{s}") for s in range(4)]
    chain = chain_of(pos=1, neg=2, num_samples=100)
    c = centres(chain, items, rounds=6)
    vol = (torch.arange(c.shape[0]) // 100) % 4
    is_fg = torch.stack(
        [items[int(v)]["label"][0, x, y, z] for v, (x, y, z) in zip(vol, c.tolist(), strict=True)]
    ).bool()
    assert four_sigma(int(is_fg.sum()), c.shape[0], 1 / 3)


def _chi2_critical(df: int, z: float = 3.719) -> float:
    """Wilson-Hilferty: the chi-square quantile at normal quantile ``z`` (3.719: p = 1e-4)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi2_over_bins(c: torch.Tensor, support: torch.Tensor, bins=(4, 4, 4)):
    """Chi-square of the centres' counts over coarse bins against the support's voxel counts per bin."""
    shape = support.shape
    edges = [torch.arange(s) * b // s for s, b in zip(shape, bins, strict=True)]
    bin_of = (edges[0][:, None, None] * bins[1] + edges[1][None, :, None]) * bins[2] + edges[2][None, None, :]
    nbin = bins[0] * bins[1] * bins[2]
    expected = torch.bincount(bin_of[support].flatten(), minlength=nbin).double()
    assert bool(support[tuple(c.T)].all()), "a centre outside the background set"
    got = torch.bincount(bin_of[tuple(c.T)], minlength=nbin).double()
    expected = expected / expected.sum() * c.shape[0]
    keep = expected > 0
    return float(((got[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum()) - 1


def test_background_centres_uniform_over_the_background_set():
    d = blob_item()
    c = centres(chain_of(pos=0, neg=1, num_samples=4000), [d], rounds=2)
    stat, df = _chi2_over_bins(c, d["label"][0] == 0)
    assert stat < _chi2_critical(df), (stat, df)


def test_background_with_an_image_threshold_is_monai_set_and_uniform():
    d = blob_item()
    chain = chain_of(pos=0, neg=1, num_samples=4000, image_key="image", image_threshold=0.5)
    assert chain[1]._bg_rule == ("image", 0.5)
    c = centres(chain, [d], rounds=2)
    support = (d["label"][0] == 0) & (d["image"][0] > 0.5)
    stat, df = _chi2_over_bins(c, support)
    assert stat < _chi2_critical(df), (stat, df)


def test_multichannel_label_skips_channel_0():
    d = blob_item()
    onehot = torch.cat([1 - d["label"], d["label"]])  # channel 0 (background) is nonzero off the blob
    c = centres(chain_of(pos=0, neg=1, num_samples=2000), [{**d, "label": onehot}])
    assert bool((d["label"][0][tuple(c.T)] == 0).all())


@pytest.mark.parametrize("empty", ["foreground", "background"])
def test_empty_sets_warn_and_draw_from_the_other(empty):
    d = blob_item()
    d["label"][:] = 0 if empty == "foreground" else 1
    with pytest.warns(UserWarning, match="instead of pos ratio"):
        c = centres(chain_of(num_samples=200), [d])
    labels = d["label"][0][tuple(c.T)]
    assert bool((labels == (0 if empty == "foreground" else 1)).all())


def test_little_background_keeps_a_list_and_stats_say_so():
    d = blob_item()
    d["label"][:] = 1
    d["label"][0, 0, 0, :5] = 0  # 5 background voxels: under 1/16 of the volume
    ds = fp.CacheDataset([d], list(chain_of(pos=0, neg=1, num_samples=50)), progress=False)
    bg = ds.cached_entry(0)["label_bg_indices"]
    assert bg.ndim == 1 and bg.dtype == torch.int32 and bg.tolist() == [0, 1, 2, 3, 4]
    assert ds.stats()["entry_bytes"]["background"] == {"rejection": 0, "list": 1}
    assert "0 entries hold a count" in ds.describe()
    c = ds._thread_suffix()[0].sample([ds.cached_entry(0)])[0].centers
    assert set(map(tuple, c.tolist())) <= {(0, 0, z) for z in range(5)}


def test_lists_written_outside_the_chain_are_used_as_they_are():
    d = blob_item()
    fg, bg = fg_bg_indices(d["label"])
    d.update(label_fg_indices=fg, label_bg_indices=bg[:3])  # a user's own (odd) lists
    crop = fuse_random(
        [T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=0, neg=1, num_samples=300, **NAMED)]
    )[0]
    c = crop.set_random_state(0).sample([d])[0].centers
    _, sx, sy, sz = d["label"].shape
    flat = (c[:, 0] * sy + c[:, 1]) * sz + c[:, 2]
    assert set(flat.tolist()) == set(bg[:3].tolist())


def test_a_count_without_the_planned_crop_is_a_clear_error():
    entry = chain_of()[0](blob_item(name="case7"))
    crop = T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), **NAMED)
    with pytest.raises(ValueError, match="case7.*background count"):
        crop.sample([entry])


def test_fgbg_before_a_pad_keeps_monai_lists():
    """``FgBgToIndicesd`` then ``SpatialPadd``: MONAI reads unpadded lists against the padded shape; kept."""
    chain = fuse_random([T.FgBgToIndicesd("label"), T.SpatialPadd(KEYS, (30, 30, 30)),
                         T.RandCropByPosNegLabeld(KEYS, "label", (4, 4, 4), **NAMED)])  # fmt: skip
    assert chain[0].compact_keys == () and chain[-1]._bg_rule is None


def test_pad_then_compact_indices_draws_pad_voxels_in_proportion():
    d = blob_item(shape=(6, 6, 6))
    chain = fuse_random([T.SpatialPadd(KEYS, (10, 8, 6)), T.FgBgToIndicesd("label"),
                         T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=0, neg=1, num_samples=4000)])  # fmt: skip
    assert chain[0].compact_keys == ("label",)
    entry = chain[0](d)
    c = chain[1].set_random_state(1).sample([entry])[0].centers
    inside = ((c >= 0) & (c < 6)).all(1)
    n_inner = int((d["label"][0] == 0).sum())
    n_pad = 10 * 8 * 6 - 6**3
    assert four_sigma(int((~inside).sum()), 4000, n_pad / (n_pad + n_inner))
    assert bool((d["label"][0][tuple(c[inside].T)] == 0).all())


def test_same_seed_same_crops_whatever_the_label_layout():
    d = blob_item()
    chain = chain_of(num_samples=64)
    a = centres(chain, [d], seed=3)
    d2 = {**d, "label": d["label"].permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)}
    assert not d2["label"].is_contiguous()
    b = centres(chain, [d2], seed=3)
    assert torch.equal(a, b)


def test_same_seed_same_crops_on_cpu_and_gpu(cuda_device):
    d = blob_item()
    chain = chain_of(num_samples=64, size=(4, 4, 4), pos=1, neg=3)
    entry = chain[0](d)
    gpu = {k: v.to(cuda_device) if isinstance(v, torch.Tensor) and v.ndim else v for k, v in entry.items()}
    a = chain[1].set_random_state(5).batch_call([entry, entry])
    b = chain[1].set_random_state(5).batch_call([gpu, gpu])
    assert b["image"].is_cuda
    for key in ("image", "label", "crop_centers", "crop_starts"):
        assert torch.equal(a[key], b[key].cpu()), key


def test_no_warning_on_a_normal_volume():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        centres(chain_of(num_samples=100), [blob_item()])


def test_compact_entries_survive_the_persistent_cache(tmp_path):
    items = [blob_item(name="p0")]
    chain = [T.FgBgToIndicesd("label"), T.RandCropByPosNegLabeld(KEYS, "label", (4, 4, 4), num_samples=8)]
    first = fp.CacheDataset(items, chain, persist_dir=tmp_path, progress=False)
    again = fp.CacheDataset(items, chain, persist_dir=tmp_path, progress=False)
    assert again.stats()["computed"] == 0  # loaded from disk
    entry = again.cached_entry(0)
    assert entry["label_bg_indices"].ndim == 0 and int(entry["label_bg_indices"]) == int(
        first.cached_entry(0)["label_bg_indices"]
    )
    a, b = first.fetch_seeded([0], 7), again.fetch_seeded([0], 7)
    assert torch.equal(a["crop_centers"], b["crop_centers"])


@pytest.mark.parametrize(
    ("between", "fg_kw", "compact"),
    [
        ([], {}, True),
        ([T.ToDeviced(KEYS, "cpu")], {"image_key": "image"}, True),
        ([T.EnsureTyped([*KEYS, "label_fg_indices", "label_bg_indices"])], {}, True),  # MONAI tutorial's
        ([T.EnsureTyped(KEYS, dtype=torch.float16)], {}, False),  # a label cast may zero a voxel
        (
            [T.EnsureTyped(KEYS, dtype=torch.float16)],
            {"image_key": "image"},
            False,
        ),  # could cross the threshold
        ([T.EnsureTyped(["label_fg_indices"], dtype=torch.float32)], {}, False),
        ([T.EnsureTyped(KEYS, data_type="numpy")], {}, False),
        ([lambda d: d], {}, False),  # anything else may read the lists
    ],
)
def test_what_may_sit_between_the_indices_and_the_crop(between, fg_kw, compact):
    chain = fuse_random(
        [T.FgBgToIndicesd("label", **fg_kw), *between, T.RandCropByPosNegLabeld(KEYS, "label", 4, **NAMED)]
    )
    assert (chain[0].compact_keys == ("label",)) is compact
    assert (chain[-1]._bg_rule is not None) is compact


# --- a crop given no index keys computes its own lists, as MONAI's; the plan reads equal ones ---------


def _small_item():
    g = torch.Generator().manual_seed(0)
    label = torch.zeros((1, 6, 7, 5))
    label[0, 1:3, 2:4, 1:3] = 1
    image = torch.zeros((1, 6, 7, 5))
    image[0, :3] = torch.rand((3, 7, 5), generator=g) + 1  # above 0.5 on x < 3 only
    return {"image": image, "label": label, "name": "small"}


def _fg_fraction(crops):
    return sum(float(c["label"].sum()) for c in crops) / len(crops)


def test_without_keys_lists_from_before_a_pad_are_not_read():
    from monai import transforms as M

    def chain(L):
        return [L.FgBgToIndicesd("label"), L.SpatialPadd(KEYS, (10, 10, 10)),
                L.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=1, neg=0, num_samples=200)]  # fmt: skip

    assert _fg_fraction(M.Compose(chain(M)).set_random_state(0)(_small_item())) == 1.0  # MONAI's padded label
    assert _fg_fraction(T.Compose(chain(T)).set_random_state(0)(_small_item())) == 1.0
    ds = fp.CacheDataset([_small_item()], M.Compose(chain(M)), progress=False)
    assert float(ds.fetch_seeded([0], seed=0)["label"].float().mean()) == 1.0


def test_without_keys_the_crop_uses_its_own_image_rule_like_monai():
    from monai import transforms as M

    def chain(L, **crop_rule):
        return [L.FgBgToIndicesd("label", image_key="image", image_threshold=0.5),
                L.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=0, neg=1, num_samples=3000, **crop_rule)]  # fmt: skip

    def dark(crops):  # background centres where the image is 0: the crop's rule has no image
        return sum(float(c["image"].sum() == 0) for c in crops)

    theirs = dark(M.Compose(chain(M)).set_random_state(0)(_small_item()))
    ours = dark(T.Compose(chain(T)).set_random_state(0)(_small_item()))
    label = _small_item()["label"][0]
    p = float(((label == 0) & (_small_item()["image"][0] == 0)).sum() / (label == 0).sum())
    assert four_sigma(int(theirs), 3000, p) and four_sigma(int(ours), 3000, p), (theirs, ours, p)
    assert not fuse_random(chain(T))[-1].index_keys  # different rules: the lists are not read
    wired = fuse_random(chain(T, image_key="image", image_threshold=0.5))
    assert wired[-1].index_keys == ("label_fg_indices", "label_bg_indices") and wired[-1]._bg_rule == (
        "image",
        0.5,
    )
    assert dark(T.Compose(chain(T, image_key="image", image_threshold=0.5))(_small_item())) == 0


def test_a_fgbgtoindicesd_right_before_an_unnamed_crop_feeds_it_compactly():
    chain = fuse_random(
        [T.FgBgToIndicesd("label"), T.ToDeviced(KEYS, "cpu"), T.RandCropByPosNegLabeld(KEYS, "label", 4)]
    )
    assert chain[0].compact_keys == ("label",) and chain[-1].index_keys == (
        "label_fg_indices",
        "label_bg_indices",
    )
    ds = fp.CacheDataset([blob_item()], [T.FgBgToIndicesd("label"), T.RandCropByPosNegLabeld(KEYS, "label", 4)],
                         progress=False)  # fmt: skip
    assert ds.cached_entry(0)["label_bg_indices"].ndim == 0  # a count: computed once, in the cache


def test_a_label_cast_between_the_indices_and_the_crop_keeps_monais_lists():
    """A soft label (0.4) cast to uint8 turns foreground into 0: the lists of FgBgToIndicesd (computed
    before the cast) are what MONAI reads, so rejection on the cast label must not replace them."""
    d = blob_item()
    d["label"] = d["label"].float() * 0.4
    chain = fuse_random([T.FgBgToIndicesd("label"), T.EnsureTyped(["label"], dtype=torch.uint8),
                         T.RandCropByPosNegLabeld(KEYS, "label", (1, 1, 1), pos=0, neg=1, num_samples=2000, **NAMED)])  # fmt: skip
    assert chain[0].compact_keys == () and chain[-1]._bg_rule is None
    entry = chain[1](chain[0](d))
    c = chain[-1].set_random_state(0).sample([entry])[0].centers
    assert bool((d["label"][0][tuple(c.T)] == 0).all())  # background centres only where the label is 0
