"""``SpatialPadd``: MONAI's pad-to-size, standalone or absorbed into ``RandCropByPosNegLabeld``'s gather.

Run on its own it pads every key (a new tensor). Right before ``RandCropByPosNegLabeld`` (only
``FgBgToIndicesd`` on the crop's label and device points in between), ``Compose`` and
``CacheDataset`` absorb a constant-0 pad into the crop: the cache keeps the unpadded volume and a
window reaching past it reads the pad value in the same pass that cuts it (see
``fastpipe.transforms._fuse_random``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fastpipe._meta import meta_key
from fastpipe.transforms._dict import ensure_keys, mark_untraced, per_key, present_keys, update_meta

#: MONAI (numpy and torch) pad modes and torch's name for each.
MODES = {"constant": "constant", "edge": "replicate", "replicate": "replicate", "reflect": "reflect",
         "wrap": "circular", "circular": "circular"}  # fmt: skip
#: numpy's name of each torch mode, for what torch cannot pad (MONAI then pads with numpy too).
NUMPY_MODES = {"replicate": "edge", "reflect": "reflect", "circular": "wrap"}
METHODS = ("symmetric", "end")


def pad_width(shape: Sequence[int], spatial_size: Sequence[int], method: str) -> tuple[tuple[int, int], ...]:
    """MONAI's ``SpatialPad.compute_pad_width``: ``(before, after)`` per spatial axis; sizes ``<= 0`` keep the axis."""
    out = []
    for s, p in zip(shape, spatial_size, strict=True):
        width = max((int(p) if p > 0 else s) - s, 0)
        out.append((width // 2, width - width // 2) if method == "symmetric" else (0, width))
    return tuple(out)


def check_size(who: str, spatial_size: Any, ndim: int = 3) -> tuple[int, ...]:
    """``spatial_size`` as ``ndim`` ints (an int is repeated), else ``ValueError`` naming the value."""
    size = (spatial_size,) * ndim if isinstance(spatial_size, Integral) else tuple(spatial_size)
    if len(size) != ndim or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in size):
        raise ValueError(f"{who}: spatial_size must be an int or {ndim} ints, got {spatial_size!r}")
    return tuple(int(s) for s in size)


class SpatialPadd:
    """Pad the spatial axes of ``keys`` up to ``spatial_size`` (MONAI's ``SpatialPadd``); larger axes are kept.

    Args:
        keys: keys to pad (str or sequence).
        spatial_size: target size, an int or 3 ints; entries ``<= 0`` keep that axis.
        method: ``"symmetric"`` (default: half before, the rest after) or ``"end"`` (all after).
        mode: ``"constant"`` (default), ``"edge"``/``"replicate"``, ``"reflect"``, ``"wrap"``/``"circular"``;
            one per key or one for all.
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).
        value: the constant of ``mode="constant"`` (default 0), as MONAI's pad keyword.

    Shape:
        ``(C, X, Y, Z)`` in, ``(C, max(X, sx), max(Y, sy), max(Z, sz))`` out.

    Example:
        >>> SpatialPadd("image", (4, 4, 4))({"image": torch.ones(1, 2, 4, 4)})["image"][0, :, 0, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        spatial_size: int | Sequence[int],
        method: str = "symmetric",
        mode: str | Sequence[str] = "constant",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        self.keys = ensure_keys(keys)
        self.spatial_size = check_size("SpatialPadd", spatial_size)
        if method not in METHODS:
            raise ValueError(f"SpatialPadd: method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.mode = per_key(mode, self.keys, "SpatialPadd mode")
        for m in self.mode:
            if m not in MODES:
                raise ValueError(f"SpatialPadd: mode must be one of {sorted(MODES)}, got {m!r}")
        unknown = set(kwargs) - {"value"}
        if unknown:
            raise TypeError(f"SpatialPadd: unsupported keyword arguments {sorted(unknown)} (only value=...)")
        self.value = float(kwargs.get("value", 0))
        self.allow_missing_keys = allow_missing_keys

    def pad(self, img: torch.Tensor, mode: str) -> torch.Tensor:
        """One channel-first ``(C, X, Y, Z)`` tensor padded (returned as is when nothing to pad)."""
        if img.ndim != 4:
            raise ValueError(f"SpatialPadd: expected (C, X, Y, Z), got shape {tuple(img.shape)}")
        width = pad_width(img.shape[1:], self.spatial_size, self.method)
        if not any(a or b for a, b in width):
            return img
        flat = [w for pair in reversed(width) for w in pair]  # F.pad wants the last axis first
        if MODES[mode] == "constant":
            return F.pad(img, flat, mode="constant", value=self.value)
        try:  # in the voxels' own dtype: a float32 round trip changes integers above 2**24
            return F.pad(img[None], flat, mode=MODES[mode])[0]
        except RuntimeError as err:  # MONAI's rule: numpy pads what torch does not (a wrap wider than
            if not any(k in str(err) for k in ("implemented", "supported", "value")):  # the axis, bool)
                raise ValueError(  # reflect: a pad wider than the axis, as MONAI refuses it
                    f"SpatialPadd: mode {mode!r} cannot pad {tuple(img.shape)} by {width}: {err}"
                ) from err
        out = np.pad(img.cpu().numpy(), ((0, 0), *width), mode=NUMPY_MODES[MODES[mode]])
        return torch.from_numpy(out).to(img.device)

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i in present_keys(d, self.keys, self.allow_missing_keys, "SpatialPadd"):
            key = self.keys[i]
            img = torch.as_tensor(d[key])
            d[key] = self.pad(img, self.mode[i])
            mark_untraced(d, key, self)
            aff = d.get(meta_key(key), {}).get("affine")
            if aff is not None and img.ndim == 4:  # voxel 0 moved: the origin moves back, as MONAI's
                before = [a for a, _ in pad_width(img.shape[1:], self.spatial_size, self.method)]
                if any(before):
                    new = torch.as_tensor(aff, dtype=torch.float64).clone()
                    new[:3, 3] -= new[:3, :3] @ torch.tensor(before, dtype=torch.float64)
                    update_meta(d, key, affine=new)
        return d

    def __repr__(self) -> str:
        return (
            f"SpatialPadd(keys={list(self.keys)}, spatial_size={self.spatial_size}, method={self.method!r})"
        )
