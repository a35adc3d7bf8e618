"""``ScaleIntensityRanged``: window an intensity range onto another, optionally clipping."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from fastpipe._tensors import alloc_like, numpy_ok
from fastpipe.transforms._dict import dtype_arg, ensure_keys, present_keys, tensors_at

_HALF = {torch.float16, torch.bfloat16}  # dtypes whose every rounding step MONAI's result shows


class ScaleIntensityRanged:
    """Map ``[a_min, a_max]`` linearly onto ``[b_min, b_max]``, then clip to it if ``clip``, as MONAI does.

    The result is a new tensor of ``dtype`` (``None``: the input's dtype), as MONAI's. With
    ``b_min``/``b_max`` None the values are only normalised to ``[0, 1]``. On CPU the arithmetic
    runs as serial numpy ufuncs (no OpenMP barrier per op, which stalls on a busy machine).
    Integer voxels are computed in float32 (fastpipe's compact integers stand for MONAI's float32): MONAI
    1.6.1 subtracts an integer ``a_min`` in the integer dtype, so on integer input it wraps (a uint8
    volume with ``a_min=-57``) and its ``a_max == a_min`` shift stays integer, where fastpipe's is float32.

    Args:
        keys: keys to transform.
        a_min, a_max: input range (``a_max == a_min`` only shifts by ``b_min - a_min``, ``dtype`` not
            applied, as in MONAI).
        b_min, b_max: output range (default None: normalise to [0, 1]).
        clip: clip to ``[b_min, b_max]`` (default False); a None bound is open, both None is an error.
        dtype: output dtype, a torch or numpy dtype (default ``torch.float32``; ``None`` keeps the input's), as MONAI's.
        allow_missing_keys: skip absent keys (default False).

    Shape:
        any; the output has the input's shape and memory layout.

    Example:
        >>> t = ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True)
        >>> t({"image": torch.tensor([-100.0, 53.5, 500.0])})["image"]
        tensor([0.0000, 0.5000, 1.0000])
    """

    def __init__(self, keys, a_min: float, a_max: float, b_min: float | None = None, b_max: float | None = None,
                 clip: bool = False, dtype: torch.dtype = torch.float32, allow_missing_keys: bool = False) -> None:  # fmt: skip
        self.keys = ensure_keys(keys)
        if a_min is None or a_max is None:
            raise TypeError(f"ScaleIntensityRanged: a_min={a_min!r}, a_max={a_max!r}: both must be numbers")
        if clip and b_min is None and b_max is None and a_min != a_max:
            raise ValueError(
                "ScaleIntensityRanged: clip=True with b_min=None and b_max=None has no bound to clip to "
                "(MONAI's raises at the first item); give b_min and/or b_max, or clip=False"
            )
        self.a_min, self.a_max, self.b_min, self.b_max = float(a_min), float(a_max), b_min, b_max
        self.clip = clip
        if self.a_max == self.a_min:
            warnings.warn(
                f"ScaleIntensityRanged: a_min == a_max == {a_min}; values are only shifted", stacklevel=2
            )
        self.dtype = dtype_arg(dtype, "ScaleIntensityRanged")
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i in present_keys(d, self.keys, self.allow_missing_keys, "ScaleIntensityRanged"):
            tensors_at(d, [self.keys[i]], "ScaleIntensityRanged")
            d[self.keys[i]] = self.scale(d[self.keys[i]])
        return d

    def scale(self, img: torch.Tensor) -> torch.Tensor:
        """The scaled copy of one tensor (same shape and memory layout)."""
        if self.a_max == self.a_min:  # MONAI's: only a shift, in torch's promoted dtype (not ``dtype``)
            out = img - self.a_min  # integer voxels: float32, as MONAI's (float32 after its LoadImaged)
            return out if self.b_min is None else out + self.b_min
        out = alloc_like(img, self.dtype or img.dtype)
        # MONAI computes in the input's dtype (float32 for integers, as its LoadImaged makes them), step
        # by step, then casts. The fused multiply-add below differs from that by an ulp of float32; an
        # integer output (a truncating cast) or half-precision input or output needs MONAI's own steps,
        # where that ulp moves a voxel by one unit of the output
        compute = img.dtype if img.is_floating_point() else torch.float32
        if not out.is_floating_point() or _HALF & {compute, out.dtype}:
            return out.copy_(self._monai_values(img, compute))
        factor, shift = 1.0 / (self.a_max - self.a_min), -self.a_min / (self.a_max - self.a_min)
        if self.b_min is not None and self.b_max is not None:
            span = float(self.b_max) - float(self.b_min)
            factor, shift = factor * span, shift * span + float(self.b_min)
        clip = self.clip and (self.b_min is not None or self.b_max is not None)
        if numpy_ok(img, out.dtype):  # numpy: serial ufuncs, no OpenMP barrier per op
            o = out.numpy()
            np.multiply(img.numpy(), o.dtype.type(factor), out=o, casting="unsafe")
            np.add(o, o.dtype.type(shift), out=o)
            if clip:
                np.clip(o, self.b_min, self.b_max, out=o)
            return out
        torch.mul(img, factor, out=out).add_(shift)
        if clip:
            out.clamp_(self.b_min, self.b_max)
        return out

    def _monai_values(self, img: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
        """The scaled and clipped values in ``compute``, computed in MONAI's order of operations."""
        x = (img.to(compute) - self.a_min) / (self.a_max - self.a_min)
        if self.b_min is not None and self.b_max is not None:
            x = x * (float(self.b_max) - float(self.b_min)) + float(self.b_min)
        return (
            x.clamp(self.b_min, self.b_max) if self.clip and (self.b_min, self.b_max) != (None, None) else x
        )
