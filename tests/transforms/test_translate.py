"""A MONAI chain handed to fp.CacheDataset: what is swapped, what is kept and why, same values as MONAI."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
import torch
from monai.data import NibabelReader

import fastpipe as fp
import fastpipe.transforms as T
from fastpipe.transforms._translate import Context, translate

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write_pair  # noqa: E402

PATCH = (16, 16, 8)
PREFIX_NAMES = [
    "LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged",
    "CropForegroundd", "FgBgToIndicesd",
]  # fmt: skip


def monai_prefix() -> list:
    return [
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        M.CropForegroundd(KEYS, source_key="image", allow_smaller=True),
        M.FgBgToIndicesd("label"),
    ]


def monai_crop() -> M.RandCropByPosNegLabeld:
    return M.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=PATCH, pos=1, neg=1, num_samples=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("translate")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS"), seed=i) for i in range(3)]


def dataset(files, chain, **kw) -> fp.CacheDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        return fp.CacheDataset(files, chain, progress=False, num_workers=1, **kw)


@pytest.mark.timeout(120)
def test_monai_compose_is_swapped_logged_once_and_cached_values_match_monai(files, caplog):
    with caplog.at_level(logging.INFO, logger="fastpipe"):
        ds = dataset(files, M.Compose([*monai_prefix(), monai_crop()]))
    swaps = [r for r in caplog.records if "swapped for fastpipe's" in r.getMessage()]
    assert len(swaps) == 1 and swaps[0].levelno == logging.INFO
    assert ds.plan.swapped == [*PREFIX_NAMES, "RandCropByPosNegLabeld"]
    assert type(ds.suffix[0]) is T.RandCropByPosNegLabeld and ds.batched
    assert all(type(t).__module__.startswith("fastpipe") for t in ds.core.prefix)
    kept = dataset(files, M.Compose([*monai_prefix(), monai_crop()]), translate=False)
    assert type(kept.suffix[0]) is M.RandCropByPosNegLabeld and not kept.batched
    for i in range(len(files)):
        a, b = ds.cached_entry(i), kept.cached_entry(i)
        assert a["image"].shape == b["image"].shape and a["image"].dtype == torch.float32
        assert (a["image"] - torch.as_tensor(b["image"])).abs().max().item() < 1e-2
        assert torch.equal(a["label"].float(), torch.as_tensor(b["label"]).float())
        assert np.array_equal(
            np.asarray(a["label_fg_indices"]), np.asarray(torch.as_tensor(b["label_fg_indices"]))
        )


@pytest.mark.timeout(120)
def test_unknown_monai_step_inside_the_prefix_gets_metatensors_with_the_right_affine(files):
    """An untranslated MONAI step between fastpipe ones sees what MONAI would give it (bridged both ways)."""
    chain = monai_prefix()
    chain.insert(2, M.ThresholdIntensityd("image", threshold=-500, above=True, cval=-1000))
    chain[4] = M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"), scale_extent=True)
    ds, ref = dataset(files, chain, translate=True), dataset(files, chain, translate=False)
    names = [s.name for s in ds.plan.steps]
    assert names.count("ToMonaid") == 2 and names.count("FromMonaid") == 2
    assert ds.plan.swapped == [n for n in PREFIX_NAMES if n != "Spacingd"]
    for i in range(len(files)):
        a, b = ds.cached_entry(i), ref.cached_entry(i)
        assert a["image"].shape == b["image"].shape
        assert (a["image"] - torch.as_tensor(b["image"])).abs().max().item() < 1e-2
        np.testing.assert_allclose(
            a["image_meta_dict"]["affine"].numpy(), np.asarray(b["image"].affine), atol=1e-4
        )


@pytest.mark.timeout(120)
def test_integer_volumes_become_float32_as_monai_loads_them_unless_resampled_nearest(files):
    ds = dataset(files, [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS)])
    e = ds.cached_entry(0)
    assert e["image"].dtype == torch.float32 and e["label"].dtype == torch.float32  # as MONAI's LoadImaged
    ds = dataset(files, monai_prefix()[:4])
    assert (
        ds.cached_entry(0)["label"].dtype == torch.uint8
    )  # fastpipe's rule: nearest keeps the label's dtype


@pytest.mark.timeout(120)
def test_describe_shows_stages_devices_reasons_and_where_the_fast_path_ends(files):
    chain = [
        *monai_prefix(),
        M.ToDeviced(KEYS, device="cpu"),
        monai_crop(),
        M.RandGaussianNoised("image", prob=1.0),
        M.RandGaussianSmoothd("image", prob=1.0),
        M.RandFlipd(KEYS, prob=1.0),
    ]
    text = dataset(files, M.Compose(chain)).describe()
    lines = text.splitlines()
    cached = next(i for i, ln in enumerate(lines) if ln.strip().startswith("cached"))
    batched = next(i for i, ln in enumerate(lines) if ln.strip().startswith("batched"))
    per_item = next(i for i, ln in enumerate(lines) if ln.strip().startswith("per item"))
    assert cached < batched < per_item
    assert (
        "LoadImaged" in lines[cached + 1]
        and "MONAI -> fastpipe" in lines[cached + 1]
        and "on cpu" in lines[cached + 1]
    )
    assert "one pass with the next Spacingd" in next(ln for ln in lines if "Orientationd" in ln)
    assert "RandCropByPosNegLabeld" in lines[batched + 1]
    noise_line = next(ln for ln in lines if "RandGaussianNoised" in ln)
    assert batched < lines.index(noise_line) < per_item and "MONAI -> fastpipe" in noise_line
    assert "on the stacked batch" in noise_line
    smooth_line = next(ln for ln in lines if "RandGaussianSmoothd" in ln)
    assert lines.index(smooth_line) > per_item and "fastpipe has no RandGaussianSmoothd" in smooth_line
    flip_line = next(ln for ln in lines if "RandFlipd" in ln)
    assert lines.index(flip_line) > per_item and "after RandGaussianSmoothd, which runs per item" in flip_line
    assert "fast path: ends at step 11 RandGaussianSmoothd" in lines[-1]


@pytest.mark.timeout(120)
def test_unknown_random_step_after_the_crop_runs_per_crop_after_the_batched_op(files):
    def plus_100(d):
        return {**d, "image": d["image"] + 100.0}

    ds = dataset(files, [*monai_prefix(), monai_crop(), T.mark_random(plus_100)])
    assert ds.batched and [type(t).__name__ for t in ds.suffix[:2]] == ["RandCropByPosNegLabeld", "ToMonaid"]
    assert len(ds.suffix) == 3 and ds.suffix[2] is plus_100  # it gets MONAI's MetaTensor crops, as in MONAI
    batch = ds.fetch_seeded([0, 2], seed=5)
    assert batch["image"].shape == (8, 1, *PATCH)
    for n in range(8):
        x, y, z = batch["crop_starts"][n].tolist()
        src = ds.cached_entry([0, 2][n // 4])["image"]
        window = src[:, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]]
        assert torch.equal(batch["image"][n], window + 100.0)
    again = dataset(files, [*monai_prefix(), monai_crop(), T.mark_random(plus_100)]).fetch_seeded(
        [0, 2], seed=5
    )
    assert torch.equal(again["image"], batch["image"])  # same seed, same batch


def test_refusals_keep_the_monai_object_with_a_reason(files):
    cases = {
        "scale_extent": M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), scale_extent=True),
        "not one .nii/.nii.gz file": M.LoadImaged(KEYS),
        "the reader MONAI picks is NumpyReader": M.LoadImaged(KEYS, reader="NumpyReader"),
        "NibabelReader options": M.LoadImaged(KEYS, reader=NibabelReader(as_closest_canonical=True)),
        "lazy=True": M.Orientationd(KEYS, axcodes="RAS", lazy=True),
        "padding mode 'edge'": M.CropForegroundd(KEYS, source_key="image", mode="edge"),
        "factor_key": M.RandShiftIntensityd("image", offsets=0.1, factor_key="f"),
    }
    for expected, obj in cases.items():
        items = [{"image": "a.png", "label": "b.png"}] if "nii" in expected else files
        out, reason = translate(obj, Context(items=items))
        assert out is obj and expected in reason, (expected, reason)


def test_seeded_monai_object_gives_a_seeded_fastpipe_transform_without_advancing_it(files):
    crops = [monai_crop().set_random_state(7) for _ in range(2)]
    state = crops[0].R.get_state()[1].copy()
    a, b = (translate(c, Context(files))[0] for c in crops)
    assert np.array_equal(crops[0].R.get_state()[1], state)  # the MONAI object is not advanced
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


class Recorder:
    """Stands in for a fastpipe class of the same name: records the keyword arguments it gets."""

    random = True

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def set_random_state(self, seed):
        self.seed = seed
        return self


@pytest.mark.parametrize(
    ("monai_obj", "expected"),
    [
        (M.RandFlipd(KEYS, prob=0.1, spatial_axis=[0]), {"prob": 0.1, "spatial_axis": [0]}),
        (M.RandRotate90d(KEYS, prob=0.1, max_k=3), {"prob": 0.1, "max_k": 3, "spatial_axes": (0, 1)}),
        (M.RandShiftIntensityd("image", offsets=0.1, prob=0.5), {"prob": 0.5, "offsets": (-0.1, 0.1), "safe": False, "channel_wise": False}),
        (M.RandScaleIntensityd("image", factors=(-0.2, 0.3), prob=0.1), {"prob": 0.1, "factors": (-0.2, 0.3), "channel_wise": False, "dtype": torch.float32}),
        (M.SpatialPadd(KEYS, spatial_size=(96, 96, 96)), {"spatial_size": (96, 96, 96), "method": "symmetric", "mode": "constant"}),
        (M.SpatialPadd(KEYS, spatial_size=64), {"spatial_size": 64}),  # one int: every axis, as MONAI
        (M.RandCropByPosNegLabeld(KEYS, "label", 32, num_samples=2), {"spatial_size": 32, "fg_indices_key": None}),
        (M.RandGaussianNoised("image", prob=0.2, std=0.05), {"prob": 0.2, "mean": 0.0, "std": 0.05, "sample_std": True}),
        (M.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)), {"prob": 0.3, "gamma": (0.7, 1.5), "invert_image": False, "retain_stats": False}),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "",
)  # fmt: skip
def test_augment_parameters_are_read_from_the_monai_object(monkeypatch, monai_obj, expected):
    """Parameter extraction for the batched augmentations, checked against a recording stand-in class."""
    name = type(monai_obj).__name__
    monkeypatch.setattr(T, name, Recorder, raising=False)
    out, reason = translate(monai_obj, Context())
    assert reason == "" and isinstance(out, Recorder)
    assert {k: out.kwargs[k] for k in expected} == expected
    assert list(out.kwargs["keys"]) == list(monai_obj.keys) and out.kwargs["allow_missing_keys"] is False
    monkeypatch.delattr(T, name)
    out, reason = translate(monai_obj, Context())
    assert out is monai_obj and reason == f"fastpipe.transforms has no {name}"


@pytest.mark.timeout(120)
def test_smart_cache_translates_too_and_translate_false_keeps_monai(files):
    chain = M.Compose([*monai_prefix(), monai_crop()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = fp.SmartCacheDataset(files, chain, cache_num=2, replace_rate=0.5, progress=False, shuffle=False)
        kept = fp.SmartCacheDataset(
            files, chain, cache_num=2, replace_rate=0.5, progress=False, translate=False
        )
    with ds, kept:
        assert ds.batched and ds.plan.swapped[-1] == "RandCropByPosNegLabeld"
        assert ds.fetch_seeded([0, 1], seed=1)["image"].shape == (8, 1, *PATCH)
        assert not kept.batched and kept.plan.swapped == []
        assert "0 MONAI transform(s) swapped" in kept.describe()


@pytest.mark.timeout(120)
def test_random_part_fastpipe_lacks_gets_metatensors_from_the_cache(files):
    """The suffix starts with a MONAI transform fastpipe lacks: the cache hands it MONAI's MetaTensors."""
    from monai.data import MetaTensor

    crop = M.RandSpatialCropSamplesd(KEYS, roi_size=PATCH, num_samples=2, random_size=False)
    ds = dataset(files, [*monai_prefix(), crop])
    assert [s.name for s in ds.plan.steps][-2:] == ["ToMonaid", "RandSpatialCropSamplesd"]
    entry = ds.cached_entry(0)
    assert isinstance(entry["image"], MetaTensor) and entry["image"].dtype == torch.float32
    ref = dataset(files, [*monai_prefix(), crop], translate=False).cached_entry(0)
    np.testing.assert_allclose(np.asarray(entry["image"].affine), np.asarray(ref["image"].affine), atol=1e-4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (4, 1, *PATCH)


def test_describe_puts_steps_after_the_device_point_on_that_device():
    """The plan alone (nothing runs): steps after ToDeviced(cuda:0) and the random part are on cuda:0."""
    from fastpipe.transforms._plan import build_plan

    chain = [*monai_prefix()[4:], M.ToDeviced(KEYS, device="cuda:0"), M.EnsureTyped(KEYS), monai_crop()]
    lines = build_plan(chain, items=None).describe("cuda:0").splitlines()
    where = {
        ln.split()[1]: ln.split(" on ")[1].split()[0]
        for ln in lines
        if " on " in ln and ln.strip()[0].isdigit()
    }
    assert where == {
        "ScaleIntensityRanged": "cpu", "CropForegroundd": "cpu", "FgBgToIndicesd": "cpu",
        "ToDeviced": "cuda:0", "EnsureTyped": "cuda:0", "RandCropByPosNegLabeld": "cuda:0",
    }  # fmt: skip


def test_an_option_fastpipe_lacks_is_dropped_at_monai_default_and_refused_otherwise(monkeypatch):
    class NarrowFlip(Recorder):
        def __init__(self, keys, prob=0.1, spatial_axis=None):
            super().__init__(keys=keys, prob=prob, spatial_axis=spatial_axis)

    monkeypatch.setattr(T, "RandFlipd", NarrowFlip, raising=False)
    out, reason = translate(M.RandFlipd(KEYS, prob=0.2, spatial_axis=1), Context())
    assert reason == "" and out.kwargs == {"keys": KEYS, "prob": 0.2, "spatial_axis": 1}
    obj = M.RandFlipd(KEYS, prob=0.2, allow_missing_keys=True)
    out, reason = translate(obj, Context())
    assert out is obj and reason == "fastpipe's RandFlipd has no option allow_missing_keys (got True)"


# --- values and dtypes of translated deterministic steps, side by side with MONAI ------------------------


def _side_by_side(items, chain):
    """``(MONAI's output, the translated dataset's cached entry)`` of the first item."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = M.Compose(chain)(dict(items[0]))
    return theirs, dataset(items, M.Compose(chain)).cached_entry(0)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A float64 image and label (nibabel keeps the dtype), and a noisy 3-class label on an LPS grid."""
    from _nifti_files import write

    tmp, rng = tmp_path_factory.mktemp("odd"), np.random.default_rng(3)
    img = rng.normal(size=(30, 28, 16)) * 100
    lab = (rng.random((30, 28, 16)) > 0.7).astype(np.float64)
    noisy = rng.integers(0, 3, (40, 40, 30)).astype(np.uint8)
    return {
        "f64": [{"image": write(tmp / "i.nii.gz", img, affine((1.2, 0.9, 2.0))),
                 "label": write(tmp / "l.nii.gz", lab, affine((1.2, 0.9, 2.0)))}],
        "lps": [{"label": write(tmp / "n.nii.gz", noisy, affine((1.0, 0.75, 1.0), "LPS"))}],
        "sheared": [{"label": write(tmp / "s.nii.gz", noisy, affine((1.0, 0.75, 1.0), shear=0.15))}],
    }  # fmt: skip


def test_float64_files_are_float32_after_loading_as_monai_makes_them(odd_files):
    chain = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS),
             M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))]  # fmt: skip
    theirs, ours = _side_by_side(odd_files["f64"], chain)
    for k in KEYS:
        assert ours[k].dtype == theirs[k].dtype == torch.float32, k
        torch.testing.assert_close(ours[k], theirs[k].as_tensor(), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, None])
