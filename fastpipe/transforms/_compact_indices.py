"""Compact crop-sampling support: cache the foreground list and a background count, not MONAI's lists.

A cached volume with MONAI's ``FgBgToIndicesd`` output carries one int64 per background voxel:
after ``CropForegroundd`` about twice the image's bytes. When fastpipe itself computes the indices
for its own ``RandCropByPosNegLabeld`` (the ``FgBgToIndicesd`` on the crop's label, only device
moves in between), the plan stores the foreground list as int32 and a 0-d background count
(:func:`fastpipe.ops.indices.compact_indices`), and the crop draws background centres by rejection
from the label (:mod:`fastpipe.ops._bg_reject`), uniform over the same set. Lists written by MONAI
(or by a ``FgBgToIndicesd`` the plan leaves alone) are used as they are.
"""

from __future__ import annotations

import copy
from typing import Any

from fastpipe.transforms.indices import FgBgToIndicesd
from fastpipe.transforms.rand_crop import RandCropByPosNegLabeld
from fastpipe.transforms.utility import device_point

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


def _only_moves(between: list[Any], image_key: str | None) -> bool:
    """Only device moves between the indices and the crop (with an image rule: no dtype change either)."""
    if image_key is None:
        return all(device_point(t) is not None for t in between)
    return all(type(getattr(t, "inner", t)).__name__ == "ToDeviced" for t in between)


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
        while j >= 0 and device_point(chain[j]) is not None:
            j -= 1
        if j < 0 or not _feeds(chain[j], crop) or not _only_moves(chain[j + 1 : c], chain[j].image_key):
            continue
        idx = copy.deepcopy(chain[j])
        idx.compact_keys = (*idx.compact_keys, crop.label_key)
        fused = copy.deepcopy(crop)
        fused._bg_rule = (idx.image_key, idx.image_threshold)
        chain[j], chain[c] = idx, fused
    return chain
