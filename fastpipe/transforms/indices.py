"""``FgBgToIndicesd``: flat indices of foreground and background voxels, for positive/negative crop sampling."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from fastpipe.ops.indices import compact_indices, fg_bg_indices
from fastpipe.transforms._dict import ensure_keys, present_keys


def _tensor(x: Any) -> Any:
    """A numpy array as a tensor sharing its memory; anything else as it is."""
    return torch.as_tensor(x) if isinstance(x, np.ndarray) else x


class FgBgToIndicesd:
    """Store foreground/background voxel indices of a label as ``{key}_fg_indices``/``{key}_bg_indices``.

    Indices are 1-D ``int64`` tensors of flat C-order positions over the spatial ``(X, Y, Z)``
    shape (MONAI's convention), whatever the label's memory layout. They stay on the label's
    device (MONAI moves them to the CPU), so a GPU cache samples crops without a copy back.

    Args:
        keys: label keys.
        fg_postfix: suffix of the foreground key (default ``"_fg_indices"``).
        bg_postfix: suffix of the background key (default ``"_bg_indices"``).
        image_key: optional image whose voxels above ``image_threshold`` bound both sets (default None).
        image_threshold: see ``image_key`` (default 0.0).
        output_shape: accepted for MONAI compatibility; must be None (flat indices).
        allow_missing_keys: skip absent keys (default False).

    Called on its own it writes MONAI's lists. In a fastpipe chain whose ``RandCropByPosNegLabeld``
    reads these indices (only device moves in between), the plan switches the crop's label key to
    the compact form (``compact_keys``): the foreground list as int32 (fewer than 2**31 voxels) and,
    in place of the background list, a 0-d int64 count of background voxels; the crop then draws
    background centres by rejection from the label, uniformly over the same set (see
    ``fastpipe.ops._bg_reject``). A volume with background under 1/16 of its voxels keeps an int32
    background list.

    Shape:
        label ``(C, X, Y, Z)`` -> indices ``(N_fg,)`` and ``(N_bg,)`` (compact: ``(N_fg,)`` and ``()``).

    Example:
        >>> d = FgBgToIndicesd("label")({"label": torch.tensor([[[[0, 1], [1, 0]]]])})
        >>> d["label_fg_indices"], d["label_bg_indices"]
        (tensor([1, 2]), tensor([0, 3]))
    """

    def __init__(self, keys, fg_postfix: str = "_fg_indices", bg_postfix: str = "_bg_indices",
                 image_key: str | None = None, image_threshold: float = 0.0, output_shape=None,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        if output_shape is not None:
            raise ValueError("FgBgToIndicesd: output_shape is unsupported; indices are flat")
        self.keys = ensure_keys(keys)
        self.fg_postfix, self.bg_postfix = fg_postfix, bg_postfix
        self.image_key, self.image_threshold = image_key, image_threshold
        self.allow_missing_keys = allow_missing_keys
        self.compact_keys: tuple[str, ...] = ()  # set by the chain's plan (fastpipe.transforms._fuse_random)

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = _tensor(d[self.image_key]) if self.image_key is not None else None
        for i in present_keys(d, self.keys, self.allow_missing_keys, "FgBgToIndicesd"):
            key = self.keys[i]
            label = _tensor(d[key])  # numpy volumes too, as MONAI takes them (the item keeps its array)
            if image is not None and (image.device.type == "cpu") != (label.device.type == "cpu"):
                raise ValueError(f"FgBgToIndicesd: label on {label.device} but image on {image.device}")
            if image is not None and tuple(image.shape[1:]) != tuple(label.shape[1:]):
                raise ValueError(
                    f"FgBgToIndicesd: image {self.image_key!r} has spatial shape {tuple(image.shape[1:])}, "
                    f"label {key!r} {tuple(label.shape[1:])}; the image rule needs one shape"
                )
            indices = compact_indices if key in self.compact_keys else fg_bg_indices
            fg, bg = indices(label, image, self.image_threshold)
            d[f"{key}{self.fg_postfix}"], d[f"{key}{self.bg_postfix}"] = fg, bg
        return d