def test_scale_intensity_range_gives_the_dtype_asked_as_monai(odd_files, dtype):
    chain = [M.LoadImaged("image"), M.EnsureChannelFirstd("image"),
             M.ScaleIntensityRanged("image", -57, 164, 0.0, 1.0, clip=True, dtype=dtype)]  # fmt: skip
    theirs, ours = _side_by_side(odd_files["f64"], chain)
    assert ours["image"].dtype == theirs["image"].dtype
    torch.testing.assert_close(
        ours["image"].float(), theirs["image"].as_tensor().float(), atol=1e-3, rtol=1e-3
    )


@pytest.mark.parametrize(("case", "padding"), [("lps", "reflection"), ("sheared", "border")])
def test_nearest_labels_on_the_grid_path_round_ties_as_monai(odd_files, case, padding):
    """The grid path (reflection padding, a sheared grid) samples in float64, MONAI's precision."""
    chain = [M.LoadImaged("label"), M.EnsureChannelFirstd("label"),
             M.Spacingd("label", pixdim=(1.5, 1.5, 2.0), mode="nearest", padding_mode=padding)]  # fmt: skip
    theirs, ours = _side_by_side(odd_files[case], chain)
    assert torch.equal(ours["label"].float(), theirs["label"].as_tensor())


def test_spacing_with_another_precision_stays_monai(odd_files):
    s = M.Spacingd("label", pixdim=(1.5, 1.5, 2.0), mode="nearest", dtype=torch.float32)
    out, reason = translate(s, Context())
    assert out is s and "precision" in reason


