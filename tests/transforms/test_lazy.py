"""MONAI transforms made with ``lazy=True`` in a chain handed to fastpipe: MONAI's values and shapes."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import monai.transforms as M
import numpy as np
import pytest
from monai.data import CacheDataset as MonaiCacheDataset

import fastpipe as fp

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_files import KEYS, affine, write_pair  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("lazy")
    return [write_pair(tmp, affine((0.8, 0.8, 2.5), "LPS", angle_deg=20.0), shape=(40, 36, 30), seed=0)]


def steps() -> list:
    return [
        M.LoadImaged(KEYS),
        M.EnsureChannelFirstd(KEYS),
        M.Orientationd(KEYS, axcodes="RAS", lazy=True),
        M.Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"), lazy=True),
        M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
    ]


CHAINS = {
    "list": steps,  # MONAI's CacheDataset wraps it in Compose(lazy=False): each step runs eagerly
    "compose_lazy_false": lambda: M.Compose(steps()),
    "compose_lazy_none": lambda: M.Compose(steps(), lazy=None),  # the steps' own lazy: one resampling
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CHAINS))
def test_lazy_monai_steps_resample_as_in_monais_chain(files, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation chatter
        ours = fp.CacheDataset(files, CHAINS[case](), progress=False, num_workers=1)[0]
        theirs = MonaiCacheDataset(files, CHAINS[case](), progress=False)[0]
    for key in KEYS:
        assert tuple(ours[key].shape) == tuple(theirs[key].shape)
        np.testing.assert_allclose(np.asarray(ours[key], dtype=np.float64), theirs[key].numpy(), atol=1e-5)
        affine_ours = ours[f"{key}_meta_dict"]["affine"] if f"{key}_meta_dict" in ours else ours[key].affine
        np.testing.assert_allclose(np.asarray(affine_ours), theirs[key].affine.numpy(), atol=1e-6)
