"""Batched crop with optional fused flip and intensity scale/shift: the pure-torch path.

This module is both the CPU implementation and the executable specification of
``kernels/crop_pos_neg.cu``: for every crop ``n`` it reads the window of
``volumes[vol_index[n]]`` that starts at ``starts[n]`` and has ``size`` voxels, flips
it along the axes set in ``flips[n]``, then (float32 only) computes
``x * scale[n]`` and adds ``shift[n]`` as two separately rounded float32 operations,
and writes the result into ``out[n]``. The CUDA kernel does the same with
``__fmul_rn``/``__fadd_rn`` so both paths agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from fastpipe.runtime._copy_threads import run_copies


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


def check_crop_args(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None,
    flips: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
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
    if flips is not None and (flips.dtype != torch.bool or tuple(flips.shape) != (n, 3)):
        raise TypeError(f"crop_batch: flips must be bool ({n}, 3), got {flips.dtype} {tuple(flips.shape)}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t is None:
            continue
        if t.dtype != torch.float32 or tuple(t.shape) != (n,):
            raise TypeError(f"crop_batch: {name} must be float32 ({n},), got {t.dtype} {tuple(t.shape)}")
        if first.dtype != torch.float32:
            raise TypeError(f"crop_batch: fused intensity {name} needs float32 volumes, got {first.dtype}")
    shape = (n, int(first.shape[0]), *size)
    if out is not None and (
        tuple(out.shape) != shape or out.dtype != first.dtype or out.device != first.device
    ):
        raise ValueError(
            f"crop_batch: out must be {shape} {first.dtype} on {first.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return shape


def check_windows(
    volumes: Sequence[torch.Tensor], starts: list[list[int]], vol_index: list[int], size: Sequence[int]
) -> None:
    """Raise ``ValueError`` naming the first crop whose window is not inside its volume.

    ``starts`` and ``vol_index`` are host lists (``tensor.tolist()``): a batch has a handful of crops,
    so plain integer checks cost less than the tensor ops that would vectorise them.
    """
    shapes = [tuple(v.shape[1:]) for v in volumes]
    for n, (start, v) in enumerate(zip(starts, vol_index, strict=True)):
        if not 0 <= v < len(volumes):
            raise ValueError(f"crop_batch: crop {n} names volume {v}, but there are {len(volumes)} volumes")
        if any(s < 0 or s + e > d for s, e, d in zip(start, size, shapes[v], strict=True)):
            raise ValueError(
                f"crop_batch: crop {n} window start {tuple(start)} size {tuple(size)} lies outside "
                f"volume {v} {shapes[v]}"
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


def crop_batch_torch(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut ``N`` windows from ``B`` volumes into one ``(N, C, *size)`` tensor, with torch ops.

    Args:
        volumes: ``B`` tensors ``(C, X, Y, Z)`` of one dtype, channel count and device (any strides).
        starts: ``(N, 3)`` int64 window starts (inclusive), each window inside its volume.
        vol_index: ``(N,)`` int64 index into ``volumes`` per crop.
        size: window size ``(E0, E1, E2)``.
        out: preallocated ``(N, C, *size)`` output of the volumes' dtype and device; allocated when ``None``.
        flips: ``(N, 3)`` bool, flip the window along that spatial axis (default: no flips).
        scale: ``(N,)`` float32 multiplier per crop (float32 volumes only; default 1).
        shift: ``(N,)`` float32 offset per crop, added after the scale (default 0).

    Shape:
        returns ``out``: ``(N, C, E0, E1, E2)``.

    Example:
        >>> vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
        >>> crop_batch_torch([vol], torch.tensor([[1, 2, 3]]), torch.tensor([0]), (2, 2, 2)).shape
        torch.Size([1, 1, 2, 2, 2])
    """
    shape = check_crop_args(volumes, starts, vol_index, size, out, flips, scale, shift)
    size = shape[2:]
    if out is None:
        out = torch.empty(shape, dtype=volumes[0].dtype, device=volumes[0].device)
    st, vi = starts.tolist(), vol_index.tolist()
    check_windows(volumes, st, vi, size)
    fl = flips.tolist() if flips is not None else None
    inten = intensity_params(shape[0], scale, shift, out.device)
    sc, sh = (inten[0].tolist(), inten[1].tolist()) if inten is not None else (None, None)

    def copy_one(n: int) -> None:
        (x, y, z), v = st[n], vi[n]
        src = volumes[v][:, x : x + size[0], y : y + size[1], z : z + size[2]]
        if fl is not None and any(fl[n]):
            src = src.flip([d + 1 for d in range(3) if fl[n][d]])
        if sc is None:
            out[n].copy_(src)
        else:  # two separately rounded float32 steps, exactly as the CUDA kernel
            torch.mul(src, sc[n], out=out[n])
            out[n].add_(sh[n])

    jobs = [partial(copy_one, n) for n in range(len(st))]
    if out.device.type == "cpu":  # split over threads (see fastpipe.runtime._copy_threads)
        run_copies(jobs, out.numel() * out.element_size())
    else:
        for job in jobs:
            job()
    return out
