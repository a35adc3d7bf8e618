"""Resampling a channel-first volume through a voxel map, bit-compatible with MONAI's ``grid_sample`` path.

MONAI's ``Spacing`` resamples with ``grid_sample`` on a grid it builds from the voxel map
``xform`` (output index -> input index). When ``xform`` is axis-aligned (no rotation or shear,
which is every Spacingd after Orientationd on a non-sheared affine) trilinear interpolation
separates into three 1-D passes, each a weighted sum of two neighbouring slices, and nearest
into three index gathers: far cheaper than a full grid. The per-axis coordinates are computed
through the same ``affine_grid`` / unnormalise / clip steps ``grid_sample`` takes, so nearest
neighbour ties round the same way as MONAI's.

CPU buffers come from :func:`fastpipe._tensors.alloc` (numpy memory, transparent huge pages). The
coordinates, plans and the full-grid path live in ``_resample_grid.py``.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

from fastpipe._tensors import alloc, numpy_dtype, numpy_ok
from fastpipe.transforms._resample_grid import (
    axis_plans,
    resample_grid,
    ties_need_grid,
)

__all__ = ["resample_grid", "resample_separable", "ties_need_grid"]


def _slice_pass(
    src: torch.Tensor, dim: int, plan, out_dtype: torch.dtype, numpy_ops: bool = True
) -> torch.Tensor:
    """Resample along an outer ``dim``: every output slice mixes at most two input slices.

    On CPU the loop runs in numpy: serial, ~1 us per call, no OpenMP barrier per slice (which
    costs milliseconds on a busy machine).
    """
    i0, i1, w0, w1 = plan
    shape = list(src.shape)
    shape[dim] = len(i0)
    if src.device.type != "cpu" or not numpy_ops:
        return _slice_pass_torch(src, dim, plan, alloc(shape, out_dtype, src.device))
    dt = numpy_dtype(out_dtype)
    out = np.empty(shape, dtype=dt)
    s_v, o_v = np.moveaxis(src.numpy(), dim, 0), np.moveaxis(out, dim, 0)
    tmp = np.empty(o_v.shape[1:], dtype=dt)
    for k in range(len(i0)):
        o, a, b = o_v[k], s_v[i0[k]], s_v[i1[k]]
        if w1[k] == 0.0 or i0[k] == i1[k]:
            weight = w0[k] + w1[k]
            if weight == 0.0:
                o.fill(0)
            elif weight == 1.0:
                np.copyto(o, a, casting="unsafe")
            else:
                np.multiply(a, dt.type(weight), out=o, casting="unsafe")
            continue
        np.multiply(a, dt.type(w0[k]), out=o, casting="unsafe")
        np.multiply(b, dt.type(w1[k]), out=tmp, casting="unsafe")
        np.add(o, tmp, out=o)
    return torch.from_numpy(out)


def _slice_pass_torch(src: torch.Tensor, dim: int, plan, out: torch.Tensor) -> torch.Tensor:
    """:func:`_slice_pass` with torch ops (CUDA): one weighted sum per output slice."""
    i0, i1, w0, w1 = plan
    for k in range(len(i0)):
        o, a, b = out.select(dim, k), src.select(dim, i0[k]), src.select(dim, i1[k])
        if w1[k] == 0.0 or i0[k] == i1[k]:
            weight = w0[k] + w1[k]
            if weight == 0.0:
                o.zero_()
            elif weight == 1.0:
                o.copy_(a)
            else:  # only linear modes (float output) get fractional weights here
                torch.mul(a, weight, out=o)
            continue
        torch.mul(a, w0[k], out=o).add_(b.to(o.dtype), alpha=w1[k])
    return out


def _inner_pass(src: torch.Tensor, plan, out_dtype: torch.dtype) -> torch.Tensor:
    """Resample along the innermost dim with torch (CUDA): gather both neighbours, weight, add."""
    i0, i1, w0, w1 = plan
    dev, n_out = src.device, len(i0)
    rows = src.reshape(-1, src.shape[-1])
    a = rows.index_select(1, torch.tensor(i0, device=dev)).to(out_dtype)
    if any(w != 0.0 for w in w1):
        a.mul_(torch.tensor(w0, device=dev, dtype=out_dtype))
        b = rows.index_select(1, torch.tensor(i1, device=dev)).to(out_dtype)
        a.add_(b.mul_(torch.tensor(w1, device=dev, dtype=out_dtype)))
    elif any(w != 1.0 for w in w0):  # zeros padding: w0 is 0 outside (1 or a linear weight inside)
        a.mul_(torch.tensor(w0, device=dev, dtype=torch.float64).to(out_dtype))
    return a.view(*src.shape[:-1], n_out)


def _mix(a: np.ndarray, b: np.ndarray, w0: np.ndarray, w1: np.ndarray, out: np.ndarray | None = None):
    """``a * w0 + b * w1`` in place of ``a`` (or into ``out``), ``grid_sample``'s form: never as
    ``a + (b - a) * w1``, which gives exactly ``b`` where a float32 ``w1`` rounds to 1 (a coordinate
    1e-16 off a voxel) and so an exact zero where MONAI's float64 sum keeps ``a * 2e-16``: a voxel
    that ``x > 0`` or ``NormalizeIntensityd(nonzero=True)`` then counts differently."""
    out = a if out is None else out
    a *= w0
    b *= w1
    return np.add(a, b, out=out)


def _plane_pass(src: torch.Tensor, plan_m, plan_n, out_dtype: torch.dtype) -> torch.Tensor:
    """CPU: resample the two inner dims of (C, P, M, N) plane by plane, each plane staying in cache.

    Two row gathers and a weighted sum, then two column gathers and a weighted sum, per plane:
    no volume-sized temporaries, so neither the memory traffic nor the page faults of two passes.
    """
    s = src.numpy()
    dt = numpy_dtype(out_dtype)
    (m0, m1, wm0, wm1), (n0, n1, wn0, wn1) = ([np.asarray(v) for v in plan] for plan in (plan_m, plan_n))
    out = np.empty((*s.shape[:2], len(m0), len(n0)), dtype=dt)
    single = not wm1.any() and not wn1.any()  # nearest (or weights that need no second neighbour)
    weights = np.outer(wm0, wn0).astype(dt)
    col_m0, col_m1, wn0, wn1 = (
        wm0.astype(dt)[:, None],
        wm1.astype(dt)[:, None],
        wn0.astype(dt),
        wn1.astype(dt),
    )
    scale_single = (weights != 1).any()

    def planes(c: int, lo: int, hi: int) -> None:
        for p in range(lo, hi):
            x, o = s[c, p], out[c, p]
            if single:  # an integer volume resampled linearly has dt != x.dtype: take, then cast
                rows = np.take(x, m0, axis=0)
                if rows.dtype == dt:
                    np.take(rows, n0, axis=1, out=o)
                else:
                    np.copyto(o, np.take(rows, n0, axis=1), casting="unsafe")
                if scale_single:
                    o *= weights
                continue
            rows = _mix(np.take(x, m0, axis=0).astype(dt), np.take(x, m1, axis=0).astype(dt), col_m0, col_m1)
            _mix(np.take(rows, n0, axis=1), np.take(rows, n1, axis=1), wn0, wn1, out=o)

    _over_planes(planes, s.shape[0], s.shape[1], s[0, 0].size)
    return torch.from_numpy(out)


_PARALLEL_MIN_VOXELS = 2**22  # below this a volume is resampled in the calling thread


def _over_planes(fn, channels: int, n_planes: int, plane_voxels: int) -> None:
    """Run ``fn(c, lo, hi)`` over all planes; big volumes in two halves on two threads (numpy frees
    the GIL in ``take`` and arithmetic). Each plane is written by one thread: results do not change.
    The helper thread lives for one call only (about 0.1 ms against tens of ms of work)."""
    if channels * n_planes * plane_voxels < _PARALLEL_MIN_VOXELS or (os.cpu_count() or 1) < 2:
        for c in range(channels):
            fn(c, 0, n_planes)
        return
    half = n_planes // 2
    for c in range(channels):
        errors: list[BaseException] = []
        helper = threading.Thread(
            target=_catching, args=(fn, (c, half, n_planes), errors), name="fastpipe-resample", daemon=True
        )
        helper.start()
        try:
            fn(c, 0, half)
        finally:
            helper.join()
        if errors:
            raise errors[0]


def _catching(fn, args: tuple, errors: list[BaseException]) -> None:
    """Run ``fn(*args)`` in a helper thread, keeping its error for the caller to re-raise."""
    try:
        fn(*args)
    except BaseException as err:  # noqa: BLE001 - re-raised by the caller
        errors.append(err)


def _run_passes(
    phys: torch.Tensor, plans: list, ratios: list[float], out_dtype: torch.dtype, numpy_ops: bool
):
    """Apply the three 1-D plans to contiguous (C, P, M, N) ``phys`` (plans/ratios in that order)."""
    if numpy_ops:
        outer_first = ratios[0] < ratios[1] * ratios[2]  # shrink the big dimension first
        if outer_first:
            phys = _slice_pass(phys, 1, plans[0], out_dtype)
        phys = _plane_pass(phys, plans[1], plans[2], out_dtype)
        return phys if outer_first else _slice_pass(phys, 1, plans[0], out_dtype)
    # torch ops (CUDA): most shrinking axis first; the innermost prefers float input, so after an outer pass
    for p in sorted(range(3), key=lambda p: (ratios[p], p == 2)):
        if p == 2:
            phys = _inner_pass(phys, plans[p], out_dtype)
        else:
            phys = _slice_pass(phys, 1 + p, plans[p], out_dtype, numpy_ops=False)
    return phys


def resample_separable(
    img: torch.Tensor,
    xform: np.ndarray,
    out_shape: tuple[int, int, int],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    dtype: torch.dtype,
    torch_ops: bool = False,
    flip_axes: tuple[int, ...] = (),
) -> torch.Tensor:
    """Resample ``img`` (C, X, Y, Z) through a diagonal voxel map, one axis at a time.

    ``flip_axes`` (spatial axes 0..2) resamples ``img`` as if it had been flipped along them first
    (what ``Orientationd`` does), without the flipped copy: the plans are computed for the flipped
    volume and their source indices mirrored, so the result is bit-identical to flip-then-resample.

    The output keeps the input's memory layout (a NIfTI-loaded volume stays x-fastest).
    Nearest keeps ``img.dtype``; linear computes and returns ``dtype``. CPU tensors go through
    numpy (serial, plane by plane), others through torch ops; ``torch_ops=True`` forces the
    latter on CPU too, so tests cover the CUDA code path without a GPU.
    """
    in_shape = tuple(img.shape[1:])
    plans = axis_plans(xform, in_shape, out_shape, mode, padding_mode, align_corners, flip_axes)
    order = sorted(range(3), key=lambda a: -img.stride(1 + a))  # spatial axes, outermost in memory first
    phys = img.permute(0, *[1 + a for a in order])
    if not phys.is_contiguous():
        phys = phys.contiguous()
    out_dtype = img.dtype if mode == "nearest" else dtype
    ratios = [out_shape[a] / in_shape[a] for a in order]
    numpy_ops = not torch_ops and numpy_ok(img, out_dtype)
    phys = _run_passes(phys, [plans[a] for a in order], ratios, out_dtype, numpy_ops)
    inverse = [0] + [1 + order.index(a) for a in range(3)]
    return phys.permute(*inverse)
