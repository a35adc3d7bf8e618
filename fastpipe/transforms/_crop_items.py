"""Reading and checking the items of a ``RandCropByPosNegLabeld`` batch: its size argument, the keys
every item has, their shapes against the label, and each item's foreground/background indices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch

from fastpipe._meta import item_name
from fastpipe.ops.sample import fg_bg_indices
from fastpipe.transforms._bridge import FromMonaid
from fastpipe.transforms._dict import missing_key
from fastpipe.transforms._rand_base import is_meta_tensor


def check_size(spatial_size: int | Sequence[int]) -> tuple[tuple[int, int, int], int | None]:
    """``(size, dims)``: ``spatial_size`` as 3 ints (an int means a cube; 2 ints, a 2-D patch, get a
    depth of 1) and how many it had (``None`` for an int), else ``ValueError`` naming the value."""
    size = (spatial_size,) * 3 if isinstance(spatial_size, Integral) else tuple(spatial_size)
    if len(size) not in (2, 3) or not all(isinstance(s, Integral) for s in size):
        raise ValueError(
            f"RandCropByPosNegLabeld: spatial_size must be an int, 3 ints (X, Y, Z) or, for 2-D images, "
            f"2 ints (X, Y); got {spatial_size!r} ({len(size)} values)"
        )
    dims = None if isinstance(spatial_size, Integral) else len(size)
    return (int(size[0]), int(size[1]), int(size[2]) if len(size) == 3 else 1), dims


def check_draws(pos: float, neg: float, num_samples: Any) -> tuple[float, int]:
    """``(pos_ratio, num_samples)`` from the crop's arguments, else ``ValueError`` naming the values."""
    if not (math.isfinite(pos) and math.isfinite(neg)):  # inf / inf is NaN: every draw would be background
        raise ValueError(
            f"RandCropByPosNegLabeld: pos and neg must be finite numbers, got pos={pos} neg={neg}"
        )
    if pos < 0 or neg < 0 or pos + neg == 0:
        raise ValueError(
            f"RandCropByPosNegLabeld: pos and neg must be >= 0 and not both 0, got pos={pos} neg={neg}"
        )
    if not isinstance(num_samples, Integral) or num_samples < 1:
        raise ValueError(f"RandCropByPosNegLabeld: num_samples must be an int >= 1, got {num_samples!r}")
    return pos / (pos + neg), int(num_samples)


def check_padding_mode(padding_mode: Any, image_key: str | None, keys: Sequence[str]) -> None:
    """``padding_mode`` must be ``None`` or ``"constant"``, and with it an ``image_key`` must be one of the
    padded ``keys`` (``ValueError`` naming the values)."""
    if padding_mode not in (None, "constant"):
        raise ValueError(
            f"RandCropByPosNegLabeld: padding_mode must be None or 'constant', got {padding_mode!r}"
        )
    if padding_mode is not None and image_key is not None and image_key not in keys:
        raise ValueError(
            f"RandCropByPosNegLabeld: padding_mode pads {list(keys)} but image_key {image_key!r} is not one "
            "of them, so the image rule would read an unpadded image against the padded label (as "
            "SpatialPadd(keys) before MONAI's crop, which refuses it); add the image key to keys"
        )


