"""Every argument of every MONAI class the translator swaps: a non-default value gives MONAI's output,
or the translator keeps MONAI's object (the plan says so), or a clear error names the argument.

The values are chosen so that random transforms are deterministic (prob=1, equal bounds) and the
outputs can be compared value by value; prob=0 is checked to leave the data unchanged.
"""

from __future__ import annotations

import copy
import inspect
import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch

import fastpipe as fp
from fastpipe.transforms._translate_base import REGISTRY

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write_pair  # noqa: E402

SHAPE = (12, 10, 6)
LOAD = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS)]
SCALED = [*LOAD, M.ScaleIntensityRanged("image", a_min=-100, a_max=200, b_min=0.0, b_max=1.0)]
K = {"keys": KEYS}
P1 = {"keys": KEYS, "prob": 1.0}  # random transforms: always applied, prob=0 is a case of its own
IMG = {"keys": "image", "prob": 1.0}
CROP = {"keys": KEYS, "label_key": "label", "spatial_size": SHAPE, "num_samples": 1}

# class -> (steps before it, the arguments it always needs, {parameter: a non-default value})
TABLE = {
    "LoadImaged": ([], {"keys": KEYS}, {
        "reader": "NibabelReader", "dtype": np.int32, "meta_keys": ["im_m", "la_m"],
        "meta_key_postfix": "meta", "overwriting": True, "image_only": False,
        "ensure_channel_first": True, "simple_keys": True, "prune_meta_pattern": "dim",
        "prune_meta_sep": "|", "expanduser": False,
        "kwargs": {"squeeze_non_spatial_dims": True, "as_closest_canonical": True}}),
    "EnsureChannelFirstd": ([M.LoadImaged(KEYS)], K, {"strict_check": False, "channel_dim": "no_channel"}),
    "Orientationd": (LOAD, {**K, "axcodes": "RAS"}, {"axcodes": "LPS", "as_closest_canonical": True,
                               "labels": (("R", "L"), ("A", "P"), ("I", "S")), "lazy": True}),
    "Spacingd": (LOAD, {"keys": KEYS, "pixdim": (1.5, 1.5, 2.0)}, {
        "diagonal": True, "mode": "nearest", "padding_mode": "zeros", "align_corners": True,
        "dtype": np.float32, "scale_extent": True, "recompute_affine": True, "min_pixdim": 0.5,
        "max_pixdim": 3.0, "ensure_same_shape": False, "lazy": True}),
    "ScaleIntensityRanged": (LOAD, {"keys": "image", "a_min": -100, "a_max": 200, "b_min": 0.0, "b_max": 1.0}, {
        "b_min": -1.0, "b_max": 2.0, "clip": True, "dtype": np.float64}),
    "CropForegroundd": (SCALED, {"keys": KEYS, "source_key": "image"}, {
        "select_fn": lambda x: x > 0.5, "channel_indices": 0, "margin": 1, "allow_smaller": False,
        "k_divisible": 4, "mode": "edge", "start_coord_key": "s", "end_coord_key": "e", "lazy": True,
        "pad_kwargs": {"value": 3}}),
    "FgBgToIndicesd": (LOAD, {"keys": "label"}, {
        "fg_postfix": "_f", "bg_postfix": "_b", "image_key": "image", "image_threshold": 10.0,
        "output_shape": SHAPE}),
    "ToDeviced": (LOAD, {"keys": KEYS, "device": "cpu"}, {"kwargs": {"non_blocking": True}}),
    "EnsureTyped": (LOAD, K, {"data_type": "numpy", "dtype": np.float16, "device": "cpu",
                              "wrap_sequence": False, "track_meta": False}),
    "ToTensord": (LOAD, K, {"dtype": torch.float16, "device": "cpu", "wrap_sequence": False,
                            "track_meta": False}),
    "CastToTyped": (LOAD, K, {"dtype": np.float16}),
    "SelectItemsd": (LOAD, {"keys": "image"}, {}),
    "DeleteItemsd": (LOAD, {"keys": "label"}, {"sep": "|", "use_re": True}),
    "CopyItemsd": (LOAD, {"keys": "image"}, {"times": 2, "names": ["a"]}),
    "RandCropByPosNegLabeld": (LOAD, CROP, {
        "pos": 0.0, "neg": 2.0, "image_key": "image", "image_threshold": 50.0,
        "fg_indices_key": "label_fg_indices", "bg_indices_key": "label_bg_indices",
        "allow_smaller": True, "lazy": True}),
    "RandFlipd": (LOAD, P1, {"prob": 0.0, "spatial_axis": 1, "lazy": True}),
    "RandRotate90d": (LOAD, {**P1, "max_k": 1}, {"prob": 0.0, "max_k": 1, "spatial_axes": (0, 2),
                                                 "lazy": True}),
    "RandShiftIntensityd": (LOAD, {**IMG, "offsets": (3.0, 3.0)}, {
        "safe": True, "factor_key": "f", "meta_keys": "m", "meta_key_postfix": "x", "prob": 0.0,
        "channel_wise": True}),
    "RandScaleIntensityd": (LOAD, {**IMG, "factors": (0.5, 0.5)}, {
        "prob": 0.0, "channel_wise": True, "dtype": torch.float64}),
    "RandGaussianNoised": (LOAD, {**IMG, "std": 0.0}, {
        "prob": 0.0, "mean": 5.0, "dtype": np.float64, "sample_std": False}),
    "RandAdjustContrastd": (SCALED, {**IMG, "gamma": (2.0, 2.0)}, {
        "prob": 0.0, "invert_image": True, "retain_stats": True}),
    "SpatialPadd": (LOAD, {"keys": KEYS, "spatial_size": (16, 12, 8)}, {
        "method": "end", "mode": "reflect", "lazy": True, "kwargs": {"value": 2}}),
}  # fmt: skip
# Parameters with no value of their own here (explicit exemptions):
EXEMPT = {
    "keys",  # every case sets it
    "allow_missing_keys",  # its own test below (MISSING): a key the item lacks
    "args",  # LoadImaged's reader arguments: kept MONAI via the reader check (reader case)
    "a_min", "a_max", "label_key", "spatial_size", "source_key", "pixdim",  # required, set per class
    "offsets", "factors", "gamma", "std",  # set per class to equal bounds (deterministic draws)
    "num_samples",  # set to 1 (the one crop of a full-size window); counts are tested in test_rand_crop
}  # fmt: skip
CASES = [(c, p, v) for c, (_, _, vals) in TABLE.items() for p, v in vals.items()]


