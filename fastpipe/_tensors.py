"""Tensor helpers shared across subsystems: nested tensor containers and the torch -> numpy dtype."""

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
        return type(obj)(map_tensors(v, fn) for v in obj)
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
