"""ScaleIntensityRanged, CropForegroundd, FgBgToIndicesd against MONAI's array transforms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.transforms import CropForeground, ScaleIntensityRange
from monai.transforms.utils import map_binary_to_indices

from fastpipe.transforms import CropForegroundd, FgBgToIndicesd, ScaleIntensityRanged


def vol(device, seed=0, shape=(1, 24, 20, 16)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 100, shape).astype(np.float32)).to(device)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("b", [(0.0, 1.0), (None, None), (-1.0, 2.0)])
def test_scale_intensity_range_matches_monai(device, clip, b):
    img = vol(device)
    if clip and b[0] is None:  # MONAI raises here (torch.clamp(None, None)); so does fastpipe, naming why
        with pytest.raises((TypeError, RuntimeError)):
            ScaleIntensityRange(a_min=-57, a_max=164, b_min=None, b_max=None, clip=True)(img.cpu())
        with pytest.raises(ValueError, match="clip=True with b_min=None and b_max=None"):
            ScaleIntensityRanged("image", a_min=-57, a_max=164, clip=True)
        return
    ours = ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=b[0], b_max=b[1], clip=clip)(
        {"image": img}
    )["image"]
    ref = ScaleIntensityRange(a_min=-57, a_max=164, b_min=b[0], b_max=b[1], clip=clip)(img.cpu())
    assert ours.device == img.device and ours.dtype == torch.float32
    torch.testing.assert_close(ours.cpu(), torch.as_tensor(ref).float(), atol=1e-6, rtol=1e-5)


def test_scale_int_input_and_layout_kept():
    img = torch.arange(-100, 140, dtype=torch.int16).view(1, 4, 6, 10).permute(0, 3, 2, 1)
    out = ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True)(
        {"image": img}
    )["image"]
    assert out.dtype == torch.float32 and out.stride() == img.stride()
    torch.testing.assert_close(out, ((img.float() + 57) / 221).clamp(0, 1))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize(("b", "clip"), [((0.0, 1.0), True), ((0.0, 1000.0), False), ((-5.0, 300.0), True)])
def test_dtype_none_on_integer_voxels_gives_monais_values(dtype, b, clip):
    """``dtype=None`` keeps integer voxels integer, as MONAI: its result is the float32 one truncated;
    fastpipe truncated after the multiply (values off by up to ~100) and crashed when clipping."""
    img = torch.arange(-200, 280, dtype=dtype).view(1, 8, 6, 10).permute(0, 3, 2, 1)
    t = ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=b[0], b_max=b[1], clip=clip, dtype=None)
    ours = t({"image": img})["image"]
    ref = ScaleIntensityRange(a_min=-57, a_max=164, b_min=b[0], b_max=b[1], clip=clip, dtype=None)(img)
    assert ours.dtype == torch.as_tensor(ref).dtype == dtype and ours.stride() == img.stride()
    assert torch.equal(ours, torch.as_tensor(ref))


@pytest.mark.parametrize(("dtype", "want"), [(np.float32, torch.float32), ("float16", torch.float16)])
def test_scale_takes_monais_numpy_dtype(dtype, want):
    """``dtype=np.float32`` (MONAI's default, spelled out) crashed at the first item in ``alloc``."""
    img = torch.arange(-100, 140, dtype=torch.int16).view(1, 4, 6, 10)
    kw = {"a_min": -57, "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True}
    ours = ScaleIntensityRanged("image", dtype=dtype, **kw)({"image": img})["image"]
    assert ours.dtype == want
    assert torch.equal(ours, ScaleIntensityRanged("image", dtype=want, **kw)({"image": img})["image"])
    with pytest.raises(TypeError, match=r"ScaleIntensityRanged: dtype='nonsense' is no torch or numpy"):
        ScaleIntensityRanged("image", dtype="nonsense", **kw)


@pytest.mark.parametrize(
    ("src", "dtype"),
    [
        (torch.float16, None),  # LoadImaged(dtype=np.float16) to halve the cache, then the window
        (torch.float16, torch.float32),
        (torch.float16, torch.int16),
        (torch.bfloat16, None),
        (torch.float32, torch.float16),
        (torch.float32, torch.int16),
        (torch.int16, torch.uint8),
    ],
)
def test_half_precision_or_integer_output_gives_monais_values(src, dtype):
    """MONAI computes step by step in the input's dtype, then casts: from float16 voxels its result is
    float16-rounded at each step. fastpipe's one float32 multiply-add gave other values: ~1 in 4
    voxels one float16 ulp off, and with an integer ``dtype`` (a truncating cast) 1 in 50 one unit off."""
    img = torch.linspace(-200, 300, 5002).to(src).view(1, 41, 61, 2).permute(0, 3, 2, 1)
    for b_max in (1.0, 255.0):
        t = ScaleIntensityRanged(
            "image", a_min=-57, a_max=164, b_min=0.0, b_max=b_max, clip=True, dtype=dtype
        )
        ours = t({"image": img})["image"]
        ref = torch.as_tensor(ScaleIntensityRange(-57, 164, 0.0, b_max, clip=True, dtype=dtype)(img))
        assert ours.dtype == ref.dtype and ours.stride() == img.stride()
        assert torch.equal(ours, ref), (ours != ref).sum().item()


@pytest.mark.parametrize("src", [torch.int16, torch.float32, torch.float64])
@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float64])
@pytest.mark.parametrize("b_min", [None, 0.25])
def test_equal_a_min_a_max_only_shifts_as_monai(src, dtype, b_min):
    """MONAI shifts by ``b_min - a_min`` in the promoted dtype (``dtype`` not applied); fastpipe crashed
    on integer voxels with ``dtype=None`` and cast to ``dtype`` otherwise."""
    img = torch.arange(-100, 140).view(1, 4, 6, 10).to(src)
    with pytest.warns(UserWarning, match="a_min == a_max"):
        t = ScaleIntensityRanged("image", a_min=-57.0, a_max=-57.0, b_min=b_min, b_max=1.0, dtype=dtype)
    ours = t({"image": img})["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.as_tensor(
            ScaleIntensityRange(a_min=-57.0, a_max=-57.0, b_min=b_min, b_max=1.0, dtype=dtype)(img)
        )
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)


