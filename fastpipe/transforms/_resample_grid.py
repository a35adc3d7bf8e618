"""The coordinates of MONAI's ``grid_sample`` resampling: ``affine_grid``'s theta, per-axis source
coordinates and interpolation plans for the separable path, and the full-grid path itself.

MONAI's ``Spacing`` builds its grid from the voxel map ``xform`` (output index -> input index); the
helpers here take the same ``affine_grid`` / unnormalise / clip steps, so the separable passes of
``fastpipe.transforms._resample`` round nearest-neighbour ties as MONAI does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _norm(shape: tuple[int, ...], align_corners: bool) -> torch.Tensor:
    """MONAI ``normalize_transform`` (voxel index -> grid_sample's [-1, 1]) as a (1, 4, 4) float64 tensor."""
    s = torch.tensor(shape, dtype=torch.float64)
    norm = s.clone()
    if align_corners:
        norm[norm <= 1.0] = 2.0
        norm = torch.diag(torch.cat((2.0 / (norm - 1.0), torch.ones(1, dtype=torch.float64))))
        norm[:-1, -1] = -1.0
    else:
        norm[norm <= 0.0] = 2.0
        norm = torch.diag(torch.cat((2.0 / norm, torch.ones(1, dtype=torch.float64))))
        norm[:-1, -1] = 1.0 / s - 1.0
    return norm.unsqueeze(0)


def grid_theta(xform: np.ndarray, in_shape, out_shape, align_corners: bool) -> torch.Tensor:
    """The (1, 3, 4) ``affine_grid`` theta MONAI's ``AffineTransform`` builds (normalised, reversed axes)."""
    x = torch.as_tensor(np.asarray(xform, dtype=np.float64)).unsqueeze(0)
    dst = _norm(tuple(out_shape), align_corners)
    theta = _norm(tuple(in_shape), align_corners) @ x @ torch.as_tensor(np.linalg.inv(dst.numpy()))
    rev = [2, 1, 0]
    theta[:, :3] = theta[:, rev]
    theta[:, :, :3] = theta[:, :, rev]
    return theta[:, :3]


def axis_coords(theta: torch.Tensor, axis: int, n_in: int, n_out: int, align_corners: bool) -> torch.Tensor:
    """Unnormalised source coordinates (float64) along ``axis`` exactly as ``grid_sample`` computes them."""
    # affine_grid's base coordinates along this axis (ATen linspace_from_neg_one); the other axes'
    # terms vanish for an axis-aligned map, so only this axis' scale and the shift remain
    base = (
        torch.linspace(-1, 1, n_out, dtype=torch.float64)
        if n_out > 1
        else torch.zeros(1, dtype=torch.float64)
    )
    if not align_corners:
        base = base * (n_out - 1) / n_out
    row = 2 - axis
    g = base * theta[0, row, row] + theta[0, row, 3]
    if align_corners:
        return ((g + 1) / 2) * (n_in - 1)
    return ((g + 1) * n_in - 1) / 2


def ties_need_grid(xform: np.ndarray, in_shape, out_shape, align_corners: bool) -> bool:
    """Whether ``nearest`` must take ``grid_sample``'s path to pick MONAI's neighbour at a tie.

    An oblique affine leaves ~1e-17 off the voxel map's diagonal. The separable path drops them;
    MONAI's grid adds them, and where a coordinate lies halfway between two voxels (1.0 -> 1.5 mm
    puts every other output there) that rounding decides which voxel it takes, voxel by voxel.
    """
    lin = np.asarray(xform)[:3, :3]
    if not (lin - np.diag(np.diag(lin))).any():
        return False  # the separable coordinates are then affine_grid's, bit for bit
    theta = grid_theta(xform, in_shape, out_shape, align_corners)
    for a in range(3):
        c = axis_coords(theta, a, in_shape[a], out_shape[a], align_corners)
        if bool(((c - torch.floor(c) - 0.5).abs() < 1e-6).any()):
            return True
    return False


def axis_plan(coords: torch.Tensor, n_in: int, mode: str, padding_mode: str):
    """Per output index: ``(i0, i1, w0, w1)`` as lists; nearest sets ``i1 = i0`` and ``w1 = 0``."""
    c = coords.clamp(0, n_in - 1) if padding_mode == "border" else coords
    if mode == "nearest":
        i0 = torch.round(c)
        w0 = ((i0 >= 0) & (i0 <= n_in - 1)).double()
        i1, w1 = i0, torch.zeros_like(w0)
    else:
        i0 = torch.floor(c)
        w1 = c - i0
        w0 = 1.0 - w1
        i1 = i0 + 1
        w0 = w0 * ((i0 >= 0) & (i0 <= n_in - 1))
        w1 = w1 * ((i1 >= 0) & (i1 <= n_in - 1))
    i0 = i0.clamp(0, n_in - 1).long()
    i1 = i1.clamp(0, n_in - 1).long()
    return i0.tolist(), i1.tolist(), w0.tolist(), w1.tolist()


def axis_plans(
    xform: np.ndarray,
    in_shape,
    out_shape,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    flip_axes: tuple[int, ...] = (),
) -> list:
    """:func:`axis_plan` of each spatial axis of a separable resample, for the volume flipped along
    ``flip_axes`` first (its plans' source indices mirrored)."""
    theta = grid_theta(xform, in_shape, out_shape, align_corners)
    plans = [
        axis_plan(
            axis_coords(theta, a, in_shape[a], out_shape[a], align_corners), in_shape[a], mode, padding_mode
        )
        for a in range(3)
    ]
    for a in flip_axes:  # mirrored source indices: the plan of the flipped volume
        last = in_shape[a] - 1
        i0, i1, w0, w1 = plans[a]
        plans[a] = ([last - i for i in i0], [last - i for i in i1], w0, w1)
    return plans


def resample_grid(
    img: torch.Tensor,
    xform: np.ndarray,
    out_shape: tuple[int, int, int],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """General resample (any voxel map, oblique/sheared included) with ``grid_sample``, as MONAI does:
    grid and sampling in float64 (MONAI's ``Spacing(dtype=float64)`` default, so nearest-neighbour
    ties round as MONAI's do), the result in ``dtype`` (an integer volume sampled ``nearest`` keeps its own)."""
    theta = grid_theta(xform, tuple(img.shape[1:]), out_shape, align_corners).to(img.device, torch.float64)
    grid = F.affine_grid(theta, [1, img.shape[0], *out_shape], align_corners=align_corners)
    out = F.grid_sample(
        img.unsqueeze(0).to(torch.float64),
        grid,
        mode=mode,
        padding_mode=padding_mode,
        align_corners=align_corners,
    )[0]
    if mode == "nearest" and not img.dtype.is_floating_point:
        return out.to(img.dtype)
    return out.to(dtype)
