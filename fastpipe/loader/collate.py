"""``list_data_collate``: MONAI's batch collation for dict items, multi-sample lists flattened."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from fastpipe.runtime._copy_threads import run_copies
from fastpipe.transforms._per_crop import flat_samples


def list_data_collate(batch: Sequence[Any], ragged: bool = False) -> Any:
    """Collate a list of items (or of per-item sample lists) into one batch.

    A list of lists (e.g. ``num_samples=4`` crops per volume) is flattened first, so ``B`` volumes
    with ``S`` samples each give a batch of ``B * S``, as MONAI does. Tuple items (``(image, label)``)
    give a list with one batch per position, as torch's ``default_collate``. Then per key: tensors and
    arrays of one shape are stacked (MONAI ``MetaTensor`` items into a batch ``MetaTensor`` holding every
    item's metadata, as MONAI's ``list_data_collate``), numbers become a tensor (dtypes as torch's ``default_collate``),
    dicts of the same keys (``{key}_meta_dict``) are collated key by key and lists or tuples of one
    length position by position (as MONAI's and torch's collate do), and anything else (strings,
    ragged 1-D tensors such as foreground indices) stays a list. Tensors of two or more dimensions
    and different shapes (images of different sizes) raise a ``ValueError`` naming the key, where
    MONAI's collate raises too, rather than reaching the model as a list.

    Args:
        batch: the items (dicts, tuples, tensors, or per-item lists of them).
        ragged: keep tensors of any dimensions and different shapes as lists (a dataset's per-crop
            items, collated before a loader sees them). Default False.

    Shape:
        tensor values ``(C, X, Y, Z)`` -> ``(B * S, C, X, Y, Z)``.

    Example:
        >>> b = list_data_collate([[{"x": torch.zeros(2)}] * 4, [{"x": torch.ones(2)}] * 4])
        >>> b["x"].shape
        torch.Size([8, 2])
    """
    if isinstance(batch, dict):  # already collated by a batched transform
        return batch
    if isinstance(getattr(batch, "collated", None), dict) and batch.unchanged():
        return lists_collated(batch.collated)  # CacheDataset.__getitems__ untouched: no second copy
    items = flat_samples(batch)
    if not items:
        raise ValueError("list_data_collate: empty batch")
    return _collate(items, strict=not ragged)


def lists_collated(batch: dict[str, Any]) -> dict[str, Any]:
    """A batched op's output with its per-crop lists (the values of keys it does not cut: numbers,
    arrays, metadata) collated as the items' values are, so a batch has the same types either way.
    In place: the cropped tensors stay where the op wrote them."""
    for key, value in list(batch.items()):
        if isinstance(value, list) and value:
            batch[key] = _collate_values(value, True, key)
    return batch


def _collate(items: list[Any], strict: bool) -> Any:
    first = items[0]
    if isinstance(first, dict):
        missing = [i for i, it in enumerate(items) if not isinstance(it, dict) or it.keys() != first.keys()]
        if missing:
            raise ValueError(
                f"list_data_collate: item {missing[0]} has keys differing from item 0's {sorted(first)}"
            )
        return {k: _collate_values([it[k] for it in items], strict, k) for k in first}
    if isinstance(first, tuple):  # (image, label) items: one batch per position, as torch's default_collate
        ragged = [i for i, it in enumerate(items) if not isinstance(it, tuple) or len(it) != len(first)]
        if ragged:
            raise ValueError(
                f"list_data_collate: item {ragged[0]} is not a tuple of {len(first)} like item 0"
            )
        columns = [_collate(list(column), strict) for column in zip(*items, strict=True)]
        return type(first)(*columns) if hasattr(first, "_fields") else columns  # a namedtuple stays one
    return _collate_values(items, strict, "item")


def _collate_values(values: list[Any], strict: bool, key: str) -> Any:
    first = values[0]
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) for v in values):
        values = [torch.from_numpy(v) for v in values]
        first = values[0]
    if isinstance(first, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in values):
        if all(v.shape == first.shape and v.device == first.device for v in values):
            return _stack(values)
        if strict and any(v.ndim >= 2 for v in values) and len({tuple(v.shape) for v in values}) > 1:
            shapes = [tuple(v.shape) for v in values]
            raise ValueError(
                f"list_data_collate: {key!r} holds tensors of different shapes {shapes}, which do not "
                "stack into a batch; crop or resize them to one size, use batch_size=1, or pass "
                "collate_fn=monai.data.pad_list_data_collate (after a num_samples crop a loader hands "
                "it one list of crops per item, as MONAI's do, and it pads only a flat list: "
                "collate_fn=lambda b: pad_list_data_collate([c for item in b for c in item]))"
            )
        return values
    if isinstance(first, (np.bool_, np.number)) and all(isinstance(v, (np.bool_, np.number)) for v in values):
        return torch.as_tensor(np.array(values))  # numpy scalars, as torch's default_collate
    if isinstance(first, (bool, int, float)) and all(isinstance(v, (bool, int, float)) for v in values):
        # torch's default_collate: the first value's type decides; Python floats give float64
        return torch.tensor(values, dtype=torch.float64) if isinstance(first, float) else torch.tensor(values)
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
        # e.g. {key}_meta_dict, as MONAI
        return {k: _collate_values([v[k] for v in values], strict, f"{key}.{k}") for k in first}
    if _same_length_sequences(values):  # one batch per position, as torch's default_collate
        return [_collate_values(list(column), strict, key) for column in zip(*values, strict=True)]
    return list(values)


def _same_length_sequences(values: list[Any]) -> bool:
    first = values[0]
    return (
        isinstance(first, (list, tuple))
        and len(first) > 0
        and all(isinstance(v, (list, tuple)) and len(v) == len(first) for v in values)
    )


_SMALL_BYTES = 1 << 18  # below this a batch's stack is one torch.stack: handing copies to threads costs more


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; plain CPU tensors of one dtype are copied by :func:`run_copies` (split over threads).
    MONAI ``MetaTensor`` items are collated as MONAI's ``list_data_collate`` does (each item's metadata)."""
    first = values[0]
    meta_tensor = getattr(
        sys.modules.get("monai.data.meta_tensor"), "MetaTensor", None
    )  # loaded if one exists
    if meta_tensor is not None and all(isinstance(v, meta_tensor) for v in values):
        from monai.data.utils import collate_meta_tensor_fn

        return collate_meta_tensor_fn(values)  # a batch: meta of every item, is_batch, applied_operations
    plain = all(type(v) is torch.Tensor and v.dtype == first.dtype for v in values)
    small = first.numel() * first.element_size() * len(values) < _SMALL_BYTES  # metadata: no helper threads
    if (
        not plain or first.device.type != "cpu" or small
    ):  # MetaTensors keep their own stack (it batches the metadata)
        return torch.stack(values)
    out = torch.empty((len(values), *first.shape), dtype=first.dtype)
    run_copies([partial(out[i].copy_, v) for i, v in enumerate(values)], out.numel() * out.element_size())
    return out
