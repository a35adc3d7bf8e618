"""Dictionary transforms with MONAI's names and keyword arguments."""

from fastpipe.transforms.compose import Compose, apply_transform, flatten, is_random, mark_random, split_chain

__all__ = ["Compose", "apply_transform", "flatten", "is_random", "mark_random", "split_chain"]