def test_standalone_pad_moves_the_origin_and_no_channel_adds_one(odd_files):
    chain = [M.LoadImaged("image"), M.EnsureChannelFirstd("image", channel_dim="no_channel"),
             M.SpatialPadd("image", (40, 36, 20))]  # fmt: skip
    theirs, ours = _side_by_side(odd_files["f64"], chain)
    assert ours["image"].shape == theirs["image"].shape == (1, 40, 36, 20)
    np.testing.assert_allclose(
        ours["image_meta_dict"]["affine"].numpy(), theirs["image"].affine.numpy(), atol=1e-6
    )


def test_a_lazy_monai_compose_is_cached_as_monai_caches_it(files):
    from monai.data import CacheDataset as MonaiCache

    def chain():
        return M.Compose(
            [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS), M.Orientationd(KEYS, axcodes="RAS"),
             M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0)), M.Spacingd(KEYS, pixdim=(2.3, 2.3, 2.3)),
             M.RandFlipd(KEYS, prob=0.5, spatial_axis=0)],
            lazy=True,
        )  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MonaiCache(files[:1], chain(), progress=False)._cache[0]
    ds = dataset(files[:1], chain())
    ours = ds.cached_entry(0)
    assert [s.name for s in ds.plan.steps] == ["MonaiComposeRange", "MonaiComposeRange"]  # kept whole
    torch.testing.assert_close(torch.as_tensor(ours["image"]), theirs["image"].as_tensor())
    assert ds[0]["image"].shape == theirs["image"].shape


