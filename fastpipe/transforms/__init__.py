"""Dictionary transforms with MONAI's names and keyword arguments."""

from fastpipe.transforms.compose import Compose, apply_transform, flatten, is_random, mark_random, split_chain
from fastpipe.transforms.crop import CropForegroundd
from fastpipe.transforms.indices import FgBgToIndicesd
from fastpipe.transforms.intensity import ScaleIntensityRanged
from fastpipe.transforms.io import LoadImaged
from fastpipe.transforms.rand_crop import RandCropByPosNegLabeld
from fastpipe.transforms.spatial import EnsureChannelFirstd, Orientationd, Spacingd
from fastpipe.transforms.utility import EnsureTyped, ToDeviced

__all__ = [
    "Compose",
    "CropForegroundd",
    "EnsureChannelFirstd",
    "EnsureTyped",
    "FgBgToIndicesd",
    "LoadImaged",
    "Orientationd",
    "RandCropByPosNegLabeld",
    "ScaleIntensityRanged",
    "Spacingd",
    "ToDeviced",
    "apply_transform",
    "flatten",
    "is_random",
    "mark_random",
    "split_chain",
]
