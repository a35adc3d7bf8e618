"""From drawn list entries to crop centres and window starts: the exact integer part of the sampling.

:func:`unravel_clamp` (unravel a flat index, clamp it to the window bounds, start the window) is
written once for host ints and for tensors, and is the reference of ``kernels/sample_centers.cu``;
``_gather_flat``/``_padded_flat`` pick each crop's flat index where the lists live, and
``_centers_on_host`` does it all crop by crop when every list is on the CPU (see
:mod:`fastpipe.ops.sample`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastpipe.ops._device import to_device
from fastpipe.ops._pad_sample import pad_pick, split_pad_picks, to_padded_flat


def _gather_flat(fg: Sequence[torch.Tensor], bg: Sequence[torch.Tensor], is_fg, k, num_samples, device):
    """Flat voxel index of every crop, ``fg[v][k]`` or ``bg[v][k]``, gathered per volume and moved to ``device``."""
    sel = torch.stack([is_fg.to(torch.int64), torch.where(is_fg, k, 0), torch.where(is_fg, 0, k)])
    moved: dict[torch.device, torch.Tensor] = {}
    parts = []
    for v, (f, b) in enumerate(zip(fg, bg, strict=True)):
        dev = f.device if f.numel() else b.device
        if dev not in moved:  # one host-to-device copy per index device
            moved[dev] = to_device(sel, dev)
        fl, kf, kb = moved[dev][:, v * num_samples : (v + 1) * num_samples]
        if f.numel() == 0 and b.numel() == 0:  # only pad voxels to pick (fastpipe.ops._pad_sample)
            flat = torch.zeros(num_samples, dtype=torch.int64, device=dev)
        elif b.numel() == 0:
            flat = f[kf]
        elif f.numel() == 0:
            flat = b[kb]
        else:
            flat = torch.where(fl.bool(), f[kf], b.to(dev)[kb])
        parts.append(to_device(flat.to(torch.int64), device))
    return torch.cat(parts)


def _clamp_int(x: int, lo: int, hi: int | None) -> int:
    return max(x, lo) if hi is None else min(max(x, lo), hi)


def unravel_clamp(flat, shape, lo, hi, half, clamp=_clamp_int) -> tuple[list, list]:
    """Centre and window start per axis of the crop drawn at flat C-order index ``flat``.

    The centre is ``flat`` unravelled in ``shape`` and clamped to ``[lo, hi]``; the start is
    ``centre - half``, at least 0. Written once for host ints (one crop; ``clamp`` defaults to
    :func:`_clamp_int`) and for ``(N,)`` tensors (one per axis; ``clamp=torch.clamp``): the
    reference of ``kernels/sample_centers.cu``.
    """
    s0, s1, s2 = shape
    raw = (flat // (s1 * s2), (flat // s2) % s1, flat % s2)
    centers = [clamp(c, lo_a, hi_a) for c, lo_a, hi_a in zip(raw, lo, hi, strict=True)]
    return centers, [clamp(c - h, 0, None) for c, h in zip(centers, half, strict=True)]


def _centers_torch(flat: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unravel_clamp` on tensors (N crops); ``table`` = the kernel's plan without the address."""
    shape, lo, hi, half = table[:, :12].view(-1, 4, 3).permute(1, 2, 0)  # each (3, N)
    centers, starts = unravel_clamp(flat, shape, lo, hi, half, torch.clamp)
    return torch.stack(centers, 1), torch.stack(starts, 1)


def _padded_flat(fg, bg, is_fg, k, vol: list[int], num_samples, idx_dev, pads) -> torch.Tensor:
    """Flat indices into the padded volumes: inner list entries moved by the pad, or pad voxels."""
    pick, k_in, pad_flat = split_pad_picks(is_fg, k, [b.numel() for b in bg], vol, pads)
    flat = _gather_flat(fg, bg, torch.tensor(is_fg), k_in, num_samples, idx_dev)
    geo = torch.tensor([(*pads[v].lo, *pads[v].shape, *pads[v].padded) for v in vol], dtype=torch.int64)
    moved = to_device(torch.cat([geo, pad_flat[:, None], pick[:, None].long()], 1), idx_dev)
    lo, shape, padded = moved[:, :9].view(-1, 3, 3).permute(1, 2, 0)  # each (3, N)
    return torch.where(moved[:, 10].bool(), moved[:, 9], to_padded_flat(flat, lo, shape, padded))


def _centers_on_host(fg, bg, picks, is_fg, k, windows, shapes, num_samples, pads) -> list[tuple[int, ...]]:
    """Per crop ``(centre, start, volume)`` as 7 host ints, when every index list is on the CPU.

    The same draws, pad rule and :func:`unravel_clamp` as the device path; a batch has a few crops,
    so per-crop integer maths costs less than the tensor ops that vectorise it (about 30 of them).
    ``picks[v]`` (rejection volumes) stands for ``bg[v]``.
    """
    out = []
    for n, (f, kk) in enumerate(zip(is_fg, k, strict=True)):
        v = n // num_samples
        inner = fg[v] if f else bg[v] if picks[v] is None else picks[v]
        flat = None if pads is None else pad_pick(f, kk, len(inner), pads[v])
        if flat is None:
            flat = int(inner[kk])
            if pads is not None:
                flat = to_padded_flat(flat, pads[v].lo, pads[v].shape, pads[v].padded)
        _, lo, hi, half = windows[v]
        centers, starts = unravel_clamp(flat, shapes[v], lo, hi, half)
        out.append((*centers, *starts, v))
    return out
