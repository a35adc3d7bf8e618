"""Dictionary transforms with MONAI's names and keyword arguments."""

from fastpipe.transforms.channel import EnsureChannelFirstd
from fastpipe.transforms.compose import (
    Compose,
    apply_transform,
    flatten,
    is_random,
    mark_deterministic,
    mark_random,
    split_chain,
)
from fastpipe.transforms.crop import CropForegroundd
from fastpipe.transforms.indices import FgBgToIndicesd
from fastpipe.transforms.intensity import ScaleIntensityRanged
from fastpipe.transforms.io import LoadImaged
from fastpipe.transforms.pad import SpatialPadd
from fastpipe.transforms.rand_crop import RandCropByPosNegLabeld
from fastpipe.transforms.rand_intensity import RandScaleIntensityd, RandShiftIntensityd
from fastpipe.transforms.rand_noise_contrast import RandAdjustContrastd, RandGaussianNoised
from fastpipe.transforms.rand_spatial import RandFlipd, RandRotate90d
from fastpipe.transforms.spatial import Orientationd, Spacingd
from fastpipe.transforms.utility import EnsureTyped, ToDeviced

__all__ = [
    "Compose",
    "CropForegroundd",
    "EnsureChannelFirstd",
    "EnsureTyped",
    "FgBgToIndicesd",
    "LoadImaged",
    "Orientationd",
    "RandAdjustContrastd",
    "RandCropByPosNegLabeld",
    "RandFlipd",
    "RandGaussianNoised",
    "RandRotate90d",
    "RandScaleIntensityd",
    "RandShiftIntensityd",
    "ScaleIntensityRanged",
    "Spacingd",
    "SpatialPadd",
    "ToDeviced",
    "apply_transform",
    "flatten",
    "is_random",
    "mark_deterministic",
    "mark_random",
    "split_chain",
]
