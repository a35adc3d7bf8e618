"""Translators of MONAI's random transforms and of ``SpatialPadd`` (the steps fused with the crop; see ``_translate.py``).

A translated random transform starts from a seed drawn from a copy of the MONAI object's ``R``
(the MONAI object itself is not advanced): a chain seeded with MONAI's ``set_random_state`` gives a
seeded fastpipe chain. ``CacheDataset`` then reseeds its random suffix from its own ``seed``, as it
does for MONAI objects it keeps.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from fastpipe.transforms._translate_base import Context, build, key_options, register, torch_dtype, value


def _seeded(out: Any, obj: Any) -> Any:
    """``out`` seeded from a copy of ``obj.R`` (``out`` is returned as is when it is a reason)."""
    if isinstance(out, str):
        return out
    state = np.random.RandomState()
    state.set_state(obj.R.get_state())
    return out.set_random_state(int(state.randint(2**31 - 1))) or out


def _random(name: str, obj: Any, **kwargs: Any) -> Any:
    """``build(name, obj, **kwargs)`` with MONAI's ``prob``, keys and missing-keys flag, seeded from ``obj``."""
    return _seeded(build(name, obj, **kwargs, prob=float(obj.prob), **key_options(obj)), obj)


def _size(size: Any) -> int | tuple[int, ...]:
    """MONAI's ``spatial_size``: one int (every spatial axis) or one per axis."""
    return int(size) if isinstance(size, Integral) else tuple(int(s) for s in size)


@register("RandCropByPosNegLabeld")
def _crop(obj: Any, ctx: Context) -> Any:
    c = obj.cropper
    # c.centers is no setting: MONAI's dict transform draws new centres on every call and keeps the
    # last ones there, so an object used once (a look at one item) holds them
    if c.label is not None or c.fg_indices is not None:
        return "a label or indices fixed on the MONAI object are not reproduced"
    ratio = float(c.pos_ratio)
    out = build(
        "RandCropByPosNegLabeld",
        obj,
        label_key=obj.label_key,
        spatial_size=_size(c.spatial_size),
        pos=ratio,
        neg=1.0 - ratio,
        num_samples=int(c.num_samples),
        image_key=obj.image_key,
        image_threshold=float(c.image_threshold),
        fg_indices_key=obj.fg_indices_key,
        bg_indices_key=obj.bg_indices_key,
        allow_smaller=bool(c.allow_smaller),
        **key_options(obj),
    )
    return _seeded(out, obj)


@register("RandFlipd")
def _flip(obj: Any, ctx: Context) -> Any:
    return _random("RandFlipd", obj, spatial_axis=obj.flipper.spatial_axis)


@register("RandRotate90d")
def _rot90(obj: Any, ctx: Context) -> Any:
    return _random("RandRotate90d", obj, max_k=int(obj.max_k), spatial_axes=tuple(obj.spatial_axes))


@register("RandShiftIntensityd")
def _shift(obj: Any, ctx: Context) -> Any:
    s = obj.shifter
    if any(k is not None for k in obj.factor_key):
        return "factor_key (offsets scaled by a metadata factor) is not reproduced"
    return _random(
        "RandShiftIntensityd",
        obj,
        offsets=tuple(float(o) for o in s.offsets),
        safe=bool(s._shifter.safe),
        channel_wise=bool(s.channel_wise),
    )


@register("RandScaleIntensityd")
def _scale(obj: Any, ctx: Context) -> Any:
    s = obj.scaler
    return _random(
        "RandScaleIntensityd",
        obj,
        factors=tuple(float(f) for f in s.factors),
        channel_wise=bool(s.channel_wise),
        dtype=torch_dtype(s.dtype),
    )


@register("RandGaussianNoised")
def _noise(obj: Any, ctx: Context) -> Any:
    n = obj.rand_gaussian_noise
    return _random(
        "RandGaussianNoised",
        obj,
        mean=float(n.mean),
        std=float(n.std),
        sample_std=bool(n.sample_std),
        dtype=torch_dtype(n.dtype),
    )


@register("RandAdjustContrastd")
def _contrast(obj: Any, ctx: Context) -> Any:
    a = obj.adjuster
    return _random(
        "RandAdjustContrastd",
        obj,
        gamma=tuple(float(g) for g in a.gamma),
        invert_image=bool(a.invert_image),
        retain_stats=bool(a.retain_stats),
    )


@register("SpatialPadd")
def _pad(obj: Any, ctx: Context) -> Any:
    p = obj.padder
    modes = {value(m) for m in obj.mode}
    if p.kwargs:
        return f"padding options {p.kwargs} are not reproduced"
    if len(modes) != 1:
        return f"per-key modes {sorted(modes)} differ"
    return build(
        "SpatialPadd",
        obj,
        spatial_size=_size(p.spatial_size),
        method=value(p.method),
        mode=modes.pop(),
        **key_options(obj),
    )