def test_the_table_names_every_parameter_of_every_translated_class():
    assert set(TABLE) == set(REGISTRY)
    for name, (_, base, vals) in TABLE.items():
        params = set(inspect.signature(getattr(M, name).__init__).parameters) - {"self"}
        missing = params - set(vals) - set(base) - EXEMPT
        assert not missing, f"{name}: no value for {sorted(missing)}"


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("every_argument")
    return [write_pair(tmp, affine((1.0, 1.2, 2.0), "LPS"), shape=SHAPE, seed=i) for i in range(2)]


def _np(x):
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


def _assert_same(ours, theirs, where: str) -> None:
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for a, b in zip(ours, theirs, strict=True):
            _assert_same(a, b, where)
        return
    data = [k for k, v in theirs.items() if isinstance(v, (torch.Tensor, np.ndarray))]
    assert set(data) <= set(ours), f"{where}: keys {sorted(set(data) - set(ours))} missing"
    for k in data:
        a, b = _np(ours[k]), _np(theirs[k])
        assert a.shape == b.shape, f"{where}: {k} shape {a.shape} != MONAI's {b.shape}"
        # fastpipe's documented rule: a volume resampled with nearest keeps its integer dtype
        nearest = "mode='nearest'" in where and a.dtype.kind in "iu"
        assert a.dtype == b.dtype or nearest, f"{where}: {k} dtype {a.dtype} != MONAI's {b.dtype}"
        assert np.allclose(a.astype(np.float64), b.astype(np.float64), atol=1e-4), (
            f"{where}: {k} values {np.abs(a.astype(float) - b.astype(float)).max()} {(a.astype(float) - b.astype(float)).mean()}"
        )
    for k in ("s", "e"):  # CropForegroundd's coordinate keys
        if k in theirs:
            assert np.array_equal(_np(ours[k]), _np(theirs[k])), f"{where}: {k}"


