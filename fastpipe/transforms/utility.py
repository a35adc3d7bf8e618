"""The device point of a chain: ``ToDeviced`` and ``EnsureTyped``, with MONAI's names and arguments.

A cache placed after one of these keeps its items on that device ("ToDevice-then-cache"); see
:func:`device_point` for how :class:`fastpipe.CacheDataset` finds it, MONAI's own classes included.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastpipe._chain import unwrapped
from fastpipe._meta import META_SUFFIX
from fastpipe.transforms._dict import MONAI_SIGNED, dtype_arg, ensure_keys, iter_present

#: Class names recognised as a device point, fastpipe's and MONAI's (duck typing: MONAI stays optional).
DEVICE_POINT_NAMES = ("ToDeviced", "EnsureTyped", "ToDevice", "EnsureType")


def device_point(transform: Any) -> torch.device | None:
    """The device a transform moves data to, when it is a ``ToDeviced``/``EnsureTyped`` (either library).

    Returns ``None`` for any other transform, or for an ``EnsureTyped`` without ``device``. Looks
    through profiling wrappers (``.inner``), as ``is_random`` does.
    """
    transform = unwrapped(transform)
    if type(transform).__name__ not in DEVICE_POINT_NAMES:
        return None
    dev = getattr(transform, "device", None)
    if dev is None:
        dev = getattr(getattr(transform, "converter", None), "device", None)
    return None if dev is None else torch.device(dev)


def on_host(transform: Any) -> Any:
    """A device point as it runs when its device is full: ``None`` for a pure move (``ToDeviced``,
    ``ToDevice``), else a copy that converts as the original does but onto the CPU (an ``EnsureTyped``'s
    dtype and data type kept). Any other transform is returned as it is."""
    inner = unwrapped(transform)
    if device_point(inner) is None:
        return transform
    if type(inner).__name__ in ("ToDeviced", "ToDevice"):
        return None
    host = copy.copy(inner)
    for owner in (host, getattr(host, "converter", None)):
        if owner is not None and getattr(owner, "device", None) is not None:
            if owner is not host:
                owner = host.converter = copy.copy(owner)
            owner.device = torch.device("cpu")
    if inner is transform:
        return host
    wrapper = copy.copy(transform)
    wrapper.inner = host
    return wrapper


class _OnBatch:
    """A per-value conversion: a collated batch of crops (tensors with a leading ``N``) takes it in
    one call, each row as the crop would (``fastpipe.transforms._per_crop.run_per_crop``)."""

    def keeps_shape(self, spatial_size: Sequence[int]) -> bool:
        """Whether it runs on a stacked batch of crops (it makes tensors of the crops' shape)."""
        return getattr(self, "data_type", "tensor") == "tensor"

    def draw_batch(self, batch: dict[str, Any], n: int) -> dict[str, Any]:
        """Nothing to draw: the stacked batch's parameters (:meth:`apply_batch`)."""
        return {}

    def apply_batch(self, batch: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The conversion of every crop of a collated batch at once."""
        return self(batch)


class ToDeviced(_OnBatch):
    """Move the tensors under ``keys`` to ``device``; metadata dicts stay where they are.

    Args:
        keys: keys of the tensors to move (``"label_fg_indices"`` and friends move too when listed).
        device: target device, e.g. ``"cuda:0"``.
        non_blocking: passed to ``Tensor.to`` (useful from pinned host memory).
        allow_missing_keys: skip keys absent from the item instead of raising ``KeyError``.

    Example:
        >>> import torch
        >>> ToDeviced("image", device="cpu")({"image": torch.zeros(1, 2, 2, 2)})["image"].device.type
        'cpu'
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        device: str | torch.device,
        non_blocking: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        self.keys = ensure_keys(keys)
        self.device = torch.device(device)
        self.non_blocking = non_blocking
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in iter_present(d, self.keys, self.allow_missing_keys, "ToDeviced"):
            value = d[key]
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"ToDeviced: {key!r} is {type(value).__name__}, expected a tensor or ndarray")
            d[key] = value.to(self.device, non_blocking=self.non_blocking)
        return d

    def __repr__(self) -> str:
        return f"ToDeviced(keys={list(self.keys)}, device={str(self.device)!r})"


class EnsureTyped(_OnBatch):
    """Make the values under ``keys`` tensors (or arrays) of ``dtype`` on ``device``.

    Args:
        keys: keys to convert; ``{key}_meta_dict`` entries are never converted.
        data_type: ``"tensor"`` (default) or ``"numpy"``.
        dtype: target dtype (``torch.dtype``, numpy dtype or name) or ``None`` to keep it; a
            sequence gives one per key (MONAI's per-key form).
        device: target device, or ``None`` to keep it (a device makes this the chain's device point).
        track_meta: accepted for MONAI compatibility; fastpipe keeps metadata in plain dicts
            (``{key}_meta_dict``), so the values are plain tensors either way.
        allow_missing_keys: skip keys absent from the item instead of raising ``KeyError``.

    Example:
        >>> import numpy as np
        >>> EnsureTyped("image", dtype="float32")({"image": np.zeros(3, "int16")})["image"].dtype
        torch.float32
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        data_type: str = "tensor",
        dtype: Any = None,
        device: str | torch.device | None = None,
        track_meta: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        if data_type not in ("tensor", "numpy"):
            raise ValueError(f"EnsureTyped: data_type must be 'tensor' or 'numpy', got {data_type!r}")
        self.keys = ensure_keys(keys)
        self.data_type = data_type
        self.dtype = _per_key(dtype, len(self.keys))
        self.device = None if device is None else torch.device(device)
        self.track_meta = track_meta
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        per_key = self.dtype if isinstance(self.dtype, tuple) else (self.dtype,) * len(self.keys)
        dtypes = dict(zip(self.keys, per_key, strict=True))
        keys = [k for k in self.keys if not k.endswith(META_SUFFIX)]
        for key in iter_present(d, keys, self.allow_missing_keys, "EnsureTyped"):
            d[key] = self._convert(d[key], dtypes[key])
        return d

    def _convert(self, value: Any, dtype: torch.dtype | None) -> Any:
        """One value as MONAI's ``convert_to_tensor`` takes it: arrays, numbers and sequences become
        tensors, a dict its entries; a string (or string/object array), ``None`` and the like stay as they are."""
        if isinstance(value, dict):
            return {k: self._convert(v, dtype) for k, v in value.items()}
        if isinstance(value, str) or not isinstance(
            value, (torch.Tensor, np.ndarray, np.generic, int, float, bool, list, tuple)
        ):
            return value
        if not isinstance(value, torch.Tensor) and np.asarray(value).dtype.kind in "SUO":
            return value
        t = value if isinstance(value, torch.Tensor) else _as_tensor(value, self.data_type == "tensor")
        t = t.to(device=self.device, dtype=dtype, memory_format=torch.contiguous_format)
        return t.cpu().numpy() if self.data_type == "numpy" else t

    def __repr__(self) -> str:
        return f"EnsureTyped(keys={list(self.keys)}, data_type={self.data_type!r}, dtype={self.dtype}, device={self.device})"


def _as_tensor(value: Any, as_monai_tensor: bool) -> torch.Tensor:
    """``value`` (an array, a number or a sequence) as a tensor. For a tensor output, as MONAI's
    ``convert_to_tensor`` makes it: Python floats (and lists of them) in torch's default dtype (float32),
    uint16/32/64 arrays as int32/int64; otherwise (a numpy output) numpy's dtypes, as MONAI's ``convert_to_numpy``."""
    if not as_monai_tensor or isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if as_monai_tensor and arr.dtype in MONAI_SIGNED:
            arr = arr.astype(MONAI_SIGNED[arr.dtype])
        return torch.as_tensor(arr)
    if _python_numbers(value):
        return torch.as_tensor(value)
    return torch.as_tensor(np.asarray(value))  # e.g. a list of arrays (MONAI raises): numpy's stacking


def _python_numbers(value: Any) -> bool:
    """Whether ``value`` is a Python number or a (nested) list/tuple of them."""
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and all(_python_numbers(v) for v in value)


def _per_key(dtype: Any, n: int) -> torch.dtype | tuple[torch.dtype | None, ...] | None:
    """One dtype for every key, or a tuple of ``n`` (one per key) when a sequence names different ones."""
    if not isinstance(dtype, (list, tuple)):
        return dtype_arg(dtype, "EnsureTyped")
    if len(dtype) != n:
        raise ValueError(
            f"EnsureTyped: {len(dtype)} dtypes {list(dtype)} for {n} keys; give one, or one per key"
        )
    out = tuple(dtype_arg(d, "EnsureTyped") for d in dtype)
    return out[0] if len(set(out)) == 1 else out
