"""pytest-benchmark microbenchmarks of the deterministic spleen transforms (``make bench-micro``).

One look-alike CT volume (int16 HU, 256x256x80 at 0.8x0.8x2.5 mm, stored L,P,S like MSD) and its
label; each benchmark times one transform on the output of the steps before it, as the chain runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpipe.datasets.synth import write_nifti_gz
from fastpipe.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    FgBgToIndicesd,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

KEYS = ["image", "label"]
SHAPE, SPACING = (256, 256, 80), (0.8, 0.8, 2.5)


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    img = np.where(body, 40 + rng.normal(0, 15, SHAPE), -1000).astype(np.int16)
    lab = (((x - 0.3) / 0.2) ** 2 + ((y + 0.2) / 0.15) ** 2 + (z / 0.4) ** 2 < 1).astype(np.uint8)
    aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    paths = {}
    for key, arr in (("image", img), ("label", lab)):
        paths[key] = str(root / f"{key}.nii.gz")
        write_nifti_gz(paths[key], arr.transpose(2, 1, 0), aff, SPACING)
    return paths


def _steps():
    return [
        LoadImaged(KEYS),
        EnsureChannelFirstd(KEYS),
        Orientationd(KEYS, axcodes="RAS"),
        Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(KEYS, source_key="image", allow_smaller=True),
        FgBgToIndicesd("label"),
    ]


@pytest.mark.parametrize("step", range(7), ids=[type(t).__name__ for t in _steps()])
def test_transform(benchmark, item, step):
    steps = _steps()
    before = Compose(steps[:step])(dict(item)) if step else dict(item)
    out = benchmark(steps[step], before)
    assert isinstance(out, dict) and torch.is_tensor(out["image"])


def test_orientation_spacing_fused(benchmark, item):
    steps = _steps()
    before = Compose(steps[:2])(dict(item))
    fused = Compose(steps[2:4])
    out = benchmark(fused, before)
    assert out["image"].dtype == torch.float32
