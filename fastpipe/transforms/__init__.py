"""Dictionary transforms with MONAI's names and keyword arguments."""

from fastpipe.transforms.compose import Compose, apply_transform, flatten, is_random, mark_random, split_chain
from fastpipe.transforms.utility import EnsureTyped, ToDeviced

__all__ = [
    "Compose",
    "EnsureTyped",
    "ToDeviced",
    "apply_transform",
    "flatten",
    "is_random",
    "mark_random",
    "split_chain",
]
