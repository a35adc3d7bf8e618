"""Flat foreground/background voxel indices of a label: MONAI's ``map_binary_to_indices``, once.

``FgBgToIndicesd`` stores them in the item; ``RandCropByPosNegLabeld`` computes them here when an
item arrives without them. On the CPU the masks are built with numpy (serial, huge-page output),
which is faster than torch's parallel ``nonzero`` for one volume; elsewhere torch runs on the
label's device.
"""

from __future__ import annotations

import numpy as np
import torch

from fastpipe._tensors import numpy_ok

#: Below this background fraction :func:`compact_indices` keeps the background list (rejection would need many tries).
MIN_BG_FRACTION = 1 / 16


def _flat_mask(x: torch.Tensor, threshold: float | None = None) -> torch.Tensor | np.ndarray:
    """``(x > threshold).any(0)`` (``x != 0`` without one) of a channel-first volume as a flat C-order bool.

    numpy on CPU, torch elsewhere (and for the dtypes numpy lacks, bfloat16).
    """
    a = x.numpy() if numpy_ok(x) else x
    m = (a != 0) if threshold is None else (a > threshold)
    m = m[0] if x.shape[0] == 1 else m.any(0)
    return m.ravel() if isinstance(m, np.ndarray) else m.contiguous().view(-1)


def _like(mask: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``mask`` in the form (numpy on the CPU, or a torch tensor on ``ref``'s device) of ``ref``."""
    if isinstance(ref, np.ndarray):
        return mask if isinstance(mask, np.ndarray) else mask.cpu().numpy()
    return (torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask).to(ref.device)


def _nonzero(flat: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Ascending int64 positions of the True entries of a 1-D bool."""
    if isinstance(flat, np.ndarray):
        return torch.from_numpy(np.flatnonzero(flat).astype(np.int64, copy=False))
    return torch.nonzero(flat).flatten()


def fg_bg_indices(
    label: torch.Tensor, image: torch.Tensor | None = None, image_threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI ``map_binary_to_indices``: ``(fg, bg)`` flat C-order indices into the spatial volume.

    Foreground is any nonzero label channel (channel 0 of a multi-channel, one-hot label is the
    background and is skipped); with ``image`` the background is limited to voxels whose image
    (any channel) exceeds ``image_threshold``. Unlike MONAI, the indices stay on the label's device
    (an image elsewhere has its mask moved there).

    Shape:
        label ``(C, X, Y, Z)``, image ``(C', X, Y, Z)`` -> two 1-D int64 tensors on the label's device.

    Example:
        >>> fg_bg_indices(torch.tensor([[[[0, 1], [1, 0]]]]))
        (tensor([1, 2]), tensor([0, 3]))
    """
    if label.shape[0] > 1:
        label = label[1:]
    lab = _flat_mask(label)
    if image is None:
        return _nonzero(lab), _nonzero(~lab)
    img = _like(_flat_mask(image, image_threshold), lab)
    return _nonzero(lab), _nonzero(img & ~lab)


def compact_indices(
    label: torch.Tensor,
    image: torch.Tensor | None = None,
    image_threshold: float = 0.0,
    min_bg_fraction: float = MIN_BG_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fg, bg)`` for a crop that draws background centres by rejection (``fastpipe.ops._bg_reject``).

    ``fg`` is :func:`fg_bg_indices`' foreground list, int32 when the volume has fewer than 2**31
    voxels. ``bg`` is a 0-d int64 CPU tensor holding the background count (the marker: a list is
    always 1-D), or, when background is under ``min_bg_fraction`` of the volume but not empty (where
    rejection would need many tries), the background list itself in ``fg``'s dtype.

    Example:
        >>> compact_indices(torch.tensor([[[[0, 1], [0, 0]]]]), min_bg_fraction=0.5)
        (tensor([1], dtype=torch.int32), tensor(3))
    """
    if label.shape[0] > 1:
        label = label[1:]
    lab = _flat_mask(label)
    bgm = ~lab if image is None else _like(_flat_mask(image, image_threshold), lab) & ~lab
    dtype = torch.int32 if lab.shape[0] < 2**31 else torch.int64
    fg = _nonzero(lab).to(dtype)
    count = int(bgm.sum())
    if 0 < count < min_bg_fraction * lab.shape[0]:
        return fg, _nonzero(bgm).to(dtype)
    return fg, torch.tensor(count, dtype=torch.int64)
