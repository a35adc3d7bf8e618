"""Tensor helpers shared across subsystems: nested tensor containers, the torch -> numpy dtype, and
uninitialised buffers.

CPU buffers are allocated through numpy, which asks the kernel for transparent huge pages:
first-touch page faults otherwise cost more than the work that fills them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def map_tensors(obj: Any, fn: Any) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside dicts, lists and tuples (other values shared)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return _same_kind(obj, [map_tensors(v, fn) for v in obj])
    return obj


def _same_kind(obj: list | tuple, values: list) -> Any:
    """A list or tuple of ``obj``'s type holding ``values``; a namedtuple takes them as its fields."""
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*values)
    return type(obj)(values)


def fresh_copy(obj: Any) -> Any:
    """``obj`` with every tensor and numpy array inside dicts, lists and tuples copied (other values
    shared): what a read may hand out of a cached entry without the user's in-place edits reaching it."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: fresh_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return _same_kind(obj, [fresh_copy(v) for v in obj])
    return obj


def tensors_of(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside ``obj`` (dicts, lists, tuples), depth first."""
    found: list[torch.Tensor] = []
    map_tensors(obj, found.append)
    return found


def nbytes_of(obj: Any) -> int:
    """Bytes held by the tensors of an entry."""
    return sum(t.numel() * t.element_size() for t in tensors_of(obj))


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype; ``TypeError`` for one numpy lacks (``bfloat16``).

    Example:
        >>> numpy_dtype(torch.int16)
        dtype('int16')
    """
    return torch.empty(0, dtype=dtype).numpy().dtype


def numpy_ok(t: torch.Tensor, *dtypes: torch.dtype) -> bool:
    """Whether ``t`` (and results of ``dtypes``) can go through numpy: on the CPU, and no ``bfloat16``,
    which numpy lacks."""
    return t.device.type == "cpu" and torch.bfloat16 not in (t.dtype, *dtypes)


def alloc(shape: tuple[int, ...] | list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor; on CPU backed by numpy memory (huge pages) when numpy knows the dtype."""
    if device.type == "cpu" and dtype is not torch.bfloat16:
        return torch.from_numpy(np.empty(tuple(shape), dtype=numpy_dtype(dtype)))
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def alloc_like(img: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor shaped and laid out in memory like ``img`` (see :func:`alloc`)."""
    order = sorted(range(img.ndim), key=lambda i: -img.stride(i))
    if not img.permute(*order).is_contiguous():
        return torch.empty_like(img, dtype=dtype)
    buf = alloc([img.shape[i] for i in order], dtype or img.dtype, img.device)
    return buf.permute(*[order.index(i) for i in range(img.ndim)])
