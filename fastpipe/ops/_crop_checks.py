"""Argument and window checks of the batched crop (:func:`fastpipe.ops.crop.crop_batch_torch` and the
CUDA launcher ``fastpipe.ops._cuda_crop`` share them), and the identity fill of its intensity terms."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
