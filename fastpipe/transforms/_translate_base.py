"""The translation registry and helpers shared by the translators (``_translate_det.py``,
``_translate_random.py``); :func:`fastpipe.transforms._translate.translate` uses them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fastpipe._chain import built_on

Translator = Callable[[Any, "Context"], Any]
REGISTRY: dict[str, Translator] = {}


@dataclass
class Context:
    """What a translator may need besides the object: the data items (``None`` when unknown)."""

    items: Sequence[Any] | None = None
    float_keys: set[str] = field(default_factory=set)  # keys MONAI's LoadImaged would make float32
    nearest_keys: set[str] = field(default_factory=set)  # keys a translated Spacingd resamples with nearest
    settled_keys: set[str] = field(default_factory=set)  # keys a translated step makes float (or casts)
    following: Sequence[Any] = ()  # the chain's steps after the one being translated (the plan sets them)
    channel_first_keys: set[str] = field(default_factory=set)  # LoadImaged(ensure_channel_first=True)'s keys
    numpy_keys: set[str] = field(default_factory=set)  # keys an EnsureTyped(data_type="numpy") made arrays


def register(name: str) -> Callable[[Translator], Translator]:
    """Register ``fn`` as the translator of MONAI class ``name``."""

    def deco(fn: Translator) -> Translator:
        REGISTRY[name] = fn
        return fn

    return deco


def is_monai(obj: Any) -> bool:
    """Whether ``obj`` is an object of a MONAI class, or of a class of the user's built on one (it
    then gets MONAI's MetaTensors, as in MONAI's own chain)."""
    return built_on(obj, "monai")


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


def key_options(obj: Any) -> dict[str, Any]:
    """MONAI's ``keys`` and ``allow_missing_keys`` of a dictionary transform, as fastpipe's arguments."""
    return {"keys": list(obj.keys), "allow_missing_keys": bool(obj.allow_missing_keys)}


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
