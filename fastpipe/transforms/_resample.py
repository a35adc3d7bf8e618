"""Resampling a channel-first volume through a voxel map, bit-compatible with MONAI's ``grid_sample`` path.

MONAI's ``Spacing`` resamples with ``grid_sample`` on a grid it builds from the voxel map
``xform`` (output index -> input index). When ``xform`` is axis-aligned (no rotation or shear,
which is every Spacingd after Orientationd on a non-sheared affine) trilinear interpolation
separates into three 1-D passes, each a weighted sum of two neighbouring slices, and nearest
into three index gathers: far cheaper than a full grid. The per-axis coordinates are computed
through the same ``affine_grid`` / unnormalise / clip steps ``grid_sample`` takes, so nearest
neighbour ties round the same way as MONAI's.

CPU buffers are allocated through numpy, which asks the kernel for transparent huge pages:
first-touch page faults otherwise cost more than the interpolation itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_BLOCK = 64  # output columns per banded matmul along the innermost axis


def alloc(shape: tuple[int, ...] | list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor; on CPU backed by numpy memory (huge pages) when numpy knows the dtype."""
    if device.type == "cpu" and dtype is not torch.bfloat16:
        return torch.from_numpy(np.empty(tuple(shape), dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def alloc_like(img: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor shaped and laid out in memory like ``img`` (see :func:`alloc`)."""
    order = sorted(range(img.ndim), key=lambda i: -img.stride(i))
    if not img.permute(*order).is_contiguous():
        return torch.empty_like(img, dtype=dtype)
    buf = alloc([img.shape[i] for i in order], dtype or img.dtype, img.device)
    return buf.permute(*[order.index(i) for i in range(img.ndim)])


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
    size = [1, 1, 1, 1, 1]
    size[2 + axis] = n_out
    g = F.affine_grid(theta, size, align_corners=align_corners).reshape(-1, 3)[:, 2 - axis]
    if align_corners:
        return ((g + 1) / 2) * (n_in - 1)
    return ((g + 1) * n_in - 1) / 2


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


def _slice_pass(src: torch.Tensor, dim: int, plan, out_dtype: torch.dtype) -> torch.Tensor:
    """Resample along an outer ``dim``: every output slice mixes at most two input slices."""
    i0, i1, w0, w1 = plan
    shape = list(src.shape)
    shape[dim] = len(i0)
    out = alloc(shape, out_dtype, src.device)
    cast = src.dtype != out_dtype and any(w != 0 for w in w1)
    if cast:
        slice_shape = shape[:dim] + shape[dim + 1 :]
        ta, tb = alloc(slice_shape, out_dtype, src.device), alloc(slice_shape, out_dtype, src.device)
    for k in range(len(i0)):
        o, a, b = out.select(dim, k), src.select(dim, i0[k]), src.select(dim, i1[k])
        if w1[k] == 0.0 or i0[k] == i1[k]:
            weight = w0[k] + w1[k]
            if weight == 0.0:
                o.zero_()
            else:
                o.copy_(a)
                if weight != 1.0:
                    o.mul_(weight)
            continue
        if cast:
            a, b = ta.copy_(a), tb.copy_(b)
        if w0[k] + w1[k] == 1.0:
            torch.lerp(a, b, w1[k], out=o)
        else:
            torch.mul(a, w0[k], out=o).add_(b, alpha=w1[k])
    return out


def _inner_pass(src: torch.Tensor, plan, out_dtype: torch.dtype) -> torch.Tensor:
    """Resample along the innermost (contiguous) dim: gather for nearest, banded matmul for linear."""
    i0, i1, w0, w1 = plan
    n_in, n_out = src.shape[-1], len(i0)
    out = alloc([*src.shape[:-1], n_out], out_dtype, src.device)
    if all(w == 0.0 for w in w1):  # nearest: a gather, then zero the out-of-volume columns
        torch.index_select(src.to(out_dtype), -1, torch.tensor(i0, device=src.device), out=out)
        if any(w != 1.0 for w in w0):
            out.mul_(torch.tensor(w0, device=src.device) != 0)
        return out
    rows = src.reshape(-1, n_in).to(out_dtype)
    flat = out.view(-1, n_out)
    for s in range(0, n_out, _BLOCK):
        e = min(n_out, s + _BLOCK)
        lo, hi = min(i0[s:e] + i1[s:e]), max(i0[s:e] + i1[s:e]) + 1
        band = torch.zeros((hi - lo, e - s), dtype=torch.float64)
        cols = torch.arange(e - s)
        band.index_put_(
            (torch.tensor(i0[s:e]) - lo, cols), torch.tensor(w0[s:e], dtype=torch.float64), accumulate=True
        )
        band.index_put_(
            (torch.tensor(i1[s:e]) - lo, cols), torch.tensor(w1[s:e], dtype=torch.float64), accumulate=True
        )
        flat[:, s:e] = rows[:, lo:hi] @ band.to(device=src.device, dtype=out_dtype)
    return out


def resample_separable(
    img: torch.Tensor,
    xform: np.ndarray,
    out_shape: tuple[int, int, int],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Resample ``img`` (C, X, Y, Z) through a diagonal voxel map, one axis at a time.

    The output keeps the input's memory layout (a NIfTI-loaded volume stays x-fastest).
    Nearest keeps ``img.dtype``; linear computes and returns ``dtype``.
    """
    in_shape = tuple(img.shape[1:])
    theta = grid_theta(xform, in_shape, out_shape, align_corners)
    plans = [
        axis_plan(
            axis_coords(theta, a, in_shape[a], out_shape[a], align_corners), in_shape[a], mode, padding_mode
        )
        for a in range(3)
    ]
    order = sorted(range(3), key=lambda a: -img.stride(1 + a))  # spatial axes, outermost in memory first
    phys = img.permute(0, *[1 + a for a in order])
    if not phys.is_contiguous():
        phys = phys.contiguous()
    out_dtype = img.dtype if mode == "nearest" else dtype
    # most shrinking axis first; the innermost axis prefers float input, so it goes after an outer pass
    passes = sorted(range(3), key=lambda p: (out_shape[order[p]] / in_shape[order[p]], p == 2))
    for p in passes:
        plan = plans[order[p]]
        phys = _inner_pass(phys, plan, out_dtype) if p == 2 else _slice_pass(phys, 1 + p, plan, out_dtype)
    inverse = [0] + [1 + order.index(a) for a in range(3)]
    return phys.permute(*inverse)


def resample_grid(
    img: torch.Tensor,
    xform: np.ndarray,
    out_shape: tuple[int, int, int],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """General resample (any voxel map, oblique/sheared included) with ``grid_sample``, as MONAI does."""
    theta = grid_theta(xform, tuple(img.shape[1:]), out_shape, align_corners).to(img.device, dtype)
    grid = F.affine_grid(theta, [1, img.shape[0], *out_shape], align_corners=align_corners)
    out = F.grid_sample(
        img.unsqueeze(0).to(dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
    )[0]
    if mode == "nearest" and not img.dtype.is_floating_point:
        return out.to(img.dtype)
    return out