# --- loading and metadata as MONAI's reader and EnsureChannelFirstd give them -----------------------------


def _monai_and_ours(items, chain):
    from monai.data import CacheDataset as MonaiCache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MonaiCache(items, chain(), progress=False)._cache
    ds = dataset(items, chain())
    return [ds.cached_entry(i) for i in range(len(items))], theirs


def test_an_sform_that_disagrees_with_pixdim_gives_way_to_the_qform_as_in_monai(tmp_path):
    import nibabel as nib
    from _nifti_files import phantom

    q = affine((0.8, 0.8, 2.5), "LPS")
    s = q.copy()
    s[:3, :3] *= 1.25  # the sform's voxel sizes disagree with pixdim; the qform's agree
    img = nib.Nifti1Image(phantom((40, 36, 16))[0], None)
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)
    nib.save(img, tmp_path / "i.nii.gz")
    items = [{"image": str(tmp_path / "i.nii.gz")}]
    ours, theirs = _monai_and_ours(
        items, lambda: M.Compose([M.LoadImaged("image"), M.EnsureChannelFirstd("image")])
    )
    np.testing.assert_allclose(
        ours[0]["image_meta_dict"]["affine"].numpy(), np.asarray(theirs[0]["image"].affine), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(theirs[0]["image"].affine)[:3, :3], q[:3, :3], atol=1e-5)


