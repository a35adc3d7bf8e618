"""``FgBgToIndicesd``: flat indices of foreground and background voxels, for positive/negative crop sampling."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from fastpipe.ops.indices import fg_bg_indices
from fastpipe.transforms._dict import ensure_keys, present_keys


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
            if image is not None and (image.device.type == "cpu") != (d[key].device.type == "cpu"):
                raise ValueError(f"FgBgToIndicesd: label on {d[key].device} but image on {image.device}")
            fg, bg = fg_bg_indices(d[key], image, self.image_threshold)
            d[f"{key}{self.fg_postfix}"], d[f"{key}{self.bg_postfix}"] = fg, bg
        return d
