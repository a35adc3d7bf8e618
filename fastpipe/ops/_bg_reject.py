"""Background crop centres drawn by rejection from the label, instead of from a cached index list.

MONAI's background list holds one int64 per background voxel: after ``CropForegroundd`` most of a
volume, so the list alone takes twice the bytes of a float32 image. A volume whose background is
stored compactly (a 0-d int64 *count* in place of the list, see
:func:`fastpipe.ops.indices.compact_indices`) gets its background centres here: flat candidates
drawn uniformly over the volume on the CPU generator, kept when the label is 0 there on every
channel (channel 0 of a multi-channel label is skipped, as in ``fg_bg_indices``) and, with an
image rule, the image exceeds the threshold on some channel. The first accepted candidate of a
crop is uniform over exactly the set MONAI's list enumerates.

Tries: a round draws ``T`` candidates per crop, ``T`` chosen from the background fraction so that
a crop misses a whole round with probability at most :data:`ROUND_MISS`; rounds repeat for the
crops still without a centre, at most :data:`MAX_TRIES` candidates per crop. A crop that still has
none (a volume far below ``MIN_BG_FRACTION``, whose entries keep their list) takes a uniform pick from the background list
computed then (exact too, but slow; warned once). The tests run where the label lives; only the
accept mask (``n * T`` bools) comes back to the host: one device sync per round.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastpipe.ops import indices
from fastpipe.ops._device import to_device

#: Probability that one crop finds no background voxel in a round.
ROUND_MISS = 1e-4
#: Candidates per crop after which the background list is computed instead.
MAX_TRIES = 4096
_MAX_ROUND = 256

_exhausted_warned = threading.Event()


@dataclass(frozen=True)
class RejectBg:
    """One volume's background rule: ``label`` ``(C, X, Y, Z)``; ``image`` and ``threshold`` (background
    also needs ``image > threshold`` on some channel) or ``image=None``; ``count`` background voxels."""

    label: torch.Tensor
    image: torch.Tensor | None
    threshold: float
    count: int


def tries_per_round(count: int, voxels: int) -> int:
    """Candidates per crop in one round: enough that all miss with probability <= ``ROUND_MISS``."""
    frac = count / voxels
    if frac >= 1.0:
        return 1
    return max(1, min(_MAX_ROUND, math.ceil(math.log(ROUND_MISS) / math.log1p(-frac))))


def _accept(spec: RejectBg, cand: torch.Tensor) -> torch.Tensor:
    """Whether each flat candidate (CPU int64) is a background voxel; a bool tensor on the label's device."""
    label = spec.label[1:] if spec.label.shape[0] > 1 else spec.label
    _, sx, sy, sz = spec.label.shape
    c = to_device(cand, label.device)
    x, y, z = c // (sy * sz), (c // sz) % sy, c % sz
    ok = (label[:, x, y, z] == 0).all(0)
    if spec.image is not None:
        img = spec.image
        ci = c if img.device == label.device else to_device(cand, img.device)
        xi, yi, zi = ci // (sy * sz), (ci // sz) % sy, ci % sz
        ok = ok & (img[:, xi, yi, zi] > spec.threshold).any(0).to(label.device)
    return ok


def _from_list(spec: RejectBg, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` uniform picks from the background list computed now (the bounded rejection ran out)."""
    if not _exhausted_warned.is_set():
        _exhausted_warned.set()
        warnings.warn(
            f"fastpipe: background centres not found by rejection within {MAX_TRIES} tries "
            f"(background fraction {spec.count / spec.label[0].numel():.2g}); computing the background list "
            "for this volume",
            RuntimeWarning,
            stacklevel=4,
        )
    _, bg = indices.fg_bg_indices(spec.label, spec.image, spec.threshold)
    k = torch.randint(bg.numel(), (n,), generator=generator)
    return bg.cpu()[k]


def draw_rejected(
    specs: Sequence[RejectBg], counts: Sequence[int], generator: torch.Generator
) -> list[torch.Tensor]:
    """``counts[v]`` background voxels of volume ``v``, each uniform over its background, by rejection.

    All candidates come from ``generator`` (CPU), so the result does not depend on the label's device.

    Shape:
        returns per volume a CPU int64 tensor ``(counts[v],)`` of flat C-order indices.

    Example:
        >>> lab = torch.zeros(1, 4, 4, 4, dtype=torch.uint8); lab[0, 0, 0, 0] = 1
        >>> out = draw_rejected([RejectBg(lab, None, 0.0, 63)], [5], torch.Generator().manual_seed(0))
        >>> bool((out[0] != 0).all())
        True
    """
    out = [torch.full((n,), -1, dtype=torch.int64) for n in counts]
    todo = [v for v, n in enumerate(counts) if n > 0]
    spent = [0] * len(specs)
    while todo:
        masks, cands = [], []
        for v in todo:
            left = (out[v] < 0).nonzero().flatten()
            t = tries_per_round(specs[v].count, specs[v].label[0].numel())
            cand = torch.randint(specs[v].label[0].numel(), (left.numel(), t), generator=generator)
            cands.append((v, left, cand))
            masks.append(_accept(specs[v], cand.flatten()))
            spent[v] += t
        flat_masks = torch.cat([m.to(masks[0].device) for m in masks]).cpu()  # one sync per round
        pos, next_todo = 0, []
        for v, left, cand in cands:
            ok = flat_masks[pos : pos + cand.numel()].view(cand.shape)
            pos += cand.numel()
            hit = ok.any(1)
            first = ok.to(torch.int8).argmax(1)
            out[v][left[hit]] = cand[hit, first[hit]]
            if bool((~hit).any()):
                if spent[v] >= MAX_TRIES:
                    miss = left[~hit]
                    out[v][miss] = _from_list(specs[v], miss.numel(), generator)
                else:
                    next_todo.append(v)
        todo = next_todo
    return out


def resolve_rejected(
    bg: Sequence[torch.Tensor],
    is_fg: torch.Tensor,
    k: torch.Tensor,
    reject: Sequence[RejectBg | None],
    num_samples: int,
    generator: torch.Generator | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Background lists and ``k`` with every rejection volume's background draws resolved.

    A crop of volume ``v`` (with a rule) that drew background index ``k < count`` gets a voxel by
    rejection; ``bg[v]`` becomes the ``num_samples`` picked voxels (crop ``j`` of the volume reads
    entry ``j``) and a pad draw ``k >= count`` becomes ``num_samples + (k - count)``, so the virtual-pad
    split (:mod:`fastpipe.ops._pad_sample`) reads it as the same pad voxel.
    """
    sub = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    bg, k = list(bg), k.clone()
    vols = [v for v, r in enumerate(reject) if r is not None]
    needs = []
    for v in vols:
        sl = slice(v * num_samples, (v + 1) * num_samples)
        needs.append(~is_fg[sl] & (k[sl] < reject[v].count))
    picked = draw_rejected([reject[v] for v in vols], [int(n.sum()) for n in needs], sub)
    for v, need, got in zip(vols, needs, picked, strict=True):
        sl = slice(v * num_samples, (v + 1) * num_samples)
        row = torch.zeros(num_samples, dtype=torch.int64)
        row[need] = got
        kv = k[sl]
        pad = ~is_fg[sl] & ~need
        k[sl] = torch.where(
            need, torch.arange(num_samples), torch.where(pad, kv - reject[v].count + num_samples, kv)
        )
        bg[v] = row.to(reject[v].label.device)
    return bg, k