def item_indices(
    d: dict[str, Any],
    label: torch.Tensor,
    fk: str | None,
    bk: str | None,
    image_key: str | None,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``d``'s ``(fg, bg)``: its stored index keys ``fk``/``bk`` when both are given and present,
    else computed from ``label`` (with ``image_key``/``threshold``), as MONAI does."""
    if fk is None or bk is None or fk not in d or bk not in d:  # MONAI: computed from the label then
        image = d.get(image_key) if image_key is not None else None
        if image is not None and tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(
                f"RandCropByPosNegLabeld: image {image_key!r} of {item_name(d)} has spatial shape "
                f"{tuple(image.shape[1:])}, the label {tuple(label.shape[1:])}; the image rule needs one shape"
            )
        return fg_bg_indices(label, image, threshold)
    out = []
    for key in (fk, bk):
        idx = torch.as_tensor(d[key])
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise TypeError(
                f"RandCropByPosNegLabeld: {key!r} of {item_name(d)} must hold integer flat indices "
                f"(int64 expected), got {idx.dtype}"
            )
        if idx.ndim != 1 and not (key == bk and idx.ndim == 0):  # 0-d: a compact background count
            raise ValueError(
                f"RandCropByPosNegLabeld: {key!r} of {item_name(d)} must be a 1-D list of flat voxel indices, "
                f"got shape {tuple(idx.shape)} (MONAI's FgBgToIndicesd with output_shape writes coordinates, "
                "which the crop cannot read; leave output_shape at None)"
            )
        out.append(idx)
    return out[0], out[1]


def present_crop_keys(
    items: list[dict[str, Any]], keys: Sequence[str], allow_missing_keys: bool
) -> list[str]:
    """The ``keys`` every item has; one missing from some items (or from all, without
    ``allow_missing_keys``) raises ``KeyError`` naming the items."""
    present = []
    for key in keys:
        have = [key in d for d in items]
        if all(have):
            present.append(key)
        elif any(have) or not allow_missing_keys:
            missing = [item_name(d) for d in items if key not in d]
            raise missing_key("RandCropByPosNegLabeld", key, str(missing), skippable=not any(have))
    return present


def check_shapes(items: list[dict[str, Any]], keys: Sequence[str], label_key: str) -> list[tuple[int, ...]]:
    """Each item's spatial shape; every cropped key must be ``(C, *shape)`` like the label ``(C, X, Y, Z)``."""
    shapes = []
    for d in items:
        if label_key not in d:
            raise missing_key("RandCropByPosNegLabeld", label_key, item_name(d), skippable=False)
        ref = tuple(d[label_key].shape)
        if len(ref) != 4:  # first: a label without its channel axis would be reported against the image
            raise ValueError(
                f"RandCropByPosNegLabeld: label {label_key!r} of {item_name(d)} must be (C, X, Y, Z), got {ref}"
            )
        for key in keys:
            shp = tuple(d[key].shape)
            if len(shp) != 4 or shp[1:] != ref[1:]:
                raise ValueError(
                    f"RandCropByPosNegLabeld: {key!r} of {item_name(d)} has shape {shp}, expected (C, *{ref[1:]}) "
                    f"like {label_key!r} {ref}"
                )
        shapes.append(ref[1:])
    return shapes


def meta_tensors_as_dicts(items: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """``items`` with each MONAI ``MetaTensor`` under ``keys`` as a plain tensor plus ``{key}_meta_dict``
    (fastpipe's form, whose affine the crop moves to each crop's), as a chain's plan bridges them; an
    item without any is returned as is, another is a shallow copy."""
    out = []
    for d in items:
        metas = {k: d[k] for k in keys if is_meta_tensor(d.get(k))}
        out.append({**d, **FromMonaid()(metas)} if metas else d)
    return out


def mixed_dtypes(items: list[dict[str, Any]], keys: Sequence[str]) -> bool:
    """Whether some cropped key has volumes of different dtypes across ``items`` (a ``uint8`` label file
    beside an ``int16`` one), which one batched gather cannot cut into one output."""
    return any(len({d[k].dtype for d in items}) > 1 for k in keys)


def concat_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch from per-item batches of ``batch_call``, in order: tensors concatenated (dtypes promoted,
    as collating MONAI's crops stacks them), lists joined."""
    out: dict[str, Any] = {}
    for key, first in batches[0].items():
        if isinstance(first, torch.Tensor):
            out[key] = torch.cat([b[key] for b in batches])
        else:  # a key the first item has and another lacks: None for its crops, as one batch gives
            out[key] = [v for b in batches for v in b.get(key, [None] * b["crop_starts"].shape[0])]
    return out
