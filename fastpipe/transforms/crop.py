"""``CropForegroundd``: crop every key to the bounding box of the foreground of ``source_key``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch

from fastpipe._meta import get_affine
from fastpipe._tensors import alloc, numpy_ok
from fastpipe.transforms._dict import ensure_keys, mark_untraced, present_keys, update_meta


def is_positive(x: torch.Tensor) -> torch.Tensor:
    """MONAI's default foreground: ``x > 0``."""
    return x > 0


class Float32Select:
    """A user's ``select_fn`` handed MONAI's ``float32`` voxels where fastpipe keeps the file's integers.

    MONAI's ``LoadImaged`` makes voxels ``float32``; fastpipe's keeps ``int16``/``uint8`` until a step
    makes them float. A ``select_fn`` such as ``lambda x: x > x.mean()`` fails on integers (or rounds
    otherwise), so a translated ``CropForegroundd`` calls it on a ``float32`` copy; the crop itself still
    cuts the compact voxels.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x if x.is_floating_point() else x.float())

    def __repr__(self) -> str:
        return f"Float32Select({self.fn!r})"


def _axis_hits(img: torch.Tensor, select_fn: Callable) -> list[torch.Tensor]:
    """Per spatial axis, a 1-D bool of which positions hold any foreground voxel."""
    # max-reductions over the image need no bool volume: far less memory traffic. A NaN voxel makes
    # its row's max NaN (not > 0) where MONAI's x > 0 still counts the row's other voxels: such a
    # volume (m2 then holds a NaN) takes the mask path
    if select_fn is is_positive and numpy_ok(img):
        a = img.numpy()
        m2 = a.max(axis=(0, 3))  # (X, Y)
        if not (m2.dtype.kind == "f" and np.isnan(m2).any()):
            return [torch.from_numpy(v > 0) for v in (m2.max(1), m2.max(0), a.max(axis=(0, 1, 2)))]
    elif select_fn is is_positive:
        m2 = img.amax(dim=(0, 3))
        if not (m2.is_floating_point() and bool(m2.isnan().any())):
            return [m2.amax(1) > 0, m2.amax(0) > 0, img.amax(dim=(0, 1, 2)) > 0]
    mask = select_fn(img).any(0)
    m2 = mask.any(2)
    return [m2.any(1), m2.any(0), mask.any(0).any(0)]


def foreground_box(
    img: torch.Tensor,
    select_fn: Callable = is_positive,
    channel_indices=None,
    margin=0,
    allow_smaller: bool = False,
) -> tuple[list[int], list[int]]:
    """MONAI ``generate_spatial_bounding_box``: ``(start, end)`` of the foreground, ``[0]*3`` twice when empty."""
    if channel_indices is not None:
        img = img[list(np.atleast_1d(channel_indices))]
    margins = [int(m) for m in np.broadcast_to(np.asarray(margin), (3,))]
    if min(margins) < 0:
        raise ValueError(f"CropForegroundd: margin must not be negative, got {margin}")
    if img.numel() == 0:  # an empty volume (an empty crop before) has no foreground: MONAI's empty box
        return [0, 0, 0], [0, 0, 0]
    start, end = [], []
    for ax, hits in enumerate(_axis_hits(img, select_fn)):
        idx = torch.nonzero(hits).flatten().tolist()
        if not idx:
            return [0, 0, 0], [0, 0, 0]
        lo, hi = idx[0] - margins[ax], idx[-1] + margins[ax] + 1
        if allow_smaller:
            lo, hi = max(lo, 0), min(hi, img.shape[1 + ax])
        start.append(lo)
        end.append(hi)
    return start, end


def crop_pad(img: torch.Tensor, start: Sequence[int], end: Sequence[int]) -> torch.Tensor:
    """A C-contiguous copy of ``img[:, start:end]``, zero-padded where the box leaves the volume."""
    out = alloc((img.shape[0], *[e - s for s, e in zip(start, end, strict=True)]), img.dtype, img.device)
    src = tuple(slice(max(s, 0), min(e, n)) for s, e, n in zip(start, end, img.shape[1:], strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    if any(sl.stop <= sl.start for sl in src) or tuple(out.shape[1:]) != tuple(d.stop - d.start for d in dst):
        out.zero_()
    if all(sl.stop > sl.start for sl in src):
        if numpy_ok(img):  # numpy's serial strided copy (no OpenMP barrier)
            np.copyto(out.numpy()[(slice(None), *dst)], img.numpy()[(slice(None), *src)])
        else:
            out[(slice(None), *dst)] = img[(slice(None), *src)]
    return out


class CropForegroundd:
    """Crop ``keys`` to the foreground bounding box of ``data[source_key]``, MONAI's semantics.

    The foreground is ``select_fn(image)`` over all (or ``channel_indices``) channels; the box
    grows by ``margin`` and, unless ``allow_smaller``, may leave the volume (zero padding), then
    is rounded up to a multiple of ``k_divisible``. An empty foreground gives an empty crop, as
    in MONAI. Outputs are C-contiguous copies, so a cache holding them does not pin the uncropped
    volume; the affine is shifted to the box.

    Args:
        keys: keys to crop.
        source_key: key whose foreground defines the box.
        select_fn: foreground test (default ``x > 0``).
        channel_indices: channels of ``source_key`` to test (default None: all).
        margin: voxels added on each side, one or per axis (default 0).
        allow_smaller: clamp the box to the volume (default False, MONAI 1.5+'s: a margin past the
            edge is zero-padded).
        k_divisible: round the box size up to multiples of this (default 1).
        mode: padding mode; only ``"constant"`` (zeros).
        start_coord_key, end_coord_key: where to store the box (default MONAI's names; None: don't).
        allow_missing_keys: skip absent keys (default False).

    Shape:
        ``(C, X, Y, Z)`` -> ``(C, X', Y', Z')``.

    Example:
        >>> crop = CropForegroundd(["image", "label"], source_key="image", allow_smaller=True)
    """

    def __init__(self, keys, source_key: str, select_fn: Callable = is_positive, channel_indices=None,
                 margin: int | Sequence[int] = 0, allow_smaller: bool = False, k_divisible: int | Sequence[int] = 1,
                 mode: str = "constant", start_coord_key: str | None = "foreground_start_coord",
                 end_coord_key: str | None = "foreground_end_coord", allow_missing_keys: bool = False) -> None:  # fmt: skip
        if mode != "constant":
            raise ValueError(f"CropForegroundd: mode={mode!r} unsupported; only 'constant' (zero) padding")
        self.keys = ensure_keys(keys)
        self.source_key = source_key
        self.select_fn, self.channel_indices, self.margin = select_fn, channel_indices, margin
        self.allow_smaller = allow_smaller
        self.k_divisible = [int(k) for k in np.broadcast_to(np.asarray(k_divisible), (3,))]
        self.start_coord_key, self.end_coord_key = start_coord_key, end_coord_key
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.source_key not in d:
            raise KeyError(
                f"CropForegroundd: source_key {self.source_key!r} missing from item with keys {sorted(map(str, d))}"
            )
        start, end = self._box(d[self.source_key])
        if self.start_coord_key is not None:
            d[self.start_coord_key] = np.asarray(start)
        if self.end_coord_key is not None:
            d[self.end_coord_key] = np.asarray(end)
        for i in present_keys(d, self.keys, self.allow_missing_keys, "CropForegroundd"):
            key = self.keys[i]
            affine = get_affine(d, key).clone()
            affine[:3, 3] += affine[:3, :3] @ torch.tensor(start, dtype=torch.float64)
            d[key] = crop_pad(d[key], start, end)
            update_meta(d, key, affine=affine)
            mark_untraced(d, key, self)
        return d

    def _box(self, img: torch.Tensor) -> tuple[list[int], list[int]]:
        start, end = foreground_box(
            img, self.select_fn, self.channel_indices, self.margin, self.allow_smaller
        )
        if end == [0, 0, 0]:
            warnings.warn("CropForegroundd: no foreground in source image; the crop is empty", stacklevel=3)
            return start, end
        size = np.asarray(end) - np.asarray(start)
        k = np.asarray(self.k_divisible)
        new_size = np.ceil(size / k).astype(int) * k
        start = (np.asarray(start) - (new_size - size) // 2).tolist()
        return start, (np.asarray(start) + new_size).tolist()
