"""RandFlipd, RandRotate90d, RandShiftIntensityd, RandScaleIntensityd on their own: MONAI's results, dtype rules, bad input."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from monai import transforms as M

from fastpipe import transforms as T


def item(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {
        "image": (torch.randn((2, 5, 6, 7), generator=g) * 100).to(dtype),
        "label": torch.arange(210).reshape(1, 5, 6, 7),
    }


def monai(t, d):
    return {k: torch.as_tensor(v) for k, v in t(dict(d)).items()}


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (T.RandFlipd(["image", "label"], prob=1.0), M.RandFlipd(["image", "label"], prob=1.0)),
        (T.RandFlipd(["image", "label"], prob=1.0, spatial_axis=-1), M.RandFlipd(["image", "label"], prob=1.0, spatial_axis=-1)),
        (T.RandRotate90d(["image", "label"], prob=1.0, max_k=1, spatial_axes=(2, 0)),
         M.RandRotate90d(["image", "label"], prob=1.0, max_k=1, spatial_axes=(2, 0))),
        (T.RandShiftIntensityd("image", (0.75, 0.75), prob=1.0), M.RandShiftIntensityd("image", (0.75, 0.75), prob=1.0)),
        (T.RandScaleIntensityd("image", (0.3, 0.3), prob=1.0), M.RandScaleIntensityd("image", (0.3, 0.3), prob=1.0)),
        (T.RandShiftIntensityd("image", (0.5, 0.5), prob=1.0, channel_wise=True),
         M.RandShiftIntensityd("image", (0.5, 0.5), prob=1.0, channel_wise=True)),
        (T.RandScaleIntensityd("image", 0.2, prob=0.0), M.RandScaleIntensityd("image", 0.2, prob=0.0)),
    ],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_per_item_equals_monai(ours, theirs, dtype):
    d = item(dtype)
    a, b = ours(dict(d)), monai(theirs, d)
    for key in ("image", "label"):
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (T.RandFlipd("image", prob=1.0, spatial_axis=0), M.RandFlipd("image", prob=1.0, spatial_axis=0)),
        (T.RandFlipd("image", prob=1.0), M.RandFlipd("image", prob=1.0)),
        (T.RandRotate90d("image", prob=1.0, max_k=1, spatial_axes=(0, 2)),
         M.RandRotate90d("image", prob=1.0, max_k=1, spatial_axes=(0, 2))),
    ],
)  # fmt: skip
def test_metatensor_gets_monais_affine(ours, theirs):
    """A MONAI MetaTensor came back flipped or turned with its affine unchanged (voxels and world
    coordinates silently disagreeing); the affine now moves as MONAI's does, the input's is kept."""
    from monai.data import MetaTensor

    affine = torch.tensor(
        [[2.0, 0.3, 0, 10], [0, 3, 0, 20], [0.1, 0, 4, 30], [0, 0, 0, 1]], dtype=torch.float64
    )
    image = MetaTensor(item()["image"], affine=affine.clone())
    a, b = ours({"image": image})["image"], theirs({"image": image.clone()})["image"]
    assert isinstance(a, MetaTensor) and torch.equal(a.as_tensor(), b.as_tensor())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-12)
    assert torch.equal(image.affine, affine)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (T.RandFlipd("image", prob=1.0), M.RandFlipd("image", prob=1.0)),
        (T.RandFlipd("image", prob=1.0, spatial_axis=-1), M.RandFlipd("image", prob=1.0, spatial_axis=-1)),
        (T.RandRotate90d("image", prob=1.0, max_k=1), M.RandRotate90d("image", prob=1.0, max_k=1)),
    ],
)  # fmt: skip
def test_2d_image_gets_monais_affine(ours, theirs):
    """A 2-D image (C, X, Y), which MONAI flips and turns, kept its old affine in ``{key}_meta_dict``
    (only 3-D volumes had it moved); -1 is then the second axis, and nothing moves the third."""
    from monai.data import MetaTensor

    affine = torch.tensor(
        [[2.0, 0.3, 0, 10], [0, 3, 0, 20], [0.1, 0, 4, 30], [0, 0, 0, 1]], dtype=torch.float64
    )
    image = torch.arange(12.0).reshape(1, 4, 3)
    theirs_out = theirs({"image": MetaTensor(image.clone(), affine=affine.clone())})["image"]
    ours_out = ours({"image": image.clone(), "image_meta_dict": {"affine": affine.clone()}})
    ours_mt = ours({"image": MetaTensor(image.clone(), affine=affine.clone())})["image"]
    assert torch.equal(ours_out["image"], theirs_out.as_tensor())
    for got in (ours_out["image_meta_dict"]["affine"], ours_mt.affine):
        np.testing.assert_allclose(np.asarray(got), theirs_out.affine.numpy(), atol=1e-12)


@pytest.mark.parametrize("safe", [False, True])
@pytest.mark.parametrize(
    "values, dtype, offset",
    [([250, 3, 100], torch.uint8, 10.7), ([65000.0, -65000.0, 1.0], torch.float16, 1000.0)],
    ids=["uint8", "float16"],
)
def test_shift_follows_monai_cast_and_safe(safe, values, dtype, offset):
    d = {"image": torch.tensor([[[values]]], dtype=dtype)}  # 250 + 10.7 overflows uint8, 66000 float16
    ours = T.RandShiftIntensityd("image", (offset, offset), safe=safe, prob=1.0)(d)["image"]
    theirs = torch.as_tensor(
        M.RandShiftIntensityd("image", (offset, offset), safe=safe, prob=1.0)(dict(d))["image"]
    )
    assert ours.dtype == dtype and torch.equal(ours, theirs)


def test_draws_are_in_range_with_prob():
    t = T.RandRotate90d("image", prob=0.3, max_k=2).set_random_state(0)
    k = t.draw(4000)["k"]
    assert set(k.tolist()) == {0, 1, 2} and abs((k > 0).float().mean() - 0.3) < 0.03
    s = T.RandShiftIntensityd("image", (-0.2, 0.6), prob=1.0).draw(1000)["value"]
    assert s.min() >= -0.2 and s.max() <= 0.6 and s.max() - s.min() > 0.7


def test_seed_copies_and_pickle_replay():
    d = item()
    t = T.RandShiftIntensityd("image", 1.0, prob=0.5).set_random_state(3)
    clone, again = copy.deepcopy(t), pickle.loads(pickle.dumps(t))
    first = [t(d)["image"] for _ in range(6)]
    for other in (clone, again):
        assert all(torch.equal(a, other(d)["image"]) for a in first)
    assert not all(torch.equal(first[0], f) for f in first[1:])


def test_set_random_state_without_a_seed_leaves_torch_global_generator_alone():
    t = T.RandFlipd("image", prob=0.5)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeds = {t.set_random_state().generator.initial_seed() for _ in range(3)}
    assert torch.equal(torch.rand(3), expected) and len(seeds) == 3  # fresh entropy each time


@pytest.mark.parametrize("make", [lambda: T.RandFlipd("image", prob=0.5),
                                  lambda: T.RandCropByPosNegLabeld("image", "image", 2)])  # fmt: skip
def test_set_random_state_takes_monai_style_states_and_any_int_seed(make):
    # a numpy RandomState (MONAI's state type) was stored as the generator and failed at the next
    # draw with torch's "rand() received an invalid combination of arguments"; a seed past 2**64
    # failed with "Overflow when unpacking long long"
    a = make().set_random_state(state=np.random.RandomState(4))
    b = make().set_random_state(state=np.random.RandomState(4))
    assert isinstance(a.generator, torch.Generator) and torch.equal(torch.rand(4, generator=a.generator),
                                                                  torch.rand(4, generator=b.generator))  # fmt: skip
    c, d = make().set_random_state(2**64 + 7), make().set_random_state(7)
    assert torch.equal(torch.rand(4, generator=c.generator), torch.rand(4, generator=d.generator))
    with pytest.raises(TypeError, match="state must be a CPU torch.Generator or a numpy.random.RandomState"):
        make().set_random_state(state=42)


def test_channel_wise_with_fewer_channels_in_a_later_key_uses_the_first_values_like_monai():
    d = {"image": torch.rand(2, 4, 4, 4), "label": torch.rand(1, 4, 4, 4)}
    ours = T.RandShiftIntensityd(["image", "label"], (1.0, 2.0), prob=1.0, channel_wise=True)(d)
    theirs = M.RandShiftIntensityd(["image", "label"], (1.0, 2.0), prob=1.0, channel_wise=True)(d)
    for out in (ours, theirs):
        offsets = [(out["image"][c] - d["image"][c]).mean() for c in range(2)]
        torch.testing.assert_close(out["label"] - d["label"], offsets[0].expand(1, 4, 4, 4))
        assert out["label"].shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="drew 1 channel values"):
        T.RandShiftIntensityd(["label", "image"], 0.5, prob=1.0, channel_wise=True)(d)


def test_missing_keys_like_monai():
    with pytest.raises(KeyError, match="RandFlipd: key 'mask' missing"):
        T.RandFlipd(["image", "mask"], prob=1.0)(item())
    assert "mask" not in T.RandFlipd(["image", "mask"], prob=1.0, allow_missing_keys=True)(item())


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: T.RandRotate90d("image", spatial_axes=(0, 3)), r"RandRotate90d: spatial_axes .* got 3"),
        (lambda: T.RandRotate90d("image", spatial_axes=(1, -2)), r"RandRotate90d: spatial_axes must be 2 different axes, got \(1, -2\)"),
        (lambda: T.RandRotate90d("image", spatial_axes=(0,)), r"RandRotate90d: spatial_axes must be 2 spatial axes"),
        (lambda: T.RandRotate90d("image", max_k=0), r"RandRotate90d: max_k must be an int >= 1, got 0"),
        (lambda: T.RandFlipd("image", spatial_axis=[0, 4]), r"RandFlipd: spatial_axis .* got 4"),
        # MONAI's torch.flip refuses a repeated axis at the call; fused into the crop it flipped once
        (lambda: T.RandFlipd("image", spatial_axis=[0, -3]), r"RandFlipd: spatial_axis names an axis twice, got \[0, -3\]"),
        (lambda: T.RandShiftIntensityd("image", offsets=math.nan), r"RandShiftIntensityd: offsets .* got nan"),
        (lambda: T.RandShiftIntensityd("image", offsets=(0.0, math.nan)), r"RandShiftIntensityd: offsets must be finite"),
        # U(-inf, inf) is NaN on every voxel (MONAI's numpy raises OverflowError)
        (lambda: T.RandShiftIntensityd("image", offsets=math.inf), r"RandShiftIntensityd: offsets must be a finite number .* got inf"),
        (lambda: T.RandScaleIntensityd("image", factors=-math.inf), r"RandScaleIntensityd: factors must be a finite number .* got -inf"),
        (lambda: T.RandFlipd("image", prob=1.5), r"RandFlipd: prob must be in \[0, 1\], got 1.5"),
        (lambda: T.RandRotate90d("image", prob=-0.1), r"RandRotate90d: prob must be in \[0, 1\], got -0.1"),
        (lambda: T.RandShiftIntensityd("image", 0.1, prob=math.nan), r"RandShiftIntensityd: prob must be in \[0, 1\], got nan"),
        (lambda: T.SpatialPadd("image", (4, 4)), r"SpatialPadd: spatial_size must be an int or 3 ints, got \(4, 4\)"),
        (lambda: T.SpatialPadd("image", 4, mode="median"), r"SpatialPadd: mode must be one of"),
        (lambda: T.RandCropByPosNegLabeld("image", "label", 4, padding_mode="edge"), r"padding_mode must be None or 'constant', got 'edge'"),
    ],
)  # fmt: skip
def test_bad_input_names_transform_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("value", [-0.1, -1, 0.3, 0, (-0.2, -0.5)])
def test_single_negative_range_reads_as_monai_symmetric_range(value):
    # MONAI takes a number v as (min(-v, v), max(-v, v)): -0.1 is (-0.1, 0.1), not an error
    assert (
        T.RandShiftIntensityd("image", offsets=value).offsets
        == M.RandShiftIntensityd("image", value).shifter.offsets
    )
    assert (
        T.RandScaleIntensityd("image", factors=value).factors
        == M.RandScaleIntensityd("image", value).scaler.factors
    )


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("RandFlipd", dict(spatial_axis=np.int64(0))),
        ("RandFlipd", dict(spatial_axis=[np.int32(2), np.int64(-3)])),
        ("RandRotate90d", dict(max_k=1, spatial_axes=np.array([0, 1]))),
        ("RandRotate90d", dict(max_k=np.int64(1), spatial_axes=(np.int64(0), np.int64(2)))),
    ],
)
def test_numpy_integer_axes_are_taken_like_monai(name, kwargs):
    """Axes computed with numpy (or read from a config through it) are ints to MONAI; they raised here."""
    img = torch.arange(24.0).reshape(1, 2, 3, 4)
    ours = getattr(T, name)("image", prob=1.0, **kwargs)({"image": img})["image"]
    theirs = getattr(M, name)("image", prob=1.0, **kwargs)({"image": img})["image"]
    assert torch.equal(ours, theirs.as_tensor())


def test_axis_outside_a_smaller_volume_is_named_at_call():
    with pytest.raises(
        ValueError, match=r"RandRotate90d: spatial axis 2 is outside the 2-D volume of shape \(1, 4, 4\)"
    ):
        T.RandRotate90d("image", prob=1.0, spatial_axes=(0, 2))({"image": torch.zeros(1, 4, 4)})


class _Items(torch.utils.data.Dataset):
    """Eight copies of one item through ``chain`` (a MONAI ``Compose``, which reseeds only MONAI's own)."""

    def __init__(self, chain):
        label = torch.zeros(1, 8, 8, 8)
        label[0, 2:6, 2:6, 2:6] = 1
        self.item, self.chain = {"image": torch.rand(1, 8, 8, 8), "label": label}, chain

    def __len__(self):
        return 8

    def __getitem__(self, i):
        out = self.chain(dict(self.item))
        out = out[0] if isinstance(out, list) else out
        return {"image": out["image"], "start": out["image"][0, 0, 0, 0]}


@pytest.mark.timeout(120)
def test_dataloader_workers_draw_different_parameters_and_runs_replay():
    # each worker process starts with a copy of the transforms; MONAI's DataLoader reseeds MONAI's
    # transforms there (a MONAI Compose skips fastpipe's), so every worker drew the same flips and crops
    chain = M.Compose(
        [T.RandCropByPosNegLabeld(["image", "label"], "label", 4), T.RandFlipd("image", prob=0.5)]
    )

    def run():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(
            _Items(chain), batch_size=4, num_workers=2, multiprocessing_context="fork"
        )
        return [b["image"] for b in loader]  # batch w comes from worker w

    first, again = run(), run()
    assert not torch.equal(first[0], first[1])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda lazy: T.RandFlipd("image", prob=1.0, spatial_axis=0, lazy=lazy),
        lambda lazy: T.RandRotate90d("image", prob=1.0, lazy=lazy),
        lambda lazy: T.RandCropByPosNegLabeld("image", "image", 2, lazy=lazy),
    ],
    ids=["RandFlipd", "RandRotate90d", "RandCropByPosNegLabeld"],
)
def test_monai_lazy_argument_false_is_taken_and_true_refused(make):
    # MONAI code that spells out lazy=False failed with "unexpected keyword argument 'lazy'"
    assert make(False)({"image": torch.ones(1, 4, 4, 4)}) is not None
    with pytest.raises(ValueError, match=r"lazy=True \(MONAI's lazy resampling\) is not reproduced"):
        make(True)