def test_crop_box_affine_and_contiguity(device):
    img = torch.zeros(1, 30, 20, 10, device=device)
    img[0, 5:12, 3:9, 2:8] = 1.0
    lab = (img > 0).to(torch.uint8)
    aff = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    d = {"image": img.permute(0, 1, 2, 3), "label": lab, "image_meta_dict": {"affine": aff}}
    out = CropForegroundd(["image", "label"], source_key="image")(d)
    assert out["image"].shape == out["label"].shape == (1, 7, 6, 6)
    assert out["image"].is_contiguous() and out["label"].dtype == torch.uint8
    assert out["foreground_start_coord"].tolist() == [5, 3, 2] and out["foreground_end_coord"].tolist() == [
        12,
        9,
        8,
    ]
    np.testing.assert_allclose(out["image_meta_dict"]["affine"][:3, 3].numpy(), [10.0, 6.0, 6.0])
    assert d["image_meta_dict"]["affine"][0, 3] == 0  # input meta untouched


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(margin=2),
        dict(margin=(1, 5, 0), allow_smaller=False),
        dict(k_divisible=4),
        dict(select_fn=lambda x: x > 50),
    ],
)
def test_crop_matches_monai(kwargs):
    img = vol("cpu", 3)
    img[:, :4] = -10  # background slab so the box is not the whole volume
    ours = CropForegroundd(
        "image", source_key="image", allow_smaller=kwargs.pop("allow_smaller", True), **kwargs
    )
    ref = CropForeground(allow_smaller=ours.allow_smaller, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.as_tensor(ref(img))
    got = ours({"image": img})["image"]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


def test_crop_default_allow_smaller_is_monais():
    """MONAI 1.5+ defaults to allow_smaller=False: a margin past the edge is zero-padded, not clamped."""
    from monai.transforms import CropForegroundd as MonaiCropForegroundd

    img = torch.zeros(1, 10, 10, 10)
    img[0, 0:3, 4:6, 7:10] = 1.0
    ours = CropForegroundd("image", source_key="image", margin=2)
    ref = MonaiCropForegroundd("image", source_key="image", margin=2)
    assert ours.allow_smaller is ref.cropper.allow_smaller is False
    got, expected = ours({"image": img}), ref({"image": img})
    assert tuple(got["image"].shape) == tuple(expected["image"].shape) == (1, 7, 6, 7)
    torch.testing.assert_close(got["image"], expected["image"].as_tensor())
    assert got["foreground_start_coord"].tolist() == expected["foreground_start_coord"].tolist() == [-2, 2, 5]


def test_crop_empty_foreground_warns():
    with pytest.warns(UserWarning, match="no foreground"):
        out = CropForegroundd("image", source_key="image")({"image": -torch.ones(1, 5, 5, 5)})
    assert out["image"].numel() == 0


@pytest.mark.parametrize("shape", [(1, 0, 0, 0), (1, 0, 5, 5), (2, 5, 0, 5)])
def test_crop_of_an_empty_volume_is_empty_as_monai(shape):
    """An empty volume (a scan with no voxel above 0 cropped once already) raised numpy's "zero-size array
    to reduction operation maximum which has no identity"; MONAI finds no foreground: an empty crop."""
    img = torch.zeros(shape)
    with pytest.warns(UserWarning, match="no foreground"):
        out = CropForegroundd("image", source_key="image")({"image": img})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CropForeground()(img)
    assert tuple(out["image"].shape) == tuple(ref.shape) == (shape[0], 0, 0, 0)


def test_fg_bg_indices_one_hot_label_skips_background_channel():
    lab = torch.zeros(3, 2, 2, 2, dtype=torch.uint8)
    lab[0] = 1  # background channel, everywhere
    lab[2, 1, 1, 1] = 1
    out = FgBgToIndicesd("label")({"label": lab})
    assert out["label_fg_indices"].tolist() == [7] and len(out["label_bg_indices"]) == 7


def test_fg_bg_indices_small_example():
    lab = torch.tensor([[[[0, 1], [1, 0]], [[0, 0], [2, 0]]]], dtype=torch.uint8)  # (1, 2, 2, 2)
    d = FgBgToIndicesd("label")({"label": lab})
    assert d["label_fg_indices"].tolist() == [1, 2, 6] and d["label_bg_indices"].tolist() == [0, 3, 4, 5, 7]
    assert d["label_fg_indices"].dtype == torch.int64


@pytest.mark.parametrize("with_image", [False, True])
def test_fg_bg_indices_match_monai(device, with_image):
    rng = np.random.default_rng(4)
    lab = torch.from_numpy(rng.integers(0, 3, (1, 20, 18, 14)).astype(np.uint8))
    img = vol("cpu", 5, (1, 20, 18, 14))
    layout = lab.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)  # F-order, like a NIfTI volume
    d = {"label": layout.to(device), "image": img.to(device)}
    out = FgBgToIndicesd("label", image_key="image" if with_image else None, image_threshold=10.0)(d)
    # MONAI gets a float label, as its LoadImaged gives: for a uint8 tensor its `~any(label)` is a
    # bitwise not of uint8 and every voxel becomes background
    fg, bg = map_binary_to_indices(lab.float(), img if with_image else None, 10.0)
    assert out["label_fg_indices"].device.type == device.type
    np.testing.assert_array_equal(out["label_fg_indices"].cpu().numpy(), np.asarray(fg))
    np.testing.assert_array_equal(out["label_bg_indices"].cpu().numpy(), np.asarray(bg))


