"""Batched crop with fused flips, 90-degree rotations, padding and intensity: the pure-torch path.

This module is both the CPU implementation and the executable specification of
``kernels/crop_pos_neg.cu``. For every crop ``n`` and output voxel ``(c, i0, i1, i2)``:

- output axis ``a`` reads source axis ``p = axes[n, a]`` (a permutation of ``(0, 1, 2)``) at window
  coordinate ``w = size[a] - 1 - i_a`` when ``flips[n, a]`` else ``i_a``; the source index along ``p``
  is ``starts[n, p] + w``. So a crop is a window of ``volumes[vol_index[n]]`` seen through a signed
  permutation of its axes: every composition of flips and 90-degree rotations is one.
- a source index outside the volume reads ``pad_value`` (allowed only when ``pad_value`` is given;
  otherwise it is an error), as if the volume had been padded with that constant first.
- float32 only: ``x * scale[n]`` then ``+ shift[n]``, two separately rounded float32 operations
  (denormals kept); the multiply is skipped where ``scale[n] == 1`` and the add where
  ``shift[n] == 0``, so a crop whose transforms did not fire is copied exactly, ``-0.0`` included,
  as MONAI leaves it. The CUDA kernel does the same with explicit non-flushing PTX so both paths
  agree bit for bit.

On CPU each crop is written in one pass from numpy views (negative strides make flips free);
CUDA tensors that reach this path (no CuPy) use torch ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch

from fastpipe.ops._crop_checks import (
    IDENTITY,
    check_crop_args,
    check_windows,
    intensity_params,
    window_extent,
)
from fastpipe.runtime._copy_threads import run_copies


def _np(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor; non-float32 dtypes as unsigned ints of their size (copies are bitwise)."""
    if t.dtype != torch.float32:
        t = t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t.numpy()


def _window_view(dst: np.ndarray, perm: Sequence[int], flip: Sequence[bool]) -> np.ndarray:
    """``dst`` (C, O0, O1, O2) seen in window coordinates: axis ``q`` of the view is source axis ``q``."""
    v = dst[(slice(None), *(slice(None, None, -1) if f else slice(None) for f in flip))]
    inv = [perm.index(q) for q in range(3)]
    return v.transpose(0, *(1 + a for a in inv))


