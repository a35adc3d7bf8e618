"""``EnsureChannelFirstd``: a leading channel dim on every volume, where MONAI's loader says it is."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from fastpipe._meta import meta_key
from fastpipe.transforms._dict import ensure_keys, present_keys


class EnsureChannelFirstd:
    """Give each volume a leading channel dim: ``(X, Y, Z)`` -> ``(1, X, Y, Z)``.

    Args:
        keys: keys to transform.
        strict_check: accepted for MONAI compatibility.
        allow_missing_keys: skip absent keys (default False).
        channel_dim: where the channel sits in a 4D input, or ``"no_channel"`` to add one whatever the
            input (MONAI's values; default None: 3D inputs get a new channel dim, 4D inputs are taken
            as channel-first already).

    Shape:
        ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; ``(..., C, ...)`` -> ``(C, X, Y, Z)`` with ``channel_dim``.

    Example:
        >>> EnsureChannelFirstd("image")({"image": torch.zeros(4, 5, 6)})["image"].shape
        torch.Size([1, 4, 5, 6])
    """

    def __init__(
        self, keys, strict_check: bool = True, allow_missing_keys: bool = False, channel_dim=None
    ) -> None:
        self.keys = ensure_keys(keys)
        self.allow_missing_keys = allow_missing_keys
        self.channel_dim = channel_dim

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i in present_keys(d, self.keys, self.allow_missing_keys, "EnsureChannelFirstd"):
            key = self.keys[i]
            img = d[key]
            channel_dim = self.channel_dim
            if channel_dim is None:  # MONAI's rule: where the loader says the channel is, if it knows
                known = d.get(meta_key(key), {}).get("original_channel_dim")
                if isinstance(known, int) and not isinstance(known, bool):
                    channel_dim = known
            if channel_dim == "no_channel":  # MONAI's: the volume has none, so one is added
                d[key] = img.unsqueeze(0)
            elif channel_dim is not None:
                d[key] = torch.movedim(img, channel_dim, 0)
            elif img.ndim == 3:
                d[key] = img.unsqueeze(0)
            elif img.ndim != 4:
                raise ValueError(
                    f"EnsureChannelFirstd: {key!r} has shape {tuple(img.shape)}; expected 3D or 4D"
                )
        return d
