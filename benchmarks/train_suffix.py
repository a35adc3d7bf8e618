"""The tutorial's random suffix (crop, flips, rot90, intensity shift), written once for both libraries.

``RandCropByPosNegLabeld`` then ``RandFlipd`` on each axis (p=0.10), ``RandRotate90d`` (p=0.10,
max_k=3) and ``RandShiftIntensityd`` (offsets 0.10, p=0.50), under MONAI's names in both libraries:
MONAI applies them crop by crop; fastpipe fuses them into the crop's one batched gather.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from benchmarks.train_recipe import KEYS, TrainConfig, crop_args
from benchmarks.workload import tutorial_suffix


def suffix(T: ModuleType, cfg: TrainConfig) -> list[Any]:
    """The crop of ``cfg`` and the tutorial suffix, built from ``monai.transforms`` or ``fastpipe.transforms``."""
    return [T.RandCropByPosNegLabeld(KEYS, **crop_args(cfg)), *tutorial_suffix(T)]


def monai_suffix(cfg: TrainConfig) -> list[Any]:
    """MONAI's transforms, as the tutorial's ``train_transforms`` end."""
    from monai import transforms as M

    return suffix(M, cfg)


def fastpipe_suffix(cfg: TrainConfig) -> list[Any]:
    """fastpipe's transforms of the same names (the dataset fuses them into one batched call)."""
    from fastpipe import transforms as T

    return suffix(T, cfg)
