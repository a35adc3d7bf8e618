"""Coordinate-encoded volumes and the decoder of a crop's window, orientation and intensity terms."""

from __future__ import annotations

import torch


def coord_item(shape, name="case", fg=((5, 10), (5, 10), (5, 10))):
    """``image`` (5, X, Y, Z) float32: channels x, y, z coordinates, then constant 0 and 1; ``label`` uint8."""
    x, y, z = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
    image = torch.stack([x, y, z, torch.zeros_like(x), torch.ones_like(x)])
    label = torch.zeros((1, *shape), dtype=torch.uint8)
    label[0, fg[0][0] : fg[0][1], fg[1][0] : fg[1][1], fg[2][0] : fg[2][1]] = 1
    return {"image": image, "label": label, "name": name}


def decode(crop: torch.Tensor, pad_value: float | None = None):
    """``(axes, flips, corner, scale, shift)`` of a coordinate crop; asserts it is one window seen
    through a signed axis permutation (the contiguous window check) and that the intensity terms are
    constant over it. ``corner`` is the source voxel of output voxel (0, 0, 0)."""
    shift = crop[3]
    scale = crop[4] - crop[3]
    assert torch.allclose(shift, shift.flatten()[0].expand_as(shift), atol=1e-6), "shift not constant"
    assert torch.allclose(scale, scale.flatten()[0].expand_as(scale), atol=1e-5), "scale not constant"
    s, o = float(scale.flatten()[0]), float(shift.flatten()[0])
    coords = (crop[:3].double() - o) / s
    rounded = coords.round()
    assert (coords - rounded).abs().max() < 1e-3, "coordinates are not integers after undoing the intensity"
    base = rounded[:, 0, 0, 0]
    axes, flips = [], []
    for a in range(3):
        idx = [0, 0, 0]
        idx[a] = 1
        d = rounded[(slice(None), *idx)] - base
        p = int(d.abs().argmax())
        axes.append(p)
        flips.append(bool(d[p] < 0))
    grids = torch.meshgrid(*(torch.arange(e, dtype=torch.float64) for e in crop.shape[1:]), indexing="ij")
    expected = base[:, None, None, None].expand(3, *crop.shape[1:]).clone()
    for a in range(3):
        expected[axes[a]] += -grids[a] if flips[a] else grids[a]
    assert torch.equal(rounded, expected), "crop is not a window seen through a signed axis permutation"
    return tuple(axes), tuple(flips), tuple(int(v) for v in base), s, o


def pattern(axes, flips):
    """The in-plane (axes 0, 1) pattern and the z flip of an orientation."""
    return (axes[0], axes[1], flips[0], flips[1]), flips[2]


def four_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * (n * p * (1 - p)) ** 0.5 + 1e-9
