"""``EnsureChannelFirstd``: a leading channel dim on every volume, where MONAI's loader says it is."""

from __future__ import annotations

from collections.abc import Hashable
from numbers import Integral
from typing import Any

import torch

from fastpipe._meta import meta_key
from fastpipe.transforms._dict import ensure_keys, present_keys, tensors_at


class EnsureChannelFirstd:
    """Give each volume a leading channel dim: ``(X, Y, Z)`` -> ``(1, X, Y, Z)``.

    Args:
        keys: keys to transform.
        strict_check: accepted for MONAI compatibility.
        allow_missing_keys: skip absent keys (default False).
        channel_dim: where the channel sits in a 4D input, or ``"no_channel"`` to add one whatever the
            input (MONAI's values; default None: 3D inputs get a new channel dim, 4D inputs are taken
            as channel-first already). An ``int`` counts the axes of the file as MONAI's tensor has
            them: ``-1`` of an ``(X, Y, Z, 1)`` file (read as ``(X, Y, Z)``) is its singleton axis.

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
            tensors_at(d, [key], "EnsureChannelFirstd", signed=False)  # MONAI's MetaTensor(img) keeps uint16
            img = d[key]
            channel_dim = self.channel_dim
            if channel_dim is None:  # MONAI's rule: where the loader says the channel is, if it knows
                known = d.get(meta_key(key), {}).get("original_channel_dim")
                if isinstance(known, int) and not isinstance(known, bool):
                    channel_dim = known
            if channel_dim == "no_channel":  # MONAI's: the volume has none, so one is added
                d[key] = img.unsqueeze(0)
            elif channel_dim is not None:
                d[key] = _moved(_file_shaped(img, d.get(meta_key(key))), channel_dim, key)
            elif img.ndim == 3:
                d[key] = img.unsqueeze(0)
            elif img.ndim != 4:
                raise ValueError(
                    f"EnsureChannelFirstd: {key!r} has shape {tuple(img.shape)}; expected 3D or 4D"
                )
        return d


def _file_shaped(img: torch.Tensor, meta: Any) -> torch.Tensor:
    """``img`` in the file's shape where ``LoadImaged`` dropped trailing singleton dims (an
    ``(X, Y, Z, 1)`` file read as ``(X, Y, Z)``): MONAI's tensor keeps them, and an explicit
    ``channel_dim`` counts them (``-1`` is that singleton axis, not ``Z``)."""
    dims = meta.get("dim") if isinstance(meta, dict) else None
    if img.ndim != 3 or dims is None or len(dims) < 5 or not 4 <= int(dims[0]) <= 7:
        return img
    shape = tuple(int(n) for n in dims[1 : int(dims[0]) + 1])
    if shape[:3] != tuple(img.shape) or any(n != 1 for n in shape[3:]):
        return img
    return img.reshape(shape)


def _moved(img: torch.Tensor, channel_dim: Any, key: Hashable) -> torch.Tensor:
    """``img`` with axis ``channel_dim`` moved first; ``ValueError`` naming the key for an axis it lacks."""
    if not isinstance(channel_dim, Integral) or not -img.ndim <= int(channel_dim) < img.ndim:
        raise ValueError(
            f"EnsureChannelFirstd: channel_dim={channel_dim!r} is no axis of {key!r}, shape {tuple(img.shape)}"
        )
    return torch.movedim(img, int(channel_dim), 0)
