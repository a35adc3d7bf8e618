"""Compact crop-sampling support: cache the foreground list and a background count, not MONAI's lists.

A cached volume with MONAI's ``FgBgToIndicesd`` output carries one int64 per background voxel:
after ``CropForegroundd`` about twice the image's bytes. When fastpipe itself computes the indices
for its own ``RandCropByPosNegLabeld`` (the ``FgBgToIndicesd`` on the crop's label, only device
moves or type conversions in between), the plan stores the foreground list as int32 and a 0-d background count
(:func:`fastpipe.ops.indices.compact_indices`), and the crop draws background centres by rejection
from the label (:mod:`fastpipe.ops._bg_reject`), uniform over the same set. Lists written by MONAI
(or by a ``FgBgToIndicesd`` the plan leaves alone) are used as they are.
"""

from __future__ import annotations

import copy
from typing import Any

from fastpipe.transforms._rand_base import stream_copy
from fastpipe.transforms.indices import FgBgToIndicesd
from fastpipe.transforms.rand_crop import RandCropByPosNegLabeld
from fastpipe.transforms.utility import DEVICE_POINT_NAMES

#: Plan the compact form (``False`` keeps MONAI's lists everywhere: ``benchmarks.cache_footprint``'s "before").
ENABLED = True


def _feeds(t: Any, crop: RandCropByPosNegLabeld) -> bool:
    """Whether ``t`` is fastpipe's ``FgBgToIndicesd`` writing exactly the crop's index keys."""
    if type(t) is not FgBgToIndicesd or crop.label_key not in t.keys:
        return False
    return (crop.fg_indices_key, crop.bg_indices_key) == (
        f"{crop.label_key}{t.fg_postfix}",
        f"{crop.label_key}{t.bg_postfix}",
    )


def _passes(t: Any, crop: RandCropByPosNegLabeld, image_key: str | None) -> bool:
    """Whether ``t`` may sit between the indices and the crop: a ``ToDeviced``/``EnsureTyped`` (either
    library) that keeps the index keys' values and dtypes, keeps label and image tensors, does not
    change the label's dtype (a cast can turn a foreground voxel into background), and, with an image
    rule, does not change the image's dtype (a cast could move a voxel across the threshold)."""
    t = getattr(t, "inner", t)
    if type(t).__name__ not in DEVICE_POINT_NAMES:
        return False
    keys = set(getattr(t, "keys", ()) or ())
    conv = getattr(t, "converter", t)
    as_is = getattr(conv, "data_type", None) in (None, "tensor")
    same_dtype = getattr(conv, "dtype", None) is None
    if keys & {crop.fg_indices_key, crop.bg_indices_key} and not (as_is and same_dtype):
        return False
    if keys & {crop.label_key, image_key} and not as_is:
        return False
    if crop.label_key in keys and not same_dtype:  # a cast can zero a voxel (0.4 -> 0 as uint8)
        return False
    return image_key is None or image_key not in keys or same_dtype


def _same_rule(t: FgBgToIndicesd, crop: RandCropByPosNegLabeld) -> bool:
    """Whether ``t`` computes the lists the crop would compute itself (MONAI's ``map_binary_to_indices``
    on the same label with the same image rule)."""
    if t.image_key != crop.image_key:
        return False
    return t.image_key is None or float(t.image_threshold) == float(crop.image_threshold)


def wire_indices(chain: Any) -> list[Any]:
    """``chain`` where a crop without index keys reads those of the ``FgBgToIndicesd`` right before it.

    A crop given no ``fg_indices_key``/``bg_indices_key`` computes the lists from its label each call,
    as MONAI's does. When a fastpipe ``FgBgToIndicesd`` on the crop's label, with the crop's own image
    rule, runs right before it (only device moves or type conversions in between, as for
    :func:`compact_chain`), its lists are the ones the crop would compute, so a copy of the crop reads
    them instead: computed once in the cached prefix, not every epoch. A pad or any other step in
    between leaves the crop computing its own.
    """
    chain = list(chain)
    for c, crop in enumerate(chain):
        if type(crop) is not RandCropByPosNegLabeld or crop.index_keys:
            continue
        j = c - 1
        while j >= 0 and _passes(chain[j], crop, None):
            j -= 1
        t = chain[j] if j >= 0 else None
        if type(t) is not FgBgToIndicesd or crop.label_key not in t.keys or not _same_rule(t, crop):
            continue
        wired = stream_copy(crop)
        wired.fg_indices_key = f"{crop.label_key}{t.fg_postfix}"
        wired.bg_indices_key = f"{crop.label_key}{t.bg_postfix}"
        if all(_passes(u, wired, t.image_key) for u in chain[j + 1 : c]):  # the lists reach it unchanged
            chain[c] = wired
    return chain


def compact_chain(chain: list[Any]) -> list[Any]:
    """``chain`` with each crop's feeding ``FgBgToIndicesd`` switched to the compact form (both copied).

    Example:
        >>> from fastpipe import transforms as T
        >>> out = compact_chain([T.FgBgToIndicesd("label"), T.RandCropByPosNegLabeld(["image", "label"], "label", 8)])
        >>> out[0].compact_keys, out[1]._bg_rule
        (('label',), (None, 0.0))
    """
    chain = list(chain)
    for c, crop in enumerate(chain if ENABLED else ()):
        if type(crop) is not RandCropByPosNegLabeld or crop._bg_rule is not None:
            continue
        j = c - 1
        while j >= 0 and _passes(chain[j], crop, None):
            j -= 1
        if j < 0 or not _feeds(chain[j], crop):
            continue
        if not all(_passes(t, crop, chain[j].image_key) for t in chain[j + 1 : c]):
            continue
        idx = copy.deepcopy(chain[j])
        idx.compact_keys = (*idx.compact_keys, crop.label_key)
        fused = stream_copy(crop)
        fused._bg_rule = (idx.image_key, idx.image_threshold)
        chain[j], chain[c] = idx, fused
    return chain