def test_a_4d_file_after_a_3d_one_and_its_channel_axis_as_in_monai(tmp_path):
    from _nifti_files import write

    rng = np.random.default_rng(0)
    items = [
        {"image": write(tmp_path / "a.nii.gz", rng.normal(size=(20, 18, 8)).astype(np.float32), affine((1.0, 1.0, 2.0)))},
        {"image": write(tmp_path / "b.nii.gz", rng.normal(size=(20, 18, 8, 2)).astype(np.float32), affine((1.0, 1.0, 2.0)))},
    ]  # fmt: skip

    def chain():
        return M.Compose(
            [M.LoadImaged("image"), M.EnsureChannelFirstd("image"), M.Orientationd("image", axcodes="RAS")]
        )

    ours, theirs = _monai_and_ours(items, chain)
    for o, t in zip(ours, theirs, strict=True):
        assert tuple(o["image"].shape) == tuple(t["image"].shape)
        torch.testing.assert_close(torch.as_tensor(o["image"]), t["image"].as_tensor())


def test_a_users_subclass_of_a_monai_transform_is_cached_and_gets_metatensors(files):
    from monai.data import MetaTensor
    from monai.transforms import MapTransform

    seen = []

    class Record(MapTransform):  # a user's own deterministic MONAI transform
        def __call__(self, d):
            seen.append((type(d["image"]), d["image"].dtype))
            return d

    ds = dataset(files[:1], M.Compose([M.LoadImaged(KEYS), Record("image"), M.EnsureChannelFirstd(KEYS)]))
    assert {s.name: s.stage for s in ds.plan.steps}["Record"] == "cached"
    assert seen == [(MetaTensor, torch.float32)]
    ds[0]
    assert len(seen) == 1  # cached: not run again on a read


@pytest.fixture(scope="module")
def native_files(tmp_path_factory):
    """A scaled int16 image (nibabel: float64) and a uint16 label (MONAI: int32) on an LPS grid."""
    import nibabel as nib

    tmp, rng = tmp_path_factory.mktemp("native"), np.random.default_rng(4)
    img = nib.Nifti1Image(
        rng.integers(-500, 500, (20, 18, 10)).astype(np.int16), affine((0.8, 0.8, 2.5), "LPS")
    )
    img.header["scl_slope"], img.header["scl_inter"] = 0.1, 0.3
    nib.save(img, str(tmp / "i.nii.gz"))
    lab = nib.Nifti1Image(rng.integers(0, 3, (20, 18, 10)).astype(np.uint16), affine((0.8, 0.8, 2.5), "LPS"))
    nib.save(lab, str(tmp / "l.nii.gz"))
    return [{"image": str(tmp / "i.nii.gz"), "label": str(tmp / "l.nii.gz")}]


