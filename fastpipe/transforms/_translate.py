"""MONAI transform objects -> fastpipe's, where fastpipe implements the same semantics.

A registry maps a MONAI class name to a function ``(monai_obj, ctx) -> fastpipe transform | str``;
a string is the reason the object stays as it is. The fastpipe class is looked up by name in
:mod:`fastpipe.transforms` at call time, so a class added there is picked up without touching this
module. A translator reads the MONAI object's attributes (MONAI 1.6) and refuses, with a reason,
any option whose behaviour fastpipe does not reproduce. Deterministic transforms are here, random
ones in ``_translate_random.py``.

"Same semantics" means the values MONAI's chain gives (tested against MONAI), with fastpipe's
documented dtype rule: a label resampled with ``nearest`` keeps its integer dtype.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Translator = Callable[[Any, "Context"], Any]
REGISTRY: dict[str, Translator] = {}
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Context:
    """What a translator may need besides the object: the data items (``None`` when unknown)."""

    items: Sequence[Any] | None = None
    float_keys: set[str] = field(default_factory=set)  # keys MONAI's LoadImaged would make float32
    nearest_keys: set[str] = field(default_factory=set)  # keys a translated Spacingd resamples with nearest
    settled_keys: set[str] = field(default_factory=set)  # keys a translated step makes float (or casts)


def register(name: str) -> Callable[[Translator], Translator]:
    """Register ``fn`` as the translator of MONAI class ``name``."""

    def deco(fn: Translator) -> Translator:
        REGISTRY[name] = fn
        return fn

    return deco


def is_monai(obj: Any) -> bool:
    """Whether ``obj`` is an object of a MONAI class."""
    return type(obj).__module__.split(".")[0] == "monai"


def translate(obj: Any, ctx: Context) -> tuple[Any, str]:
    """``(fastpipe transform, "")`` when ``obj`` translates, else ``(obj, reason)``."""
    name = type(obj).__name__
    fn = REGISTRY.get(name)
    if fn is None:
        return obj, f"fastpipe has no {name}"
    if getattr(obj, "_lazy", False):
        return obj, "lazy=True (MONAI's lazy resampling) is not reproduced"
    try:
        out = fn(obj, ctx)
    except (TypeError, ValueError) as err:  # the fastpipe class rejects an option: keep MONAI's
        return obj, f"fastpipe's {name} refuses these options: {err}"
    return (obj, out) if isinstance(out, str) else (out, "")


def fastpipe_class(name: str) -> Any:
    """The class ``name`` of :mod:`fastpipe.transforms`, or ``None``."""
    import fastpipe.transforms as T

    return getattr(T, name, None)


def build(name: str, obj: Any, **kwargs: Any) -> Any:
    """``fastpipe.transforms.<name>(**kwargs)`` (MONAI's option names, read from ``obj``), or a reason.

    An option fastpipe's class does not take is left out when ``obj`` has it at MONAI's default, and
    refused (the reason names it) otherwise.
    """
    cls = fastpipe_class(name)
    if cls is None:
        return f"fastpipe.transforms has no {name}"
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs)
    monai_defaults = inspect.signature(type(obj)).parameters
    for key in [k for k in kwargs if k not in params]:
        default = monai_defaults[key].default if key in monai_defaults else inspect.Parameter.empty
        if _norm(kwargs[key]) != _norm(default):
            return f"fastpipe's {name} has no option {key} (got {kwargs[key]!r})"
        del kwargs[key]
    return cls(**kwargs)


def _norm(x: Any) -> Any:
    """``x`` comparable with MONAI's defaults: enums as values, sequences as tuples, dtypes as torch's."""
    x = value(x)
    if isinstance(x, (list, tuple)):
        return tuple(_norm(v) for v in x)
    if isinstance(x, (np.dtype, torch.dtype)) or (isinstance(x, type) and issubclass(x, np.generic)):
        return torch_dtype(x)
    return x


def value(x: Any) -> Any:
    """An enum's value (MONAI stores modes as ``StrEnum``), anything else as is."""
    return getattr(x, "value", x)


def same(values: Sequence[Any], what: str) -> Any:
    """The single value of per-key options, or a reason string when they differ."""
    vals = [value(v) for v in values]
    return vals[0] if all(v == vals[0] for v in vals) else f"per-key {what} differ: {vals}"


def torch_dtype(dtype: Any) -> torch.dtype | None:
    """A numpy/torch dtype or ``None`` as a ``torch.dtype`` (``None`` stays ``None``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


def _common(obj: Any) -> dict[str, Any]:
    return {"keys": list(obj.keys), "allow_missing_keys": bool(obj.allow_missing_keys)}


def _nifti_reason(obj: Any, ctx: Context) -> str:
    """Why fastpipe's NIfTI reader cannot stand in for ``obj``'s readers on these items ("" when it can)."""
    if ctx.items is None:
        return "items come from a dataset, so the file types are unknown"
    paths = []
    for item in ctx.items:
        for key in obj.keys:
            v = item.get(key) if isinstance(item, dict) else None
            if v is None and obj.allow_missing_keys:
                continue
            if not isinstance(v, (str, os.PathLike)) or not str(v).lower().endswith(NIFTI_SUFFIXES):
                return f"{key!r} of an item is {v!r}, not one .nii/.nii.gz file"
            paths.append(str(v))
    readers = obj._loader.readers  # without auto_select MONAI tries the last (user) reader first
    if obj._loader.auto_select:
        readers = [r for r in readers if not paths or r.verify_suffix(paths[0])]
    if not readers or type(readers[-1]).__name__ != "NibabelReader":
        return f"the reader MONAI picks is {type(readers[-1]).__name__ if readers else None}"
    opts = vars(readers[-1])
    if opts.get("channel_dim") is not None or opts.get("as_closest_canonical") or opts.get("kwargs"):
        return "NibabelReader options (channel_dim, as_closest_canonical, kwargs) are not reproduced"
    return _first_is_3d(paths[: len(obj.keys)])


def _first_is_3d(paths: list[str]) -> str:
    import nibabel as nib

    for p in paths:
        try:
            shape = nib.load(p).header.get_data_shape()
        except (OSError, ValueError) as err:
            return f"cannot read the header of {p}: {err}"  # MONAI's loader then names the problem
        if len([s for s in shape if s != 1]) > 3 or len(shape) < 3:
            return f"{p} has shape {shape}; fastpipe reads 3D volumes only"
    return ""


@register("LoadImaged")
def _load(obj: Any, ctx: Context) -> Any:
    loader = obj._loader
    if any(k is not None for k in obj.meta_keys) or obj.overwriting:
        return "meta_keys/overwriting are not reproduced"
    reason = _nifti_reason(obj, ctx)
    if reason:
        return reason
    dtype = torch_dtype(loader.dtype)
    if dtype == torch.float32:  # MONAI's default: integer volumes stay integer until a float step
        ctx.float_keys.update(obj.keys)
        dtype = None
    return build(
        "LoadImaged", obj, dtype=dtype, ensure_channel_first=bool(loader.ensure_channel_first), **_common(obj)
    )


@register("EnsureChannelFirstd")
def _channel_first(obj: Any, ctx: Context) -> Any:
    return build("EnsureChannelFirstd", obj, channel_dim=obj.adjuster.input_channel_dim, **_common(obj))


@register("Orientationd")
def _orientation(obj: Any, ctx: Context) -> Any:
    o = obj.ornt_transform
    if o.labels not in (None, (("L", "R"), ("P", "A"), ("I", "S"))):
        return f"labels={o.labels!r} is not reproduced"
    return build(
        "Orientationd", obj, axcodes=o.axcodes, as_closest_canonical=o.as_closest_canonical, **_common(obj)
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
    out = build(
        "Spacingd",
        obj,
        pixdim=tuple(float(p) for p in s.pixdim),
        diagonal=bool(s.diagonal),
        mode=modes,
        padding_mode=[value(p) for p in obj.padding_mode],
        align_corners=list(obj.align_corners),
        **_common(obj),
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
            dtype=torch_dtype(s.dtype) or torch.float32,
            **_common(obj),
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
    return build(
        "CropForegroundd",
        obj,
        source_key=obj.source_key,
        select_fn=c.select_fn,
        channel_indices=c.channel_indices,
        margin=c.margin,
        allow_smaller=bool(c.allow_smaller),
        k_divisible=c.k_divisible,
        start_coord_key=obj.start_coord_key,
        end_coord_key=obj.end_coord_key,
        **_common(obj),
    )


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
        **_common(obj),
    )


@register("ToDeviced")
def _to_device(obj: Any, ctx: Context) -> Any:
    kwargs = dict(obj.converter.kwargs)
    non_blocking = bool(kwargs.pop("non_blocking", False))
    if kwargs:
        return f"Tensor.to options {sorted(kwargs)} are not reproduced"
    return build("ToDeviced", obj, device=obj.converter.device, non_blocking=non_blocking, **_common(obj))


@register("EnsureTyped")
def _ensure_type(obj: Any, ctx: Context) -> Any:
    c = obj.converter
    dtype = same(obj.dtype, "dtypes")
    if isinstance(dtype, str) and dtype.startswith("per-key"):
        return dtype
    if not c.wrap_sequence or value(c.data_type) not in ("tensor", "numpy"):
        return "wrap_sequence=False / data types other than tensor and numpy are not reproduced"
    return _settle(
        ctx,
        obj.keys if dtype is not None else (),
        build(
            "EnsureTyped",
            obj,
            data_type=value(c.data_type),
            dtype=torch_dtype(dtype),
            device=c.device,
            track_meta=c.track_meta,
            **_common(obj),
        ),
    )


def _settle(ctx: Context, keys: Sequence[str], out: Any) -> Any:
    """Note that a translated step (``out``, unless it is a reason) fixes the dtype of ``keys``."""
    if not isinstance(out, str):
        ctx.settled_keys.update(keys)
    return out


from fastpipe.transforms import _translate_random as _random  # noqa: E402,F401  (registers the random ones)