def _run(items, name, before, kwargs):
    """``(fastpipe's output, MONAI's output, kept)`` of item 0 (an error raised names the argument)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = getattr(M, name)(**kwargs)
        chain = [*copy.deepcopy(before), step]
        theirs = M.Compose(copy.deepcopy(chain))(dict(items[0]))
        ds = fp.CacheDataset(items, M.Compose(chain), progress=False, num_workers=1)
        return ds[0], theirs, name not in ds.plan.swapped, ds


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "param", "val"), CASES, ids=[f"{c}-{p}" for c, p, _ in CASES])
def test_a_non_default_argument_gives_monais_output_or_keeps_monai(items, name, param, val):
    before, base, _ = TABLE[name]
    var = inspect.signature(getattr(M, name).__init__).parameters[param].kind is inspect.Parameter.VAR_KEYWORD
    kwargs = {**base, **val} if var else {**base, param: val}  # **kwargs: the dict's items as arguments
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(M, name)(**kwargs)
            M.Compose([*copy.deepcopy(before), getattr(M, name)(**kwargs)])(dict(items[0]))
    except Exception:  # noqa: BLE001  (a value MONAI itself refuses on this data: nothing to compare)
        pytest.skip(f"MONAI refuses {name}({param}={val!r}) on this item")
    try:
        ours, theirs, kept, ds = _run(items, name, before, kwargs)
    except (TypeError, ValueError) as err:
        assert param in str(err), f"{name}({param}=...) raised an error not naming it: {err}"
        return
    if kept:
        assert name in ds.describe(), "the plan should name the MONAI step it kept"
    _assert_same(ours, theirs, f"{name}({param}={val!r}) {'kept' if kept else 'swapped'}")


# Random arguments whose effect a deterministic value cannot show (a draw's range, a ratio): the
# translated transform and MONAI's give the same statistics over many draws (4 standard errors;
# seeded, so the outcome is fixed).
DRAWS = 200
SPREAD = {
    "RandFlipd": {"prob": 0.5, "spatial_axis": None},
    "RandRotate90d": {"prob": 0.7, "max_k": 3, "spatial_axes": (1, 2)},
    "RandShiftIntensityd": {"prob": 0.6, "offsets": (2.0, 9.0), "channel_wise": True},
    "RandScaleIntensityd": {"prob": 0.6, "factors": (0.1, 0.9), "channel_wise": True},
    "RandGaussianNoised": {"prob": 0.7, "mean": 1.0, "std": 3.0, "sample_std": False},
    "RandAdjustContrastd": {"prob": 0.7, "gamma": (0.7, 1.5), "invert_image": True},
    "RandCropByPosNegLabeld": {"label_key": "label", "spatial_size": (3, 3, 3), "pos": 1.0, "neg": 3.0,
                               "image_key": "image", "image_threshold": 1.9, "num_samples": 16},
}  # fmt: skip


def _statistics(t, x, lab) -> np.ndarray:
    rows = []
    for _ in range(DRAWS):
        out = t({"image": x.clone(), "label": lab.clone()})
        for d in out if isinstance(out, list) else [out]:
            im, lb = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"]).float()
            centre = (lb[0, 1, 1, 1], im[:, 1, 1, 1].max())  # a 3^3 crop's centre: fg or bg, its voxel
            rows.append([im.shape[1], im[0].mean(), im[1].mean(), im[0].std(), im[0, 0, 0, 0], im[0, -1, 0, 0],
                         im[0, 0, -1, -1], lb.mean(), (im[0] * lb[0]).mean(), (im[0].mean() - im[1].mean()) ** 2,
                         *centre])  # fmt: skip
    return np.asarray(rows, dtype=np.float64)


@pytest.mark.parametrize("name", sorted(SPREAD))
def test_random_arguments_give_monais_distribution(name):
    from fastpipe.transforms._translate import Context, translate

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 12, 11, 10, generator=gen) + 1
    lab = (torch.rand(1, 12, 11, 10, generator=gen) > 0.7).float()
    keys = (
        ["image", "label"] if name in ("RandFlipd", "RandRotate90d", "RandCropByPosNegLabeld") else ["image"]
    )
    theirs = getattr(M, name)(keys=keys, **SPREAD[name])
    theirs.set_random_state(1)
    ours, reason = translate(theirs, Context())
    assert reason == "", reason
    a, b = _statistics(theirs, x, lab), _statistics(ours, x, lab)
    tol = 4 * np.sqrt((a.var(0) + b.var(0)) / len(a)) + 1e-3
    assert (np.abs(a.mean(0) - b.mean(0)) <= tol).all(), (
        f"{name}: {a.mean(0).round(2)} vs {b.mean(0).round(2)}"
    )


MISSING = [c for c in TABLE if "allow_missing_keys" in inspect.signature(getattr(M, c).__init__).parameters]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MISSING)
def test_allow_missing_keys_skips_an_absent_key_as_monai(items, name):
    before, base, _ = TABLE[name]
    keys = [base["keys"]] if isinstance(base["keys"], str) else list(base["keys"])
    kwargs = {**base, "keys": [*keys, "absent"], "allow_missing_keys": True}
    if name == "CopyItemsd":
        kwargs["names"] = [f"{k}_copy" for k in kwargs["keys"]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            M.Compose([*copy.deepcopy(before), getattr(M, name)(**kwargs)])(dict(items[0]))
    except Exception:  # noqa: BLE001  (MONAI itself refuses the absent key here)
        pytest.skip(f"MONAI refuses {name} with an absent key")
    ours, theirs, kept, _ = _run(items, name, before, kwargs)
    _assert_same(ours, theirs, f"{name}(allow_missing_keys=True) {'kept' if kept else 'swapped'}")
