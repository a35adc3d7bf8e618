"""Output dtypes and values of the deterministic and intensity transforms, side by side with MONAI 1.6.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai import transforms as M
from monai.data import MetaTensor

from fastpipe.transforms import Spacingd

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
