"""Chain rewrite: fuse a random suffix and a preceding pad into ``RandCropByPosNegLabeld``'s gather.

:func:`fuse_random` is applied where chains are built (``Compose``, ``CacheDataset``), like
``fuse_spatial``. It returns a new list; the transforms handed in are never modified (the crop is
copied). Two rewrites, each only where the result is exactly MONAI's:

1. **Suffix.** A run of ``RandFlipd``, ``RandRotate90d``, ``RandScaleIntensityd`` and
   ``RandShiftIntensityd`` right after the crop joins the crop: each draws once per crop (as MONAI
   draws per element of the crop list) and the gather applies the flips, the quarter turns (as an
   index permutation) and ``x * scale + shift`` on the transform's float32 keys (a key of another
   dtype gets the scale and shift per crop after the gather, with MONAI's dtype rules). The run
   stops at the first transform that cannot join: another type; keys the crop does not cut;
   ``channel_wise``; a ``RandShiftIntensityd`` with ``safe=True`` (MONAI then clamps a float32 sum to
   the dtype's range, so an overflow or ``inf`` becomes 3.4e38); a ``RandScaleIntensityd`` with a dtype
   other than float32/None; a scale after a shift, or a second
   scale or shift, on one key (the op computes one ``x * s + o``); a ``RandRotate90d`` whose plane
   has unequal crop sides (or may shrink under ``allow_smaller``). What follows runs per item.
2. **Pad.** A ``SpatialPadd`` with ``mode="constant"`` and value 0 on exactly the crop's keys, with
   only device points (``ToDeviced``/``EnsureTyped``) and the crop label's ``FgBgToIndicesd`` between
   it and the crop, leaves the cached chain: the crop pads inside its gather. Where the indices come
   from matters. ``SpatialPadd`` then ``FgBgToIndicesd`` (or no ``FgBgToIndicesd``): MONAI's indices
   cover the padded volume, pad voxels being background (label 0; with an ``image_key``, only if 0
   is above ``image_threshold``); fastpipe caches the unpadded indices and draws pad voxels in closed
   form with the same probabilities. ``FgBgToIndicesd`` *before* ``SpatialPadd``: MONAI reads
   indices of the unpadded volume against the padded shape; that chain is left as written (cached
   padded copy), so results stay MONAI's.
3. **Compact indices.** The crop label's ``FgBgToIndicesd`` right before the crop (device moves
   between) stores the foreground list (int32) and a background count, and the crop draws
   background centres by rejection: same distribution, about half the cached bytes
   (``fastpipe.transforms._compact_indices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastpipe.transforms._compact_indices import compact_chain, wire_indices
from fastpipe.transforms._rand_base import stream_copy
from fastpipe.transforms.indices import FgBgToIndicesd
from fastpipe.transforms.pad import SpatialPadd
from fastpipe.transforms.rand_crop import RandCropByPosNegLabeld
from fastpipe.transforms.rand_intensity import RandScaleIntensityd, RandShiftIntensityd
from fastpipe.transforms.rand_spatial import RandFlipd, RandRotate90d
from fastpipe.transforms.utility import device_point

FUSABLE = (RandFlipd, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd)


def _rotation_ok(t: RandRotate90d, crop: RandCropByPosNegLabeld) -> bool:
    a, b = t._axes
    size = crop.spatial_size
    if size[a] <= 0 or size[a] != size[b]:
        return False
    if not crop.allow_smaller:
        return True
    pad = crop._pad[0] if crop._pad is not None else None
    return pad is not None and pad[a] >= size[a] and pad[b] >= size[b]


def _intensity_ok(t: Any, augs: Sequence[Any]) -> bool:
    if t.channel_wise or (isinstance(t, RandScaleIntensityd) and t.dtype not in (None, torch.float32)):
        return False
    if getattr(t, "safe", False):  # MONAI clamps to the dtype's range (float32: inf -> 3.4e38); the op cannot
        return False
    for prev in augs:
        if not isinstance(prev, (RandScaleIntensityd, RandShiftIntensityd)) or not set(prev.keys) & set(
            t.keys
        ):
            continue
        if isinstance(t, RandScaleIntensityd) or isinstance(prev, RandShiftIntensityd):
            return False  # a second scale, a scale after a shift, or a second shift on a key
    return True


def can_join(t: Any, crop: RandCropByPosNegLabeld, augs: Sequence[Any]) -> bool:
    """Whether ``t`` can join the crop's fused suffix after ``augs``."""
    if type(t) not in FUSABLE or not set(t.keys) <= set(crop.keys):
        return False
    if crop.allow_missing_keys and not t.allow_missing_keys:
        return False
    if isinstance(t, RandRotate90d):
        return _rotation_ok(t, crop)
    if isinstance(t, (RandScaleIntensityd, RandShiftIntensityd)):
        return _intensity_ok(t, augs)
    return True


