"""2-D items ``(C, X, Y)`` through ``RandCropByPosNegLabeld``, as MONAI crops them.

The batched crop and its gather are 3-D. A batch of 2-D items is cut as depth-1 volumes (views with
a last axis of 1, windows ``(X', Y', 1)``) by the same crop without its fused suffix; the depth axis
is dropped again, and the fused random transforms then run crop by crop as each runs on its own on
a 2-D crop (MONAI's 2-D flips, quarter turns and intensity steps, the ``{key}_meta_dict`` affines
included), drawing from the crop's generator. Flat foreground/background indices over ``(X, Y)``
are the same over ``(X, Y, 1)``, so stored index lists (and compact counts) are read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastpipe._meta import meta_key


def is_2d(items: list[dict[str, Any]], label_key: str, keys: Sequence[str]) -> bool:
    """Whether every item's label and cropped volumes are ``(C, X, Y)`` (a 3-D label without its channel
    axis beside a ``(C, X, Y, Z)`` image is not: ``check_shapes`` names the label then)."""
    return all(
        getattr(d.get(label_key), "ndim", None) == 3 and all(getattr(d.get(k), "ndim", 3) == 3 for k in keys)
        for d in items
    )


def size_2d(crop: Any, items: list[dict[str, Any]]) -> tuple[int, int]:
    """The 2-D patch size: ``spatial_size`` given as an int or 2 ints; ``ValueError`` otherwise, or when
    the items are not 2-D (2 ints for a 3-D label), as MONAI refuses a size of another rank."""
    two_d = is_2d(items, crop.label_key, crop.keys)
    if crop._size_dims == 3 or not two_d:
        shape = tuple(items[0][crop.label_key].shape) if crop.label_key in items[0] else None
        raise ValueError(
            f"RandCropByPosNegLabeld: spatial_size {crop.spatial_size if crop._size_dims == 3 else crop.spatial_size[:2]} "
            f"does not match the rank of the label {crop.label_key!r} {shape}: give 3 sizes for (C, X, Y, Z) "
            "volumes, 2 (or an int) for 2-D (C, X, Y) images"
        )
    return crop.spatial_size[0], crop.spatial_size[1]


def _lifted(items: list[dict[str, Any]], keys: set[str]) -> list[dict[str, Any]]:
    """Each item with its ``(C, X, Y)`` tensors under ``keys`` as ``(C, X, Y, 1)`` views."""
    return [
        {**d, **{k: d[k][..., None] for k in keys if getattr(d.get(k), "ndim", None) == 3}} for d in items
    ]


def batch_call_2d(crop: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``crop.batch_call(items)`` for 2-D items: ``(N, C, X', Y')`` per key, ``crop_starts``/``crop_centers`` ``(N, 2)``."""
    a, b = size_2d(crop, items)
    flat = object.__new__(
        type(crop)
    )  # the same object's state (generator, lock, pool), a 3-D size, no suffix
    flat.__dict__.update(crop.__dict__, spatial_size=(a, b, 1), _size_dims=3, _augs=())
    if crop._pad is not None:
        flat._pad = ((*crop._pad[0][:2], 1), *crop._pad[1:])
    keys = {*crop.keys, crop.label_key, *((crop.image_key,) if crop.image_key is not None else ())}
    out = flat.batch_call(_lifted(items, keys))
    crop.generator, crop._seeded_in = flat.generator, flat._seeded_in  # a worker's reseed (worker_stream)
    cut = [k for k in crop.keys if isinstance(out.get(k), torch.Tensor)]
    for key in cut:
        out[key] = out[key][..., 0]
    out["crop_centers"], out["crop_starts"] = out["crop_centers"][:, :2], out["crop_starts"][:, :2]
    if crop._augs:
        _apply_suffix(crop, out, cut)
    return out


def _apply_suffix(crop: Any, out: dict[str, Any], cut: list[str]) -> None:
    """The fused transforms on each 2-D crop of ``out`` in chain order (their own per-item ``apply``), in place."""
    n = out["crop_starts"].shape[0]
    with crop._lock:
        draws = [t.draw(n, crop.generator) for t in crop._augs]
    metas = [meta_key(k) for k in cut if isinstance(out.get(meta_key(k)), list)]
    rows = []
    for i in range(n):
        d = {k: out[k][i] for k in (*cut, *metas)}
        for t, p in zip(crop._augs, draws, strict=True):
            d = t.apply(d, p, i)
        rows.append(d)
    for key in cut:  # stacking promotes dtypes, as collating MONAI's crops does
        out[key] = torch.stack([r[key] for r in rows])
    for key in metas:
        out[key] = [r[key] for r in rows]