def test_bfloat16_label_and_image_give_monai_indices():
    rng = np.random.default_rng(5)
    lab = torch.from_numpy(rng.integers(0, 2, (1, 6, 5, 4)).astype(np.float32))
    img = torch.from_numpy(rng.normal(size=(1, 6, 5, 4)).astype(np.float32))
    out = FgBgToIndicesd("label", image_key="image", image_threshold=0.25)(
        {"label": lab.bfloat16(), "image": img.bfloat16()}
    )
    fg, bg = map_binary_to_indices(lab.bfloat16(), img.bfloat16(), 0.25)
    np.testing.assert_array_equal(out["label_fg_indices"].numpy(), np.asarray(fg))
    np.testing.assert_array_equal(out["label_bg_indices"].numpy(), np.asarray(bg))


@pytest.mark.parametrize("with_image", [False, True])
def test_numpy_label_and_image_give_monai_indices_and_stay_numpy(with_image):
    """MONAI takes numpy volumes; numpy 2's ``ndarray.device`` is the string "cpu", and the device check
    read ``.device.type`` of it (AttributeError: 'str' object has no attribute 'type')."""
    rng = np.random.default_rng(6)
    lab = rng.integers(0, 2, (1, 6, 5, 4)).astype(np.float32)
    img = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
    out = FgBgToIndicesd("label", image_key="image" if with_image else None, image_threshold=0.25)(
        {"label": lab, "image": img}
    )
    fg, bg = map_binary_to_indices(lab, img if with_image else None, 0.25)
    np.testing.assert_array_equal(np.asarray(out["label_fg_indices"]), fg)
    np.testing.assert_array_equal(np.asarray(out["label_bg_indices"]), bg)
    assert out["label"] is lab and out["image"] is img  # the item's arrays are left as they are


def test_image_of_another_shape_is_named():
    """MONAI raises on an image whose shape differs from the label's; fastpipe raised numpy's
    "operands could not be broadcast together", naming neither key."""
    d = {"label": torch.zeros(1, 6, 5, 4), "image": torch.zeros(1, 6, 5, 3)}
    with pytest.raises(
        ValueError, match=r"image 'image' has spatial shape \(6, 5, 3\), label 'label' \(6, 5, 4\)"
    ):
        FgBgToIndicesd("label", image_key="image")(d)


@pytest.mark.parametrize("where", [(2, 0, 0), (0, 2, 7), (5, 7, 5)])
def test_crop_box_with_a_nan_voxel_is_monais(device, where):
    """The fast ``x > 0`` box took per-row maxima, and a NaN voxel made its whole row's max NaN (not
    > 0): the box lost that slice (start 3 instead of 2: foreground cut off) where MONAI's voxel-wise
    ``x > 0`` still counts the row's other voxels."""
    img = torch.zeros(1, 8, 8, 8, device=device)
    img[0, 2:6, 2:6, 2:6] = 1.0
    img[(0, *where)] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CropForeground()(img.cpu())
    got = CropForegroundd("image", source_key="image")({"image": img})
    assert got["foreground_start_coord"].tolist() == [2, 2, 2]
    assert got["foreground_end_coord"].tolist() == [6, 6, 6]
    assert tuple(got["image"].shape) == tuple(ref.shape)
