"""Translators of MONAI's deterministic transforms (the cached prefix); see ``_translate.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastpipe.transforms._translate_base import (
    Context,
    build,
    fastpipe_class,
    key_options,
    register,
    same,
    torch_dtype,
    value,
)
from fastpipe.transforms._translate_nifti import nifti_reason


@register("LoadImaged")
def _load(obj: Any, ctx: Context) -> Any:
    loader = obj._loader
    if any(k is not None for k in obj.meta_keys) or obj.overwriting:
        return "meta_keys/overwriting are not reproduced"
    if loader.simple_keys or loader.pattern is not None:  # MONAI then drops metadata keys (pixdim, dim, ...)
        return "simple_keys/prune_meta_pattern (metadata keys removed) are not reproduced"
    postfixes = sorted({str(p) for p in obj.meta_key_postfix} - {"meta_dict"})
    if not loader.image_only and postfixes:  # MONAI then writes the metadata to f"{key}_{postfix}"
        return f"meta_key_postfix={postfixes[0]!r} (metadata stored under another key) is not reproduced"
    if loader.ensure_channel_first:
        ctx.channel_first_keys.update(obj.keys)
    reason = nifti_reason(obj, ctx)
    if reason:
        return reason
    dtype = torch_dtype(loader.dtype)  # None: MONAI's dtype=None, which fastpipe's None reproduces
    if dtype == torch.float32:  # MONAI's default: integer volumes stay integer until a float step
        ctx.float_keys.update(obj.keys)
        dtype = "compact"
    return build(
        "LoadImaged",
        obj,
        dtype=dtype,
        ensure_channel_first=bool(loader.ensure_channel_first),
        **key_options(obj),
    )


@register("EnsureChannelFirstd")
def _channel_first(obj: Any, ctx: Context) -> Any:
    if set(obj.keys) & ctx.channel_first_keys:  # MONAI's then adds a second axis; its loader is kept too
        return "after LoadImaged(ensure_channel_first=True) MONAI adds a second channel axis; not reproduced"
    return build("EnsureChannelFirstd", obj, channel_dim=obj.adjuster.input_channel_dim, **key_options(obj))


@register("Orientationd")
def _orientation(obj: Any, ctx: Context) -> Any:
    o = obj.ornt_transform
    if o.labels not in (None, (("L", "R"), ("P", "A"), ("I", "S"))):
        return f"labels={o.labels!r} is not reproduced"
    return build(
        "Orientationd",
        obj,
        axcodes=o.axcodes,
        as_closest_canonical=o.as_closest_canonical,
        **key_options(obj),
    )


@register("Spacingd")
def _spacing(obj: Any, ctx: Context) -> Any:
    s = obj.spacing_transform
    if s.scale_extent or s.recompute_affine or any(obj.scale_extent):
        return "scale_extent/recompute_affine are not reproduced"
    if not (np.all(np.isnan(s.min_pixdim)) and np.all(np.isnan(s.max_pixdim))):
        return "min_pixdim/max_pixdim are not reproduced"
    modes = [value(m) for m in obj.mode]
    if any(not isinstance(m, str) for m in modes):
        return f"spline-order modes {modes} are not reproduced"
    if any(torch_dtype(d) not in (None, torch.float64) for d in obj.dtype):
        return f"dtype {list(obj.dtype)} (the resampling's precision; fastpipe's is MONAI's float64) is not reproduced"
    out = build(
        "Spacingd",
        obj,
        pixdim=tuple(float(p) for p in s.pixdim),
        diagonal=bool(s.diagonal),
        mode=modes,
        padding_mode=[value(p) for p in obj.padding_mode],
        align_corners=list(obj.align_corners),
        ensure_same_shape=bool(obj.ensure_same_shape),
        **key_options(obj),
    )
    if not isinstance(out, str):
        ctx.nearest_keys.update(k for k, m in zip(obj.keys, modes, strict=True) if m == "nearest")
        ctx.settled_keys.update(k for k, m in zip(obj.keys, modes, strict=True) if m != "nearest")
    return out


@register("ScaleIntensityRanged")
def _scale_range(obj: Any, ctx: Context) -> Any:
    s = obj.scaler
    return _settle(
        ctx,
        obj.keys,
        build(
            "ScaleIntensityRanged",
            obj,
            a_min=s.a_min,
            a_max=s.a_max,
            b_min=s.b_min,
            b_max=s.b_max,
            clip=bool(s.clip),
            # MONAI's None keeps the input's dtype: float32 where its LoadImaged or Spacingd made it so
            # (a key fastpipe's nearest Spacingd kept integer would otherwise be scaled into integers)
            dtype=torch_dtype(s.dtype) or (torch.float32 if set(obj.keys) & _monai_float(ctx) else None),
            **key_options(obj),
        ),
    )


@register("CropForegroundd")
def _crop_foreground(obj: Any, ctx: Context) -> Any:
    c = obj.cropper
    mode = same(obj.mode, "modes")
    if mode != "constant" or c.padder.kwargs:
        return f"padding mode {mode!r} / {c.padder.kwargs} is not reproduced (only zero padding)"
    if c.return_coords:
        return "return_coords is not reproduced"
    select_fn = c.select_fn
    if obj.source_key in _monai_float(ctx) - ctx.settled_keys and not _monai_is_positive(select_fn):
        from fastpipe.transforms.crop import Float32Select  # MONAI's fn sees float32, not the compact ints

        select_fn = Float32Select(select_fn)
    return build(
        "CropForegroundd",
        obj,
        source_key=obj.source_key,
        select_fn=select_fn,
        channel_indices=c.channel_indices,
        margin=c.margin,
        allow_smaller=bool(c.allow_smaller),
        k_divisible=c.k_divisible,
        start_coord_key=obj.start_coord_key,
        end_coord_key=obj.end_coord_key,
        **key_options(obj),
    )


def _monai_float(ctx: Context) -> set[str]:
    """Keys MONAI holds as float32 where fastpipe may hold integers: those its ``LoadImaged`` makes float32,
    and those a translated ``Spacingd`` resampled with ``nearest`` (MONAI's ``Spacingd`` returns float32)."""
    return ctx.float_keys | ctx.nearest_keys


def _monai_is_positive(fn: Any) -> bool:
    """Whether ``fn`` is MONAI's default ``select_fn`` (``x > 0``: the same on integer voxels)."""
    from monai.transforms.utils import is_positive

    return fn is is_positive


@register("FgBgToIndicesd")
def _fg_bg(obj: Any, ctx: Context) -> Any:
    if obj.converter.output_shape is not None:
        return "output_shape is not reproduced (fastpipe keeps flat indices)"
    return build(
        "FgBgToIndicesd",
        obj,
        fg_postfix=obj.fg_postfix,
        bg_postfix=obj.bg_postfix,
        image_key=obj.image_key,
        image_threshold=float(obj.converter.image_threshold),
        **key_options(obj),
    )


@register("ToDeviced")
def _to_device(obj: Any, ctx: Context) -> Any:
    kwargs = dict(obj.converter.kwargs)
    non_blocking = bool(kwargs.pop("non_blocking", False))
    if kwargs:
        return f"Tensor.to options {sorted(kwargs)} are not reproduced"
    return build("ToDeviced", obj, device=obj.converter.device, non_blocking=non_blocking, **key_options(obj))


@register("EnsureTyped")
def _ensure_type(obj: Any, ctx: Context) -> Any:
    c = obj.converter
    dtypes = tuple(torch_dtype(d) for d in obj.dtype)  # one per key
    if not c.wrap_sequence or value(c.data_type) not in ("tensor", "numpy"):
        return "wrap_sequence=False / data types other than tensor and numpy are not reproduced"
    return _settle(
        ctx,
        [k for k, d in zip(obj.keys, dtypes, strict=True) if d is not None],
        build(
            "EnsureTyped",
            obj,
            data_type=value(c.data_type),
            dtype=dtypes,
            device=c.device,
            track_meta=c.track_meta,
            **key_options(obj),
        ),
    )


@register("ToTensord")
def _to_tensor(obj: Any, ctx: Context) -> Any:
    """MONAI's ``ToTensord`` is ``EnsureTyped(data_type="tensor")`` with its dtype, device and tracking."""
    c = obj.converter
    if not c.wrap_sequence:
        return "wrap_sequence=False is not reproduced"
    return _settle(
        ctx,
        obj.keys if c.dtype is not None else (),
        build(
            "EnsureTyped",
            obj,
            dtype=torch_dtype(c.dtype),
            device=c.device,
            track_meta=c.track_meta,
            **key_options(obj),
        ),
    )


@register("CastToTyped")
def _cast(obj: Any, ctx: Context) -> Any:
    """MONAI's ``CastToTyped`` on fastpipe's tensors is ``EnsureTyped`` with its per-key dtypes."""
    dtypes = tuple(torch_dtype(d) for d in obj.dtype)
    out = fastpipe_class("EnsureTyped")(
        list(obj.keys), dtype=dtypes, allow_missing_keys=obj.allow_missing_keys
    )
    return _settle(ctx, [k for k, d in zip(obj.keys, dtypes, strict=True) if d is not None], out)


@register("SelectItemsd")
def _select(obj: Any, ctx: Context) -> Any:
    from fastpipe.transforms._dict_ops import SelectItemsd

    return SelectItemsd(list(obj.keys), allow_missing_keys=bool(obj.allow_missing_keys))


@register("DeleteItemsd")
def _delete(obj: Any, ctx: Context) -> Any:
    from fastpipe.transforms._dict_ops import DeleteItemsd

    if any(obj.sep in str(k) for k in obj.keys):
        return f"nested keys (separator {obj.sep!r}) are not reproduced"
    return DeleteItemsd([str(k) for k in obj.keys], use_re=[bool(u) for u in obj.use_re])


@register("CopyItemsd")
def _copy_items(obj: Any, ctx: Context) -> Any:
    from fastpipe.transforms._dict_ops import CopyItemsd

    names = [str(n) for n in obj.names]
    return CopyItemsd(list(obj.keys), int(obj.times), names, allow_missing_keys=bool(obj.allow_missing_keys))


def _settle(ctx: Context, keys: Sequence[str], out: Any) -> Any:
    """Note that a translated step (``out``, unless it is a reason) fixes the dtype of ``keys``."""
    if not isinstance(out, str):
        ctx.settled_keys.update(keys)
    return out
