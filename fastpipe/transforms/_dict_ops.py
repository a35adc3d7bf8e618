"""MONAI's ``SelectItemsd``, ``DeleteItemsd`` and ``CopyItemsd`` on fastpipe's items, per item or on a collated batch.

They only pick dict entries, so a collated batch of crops (``fastpipe.transforms._per_crop``) takes
them as one call whatever its values are (:attr:`whole_batch`): the batched path does not end at a
chain's closing ``SelectItemsd(keys)``. Metadata rides along as ``{key}_meta_dict`` (fastpipe's rule
where MONAI keeps it inside the ``MetaTensor``): a selected key keeps its own.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch

from fastpipe._meta import META_SUFFIX, TRACE_SUFFIX, companions
from fastpipe.transforms._dict import ensure_keys
from fastpipe.transforms.utility import _OnBatch


class _DictOp(_OnBatch):
    """A transform that only picks entries: it runs on a collated batch as on one item, whatever its
    values are (no ``data_type``: :meth:`keeps_shape` is always true)."""

    whole_batch = True  # any values, stacked or not: _per_crop runs it on the batch as it is


class SelectItemsd(_DictOp):
    """Keep only ``keys`` (and their ``{key}_meta_dict``), MONAI's ``SelectItemsd``.

    Args:
        keys: the entries to keep.
        allow_missing_keys: skip absent keys instead of raising ``KeyError`` (default False).
    """

    def __init__(self, keys: str | Sequence[str], allow_missing_keys: bool = False) -> None:
        self.keys = ensure_keys(keys)
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise KeyError(
                f"SelectItemsd: key {missing[0]!r} is not in the item (it has {sorted(map(str, data))})"
            )
        kept = [k for k in self.keys if k in data]
        metas = [c for k in kept for c in companions(k) if c in data and c not in kept]
        return {k: data[k] for k in [*kept, *metas]}


class DeleteItemsd(_DictOp):
    """Delete the entries named by ``keys`` (regular expressions with ``use_re``), MONAI's ``DeleteItemsd``.

    The ``{key}_meta_dict`` of a key that stays is kept: it is that tensor's metadata (the affine
    fastpipe's spatial steps read), which MONAI keeps inside the ``MetaTensor``.

    Args:
        keys: entry names (or patterns); nested names (``sep``) are not taken here.
        use_re: per key, whether it is a pattern matched with ``re.search`` (default False).
    """

    def __init__(self, keys: str | Sequence[str], use_re: bool | Sequence[bool] = False) -> None:
        self.keys = ensure_keys(keys)
        flags = use_re if isinstance(use_re, (list, tuple)) else [use_re] * len(self.keys)
        if len(flags) != len(self.keys):
            raise ValueError(f"DeleteItemsd: {len(flags)} use_re flags for {len(self.keys)} keys")
        self.use_re = tuple(bool(f) for f in flags)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key, use_re in zip(self.keys, self.use_re, strict=True):
            d = {k: v for k, v in d.items() if (re.search(key, f"{k}") is None if use_re else k != key)}
        # a kept tensor keeps its metadata (MONAI's MetaTensor carries it whatever the dict holds):
        # fastpipe's steps read the affine there
        return {k: data[k] for k in data if k in d or _companion_of(k) in d}


class CopyItemsd(_DictOp):
    """Copy ``keys`` to ``names`` (``times`` copies), MONAI's ``CopyItemsd``; a copied tensor takes a
    copy of its ``{key}_meta_dict`` along (MONAI's ``MetaTensor`` copy carries its metadata).

    Args:
        keys: the entries to copy.
        times: how many copies of each (default 1).
        names: the new names, ``len(keys) * times`` of them, MONAI's order.
        allow_missing_keys: skip absent keys instead of raising ``KeyError`` (default False).
    """

    def __init__(
        self, keys: str | Sequence[str], times: int, names: Sequence[str], allow_missing_keys: bool = False
    ) -> None:
        self.keys = ensure_keys(keys)
        self.names = tuple(names)
        if times < 1 or len(self.names) != len(self.keys) * times:
            raise ValueError(f"CopyItemsd: {len(self.names)} names for {len(self.keys)} keys x {times} times")
        self.times = times
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        n = len(self.keys)
        for i in range(self.times):
            for key, name in zip(self.keys, self.names[i * n : (i + 1) * n], strict=True):
                if key not in d and self.allow_missing_keys:
                    continue
                if key not in d:
                    raise KeyError(
                        f"CopyItemsd: key {key!r} is not in the item (it has {sorted(map(str, d))})"
                    )
                if name in d:
                    raise KeyError(f"CopyItemsd: key {name!r} already exists in the item")
                d[name] = _copy(d[key])
                for src, dst in zip(companions(key), companions(name), strict=True):
                    if src in d and dst not in d and dst not in self.names:
                        d[dst] = copy.deepcopy(d[src])
        return d


def _companion_of(k: str) -> str | None:
    """The tensor whose metadata or trace ``k`` is (``image_meta_dict`` -> ``image``), else None."""
    for suffix in (META_SUFFIX, TRACE_SUFFIX):
        if isinstance(k, str) and k.endswith(suffix):
            return k[: -len(suffix)]
    return None


def _copy(value: Any) -> Any:
    """MONAI's ``MetaObj.copy_items``: tensors cloned (detached), sequences and dicts item by item."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return copy.deepcopy(value)
