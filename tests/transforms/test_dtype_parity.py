"""Output dtypes and values of the deterministic and intensity transforms, side by side with MONAI 1.6.1."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from monai import transforms as M
from monai.data import MetaTensor

from fastpipe.transforms import ScaleIntensityRanged, Spacingd
from fastpipe.transforms._translate import Context, translate

AFFINE = np.diag([1.3, 1.1, 2.0, 1.0])


def _item(img: torch.Tensor, key: str = "image") -> dict:
    return {key: img, f"{key}_meta_dict": {"affine": torch.as_tensor(AFFINE)}}


@pytest.mark.parametrize("dtype", [np.float64, torch.float64, "float64", None, np.float32])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.float64, torch.int16])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("pixdim", [(1.0, 1.0, 1.5), (1.3, 1.1, 2.0)])  # resampled, and unchanged
def test_spacing_returns_float32_whatever_its_dtype(dtype, in_dtype, align_corners, pixdim):
    """``Spacingd(dtype=np.float64)`` returned float64 (twice the cache bytes, another model input) where
    MONAI's ``dtype`` is only the resampling's precision and its output is float32."""
    img = (torch.rand(1, 9, 8, 7, generator=torch.Generator().manual_seed(0)) * 50).to(in_dtype)
    kwargs = dict(pixdim=pixdim, dtype=dtype, align_corners=align_corners)
    ours = Spacingd("image", **kwargs)(_item(img.clone()))["image"]
    theirs = M.Spacingd("image", **kwargs)({"image": MetaTensor(img.clone(), affine=torch.as_tensor(AFFINE))})
    assert ours.dtype == theirs["image"].dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs["image"].numpy(), atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, None])
def test_spacing_nearest_float64_label_is_float32(dtype):
    label = torch.randint(0, 3, (1, 9, 8, 7), generator=torch.Generator().manual_seed(1)).double()
    ours = Spacingd("label", pixdim=(1.0, 1.0, 1.5), mode="nearest", dtype=dtype)(_item(label, "label"))
    assert ours["label"].dtype == torch.float32


BOUNDS = list(itertools.product([-57.0, None], [164.0, None], [0.0, None], [1.0, None], [False, True]))


def _run(cls, bounds, img):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cls("image", *bounds[:4], clip=bounds[4])({"image": img.clone()})["image"]
        except (TypeError, ValueError, RuntimeError) as err:
            return err


@pytest.mark.parametrize("bounds", BOUNDS, ids=str)
def test_scale_intensity_range_with_none_bounds_as_monai(bounds):
    """``clip=True`` with ``b_min=b_max=None`` returned the unclipped values where MONAI raises (torch.clamp
    without bounds); a None ``a_min``/``a_max`` failed with float()'s message naming no argument."""
    img = torch.tensor([[-100.0, 0.0, 53.5, 500.0]])
    theirs, ours = _run(M.ScaleIntensityRanged, bounds, img), _run(ScaleIntensityRanged, bounds, img)
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), ours
        assert "ScaleIntensityRanged: " in str(ours) and ("clip=True" in str(ours) or "a_min=" in str(ours))
    else:
        assert isinstance(ours, torch.Tensor), ours
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_scale_intensity_range_clip_without_bounds_stays_monai():
    """The translator keeps MONAI's object (which raises at the first item, as MONAI's chain does)."""
    obj = M.ScaleIntensityRanged("image", a_min=-57, a_max=164, clip=True)
    out, reason = translate(obj, Context())
    assert out is obj and "clip=True with b_min=None and b_max=None" in reason


# not uint8 with invert: MONAI's -x wraps its voxels, fastpipe computes exactly (documented difference)
INT_CONTRAST = [(d, False) for d in (torch.uint8, torch.int16, torch.int32, torch.int64)] + [
    (d, True) for d in (torch.int16, torch.int32, torch.int64)
]


@pytest.mark.parametrize(("dtype", "invert"), INT_CONTRAST, ids=str)
def test_adjust_contrast_of_integers_is_monais_float32(dtype, invert):
    """MONAI's ``AdjustContrast`` returns float32 for integer voxels; fastpipe's too, with equal values
    wherever MONAI's integer steps do not wrap (uint8 with ``invert_image`` does: documented)."""
    from monai.transforms import AdjustContrast

    from fastpipe.transforms.rand_noise_contrast import adjust_contrast

    lo, hi = (0, 256) if dtype == torch.uint8 else (-1024, 3071)
    img = torch.randint(lo, hi, (1, 6, 5, 4), generator=torch.Generator().manual_seed(2)).to(dtype)
    theirs = AdjustContrast(1.7, invert_image=invert)(img.clone())
    ours = adjust_contrast(img.clone(), 1.7, invert)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs.as_tensor(), rtol=0, atol=0)


def _numpy_cases():
    rng = np.random.default_rng(4)
    base = rng.random((1, 6, 5, 4))
    return {
        "float32": base.astype(np.float32),
        "uint16": (base * 100).astype(np.uint16),
        "reversed": base[:, ::-1],
        "big-endian": (base * 100).astype(">i2"),
    }


@pytest.mark.parametrize("case", ["float32", "uint16", "reversed", "big-endian"])
@pytest.mark.parametrize("name", ["Orientationd", "Spacingd", "ScaleIntensityRanged", "EnsureChannelFirstd"])
def test_numpy_volumes_are_taken_as_monai_takes_them(case, name):
    """A numpy volume in the item (MONAI's transforms take one) crashed with an AttributeError
    ("'numpy.ndarray' object has no attribute 'stride'" / "'unsqueeze'")."""
    import fastpipe.transforms as T

    args = {"Orientationd": ("RAS",), "Spacingd": ((1.0, 1.0, 1.0),), "ScaleIntensityRanged": (0, 1, 0, 2)}
    kwargs = {"channel_dim": "no_channel"} if name == "EnsureChannelFirstd" else {}
    x = _numpy_cases()[case]
    aff = np.diag([-1.0, 1.0, 2.0, 1.0])
    ours = getattr(T, name)("image", *args.get(name, ()), **kwargs)(
        {"image": x.copy(), "image_meta_dict": {"affine": torch.as_tensor(aff)}}
    )["image"]
    native = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    theirs = getattr(M, name)("image", *args.get(name, ()), **kwargs)(
        {
            "image": MetaTensor(
                torch.as_tensor(native.astype(np.int32) if case == "uint16" else native), affine=aff
            )
        }
        if name in ("Orientationd", "Spacingd")
        else {"image": native}
    )["image"]
    assert isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours.double().numpy(), theirs.as_tensor().double().numpy(), atol=1e-6)


def test_a_value_neither_tensor_nor_array_is_named():
    with pytest.raises(
        TypeError, match=r"Spacingd: 'image' is str; expected a tensor or a numeric numpy array"
    ):
        Spacingd("image", pixdim=1.0)({"image": "a.nii.gz"})
