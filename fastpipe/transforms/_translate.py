"""MONAI transform objects -> fastpipe's, where fastpipe implements the same semantics.

A registry maps a MONAI class name to a function ``(monai_obj, ctx) -> fastpipe transform | str``;
a string is the reason the object stays as it is. The fastpipe class is looked up by name in
:mod:`fastpipe.transforms` at call time, so a class added there is picked up without touching this
module. A translator reads the MONAI object's attributes (MONAI 1.6) and refuses, with a reason,
any option whose behaviour fastpipe does not reproduce. Translators live in ``_translate_det.py`` (the
cached prefix) and ``_translate_random.py`` (the random part), the registry in ``_translate_base.py``.

"Same semantics" means the values MONAI's chain gives (tested against MONAI), with fastpipe's
documented dtype rule: a label resampled with ``nearest`` keeps its integer dtype.
"""

from __future__ import annotations

from typing import Any

from fastpipe.transforms import _translate_det, _translate_random  # noqa: F401  (they register the translators)
from fastpipe.transforms._translate_base import REGISTRY, Context, is_monai

__all__ = ["Context", "is_monai", "translate"]

# fastpipe's classes that take numpy arrays as MONAI's do (the others need tensors)
TAKES_NUMPY = {
    "RandFlipd", "RandRotate90d", "RandShiftIntensityd", "RandScaleIntensityd", "RandGaussianNoised",
    "RandAdjustContrastd", "SpatialPadd", "RandCropByPosNegLabeld", "SelectItemsd", "DeleteItemsd", "CopyItemsd",
}  # fmt: skip


def translate(obj: Any, ctx: Context) -> tuple[Any, str]:
    """``(fastpipe transform, "")`` when ``obj`` translates, else ``(obj, reason)``."""
    name = type(obj).__name__
    fn = REGISTRY.get(name)
    arrays = _numpy_inputs(obj, ctx)  # first: it records what ToNumpyd, which stays MONAI's, makes arrays
    if fn is None:
        return obj, f"fastpipe has no {name}"
    if not _monais_own(obj):  # a user's subclass may override what it does: run it as written
        return obj, f"{type(obj).__module__}.{type(obj).__qualname__} is not MONAI's own {name}"
    if arrays:  # fastpipe's transforms take tensors; MONAI's keep numpy arrays numpy
        return obj, f"{arrays} hold numpy arrays (EnsureTyped(data_type='numpy') or ToNumpyd before it)"
    if getattr(obj, "_lazy", False):
        return obj, "lazy=True (MONAI's lazy resampling) is not reproduced"
    try:
        out = fn(obj, ctx)
    except (TypeError, ValueError) as err:  # the fastpipe class rejects an option: keep MONAI's
        return obj, f"fastpipe's {name} refuses these options: {err}"
    if isinstance(out, str):
        return obj, out
    if _invertible(obj):  # its items get MONAI's trace key, so that Invertd fails loudly (mark_untraced)
        out.stands_for = name
    return out, ""


def _invertible(obj: Any) -> bool:
    from monai.transforms import InvertibleTransform

    return isinstance(obj, InvertibleTransform)


def _monais_own(obj: Any) -> bool:
    """Whether ``obj``'s class is MONAI's class of that name itself, not a subclass of it (the
    translators read MONAI's attributes and reproduce MONAI's behaviour, not an override's)."""
    import monai.transforms

    return getattr(monai.transforms, type(obj).__name__, None) is type(obj)


def _numpy_inputs(obj: Any, ctx: Context) -> list[str]:
    """The keys ``obj`` reads that an earlier ``EnsureTyped(data_type="numpy")`` or ``ToNumpyd`` made numpy
    arrays, where fastpipe's class needs tensors (``EnsureTyped``/``ToTensord`` update the record)."""
    name = type(obj).__name__
    keys = [str(k) for k in getattr(obj, "keys", ())]
    if name in TAKES_NUMPY:
        return []
    if name in ("EnsureTyped", "ToTensord", "ToNumpyd"):
        kind = getattr(
            getattr(obj, "converter", None), "data_type", "numpy" if name == "ToNumpyd" else "tensor"
        )
        if getattr(kind, "value", kind) == "numpy":
            ctx.numpy_keys.update(keys)
        else:
            ctx.numpy_keys.difference_update(keys)
        return []
    named = [getattr(obj, a, None) for a in ("source_key", "label_key", "image_key")]
    return sorted(set(keys + [str(k) for k in named if k is not None]) & ctx.numpy_keys)