def test_load_with_dtype_none_gives_monais_dtypes_through_the_chain(native_files):
    """MONAI's ``LoadImaged(dtype=None)`` keeps nibabel's float64 for a scaled volume and makes uint16
    int32; the translated chain gave float32 (other values) and uint16."""
    chain = [M.LoadImaged(KEYS, dtype=None), M.EnsureChannelFirstd(KEYS), M.Orientationd(KEYS, axcodes="RAS")]
    theirs, ours = _side_by_side(native_files, chain)
    for k in KEYS:
        assert ours[k].dtype == theirs[k].dtype, k
        assert torch.equal(ours[k], theirs[k].as_tensor()), k
    default = dataset(native_files, M.Compose([M.LoadImaged(KEYS), *chain[1:]])).cached_entry(0)
    assert default["image"].dtype == default["label"].dtype == torch.float32  # MONAI's default: unchanged
    chain.append(M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")))
    theirs, ours = _side_by_side(native_files, chain)
    assert ours["image"].dtype == theirs["image"].dtype == torch.float32
    torch.testing.assert_close(ours["image"], theirs["image"].as_tensor(), atol=1e-4, rtol=1e-5)
    assert ours["label"].dtype == torch.int32  # fastpipe's rule: nearest keeps an integer label's dtype
    assert torch.equal(ours["label"].float(), theirs["label"].as_tensor())


def test_a_float64_label_resampled_nearest_is_float32_as_monai(odd_files):
    """With ``LoadImaged(dtype=None)`` a float64 label reached ``Spacingd(mode="nearest")`` as float64
    and stayed float64 (MONAI: float32, other values)."""
    chain = [M.LoadImaged(KEYS, dtype=None), M.EnsureChannelFirstd(KEYS),
             M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))]  # fmt: skip
    theirs, ours = _side_by_side(odd_files["f64"], chain)
    assert ours["label"].dtype == theirs["label"].dtype == torch.float32
    assert torch.equal(ours["label"], theirs["label"].as_tensor())


@pytest.mark.timeout(120)
def test_pixdim_after_each_step_is_monais_and_a_monai_step_cannot_change_the_cache(tmp_path):
    """``{key}_meta_dict["pixdim"]`` was a 3-tuple (``pixdim[1:4]`` gave wrong numbers): it is MONAI's
    8 values after loading, reorienting (a permuted grid) and resampling; a MONAI step after the cache
    that writes ``meta["pixdim"]`` in place (RandZoomd) must not change the cached entry's."""
    from _nifti_files import write

    aff = np.zeros((4, 4))
    aff[0, 1], aff[1, 0], aff[2, 2], aff[3, 3] = -0.9, 0.8, -2.5, 1.0
    data = np.zeros((20, 18, 10), np.int16)
    data[5:15, 4:12, 2:8] = 100
    items = [{"image": write(tmp_path / "p.nii.gz", data, aff, pixdim=[1, 0.9, 0.8, 2.5, 2.5, 7, 8, 9])}]
    steps = [M.LoadImaged("image"), M.EnsureChannelFirstd("image"), M.Orientationd("image", axcodes="RAS"),
             M.Spacingd("image", pixdim=(1.5, 1.3, 2.0)), M.CropForegroundd("image", source_key="image")]  # fmt: skip
    flip = M.Flipd("image", spatial_axis=0)  # MONAI's own step inside the prefix: bridged both ways
    for chain in (steps[:1], steps[:3], steps[:4], steps, [*steps[:4], flip, steps[4]]):
        theirs, ours = _side_by_side(items, chain)
        got, want = ours["image_meta_dict"]["pixdim"], theirs["image"].meta["pixdim"]
        assert got.dtype == want.dtype and np.array_equal(got, want), (chain[-1], got, want)
    zoom = M.RandZoomd("image", prob=1.0, min_zoom=1.5, max_zoom=1.5, keep_size=False)
    theirs, _ = _side_by_side(items, [*steps[:2], zoom])
    ds = dataset(items, M.Compose([*steps[:2], zoom]))
    before = ds.cached_entry(0)["image"].meta["pixdim"].copy()
    for _ in range(2):
        assert np.array_equal(ds[0]["image"].meta["pixdim"], theirs["image"].meta["pixdim"])
    assert np.array_equal(ds.cached_entry(0)["image"].meta["pixdim"], before)


@pytest.mark.timeout(120)
def test_monai_invertd_on_a_translated_item_fails_loudly_instead_of_skipping_it(files):
    """fastpipe's translated transforms record no MONAI applied_operations: MONAI's Invertd only warned
    ("transform info ... not available") and returned the prediction uninverted (still in the cropped,
    resampled space). Now the item carries MONAI's trace key and the inverse raises, naming the fix;
    with translate=False MONAI's own chain runs and Invertd restores the original shape."""
    from monai.data import decollate_batch, list_data_collate

    def chain() -> M.Compose:
        return M.Compose(monai_prefix()[:4] + [M.CropForegroundd(KEYS, source_key="image", margin=1)])

    for translate_ in (True, False):
        c = chain()
        ds = dataset(files[:1], c, translate=translate_)
        batch = list_data_collate([ds[0]])
        batch["pred"] = batch["image"] * 1.0
        invert = M.Invertd("pred", transform=c, orig_keys="image", nearest_interp=False)
        item = decollate_batch(batch)[0]
        if translate_:
            with pytest.raises(RuntimeError) as info:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    invert(item)
            chained = f"{info.value} {info.value.__cause__}"
            assert "translate=False" in chained and "fastpipe" in chained
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = invert(item)
            assert tuple(out["pred"].shape[1:]) == tuple(int(s) for s in out["pred"].meta["spatial_shape"])
    native = T.CropForegroundd("image", source_key="image")({"image": torch.ones(1, 4, 4, 4)})
    assert "image_transforms" not in native  # native fastpipe transforms add no MONAI keys