def _indices_step(t: Any, crop: RandCropByPosNegLabeld) -> bool:
    return type(t) is FgBgToIndicesd and crop.label_key in t.keys


def _pad_is_bg(between: Sequence[Any], crop: RandCropByPosNegLabeld) -> bool:
    """Whether pad voxels (label 0, image 0) are background for the indices the crop will use."""
    idx = [t for t in between if _indices_step(t, crop)]
    image_key, threshold = (
        (idx[-1].image_key, idx[-1].image_threshold) if idx else (crop.image_key, crop.image_threshold)
    )
    return image_key is None or threshold < 0


def _pad_ok(pad: Any, crop: RandCropByPosNegLabeld, before: Sequence[Any], between: Sequence[Any]) -> bool:
    if type(pad) is not SpatialPadd or crop._pad is not None:
        return False
    if set(pad.keys) != set(crop.keys) or crop.label_key not in crop.keys or pad.value != 0:
        return False
    if any(m != "constant" for m in pad.mode) or pad.allow_missing_keys != crop.allow_missing_keys:
        return False
    idx = [t for t in between if _indices_step(t, crop)]
    if idx:
        t = idx[-1]
        keys_ok = (crop.fg_indices_key, crop.bg_indices_key) == (
            f"{crop.label_key}{t.fg_postfix}", f"{crop.label_key}{t.bg_postfix}",
        )  # fmt: skip
        return keys_ok and (t.image_key is None or t.image_key in pad.keys)
    # no indices after the pad: the crop must compute them itself, on the (virtually) padded label
    # (stored indices from before the pad, which MONAI would read as they are, keep the pad a step;
    # so does an image_key the pad leaves unpadded: MONAI's crop then refuses the unequal shapes)
    return not crop.index_keys and (crop.image_key is None or crop.image_key in pad.keys)


def _absorb_pad(chain: list[Any], c: int) -> list[Any]:
    """``chain`` with a ``SpatialPadd`` before the crop at ``c`` moved into a copy of the crop, when allowed."""
    crop = chain[c]
    j = c - 1
    while j >= 0 and (device_point(chain[j]) is not None or _indices_step(chain[j], crop)):
        j -= 1
    if j < 0 or not _pad_ok(chain[j], crop, chain[:j], chain[j + 1 : c]):
        return chain
    pad = chain[j]
    fused = stream_copy(crop)
    fused._pad = (pad.spatial_size, pad.method, _pad_is_bg(chain[j + 1 : c], crop))
    return [*chain[:j], *chain[j + 1 : c], fused, *chain[c + 1 :]]


def fuse_random(transforms: Sequence[Any]) -> list[Any]:
    """The chain to run: constant pads before and random suffixes after ``RandCropByPosNegLabeld`` fused into it.

    Example:
        >>> from fastpipe import transforms as T
        >>> chain = fuse_random([T.RandCropByPosNegLabeld(["image", "label"], "label", 8, num_samples=4),
        ...                      T.RandFlipd(["image", "label"], prob=0.1, spatial_axis=0)])
        >>> len(chain), type(chain[0]).__name__
        (1, 'RandCropByPosNegLabeld')
    """
    chain, c = wire_indices(transforms), 0
    while c < len(chain):
        if type(chain[c]) is RandCropByPosNegLabeld:
            before, chain = len(chain), _absorb_pad(chain, c)
            c -= before - len(chain)  # the pad before the crop left the chain
        c += 1
    chain = compact_chain(chain)
    out: list[Any] = []
    i = 0
    while i < len(chain):
        t, i = chain[i], i + 1
        if type(t) is RandCropByPosNegLabeld:
            augs: list[Any] = []
            while i < len(chain) and can_join(chain[i], t, augs):
                augs.append(chain[i])
                i += 1
            if augs:
                t = stream_copy(t) if any(t is x for x in transforms) else t
                t._augs = (*t._augs, *augs)
        out.append(t)
    return out
