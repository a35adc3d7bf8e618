"""The fused random suffix has MONAI's semantics: windows, orientations, intensity terms, frequencies, seeds.

Volumes are coordinate-encoded (one channel per source axis holds that axis's coordinate), so every
output crop tells where it came from and how it was flipped and turned. Expected frequencies are
computed from MONAI's own array transforms (``Flip``, ``Rotate90``) and its probabilities.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from monai.data import set_track_meta
from monai.transforms import Compose as MonaiCompose
from monai.transforms import Flip, Rotate90
from monai.transforms import RandFlipd as MonaiRandFlipd
from monai.transforms import RandRotate90d as MonaiRandRotate90d

import fastpipe as fp
from fastpipe import transforms as T

sys.path.insert(0, str(Path(__file__).parent))
from _coords import coord_item, decode, four_sigma, pattern  # noqa: E402

KEYS = ["image", "label"]
P_FLIP = (0.1, 0.25, 0.4)  # per axis, unequal: a flip on the wrong axis shows in the frequencies
P_ROT, MAX_K, P_SCALE, F_SCALE, P_SHIFT, OFFSET = 0.1, 3, 0.3, 0.2, 0.5, 0.1
N_ITEMS, PER_ITEM = 4, 500  # 2000 crops of 8^3


def suffix():
    return [T.RandFlipd(KEYS, prob=P_FLIP[0], spatial_axis=[0]), T.RandFlipd(KEYS, prob=P_FLIP[1], spatial_axis=[1]),
            T.RandFlipd(KEYS, prob=P_FLIP[2], spatial_axis=[2]), T.RandRotate90d(KEYS, prob=P_ROT, max_k=MAX_K),
            T.RandScaleIntensityd("image", factors=F_SCALE, prob=P_SCALE),
            T.RandShiftIntensityd("image", offsets=OFFSET, prob=P_SHIFT)]  # fmt: skip


def crop():
    return T.RandCropByPosNegLabeld(KEYS, "label", (8, 8, 8), num_samples=PER_ITEM)


def items():
    return [coord_item((20 + i, 18, 16 + 2 * i), name=f"c{i}") for i in range(N_ITEMS)]


def monai_expected():
    """P(in-plane pattern) and P(z flip) from MONAI's Flip/Rotate90 applied with the chain's probabilities."""
    cube = coord_item((3, 3, 3))["image"]
    probs: Counter = Counter()
    for fx, fy, fz, k in itertools.product((0, 1), (0, 1), (0, 1), range(MAX_K + 1)):
        p = 1.0
        for f, pf in zip((fx, fy, fz), P_FLIP, strict=True):
            p *= pf if f else 1 - pf
        p *= P_ROT / MAX_K if k else 1 - P_ROT
        x = cube
        for axis, f in enumerate((fx, fy, fz)):
            x = Flip(spatial_axis=[axis])(x) if f else x
        x = Rotate90(k, (0, 1))(x) if k else x
        axes, flips, *_ = decode(torch.as_tensor(x))
        probs[pattern(axes, flips)] += p
    in_plane, z = Counter(), Counter()
    for (ip, fz), p in probs.items():
        in_plane[ip] += p
        z[fz] += p
    return in_plane, z


def check_frequencies(decoded):
    n = len(decoded)
    in_plane, z = monai_expected()
    seen_ip = Counter(pattern(a, f)[0] for a, f, *_ in decoded)
    seen_z = Counter(pattern(a, f)[1] for a, f, *_ in decoded)
    assert set(seen_ip) <= set(in_plane), f"patterns MONAI never makes: {set(seen_ip) - set(in_plane)}"
    for pat, p in in_plane.items():
        assert four_sigma(seen_ip[pat], n, p), (pat, seen_ip[pat], n * p)
    assert four_sigma(seen_z[True], n, z[True]), (seen_z[True], n * z[True])
    scaled = sum(abs(s - 1.0) > 1e-5 for *_, s, _ in decoded)  # s is decoded as (s + o) - o
    shifted = sum(o != 0.0 for *_, o in decoded)
    assert four_sigma(scaled, n, P_SCALE) and four_sigma(shifted, n, P_SHIFT), (scaled, shifted)
    for *_, s, o in decoded:
        assert abs(s - 1) <= F_SCALE * (1 + 1e-6) and abs(o) <= OFFSET * (1 + 1e-6)


def test_monai_itself_matches_the_analytic_frequencies():
    """The test's model of MONAI, checked against a MONAI run of the same spatial chain."""
    chain = MonaiCompose([MonaiRandFlipd("image", P_FLIP[0], [0]), MonaiRandFlipd("image", P_FLIP[1], [1]),
                          MonaiRandFlipd("image", P_FLIP[2], [2]), MonaiRandRotate90d("image", P_ROT, MAX_K)])  # fmt: skip
    chain.set_random_state(1)
    cube = {"image": coord_item((3, 3, 3))["image"]}
    set_track_meta(False)  # plain tensors: MONAI's per-call overhead is then small
    try:
        decoded = [decode(torch.as_tensor(chain(dict(cube))["image"]))[:2] for _ in range(2000)]
    finally:
        set_track_meta(True)
    in_plane, z = monai_expected()
    seen = Counter(pattern(a, f)[0] for a, f in decoded)
    for pat, p in in_plane.items():
        assert four_sigma(seen[pat], 2000, p), (pat, seen[pat], 2000 * p)
    assert four_sigma(sum(pattern(a, f)[1] for a, f in decoded), 2000, z[True])


@pytest.mark.timeout(120)
def test_fused_crops_are_windows_with_monai_frequencies():
    ds = fp.CacheDataset(items(), [T.FgBgToIndicesd("label"), crop(), *suffix()], progress=False, seed=3)
    assert ds.batched and len(ds.suffix) == 1  # the whole suffix went into the crop
    src = items()
    batch = ds.__getitems__(list(range(N_ITEMS))).collated
    decoded = []
    for n in range(N_ITEMS * PER_ITEM):
        axes, flips, corner, s, o = decode(batch["image"][n])
        decoded.append((axes, flips, s, o))
        # the label went through the same window and orientation (nearest voxel of the same source)
        c = batch["image"][n, :3].sub(o).div(s).round().long()
        lab = src[n // PER_ITEM]["label"][0]
        assert torch.equal(batch["label"][n, 0], lab[c[0], c[1], c[2]]), n
    check_frequencies(decoded)


def test_standalone_per_item_has_the_same_distribution():
    cut = crop().set_random_state(4)
    steps = [t.set_random_state(10 + i) for i, t in enumerate(suffix())]
    decoded = []
    for d in items():
        for patch in cut(d):  # MONAI's way: the suffix maps over the crop list, one call per crop
            for t in steps:
                patch = t(patch)
            axes, flips, _, s, o = decode(patch["image"])
            decoded.append((axes, flips, s, o))
    check_frequencies(decoded)


def test_same_seed_same_batches_and_compose_equals_dataset():
    chain = [crop(), *suffix()]
    ds = fp.CacheDataset(items()[:2], chain, progress=False)
    a, b = ds.fetch_seeded([0, 1], 7), ds.fetch_seeded([0, 1], 7)
    c = ds.fetch_seeded([0, 1], 8)
    for key in KEYS:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])
    out1 = T.Compose(chain).set_random_state(2)(items()[0])
    out2 = T.Compose(chain).set_random_state(2)(items()[0])
    assert len(out1) == PER_ITEM and all(
        torch.equal(x["image"], y["image"]) for x, y in zip(out1, out2, strict=True)
    )
    assert type(chain[1]).__name__ == "RandFlipd" and not chain[0]._augs  # the user's objects are untouched