@pytest.mark.timeout(120)
def test_monai_steps_bridged_in_a_translated_chain_keep_their_trace_for_invertd(files):
    """An untranslated MONAI step's applied_operations were dropped where fastpipe's bridge turned the
    MetaTensor back into a plain tensor: Invertd warned and left the prediction uninverted. The trace
    now goes to MONAI's ``{key}_transforms`` key and Invertd undoes the step as with translate=False."""
    from monai.data import decollate_batch, list_data_collate

    def chain() -> M.Compose:
        return M.Compose([
            M.LoadImaged("image"), M.EnsureChannelFirstd("image"),
            M.Spacingd("image", pixdim=(1.5, 1.5, 2.0), scale_extent=True),  # untranslated
            M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        ])  # fmt: skip

    out = {}
    for translate_ in (True, False):
        c = chain()
        batch = list_data_collate([dataset(files[:1], c, translate=translate_)[0]])
        batch["pred"] = batch["image"] * 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            item = M.Invertd("pred", transform=c, orig_keys="image", nearest_interp=False)(
                decollate_batch(batch)[0]
            )
        out[translate_] = item["pred"]
    assert out[True].shape == out[False].shape
    torch.testing.assert_close(torch.as_tensor(out[True]), torch.as_tensor(out[False]), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.as_tensor(out[True].affine), torch.as_tensor(out[False].affine))


@pytest.mark.timeout(120)
def test_select_delete_copy_items_keep_the_trace_with_its_tensor(files):
    """MONAI's MetaTensor carries its applied_operations through SelectItemsd/DeleteItemsd/CopyItemsd;
    fastpipe's dict ops kept the ``{key}_meta_dict`` but dropped ``{key}_transforms``, so a chain ending
    in SelectItemsd gave Invertd no trace again: a warning and the prediction left uninverted."""
    from monai.data import decollate_batch, list_data_collate

    from fastpipe.transforms._dict_ops import CopyItemsd, DeleteItemsd, SelectItemsd

    trace = [{"class": "X", "id": 1}]
    d = {"image": torch.zeros(1), "image_meta_dict": {}, "image_transforms": trace, "label": torch.ones(1)}
    assert SelectItemsd("image")(d)["image_transforms"] is trace
    assert DeleteItemsd("label")(d)["image_transforms"] is trace
    copied = CopyItemsd("image", 1, ["image2"])(d)
    assert copied["image2_transforms"] == trace and copied["image2_transforms"] is not trace

    c = M.Compose(monai_prefix()[:4] + [M.SelectItemsd(KEYS)])
    batch = list_data_collate([dataset(files[:1], c)[0]])
    batch["pred"] = batch["image"] * 1.0
    with pytest.raises(RuntimeError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        M.Invertd("pred", transform=c, orig_keys="image", nearest_interp=False)(decollate_batch(batch)[0])
    assert "translate=False" in f"{info.value} {info.value.__cause__}"


@pytest.mark.parametrize(
    "opts", [{"simple_keys": True}, {"prune_meta_pattern": ".*_code$", "prune_meta_sep": " "}]
)
def test_load_that_prunes_metadata_keys_stays_monai(files, opts):
    """MONAI's ``simple_keys``/``prune_meta_pattern`` remove metadata keys (``pixdim``, ``dim``, the
    ``*_code`` fields, ...); the translator ignored them, so the translated chain's metadata kept keys
    the user had asked MONAI to drop. They are refused now (MONAI's loader is kept, with the reason)."""
    obj = M.LoadImaged(KEYS, **opts)
    out, reason = translate(obj, Context(items=files))
    assert out is obj and "simple_keys/prune_meta_pattern" in reason


@pytest.mark.parametrize(
    ("shape", "load", "channel"),
    [
        ((8, 8, 6, 1), {}, None),  # no EnsureChannelFirstd: MONAI keeps (X, Y, Z, 1)
        ((8, 8, 6, 1), {}, "no_channel"),  # MONAI: (1, X, Y, Z, 1)
        ((8, 8, 6, 1, 1), {}, {}),  # a 5D file: MONAI's channel is the last singleton
        ((8, 8, 6, 1, 1), {"ensure_channel_first": True}, None),
        ((8, 8, 6), {"ensure_channel_first": True}, {}),  # MONAI adds a second channel axis
        ((8, 8, 6, 1), {"ensure_channel_first": True}, {}),  # MONAI moves Z first
        ((8, 8, 6, 1), {}, {}),  # these two are fastpipe's and MONAI's alike
        ((8, 8, 6, 1), {"ensure_channel_first": True}, None),
    ],
)
def test_files_with_trailing_singleton_axes_and_channel_steps_give_monais_shape(
    tmp_path, shape, load, channel
):
    from _nifti_files import write

    path = write(tmp_path / "x.nii.gz", np.arange(np.prod(shape), dtype=np.int16).reshape(shape), affine())
    chain = [M.LoadImaged("image", **load)]
    if channel is not None:
        chain.append(
            M.EnsureChannelFirstd("image", **({"channel_dim": channel} if isinstance(channel, str) else {}))
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = M.Compose(chain)({"image": path})["image"]
    ours = dataset([{"image": path}], M.Compose(chain))[0]["image"]
    assert tuple(ours.shape) == tuple(theirs.shape)
    torch.testing.assert_close(torch.as_tensor(ours).float(), theirs.as_tensor().float())


class ScaleIntensityRanged(M.ScaleIntensityRanged):  # a user's variant under MONAI's name
    def __call__(self, d):
        d = super().__call__(d)
        d["image"] = d["image"] * 0 + 42
        return d


class RandFlipd(M.RandFlipd):  # a user's variant: always flips
    def randomize(self, data=None):
        super().randomize(data)
        self._do_transform = True


def test_a_users_subclass_under_monais_class_name_keeps_its_own_behaviour(files):
    chain = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS)]
    scale = ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0)
    ds = dataset(files[:1], M.Compose([*chain, scale, RandFlipd(KEYS, prob=0.0, spatial_axis=0)]))
    assert ds.plan.swapped == ["LoadImaged", "EnsureChannelFirstd"]
    assert "is not MONAI's own ScaleIntensityRanged" in ds.describe()
    plain = dataset(files[:1], M.Compose(chain)).cached_entry(0)["label"]
    out = ds[0]
    assert bool((torch.as_tensor(out["image"]) == 42).all())
    assert torch.equal(torch.as_tensor(out["label"]).float(), torch.as_tensor(plain).float().flip(1))