def _inbound(start, ext, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """The part of the window inside the volume: ``(window slices, source slices)``, ``None`` when empty."""
    win, src = [slice(None)], [slice(None)]
    for s, e, d in zip(start, ext, shape, strict=True):
        lo, hi = max(s, 0), min(s + e, d)
        if lo >= hi:
            return None
        win.append(slice(lo - s, hi - s))
        src.append(slice(lo, hi))
    return tuple(win), tuple(src)


CHUNK = 1 << 16  # elements per slab of the multiply-then-add: it stays in cache between the two steps


def _write(dst: np.ndarray, src: np.ndarray, s: np.float32 | None, o: np.float32 | None) -> None:
    """``dst = src`` with the intensity terms (``None``, ``s == 1`` and ``o == 0`` skip their step).

    With intensity terms it goes slab by slab: copy, then multiply and add in place while the slab is
    in cache, each step rounded to float32 as the CUDA kernel rounds it. (numpy's fused ``add(src, o,
    out=dst)`` is slower than the copy when ``dst`` has negative strides.) The slabs run along the
    spatial axis of ``dst`` with the largest stride, so each is one block of the output's memory; along
    another axis (a 90-degree turn puts the window's first axis on the output's second) a slab is rows
    scattered over every plane (a turned, shifted 96^3 crop took 1.4x as long).
    """
    mul, add = s is not None and s != 1, o is not None and o != 0
    if not mul and not add:
        np.copyto(dst, src)
        return
    ax = 1 + max(range(3), key=lambda a: abs(dst.strides[1 + a]))
    step = max(1, CHUNK // max(1, dst.size // max(1, dst.shape[ax])))
    for i in range(0, dst.shape[ax], step):
        slab = (slice(None),) * ax + (slice(i, i + step),)
        d = dst[slab]
        np.copyto(d, src[slab])
        if mul:
            np.multiply(d, s, out=d)
        if add:
            np.add(d, o, out=d)


def _pad_fill(dtype: torch.dtype, pad_value: float, s, o) -> np.ndarray:
    """The pad voxel's value after the intensity terms, as a 0-d array of the output's numpy dtype."""
    pv = _np(torch.tensor([pad_value], dtype=dtype))
    if s is not None and s != 1:
        pv = np.multiply(pv, s)
    if o is not None and o != 0:
        pv = np.add(pv, o)
    return pv[0]


def _write_torch(dst: torch.Tensor, src: torch.Tensor, s: float | None, o: float | None) -> None:
    """:func:`_write` with torch's copy kernels (faster than numpy's for strided 4-D windows)."""
    mul, add = s is not None and s != 1, o is not None and o != 0
    if not mul and not add:
        dst.copy_(src)
    elif not mul:
        torch.add(src, o, out=dst)
    else:  # two separately rounded float32 steps, exactly as the CUDA kernel
        torch.mul(src, s, out=dst)
        if add:
            dst.add_(o)


def _innermost(vol: np.ndarray) -> int:
    """The spatial axis (0-2) of ``vol`` (C, X, Y, Z) with the smallest stride: rows run along it."""
    strides = [abs(st) for st in vol.strides[1:]]
    return strides.index(min(strides))


def _copy_one_cpu(n, vols, out, st, vi, size, ax, fl, sc, sh, pad_value) -> None:
    """One crop on the CPU: torch's kernels (a reversed axis costs one flipped copy), numpy where it pads."""
    perm, flip = ax[n], fl[n]
    vol_t, vol = vols[vi[n]]
    ext = window_extent(perm, size)
    s = np.float32(sc[n]) if sc is not None else None
    o = np.float32(sh[n]) if sh is not None else None
    parts = _inbound(st[n], ext, vol.shape[1:])
    inside = parts is not None and all(w.stop - w.start == e for w, e in zip(parts[0][1:], ext, strict=True))
    if pad_value is None or inside:
        reversed_axes = [perm[a] for a in range(3) if flip[a]]  # window axes read backwards
        if reversed_axes and _innermost(vol) not in reversed_axes:
            # one pass: numpy writes through a view of the output with negative strides (torch has no
            # negative strides; its flip would first copy the window into a temporary)
            _write(_window_view(_np(out[n]), perm, flip), vol[parts[1]], s, o)
            return
        dst_t = out[n].permute(0, *(1 + perm.index(q) for q in range(3)))  # window coordinates
        src = vol_t[parts[1]]
        sf, of = None if s is None else float(s), None if o is None else float(o)
        if reversed_axes:  # the innermost axis reversed: numpy's reversed rows are slower than a torch flip
            src = src.flip([1 + q for q in reversed_axes])
        _write_torch(dst_t, src, sf, of)
        return
    dst = _window_view(_np(out[n]), perm, flip)
    if pad_value is not None and (parts is None or dst[parts[0]].shape != dst.shape):
        dst[...] = _pad_fill(out.dtype, pad_value, s, o)
    if parts is not None:
        _write(dst[parts[0]], vol[parts[1]], s, o)


def _copy_one_torch(n, vols, out, st, vi, size, ax, fl, sc, sh, pad_value) -> None:
    """The same for tensors off the CPU (torch has no negative strides: flips copy the window once)."""
    perm, flip, vol = ax[n], fl[n], vols[vi[n]]
    ext = window_extent(perm, size)
    parts = _inbound(st[n], ext, vol.shape[1:])
    if pad_value is None:
        win = vol[parts[1]]
    else:
        win = torch.full((vol.shape[0], *ext), pad_value, dtype=vol.dtype, device=vol.device)
        if parts is not None:
            win[parts[0]] = vol[parts[1]]
    src = win.permute(0, *(1 + p for p in perm))
    if any(flip):
        src = src.flip([1 + a for a in range(3) if flip[a]])
    _write_torch(out[n], src, None if sc is None else sc[n], None if sh is None else sh[n])


def crop_batch_torch(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
    pad_value: float | None = None,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Cut ``N`` windows from ``B`` volumes into one ``(N, C, *size)`` tensor, with torch ops.

    Args:
        volumes: ``B`` tensors ``(C, X, Y, Z)`` of one dtype, channel count and device (any strides).
        starts: ``(N, 3)`` int64 window starts (inclusive) per source axis.
        vol_index: ``(N,)`` int64 index into ``volumes`` per crop.
        size: output size ``(O0, O1, O2)``; the window spans ``size[a]`` voxels of source axis ``axes[n, a]``.
        out: preallocated ``(N, C, *size)`` output of the volumes' dtype and device; allocated when ``None``.
        flips: ``(N, 3)`` bool, reverse output axis ``a`` (default: no flips).
        scale: ``(N,)`` float32 multiplier per crop (float32 volumes only; default 1).
        shift: ``(N,)`` float32 offset per crop, added after the scale (default 0).
        axes: ``(N, 3)`` int64, the source axis of each output axis (default ``(0, 1, 2)``).
        pad_value: value read outside the volume (default ``None``: a window must lie inside).
        names: per volume, a name for error messages (default: ``volume b``).

    Shape:
        returns ``out``: ``(N, C, O0, O1, O2)``.

    Example:
        >>> vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
        >>> crop_batch_torch([vol], torch.tensor([[1, 2, 3]]), torch.tensor([0]), (2, 2, 2)).shape
        torch.Size([1, 1, 2, 2, 2])
    """
    out, jobs = crop_jobs_torch(
        volumes, starts, vol_index, size, out, flips, scale, shift, axes, pad_value, names
    )
    if out.device.type == "cpu":  # shared between threads (see fastpipe.runtime._copy_threads)
        run_copies(jobs, out.numel() * out.element_size())
    else:
        for job in jobs:
            job()
    return out


def crop_jobs_torch(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
    pad_value: float | None = None,
    names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, list[Callable[[], None]]]:
    """:func:`crop_batch_torch` checked and planned but not run: ``(out, one job per crop)``.

    Every argument and window is checked here, before any job exists; running all the jobs (in any
    order, from any threads: each writes its own crop) fills ``out``. Several keys' jobs can share
    one :func:`fastpipe.runtime._copy_threads.run_copies` call.
    """
    shape = check_crop_args(volumes, starts, vol_index, size, out, flips, scale, shift, axes)
    size, n = shape[2:], shape[0]
    if out is None:
        out = torch.empty(shape, dtype=volumes[0].dtype, device=volumes[0].device)
    st, vi = starts.tolist(), vol_index.tolist()
    ax = axes.tolist() if axes is not None else [list(IDENTITY)] * n
    check_windows(volumes, st, vi, size, ax, pad_value is not None, names)
    fl = flips.tolist() if flips is not None else [[False] * 3] * n
    inten = intensity_params(n, scale, shift, out.device)
    sc, sh = (inten[0].tolist(), inten[1].tolist()) if inten is not None else (None, None)
    on_cpu = out.device.type == "cpu"
    vols = [(v, _np(v)) for v in volumes] if on_cpu else volumes
    one = _copy_one_cpu if on_cpu else _copy_one_torch
    return out, [partial(one, i, vols, out, st, vi, size, ax, fl, sc, sh, pad_value) for i in range(n)]
