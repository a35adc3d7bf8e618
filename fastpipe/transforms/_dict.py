"""Small helpers shared by the dictionary transforms: key lists, per-key options, the same-grid check."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from fastpipe._meta import get_affine, meta_key


def ensure_keys(keys: str | Sequence[str]) -> tuple[str, ...]:
    """``keys`` as a tuple (a single string becomes a one-tuple)."""
    return (keys,) if isinstance(keys, str) else tuple(keys)


def per_key(value: Any, keys: tuple[str, ...], name: str) -> tuple[Any, ...]:
    """One option per key: a scalar/str is repeated, a sequence must match ``len(keys)``."""
    if isinstance(value, (str, int, float, bool)) or value is None or not isinstance(value, Sequence):
        return (value,) * len(keys)
    if len(value) != len(keys):
        raise ValueError(f"{name}: {len(value)} values {tuple(value)} for {len(keys)} keys {keys}")
    return tuple(value)


def present_keys(
    data: dict[Hashable, Any], keys: tuple[str, ...], allow_missing: bool, who: str
) -> list[int]:
    """Indices into ``keys`` of the keys present in ``data``; ``KeyError`` for a missing one unless allowed."""
    found = []
    for i, key in enumerate(keys):
        if key in data:
            found.append(i)
        elif not allow_missing:
            raise KeyError(f"{who}: key {key!r} missing from item with keys {sorted(map(str, data))}")
    return found


def spacing_of(affine: np.ndarray | torch.Tensor) -> tuple[float, ...]:
    """Voxel spacing (column norms of the 3x3 part) of a 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))


def update_meta(data: dict[Hashable, Any], key: str, **entries: Any) -> None:
    """Replace ``data[f"{key}_meta_dict"]`` by an updated copy (the input item's dict is never mutated)."""
    data[meta_key(key)] = {**data.get(meta_key(key), {}), **entries}


def _source(data: dict[Hashable, Any], key: str) -> str:
    return str(data.get(meta_key(key), {}).get("filename_or_obj", f"<key {key!r}>"))


def check_same_grid(data: dict[Hashable, Any], keys: Sequence[str], who: str, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` naming both files when the volumes of ``keys`` differ in spatial shape or affine.

    Image and label of one item must share their voxel grid, or every later spatial transform
    silently misaligns them.
    """
    keys = [k for k in keys if k in data and isinstance(data[k], torch.Tensor)]
    if len(keys) < 2:
        return
    ref = keys[0]
    ref_shape, ref_aff = tuple(data[ref].shape[-3:]), get_affine(data, ref).numpy()
    for key in keys[1:]:
        shape, aff = tuple(data[key].shape[-3:]), get_affine(data, key).numpy()
        if shape != ref_shape:
            raise ValueError(
                f"{who}: {key!r} ({_source(data, key)}) has spatial shape {shape} but {ref!r} "
                f"({_source(data, ref)}) has {ref_shape}; image and label must share one voxel grid"
            )
        if not np.allclose(aff, ref_aff, atol=atol, rtol=1e-5):
            raise ValueError(
                f"{who}: {key!r} ({_source(data, key)}) has affine {np.round(aff, 4).tolist()} but {ref!r} "
                f"({_source(data, ref)}) has {np.round(ref_aff, 4).tolist()}; image and label must share one voxel grid"
            )