@pytest.mark.parametrize(
    "step",
    [
        M.ScaleIntensityRanged("image", a_min=-100, a_max=100, b_min=0.0, b_max=1.0),
        M.CropForegroundd(KEYS, "label"),
        M.Spacingd(KEYS, pixdim=1.5),
        M.Orientationd(KEYS, axcodes="RAS"),
        M.FgBgToIndicesd("label"),
        M.CastToTyped(KEYS, dtype=np.float16),
        M.EnsureChannelFirstd(KEYS, channel_dim="no_channel"),
    ],
    ids=lambda s: type(s).__name__,
)
@pytest.mark.parametrize("to_numpy", ["EnsureTyped", "ToNumpyd"])
def test_steps_after_ensure_typed_numpy_get_and_give_numpy_arrays_as_in_monai(files, step, to_numpy):
    arrays = M.EnsureTyped(KEYS, data_type="numpy") if to_numpy == "EnsureTyped" else M.ToNumpyd(KEYS)
    chain = [M.LoadImaged(KEYS), M.EnsureChannelFirstd(KEYS), arrays, step]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = M.Compose(chain)(dict(files[0]))
    ds = dataset(files[:1], M.Compose(chain))
    ours = ds.cached_entry(0)
    kept = [s for s in ds.plan.steps if s.pos == 4]
    assert kept[0].origin == "MONAI" and "hold numpy arrays" in kept[0].note
    for k, v in theirs.items():
        if isinstance(v, (np.ndarray, torch.Tensor)):
            assert (
                type(ours[k]) is type(v) or isinstance(v, torch.Tensor) and isinstance(ours[k], torch.Tensor)
            ), k
            np.testing.assert_allclose(
                np.asarray(torch.as_tensor(ours[k])), np.asarray(torch.as_tensor(v)), atol=1e-4
            )


@pytest.mark.parametrize(
    "step",
    [
        M.ScaleIntensityRanged("image", a_min=-1, a_max=1, b_min=0.0, b_max=1.0),
        M.CropForegroundd(KEYS, "label"),
        M.EnsureChannelFirstd(KEYS, channel_dim=0),
        M.FgBgToIndicesd("label"),
        M.CastToTyped(KEYS, dtype=np.float16),
    ],
    ids=lambda s: type(s).__name__,
)
def test_items_holding_numpy_arrays_go_through_monais_steps_as_in_monai(step):
    rng = np.random.default_rng(0)
    items = [{"image": rng.normal(size=(1, 12, 10, 8)).astype(np.float32),
              "label": (rng.random((1, 12, 10, 8)) > 0.7).astype(np.float32)}]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = M.Compose([step])(dict(items[0]))
    ds = dataset(items, M.Compose([step]))
    ours = ds.cached_entry(0)
    assert ds.plan.swapped == [] and "hold numpy arrays" in ds.describe()
    for k, v in theirs.items():
        if isinstance(v, np.ndarray):
            assert isinstance(ours[k], np.ndarray), k
        if isinstance(v, (np.ndarray, torch.Tensor)):
            np.testing.assert_allclose(
                np.asarray(torch.as_tensor(ours[k])), np.asarray(torch.as_tensor(v)), atol=1e-4
            )
