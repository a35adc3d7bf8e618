"""Crop centres on a volume padded only virtually (a ``SpatialPadd`` absorbed into the crop).

The cache holds the unpadded volume and its foreground/background index lists; sampling happens in
the padded volume's coordinates, as MONAI samples after ``SpatialPadd`` and ``FgBgToIndicesd``:
every pad voxel has label 0, so it is one more background voxel (unless an image threshold
excludes it). A background draw ``k`` below the inner list's length takes that voxel (moved by the
pad offset); a larger ``k`` takes the ``k - len``-th pad voxel, counted in closed form over the six
slabs around the inner box. No padded copy and no list of pad voxels is ever made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import torch


@dataclass(frozen=True)
class VirtualPad:
    """One volume's padding: ``lo`` voxels before each axis, ``shape`` the unpadded spatial shape,
    ``padded`` the padded one; ``pad_is_bg``: pad voxels count as background."""

    lo: tuple[int, int, int]
    shape: tuple[int, int, int]
    padded: tuple[int, int, int]
    pad_is_bg: bool

    @property
    def n_pad(self) -> int:
        return prod(self.padded) - prod(self.shape) if self.pad_is_bg else 0


def pad_voxel(k: int, p: VirtualPad) -> int:
    """Flat index (C order, padded shape) of the ``k``-th pad voxel: x slabs, then y slabs, then z slabs."""
    (l0, l1, l2), (s0, s1, s2), (p0, p1, p2) = p.lo, p.shape, p.padded

    def outside(a: int, lo: int, s: int) -> int:  # a-th coordinate not in [lo, lo + s)
        return a if a < lo else a + s

    nx = (p0 - s0) * p1 * p2
    ny = s0 * (p1 - s1) * p2
    if k < nx:
        x, rem = outside(k // (p1 * p2), l0, s0), k % (p1 * p2)
        y, z = rem // p2, rem % p2
    elif k < nx + ny:
        k -= nx
        x, rem = l0 + k // ((p1 - s1) * p2), k % ((p1 - s1) * p2)
        y, z = outside(rem // p2, l1, s1), rem % p2
    else:
        k -= nx + ny
        x, rem = l0 + k // (s1 * (p2 - s2)), k % (s1 * (p2 - s2))
        y, z = l1 + rem // (p2 - s2), outside(rem % (p2 - s2), l2, s2)
    return (x * p1 + y) * p2 + z


def pad_pick(is_fg: bool, k: int, n_inner: int, pad: VirtualPad) -> int | None:
    """The padded flat index of the pad voxel a crop drew, or ``None`` when it drew from its inner list:
    a background draw ``k`` at or past the inner list's ``n_inner`` entries is pad voxel ``k - n_inner``."""
    return pad_voxel(k - n_inner, pad) if not is_fg and k >= n_inner else None


def to_padded_flat(flat, lo, shape, padded):
    """Flat indices of an unpadded volume moved into the padded one; ``lo``, ``shape``, ``padded`` per axis.

    Host ints for one crop, or ``(N,)`` tensors (each argument's entries are then tensors too).
    """
    z = flat % shape[2]
    y = (flat // shape[2]) % shape[1]
    x = flat // (shape[1] * shape[2])
    return ((x + lo[0]) * padded[1] + y + lo[1]) * padded[2] + z + lo[2]


def split_pad_picks(
    is_fg: Sequence[bool],
    k: Sequence[int],
    n_bg: Sequence[int],
    vol: Sequence[int],
    pads: Sequence[VirtualPad],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pick_pad, k_inner, pad_flat)`` per crop: whether it took a pad voxel, the index into its inner
    list (0 for pad picks), and the pad voxel's padded flat index (0 otherwise); all on the CPU."""
    picks, k_inner, flat = [], [], []
    for fg, kk, v in zip(is_fg, k, vol, strict=True):
        pad = pad_pick(fg, kk, n_bg[v], pads[v])
        picks.append(pad is not None)
        k_inner.append(0 if pad is not None else kk)
        flat.append(pad if pad is not None else 0)
    return (
        torch.tensor(picks),
        torch.tensor(k_inner, dtype=torch.int64),
        torch.tensor(flat, dtype=torch.int64),
    )
