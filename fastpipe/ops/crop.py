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

from fastpipe.runtime._copy_threads import run_copies

IDENTITY = (0, 1, 2)


def _check_volumes(volumes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Volumes are ``(C, X, Y, Z)`` with one dtype, channel count and device; returns the first."""
    if len(volumes) == 0:
        raise ValueError("crop_batch: expected at least one volume, got an empty list")
    first = volumes[0]
    for b, v in enumerate(volumes):
        if v.ndim != 4:
            raise ValueError(f"crop_batch: volume {b} must be (C, X, Y, Z), got shape {tuple(v.shape)}")
        if v.dtype != first.dtype or v.shape[0] != first.shape[0] or v.device != first.device:
            raise ValueError(
                f"crop_batch: volume {b} has (dtype, channels, device) = ({v.dtype}, {v.shape[0]}, {v.device}), "
                f"expected ({first.dtype}, {first.shape[0]}, {first.device}) like volume 0"
            )
    return first


def _check_params(n: int, flips, axes, scale, shift, dtype: torch.dtype) -> None:
    if flips is not None and (flips.dtype != torch.bool or tuple(flips.shape) != (n, 3)):
        raise TypeError(f"crop_batch: flips must be bool ({n}, 3), got {flips.dtype} {tuple(flips.shape)}")
    if axes is not None and (axes.dtype != torch.int64 or tuple(axes.shape) != (n, 3)):
        raise TypeError(f"crop_batch: axes must be int64 ({n}, 3), got {axes.dtype} {tuple(axes.shape)}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t is None:
            continue
        if t.dtype != torch.float32 or tuple(t.shape) != (n,):
            raise TypeError(f"crop_batch: {name} must be float32 ({n},), got {t.dtype} {tuple(t.shape)}")
        if dtype != torch.float32:
            raise TypeError(f"crop_batch: fused intensity {name} needs float32 volumes, got {dtype}")


def check_crop_args(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None,
    flips: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    axes: torch.Tensor | None = None,
) -> tuple[int, ...]:
    """Validate the arguments of :func:`crop_batch`; returns the output shape ``(N, C, *size)``."""
    first = _check_volumes(volumes)
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"crop_batch: size must be 3 positive ints, got {size}")
    for name, t in (("starts", starts), ("vol_index", vol_index)):
        if t.dtype != torch.int64:
            raise TypeError(f"crop_batch: {name} must be int64, got {t.dtype}")
    n = starts.shape[0] if starts.ndim == 2 else -1
    if starts.shape != (n, 3) or vol_index.shape != (n,):
        raise ValueError(
            f"crop_batch: expected starts (N, 3) and vol_index (N,), got {tuple(starts.shape)} and {tuple(vol_index.shape)}"
        )
    _check_params(n, flips, axes, scale, shift, first.dtype)
    shape = (n, int(first.shape[0]), *size)
    if out is not None and (
        tuple(out.shape) != shape or out.dtype != first.dtype or out.device != first.device
    ):
        raise ValueError(
            f"crop_batch: out must be {shape} {first.dtype} on {first.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return shape


def window_extent(perm: Sequence[int], size: Sequence[int]) -> list[int]:
    """The window's extent along each source axis: output axis ``a`` covers ``size[a]`` voxels of axis ``perm[a]``."""
    ext = [0, 0, 0]
    for a, p in enumerate(perm):
        ext[p] = int(size[a])
    return ext


def check_windows(
    volumes: Sequence[torch.Tensor],
    starts: list[list[int]],
    vol_index: list[int],
    size: Sequence[int],
    axes: list[list[int]] | None = None,
    padded: bool = False,
    names: Sequence[str] | None = None,
) -> None:
    """Raise ``ValueError`` naming the first crop whose window is not inside its volume (or bad axes).

    ``starts``, ``vol_index`` and ``axes`` are host lists (``tensor.tolist()``): a batch has a handful
    of crops, so plain integer checks cost less than the tensor ops that would vectorise them. With
    ``padded`` a window may reach past the volume (it reads the pad value there).
    """
    shapes = [tuple(v.shape[1:]) for v in volumes]
    extents: dict[tuple[int, ...], list[int]] = {}  # per permutation (a batch has a few)
    for n, (start, v) in enumerate(zip(starts, vol_index, strict=True)):
        if not 0 <= v < len(volumes):
            raise ValueError(f"crop_batch: crop {n} names volume {v}, but there are {len(volumes)} volumes")
        perm = tuple(axes[n]) if axes is not None else IDENTITY
        ext = extents.get(perm)
        if ext is None:
            if sorted(perm) != [0, 1, 2]:
                raise ValueError(f"crop_batch: crop {n} axes {perm} are not a permutation of (0, 1, 2)")
            ext = extents[perm] = window_extent(perm, size)
        if not padded and any(s < 0 or s + e > d for s, e, d in zip(start, ext, shapes[v], strict=True)):
            who = f"volume {v} ({names[v]})" if names is not None else f"volume {v}"
            raise ValueError(
                f"crop_batch: crop {n} window start {tuple(start)} size {tuple(ext)} lies outside {who} {shapes[v]}"
            )


def intensity_params(
    n: int, scale: torch.Tensor | None, shift: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` float32 tensors with the identity (1, 0) filled in, or ``None`` when both are absent."""
    if scale is None and shift is None:
        return None
    if scale is None:
        scale = torch.ones(n, dtype=torch.float32, device=device)
    if shift is None:
        shift = torch.zeros(n, dtype=torch.float32, device=device)
    return scale, shift


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
