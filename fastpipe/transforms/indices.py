"""``FgBgToIndicesd``: flat indices of foreground and background voxels, for positive/negative crop sampling."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from fastpipe.transforms._dict import ensure_keys, present_keys


def _flat_mask(x: torch.Tensor, threshold: float | None = None) -> torch.Tensor | np.ndarray:
    """``(x > threshold).any(0)`` (``x != 0`` without one) of a channel-first volume as a flat C-order bool.

    numpy on CPU (serial, huge-page output), torch elsewhere.
    """
    a = x.numpy() if x.device.type == "cpu" else x
    m = (a != 0) if threshold is None else (a > threshold)
    m = m[0] if x.shape[0] == 1 else m.any(0)
    return m.ravel() if isinstance(m, np.ndarray) else m.contiguous().view(-1)


def _nonzero(flat: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Ascending int64 positions of the True entries of a 1-D bool."""
    if isinstance(flat, np.ndarray):
        return torch.from_numpy(np.flatnonzero(flat).astype(np.int64, copy=False))
    return torch.nonzero(flat).flatten()


def fg_bg_indices(
    label: torch.Tensor, image: torch.Tensor | None = None, image_threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI ``map_binary_to_indices``: ``(fg, bg)`` flat C-order indices into the spatial volume.

    Foreground is any nonzero label channel (channel 0 of a multi-channel, one-hot label is the
    background and is skipped); with ``image`` the background is limited to voxels whose image
    (any channel) exceeds ``image_threshold``. Unlike MONAI, the indices stay on the label's device.
    """
    if label.shape[0] > 1:
        label = label[1:]
    lab = _flat_mask(label)
    if image is None:
        return _nonzero(lab), _nonzero(~lab)
    img = _flat_mask(image, image_threshold)
    if isinstance(lab, np.ndarray) != isinstance(img, np.ndarray):
        raise ValueError(f"FgBgToIndicesd: label on {label.device} but image on {image.device}")
    return _nonzero(lab), _nonzero(img & ~lab)


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

    Shape:
        label ``(C, X, Y, Z)`` -> indices ``(N_fg,)`` and ``(N_bg,)``.

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

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key] if self.image_key is not None else None
        for i in present_keys(d, self.keys, self.allow_missing_keys, "FgBgToIndicesd"):
            key = self.keys[i]
            fg, bg = fg_bg_indices(d[key], image, self.image_threshold)
            d[f"{key}{self.fg_postfix}"], d[f"{key}{self.bg_postfix}"] = fg, bg
        return d
