"""RandGaussianNoised and RandAdjustContrastd: MONAI's results and distributions, and the batched path after a crop."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai import transforms as M

import fastpipe as fp
from fastpipe import transforms as T
from fastpipe.transforms._per_crop import run_per_crop

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _coords import coord_item, four_sigma  # noqa: E402

N_DRAWS = 4000


def item(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn((2, 6, 7, 8), generator=g) * 100
    return {"image": img.to(dtype), "other": (img * 0.5).to(dtype)}


def plain(d):
    return {k: torch.as_tensor(v) for k, v in d.items()}


# --- RandAdjustContrastd -----------------------------------------------------------------------------


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("gamma", [0.6, 1.7, 4.2])
def test_contrast_equals_monai_bit_for_bit_for_a_given_gamma(invert, retain, gamma):
    ours = T.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(gamma, gamma), invert_image=invert,
                                 retain_stats=retain)  # fmt: skip
    theirs = M.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(gamma, gamma), invert_image=invert,
                                   retain_stats=retain)  # fmt: skip
    a, b = ours(item()), plain(theirs(item()))
    for k in ("image", "other"):
        assert a[k].dtype == b[k].dtype == torch.float32
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())


def test_contrast_integer_volume_becomes_float32_like_monai():
    ours = T.RandAdjustContrastd("image", prob=1.0, gamma=(2.0, 2.0))
    theirs = M.RandAdjustContrastd("image", prob=1.0, gamma=(2.0, 2.0))
    d = item(torch.int16)
    a, b = ours(d)["image"], torch.as_tensor(theirs(dict(d))["image"])
    assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


def test_contrast_not_fired_leaves_the_volume_and_same_gamma_for_every_key():
    d = item()
    out = T.RandAdjustContrastd(["image", "other"], prob=0.0)(d)
    assert out["image"] is d["image"]
    t = T.RandAdjustContrastd(["image", "other"], prob=1.0).set_random_state(4)
    params = t.draw(1)
    out = t.apply(d, params)
    g = float(params["gamma"][0])
    for k in ("image", "other"):
        assert torch.equal(out[k], M.AdjustContrast(g)(d[k]).as_tensor())


@pytest.mark.parametrize(
    ("gamma", "expected"),
    [(4.5, (0.5, 4.5)), ((3.0, 0.7), (0.7, 3.0)), ([1.0, 1.0], (1.0, 1.0)), ((0.0, 2.0), (0.0, 2.0))],
)
def test_contrast_gamma_range_reads_like_monai(gamma, expected):
    assert T.RandAdjustContrastd("image", gamma=gamma).gamma == expected
    assert M.RandAdjustContrastd("image", gamma=gamma).adjuster.gamma == expected


@pytest.mark.parametrize("gamma", [0.5, 0.2, (1.0, float("nan")), "x", (1.0, 2.0, 3.0)])
def test_contrast_bad_gamma_is_refused_naming_it(gamma):
    with pytest.raises(ValueError, match="RandAdjustContrastd: .*gamma"):
        T.RandAdjustContrastd("image", gamma=gamma)


@pytest.mark.parametrize("gamma", [(-1.0, 2.0), (2.0, -0.1), (-1.0, -1.0)])
def test_contrast_negative_gamma_pair_is_taken_as_monai_does(gamma):
    # MONAI 1.6.1 sorts the pair and draws from it, negative or not; the minimum voxel becomes inf
    with pytest.warns(UserWarning, match=r"RandAdjustContrastd: gamma .* negative gamma.* inf"):
        ours = T.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=gamma)
    assert ours.gamma == M.RandAdjustContrastd("image", gamma=gamma).adjuster.gamma
    g = ours.gamma[0]  # the values at the range's negative end
    with pytest.warns(UserWarning):
        ours = T.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(g, g))
    theirs = M.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(g, g))
    a, b = ours(item()), plain(theirs(item()))
    batch = {k: torch.stack([v, v]) for k, v in item().items()}
    batch = ours.apply_batch(batch, ours.draw(2))
    for k in ("image", "other"):
        assert torch.isinf(b[k]).sum() == 1 and torch.equal(a[k], b[k])
        assert torch.equal(batch[k][0], b[k]) and torch.equal(batch[k][1], b[k])


def test_contrast_draws_match_monai_distribution():
    t = T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)).set_random_state(1)
    p = t.draw(N_DRAWS)
    fired = p["gamma"][p["fire"]]
    assert four_sigma(int(p["fire"].sum()), N_DRAWS, 0.3)
    assert float(fired.min()) >= 0.7 and float(fired.max()) < 1.5
    # U(0.7, 1.5): mean 1.1, sd 0.8 / sqrt(12); the mean of k draws within 4 standard errors
    k = fired.numel()
    assert abs(float(fired.mean()) - 1.1) <= 4 * 0.8 / 12**0.5 / k**0.5


# --- RandGaussianNoised ------------------------------------------------------------------------------


def test_noise_is_shared_by_the_keys_and_has_monai_mean_and_spread():
    shape = (1, 40, 40, 40)
    zeros = {"image": torch.zeros(shape), "other": torch.zeros(shape)}
    ours = T.RandGaussianNoised(["image", "other"], prob=1.0, mean=0.25, std=0.5, sample_std=False)
    theirs = M.RandGaussianNoised(["image", "other"], prob=1.0, mean=0.25, std=0.5, sample_std=False)
    for t in (ours.set_random_state(3), theirs.set_random_state(3)):
        out = plain(t(zeros))
        assert torch.equal(out["image"], out["other"])  # MONAI: "all the keys share the same random noise"
        n = out["image"].numel()
        assert abs(float(out["image"].mean()) - 0.25) <= 4 * 0.5 / n**0.5
        assert abs(float(out["image"].std()) - 0.5) <= 4 * 0.5 / (2 * n) ** 0.5


@pytest.mark.parametrize(
    ("dtype", "in_dtype", "out_dtype"),
    [(torch.float32, torch.int16, torch.float32), (None, torch.int16, torch.int16), (None, torch.float64, torch.float64)],
)  # fmt: skip
def test_noise_dtype_rules_are_monais(dtype, in_dtype, out_dtype):
    d = item(in_dtype)
    ours = T.RandGaussianNoised("image", prob=1.0, std=50.0, dtype=dtype)(d)["image"]
    theirs = torch.as_tensor(M.RandGaussianNoised("image", prob=1.0, std=50.0, dtype=dtype)(dict(d))["image"])
    assert ours.dtype == theirs.dtype == out_dtype
    assert T.RandGaussianNoised("image", prob=0.0, dtype=dtype)(d)["image"] is d["image"]


def test_noise_draws_match_monai_distribution_and_a_seed_gives_the_same_noise():
    t = T.RandGaussianNoised("image", prob=0.2, std=0.3).set_random_state(5)
    p = t.draw(N_DRAWS)
    assert four_sigma(int(p["fire"].sum()), N_DRAWS, 0.2)
    std = p["std"]
    assert float(std.min()) >= 0 and float(std.max()) < 0.3
    assert abs(float(std.mean()) - 0.15) <= 4 * 0.3 / 12**0.5 / N_DRAWS**0.5
    assert len(set(p["seed"].tolist())) == N_DRAWS  # a new noise per crop
    fixed = T.RandGaussianNoised("image", prob=1.0, std=0.3, sample_std=False).draw(3)
    assert torch.equal(fixed["std"], torch.full((3,), 0.3, dtype=torch.float64))
    a = T.RandGaussianNoised("image", prob=1.0).set_random_state(9)(item())
    b = T.RandGaussianNoised("image", prob=1.0).set_random_state(9)(item())
    assert torch.equal(a["image"], b["image"])


@pytest.mark.parametrize("kw", [{"std": -0.1}, {"std": float("inf")}, {"mean": float("nan")}, {"std": "a"}])
def test_noise_bad_arguments_are_refused_naming_them(kw):
    with pytest.raises(ValueError, match="RandGaussianNoised: (std|mean)"):
        T.RandGaussianNoised("image", **kw)


@pytest.mark.parametrize("cls", [T.RandGaussianNoised])
def test_keys_of_different_shapes_are_refused_naming_them(cls):
    d = {"image": torch.zeros(1, 4, 4, 4), "other": torch.zeros(1, 4, 4, 5)}
    with pytest.raises(ValueError, match=f"{cls.__name__}: the keys share one draw.*'other'"):
        cls(["image", "other"], prob=1.0)(d)


@pytest.mark.parametrize("other_shape", [(1, 6, 7, 8), (2, 4, 4, 5)])
def test_contrast_keys_of_different_shapes_each_get_the_gamma_like_monai(other_shape):
    # MONAI adjusts each key over its own range with the shared gamma: no shape rule (a 4-channel
    # image and a 1-channel mask); fastpipe refused such keys with a ValueError
    d = item()
    d["other"] = torch.rand(other_shape, generator=torch.Generator().manual_seed(1)) * 50
    ours = T.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(2.5, 2.5))(dict(d))
    theirs = plain(M.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(2.5, 2.5))(dict(d)))
    for k in ("image", "other"):
        assert ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k]), k
    batch = {"image": torch.stack([d["image"]] * 3), "other": torch.stack([d["other"]] * 3)}
    t = T.RandAdjustContrastd(["image", "other"], prob=1.0, gamma=(2.5, 2.5))
    out = t.apply_batch(batch, t.draw(3))
    for k in ("image", "other"):
        assert all(torch.equal(out[k][i], theirs[k]) for i in range(3)), k


@pytest.mark.parametrize("cls", [T.RandGaussianNoised, T.RandAdjustContrastd])
def test_pickled_copy_continues_the_same_draws(cls):
    t = cls("image", prob=0.5).set_random_state(2)
    t.draw(3)
    u = pickle.loads(pickle.dumps(t))
    assert all(torch.equal(a, b) for a, b in zip(t.draw(5).values(), u.draw(5).values(), strict=True))


# --- the batched path --------------------------------------------------------------------------------


def stacked(n=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    img = torch.rand((n, 1, 6, 6, 6), generator=g) * 10
    return {"image": img.clone(), "label": (img > 5).to(dtype)}


@pytest.mark.parametrize(
    "t",
    [
        T.RandGaussianNoised(["image", "label"], prob=0.5, std=0.4),
        T.RandAdjustContrastd(["image", "label"], prob=0.5, retain_stats=True),
        T.RandAdjustContrastd(["image", "label"], prob=0.5, invert_image=True),
        T.RandFlipd(["image", "label"], prob=0.5, spatial_axis=(0, 2)),
        T.RandRotate90d(["image", "label"], prob=0.5),
        T.RandScaleIntensityd("image", 0.3, prob=0.5),
        T.RandShiftIntensityd("image", 0.3, prob=0.5),
    ],
    ids=lambda t: repr(t).split("(")[0] + ("-inv" if getattr(t, "invert_image", False) else ""),
)
@pytest.mark.parametrize("label_dtype", [torch.float32, torch.uint8])
def test_batch_equals_each_crop_on_its_own(t, label_dtype):
    t.set_random_state(7)
    batch = stacked(dtype=label_dtype)
    params = t.draw(12)
    per_crop = [t.apply({k: v[i] for k, v in batch.items()}, params, i) for i in range(12)]
    out = t.apply_batch(stacked(dtype=label_dtype), params)
    fired = params["fire"] if "fire" in params else params["k"] > 0
    assert 0 < int(fired.sum()) < 12
    for k in ("image", "label"):
        expected = torch.stack([c[k] for c in per_crop])
        assert out[k].dtype == expected.dtype and torch.equal(out[k], expected), k
    assert torch.equal(out["image"][~fired], batch["image"][~fired])  # unfired crops untouched


@pytest.mark.parametrize(
    "make",
    [
        lambda p: T.RandScaleIntensityd("image", 0.3, prob=p, dtype=torch.float16),
        lambda p: T.RandGaussianNoised("image", prob=p, dtype=torch.float16),
        lambda p: T.RandScaleIntensityd("label", 0.3, prob=p, dtype=torch.int16),
    ],
    ids=["scale-float16", "noise-float16", "scale-int16"],
)
@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_batch_dtype_is_the_stacked_crops_dtype_when_every_crop_fires(make, prob):
    # MONAI's crops all come back float16 when every one fires, and stack as float16; the batch
    # used to stay float32 (float16 values in a float32 batch)
    t = make(prob).set_random_state(3)
    params = t.draw(12)
    batch = stacked()
    per_crop = [t.apply({k: v[i] for k, v in batch.items()}, params, i) for i in range(12)]
    out = t.apply_batch(stacked(), params)
    for k in ("image", "label"):
        expected = torch.stack([c[k] for c in per_crop])
        assert out[k].dtype == expected.dtype and torch.equal(out[k], expected), (k, out[k].dtype)


def test_rotation_with_unequal_sides_does_not_run_on_the_batch():
    batch = {"image": torch.zeros(4, 1, 6, 6, 4)}
    on_batch = T.RandRotate90d("image", prob=1.0, spatial_axes=(0, 1))
    per_crop = T.RandRotate90d("image", prob=1.0, spatial_axes=(1, 2), max_k=2).set_random_state(0)
    assert on_batch.keeps_shape((6, 6, 4)) and not per_crop.keeps_shape((6, 6, 4))
    assert T.RandGaussianNoised("image").keeps_shape((6, 6, 4))
    with pytest.raises(ValueError, match="changed shape"):
        T.RandRotate90d("image", prob=1.0, max_k=1, spatial_axes=(1, 2)).apply_batch(
            batch, {"k": torch.ones(4)}
        )

    def on_batch_too(*args):
        raise AssertionError("a turn that changes the crop's shape ran on the batch")

    per_crop.apply_batch = on_batch_too
    out = run_per_crop(batch, [per_crop])
    shapes = {tuple(c.shape) for c in out["image"]}  # odd turns make (1, 6, 4, 6): a ragged list
    assert len(out["image"]) == 4 and shapes <= {(1, 6, 6, 4), (1, 6, 4, 6)}


def test_run_per_crop_runs_the_leading_batched_steps_on_the_batch(monkeypatch):
    calls = []

    def per_item(d):
        calls.append("per item")
        return d

    noise = T.RandGaussianNoised("image", prob=1.0).set_random_state(0)
    contrast = T.RandAdjustContrastd("image", prob=1.0).set_random_state(1)
    for t in (noise, contrast):
        orig = t.apply_batch
        monkeypatch.setattr(
            t, "apply_batch", lambda b, p, orig=orig, t=t: calls.append(type(t).__name__) or orig(b, p)
        )
    out = run_per_crop(stacked(4), [noise, contrast, T.mark_random(per_item), T.RandFlipd("image", prob=1.0)])
    assert calls == ["RandGaussianNoised", "RandAdjustContrastd", *["per item"] * 4]
    assert out["image"].shape == (4, 1, 6, 6, 6)


# --- in a dataset, after the crop ----------------------------------------------------------------------


def chain(*after):
    return [
        T.RandCropByPosNegLabeld(["image", "label"], "label", (8, 8, 8), pos=1, neg=1, num_samples=4),
        T.RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
        *after,
    ]


@pytest.fixture(scope="module")
def coord_items():
    return [coord_item((20, 18, 16), name=f"c{i}") for i in range(3)]


def test_after_the_crop_they_run_batched_and_the_crops_are_the_same(coord_items):
    noise = T.RandGaussianNoised("image", prob=1.0, mean=0.5, std=0.0)
    base = fp.CacheDataset(coord_items, chain(), progress=False, num_workers=1)
    ds = fp.CacheDataset(coord_items, chain(noise), progress=False, num_workers=1)
    assert ds.batched and len(ds.suffix) == 2
    stages = {s.name: s.stage for s in ds.plan.steps}
    assert stages["RandGaussianNoised"] == "batched" and stages["RandFlipd"] == "fused"
    assert "0 per item" in ds.plan.summary()
    a, b = base.fetch_seeded([0, 2], seed=11), ds.fetch_seeded([0, 2], seed=11)
    assert torch.equal(b["image"], a["image"] + 0.5) and torch.equal(b["label"], a["label"])


def test_in_a_dataset_same_seed_same_batch_and_fired_fraction_is_prob(coord_items):
    t = [T.RandGaussianNoised("image", prob=0.25, std=0.2), T.RandAdjustContrastd("image", prob=0.4)]
    ds = fp.CacheDataset(coord_items, chain(*t), progress=False, num_workers=1)
    base = fp.CacheDataset(coord_items, chain(), progress=False, num_workers=1)
    first = ds.fetch_seeded([0, 1], seed=3)
    assert torch.equal(first["image"], ds.fetch_seeded([0, 1], seed=3)["image"])
    changed, n = 0, 0
    for seed in range(150):
        a, b = base.fetch_seeded([0, 1, 2], seed=seed), ds.fetch_seeded([0, 1, 2], seed=seed)
        changed += int((a["image"] != b["image"]).flatten(1).any(1).sum())
        n += a["image"].shape[0]
    assert n >= 1800 and four_sigma(changed, n, 1 - 0.75 * 0.6), (changed, n)


def test_a_monai_compose_with_noise_and_contrast_is_translated_and_batched(coord_items):
    monai_chain = M.Compose(
        [
            M.RandCropByPosNegLabeld(["image", "label"], "label", (8, 8, 8), pos=1, neg=1, num_samples=4),
            M.RandGaussianNoised("image", prob=0.1),
            M.RandAdjustContrastd("image", prob=0.1, gamma=(0.7, 1.5)),
        ]
    )
    ds = fp.CacheDataset(coord_items, monai_chain, progress=False, num_workers=1)
    steps = {s.name: (s.stage, s.origin) for s in ds.plan.steps}
    assert steps["RandGaussianNoised"] == ("batched", "MONAI -> fastpipe")
    assert steps["RandAdjustContrastd"] == ("batched", "MONAI -> fastpipe")
    assert ds.fetch_seeded([0, 1], seed=0)["image"].shape == (8, 5, 8, 8, 8)


def test_on_every_device_the_batch_path_runs_there_and_contrast_matches_the_cpu(device):
    cpu = stacked(8)
    batch = {k: v.to(device) for k, v in stacked(8).items()}
    noise = T.RandGaussianNoised(["image", "label"], prob=0.5, std=0.5).set_random_state(3)
    params = noise.draw(8)
    out = noise.apply_batch(batch, params)
    fired = params["fire"]
    assert out["image"].device.type == device.type
    assert torch.equal(out["image"][~fired].cpu(), cpu["image"][~fired])
    shared = (out["image"] - out["label"]).cpu()  # one noise for both keys
    torch.testing.assert_close(shared, cpu["image"] - cpu["label"], rtol=1e-5, atol=1e-5)
    assert not torch.equal(out["image"].cpu(), cpu["image"])
    again = noise.apply_batch({k: v.to(device) for k, v in stacked(8).items()}, params)
    assert torch.equal(again["image"], out["image"])  # the seed, not the call, decides the noise
    contrast = T.RandAdjustContrastd("image", prob=0.5, retain_stats=True).set_random_state(4)
    params = contrast.draw(8)
    here = contrast.apply_batch({"image": stacked(8)["image"].to(device)}, params)["image"].cpu()
    there = contrast.apply_batch({"image": stacked(8)["image"]}, params)["image"]
    torch.testing.assert_close(here, there, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # one voxel: NaN, as in MONAI
@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(0.5, 4.5),
    invert=st.booleans(),
    retain=st.booleans(),
    constant=st.booleans(),
)
def test_contrast_equals_monai_bit_for_bit_property(shape, seed, gamma, invert, retain, constant):
    g = torch.Generator().manual_seed(seed)
    img = torch.full(shape, 3.5) if constant else torch.randn(shape, generator=g) * 50 + 10
    theirs = M.AdjustContrast(gamma, invert_image=invert, retain_stats=retain)(img.clone()).as_tensor()
    ours = T.rand_noise_contrast.adjust_contrast(img, gamma, invert, retain)
    row = img.clone()
    T.rand_noise_contrast.adjust_contrast(row, gamma, invert, retain, in_place=True)
    # bit for bit; NaN where MONAI's is (retain_stats on a single voxel: an unbiased std of one value)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(row, ours, rtol=0, atol=0, equal_nan=True)


def test_a_step_after_the_crop_that_fails_names_the_batch_and_the_transform(coord_items):
    from fastpipe.cache.errors import TransformError

    def broken(d):
        raise RuntimeError("boom")

    bad_shape = T.RandGaussianNoised(["image", "label"], prob=1.0)  # image has 5 channels, label 1
    for step, name, why in (
        (T.mark_random(broken), "broken", "boom"),
        (bad_shape, "RandGaussianNoised", "one shape"),
    ):
        ds = fp.CacheDataset(coord_items, chain(step), progress=False, num_workers=1)
        with pytest.raises(TransformError, match=rf"{name}.* failed on the batch of items \[0, 2\].*{why}"):
            ds.fetch_seeded([0, 2], seed=1)


def test_noise_is_drawn_once_per_crop_for_all_keys(monkeypatch):
    import fastpipe.transforms.rand_noise_contrast as mod

    calls = []
    real = mod.gaussian_noise
    monkeypatch.setattr(mod, "gaussian_noise", lambda *a: calls.append(a) or real(*a))
    t = T.RandGaussianNoised(["image", "label"], prob=1.0).set_random_state(0)
    out = t.apply_batch(stacked(4), t.draw(4))
    assert len(calls) == 4
    torch.testing.assert_close(out["image"] - out["label"], stacked(4)["image"] - stacked(4)["label"])


@pytest.mark.parametrize("cls", [T.RandShiftIntensityd, T.RandScaleIntensityd])
def test_channel_wise_intensity_on_the_batch_draws_one_value_per_channel(coord_items, cls):
    t = cls("image", (0.5, 0.9), prob=1.0, channel_wise=True)
    base = fp.CacheDataset(coord_items, chain(), progress=False, num_workers=1)
    ds = fp.CacheDataset(coord_items, chain(t), progress=False, num_workers=1)
    assert {s.name: s.stage for s in ds.plan.steps}[cls.__name__] == "batched"
    a, b = base.fetch_seeded([0, 2], seed=5)["image"], ds.fetch_seeded([0, 2], seed=5)["image"]
    # channel 4 holds ones: after a shift it is 1 + o, after a scale 1 + f; either way one value per crop and channel
    v = b[:, 4] - 1 if cls is T.RandShiftIntensityd else b[:, 4] / a[:, 4] - 1
    per_crop = v.flatten(1)
    assert torch.allclose(per_crop, per_crop[:, :1].expand_as(per_crop))
    values = b[:, 3].flatten(1)[:, 0] if cls is T.RandShiftIntensityd else per_crop[:, 0]
    assert ((per_crop[:, 0] >= 0.5) & (per_crop[:, 0] <= 0.9)).all() and (
        (values >= 0.5) & (values <= 0.9)
    ).all()
    if cls is T.RandShiftIntensityd:  # channels 3 (zeros) and 4 (ones) drew their own offsets
        assert not torch.allclose(b[:, 3].flatten(1)[:, 0], per_crop[:, 0])


def test_a_step_naming_a_key_the_crop_does_not_cut_runs_per_crop_and_leaves_the_cache_alone(coord_items):
    items = [{**d, "full": torch.rand((1, 6, 5, 4), generator=torch.Generator().manual_seed(i))}
             for i, d in enumerate(coord_items)]  # fmt: skip
    full = [d["full"].clone() for d in items]
    shift = T.RandShiftIntensityd(["image", "full"], (1.0, 2.0), prob=1.0)
    ds = fp.CacheDataset(
        items, chain(shift, T.RandFlipd(["full"], prob=1.0, spatial_axis=0)), progress=False, num_workers=1
    )
    step = next(s for s in ds.plan.steps if s.name == "RandShiftIntensityd")
    assert step.stage != "batched" and "not cut by RandCropByPosNegLabeld" in step.note
    out = ds.fetch_seeded([0, 2], seed=4)
    shifts = out["image"][:, 3].flatten(1)[:, 0]  # channel 3 holds zeros: the crop's offset
    expected = torch.stack([full[i // 4 * 2].flip(1) + o for i, o in enumerate(shifts)])
    torch.testing.assert_close(out["full"], expected)
    assert all(torch.equal(d["full"], f) for d, f in zip(items, full, strict=True))
    assert torch.equal(ds.fetch_seeded([0, 2], seed=4)["full"], out["full"])  # the cache kept its values
