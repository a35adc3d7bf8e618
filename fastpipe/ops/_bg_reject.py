"""Background crop centres drawn by rejection from the label, instead of from a cached index list.

MONAI's background list holds one int64 per background voxel: after ``CropForegroundd`` most of a
volume, so the list alone takes twice the bytes of a float32 image. A volume whose background is
stored compactly (a 0-d int64 *count* in place of the list, see
:func:`fastpipe.ops.indices.compact_indices`) gets its background centres here: flat candidates
drawn uniformly over the volume on the CPU generator, kept when the label is 0 there on every
channel (channel 0 of a multi-channel label is skipped, as in ``fg_bg_indices``) and, with an
image rule, the image exceeds the threshold on some channel. The first accepted candidate of a
crop is uniform over exactly the set MONAI's list enumerates.

Tries: a round draws ``T`` candidates per crop, ``T`` chosen from the background fraction (the
smallest of the batch's volumes) so that a crop misses a whole round with probability at most
:data:`ROUND_MISS`; rounds repeat for the crops still without a centre, at most :data:`MAX_TRIES`
candidates per crop. A crop that still has
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
from itertools import groupby

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


def reject_rule(
    bg: torch.Tensor, item: dict, label_key: str, rule: tuple[str | None, float] | None, where: str
) -> RejectBg | None:
    """The :class:`RejectBg` of ``item`` when its background entry ``bg`` is a 0-d count, else ``None``.

    ``rule`` is ``(image_key, image_threshold)`` of the ``FgBgToIndicesd`` that wrote the count (the
    crop's ``_bg_rule``); ``where`` names the entry in the error raised when it is unknown.
    """
    if bg.ndim != 0:
        return None
    if rule is None:
        raise ValueError(
            f"{where} is a background count (the compact form a fastpipe chain plans for its own crop), but "
            "this crop was not planned with the FgBgToIndicesd that wrote it; run both in one "
            "Compose/CacheDataset chain"
        )
    image_key, threshold = rule
    image = item[image_key] if image_key is not None else None
    return RejectBg(item[label_key], image, float(threshold), int(bg))


def tries_per_round(count: int, voxels: int) -> int:
    """Candidates per crop in one round: enough that all miss with probability <= ``ROUND_MISS``."""
    frac = count / voxels
    if frac >= 1.0:
        return 1
    return max(1, min(_MAX_ROUND, math.ceil(math.log(ROUND_MISS) / math.log1p(-frac))))


def _values(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``t[:, c]`` over flat C-order spatial indices ``c``: ``(C, len(c))``, without copying the volume."""
    if t.is_contiguous():
        return t.view(t.shape[0], -1)[:, c]
    _, _, sy, sz = t.shape
    return t[:, c // (sy * sz), (c // sz) % sy, c % sz]


def _accept(spec: RejectBg, cand: torch.Tensor) -> torch.Tensor:
    """Whether each flat candidate (CPU int64) is a background voxel; a bool tensor on the label's device."""
    label = spec.label[1:] if spec.label.shape[0] > 1 else spec.label
    c = to_device(cand, label.device)
    if label.shape[0] == 1 and label.is_contiguous():
        ok = label.view(-1)[c] == 0
    else:
        ok = (_values(label, c) == 0).all(0)
    if spec.image is not None:
        ci = c if spec.image.device == label.device else to_device(cand, spec.image.device)
        ok = ok & (_values(spec.image, ci) > spec.threshold).any(0).to(label.device)
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


def _round(specs: Sequence[RejectBg], vol: list[int], generator: torch.Generator) -> tuple[list[int], int]:
    """One round for rows of volumes ``vol`` (ascending): the picked voxel or -1 per row, and the tries per row."""
    groups = [(v, len(list(g))) for v, g in groupby(vol)]
    t = max(tries_per_round(specs[v].count, specs[v].label[0].numel()) for v, _ in groups)
    cands, masks = [], []
    for v, n in groups:
        cand = torch.randint(specs[v].label[0].numel(), (n * t,), generator=generator)
        cands.append(cand)
        masks.append(_accept(specs[v], cand))
    if masks[0].device.type == "cpu":
        ok = [a for m in masks for a in m.tolist()]
    else:  # one sync
        ok = torch.cat([m.to(masks[0].device) for m in masks]).tolist()
    cand = [c for t in cands for c in t.tolist()]
    picked = []
    for row in range(len(vol)):  # the first accepted candidate of each row (a batch has few crops)
        tries = range(row * t, (row + 1) * t)
        picked.append(next((cand[i] for i in tries if ok[i]), -1))
    return picked, t


def draw_rejected(specs: Sequence[RejectBg], vol: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """One background voxel per row, of volume ``specs[vol[i]]``, uniform over its background, by rejection.

    All candidates come from ``generator`` (CPU), so the result does not depend on the label's device.

    Shape:
        ``vol``: ``M`` volume numbers, ascending -> ``(M,)`` int64 flat C-order indices, on the CPU.

    Example:
        >>> lab = torch.zeros(1, 4, 4, 4, dtype=torch.uint8); lab[0, 0, 0, 0] = 1
        >>> out = draw_rejected([RejectBg(lab, None, 0.0, 63)], [0] * 5, torch.Generator())
        >>> bool((out != 0).all())
        True
    """
    vol = list(vol)
    out, left, spent = [-1] * len(vol), list(range(len(vol))), 0
    while left:
        if spent >= MAX_TRIES:
            for v, g in groupby(left, key=lambda i: vol[i]):
                rows = list(g)
                for i, p in zip(rows, _from_list(specs[v], len(rows), generator).tolist(), strict=True):
                    out[i] = p
            break
        picked, t = _round(specs, [vol[i] for i in left], generator)
        for i, p in zip(left, picked, strict=True):
            out[i] = p
        left = [i for i in left if out[i] < 0]
        spent += t
    return torch.tensor(out, dtype=torch.int64)


def resolve_rejected(
    is_fg: list[bool],
    k: list[int],
    reject: Sequence[RejectBg | None],
    num_samples: int,
    generator: torch.Generator | None,
) -> tuple[list[list[int] | None], list[int]]:
    """Every rejection volume's background draws resolved: ``(picks, k)``, host lists.

    A crop of volume ``v`` (with a rule) that drew background index ``k < count`` gets a voxel by
    rejection; ``picks[v]`` (``None`` for a volume without a rule) holds the ``num_samples`` picked
    voxels, which then stand for its background list (crop ``j`` of the volume reads entry ``j``), and
    a pad draw ``k >= count`` becomes ``num_samples + (k - count)``, so the virtual-pad split
    (:mod:`fastpipe.ops._pad_sample`) reads it as the same pad voxel. A batch has a few crops: the
    bookkeeping is on host lists.
    """
    sub = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    ks = list(k)
    rows = []
    for n, (f, kk) in enumerate(zip(is_fg, ks, strict=True)):
        r = reject[n // num_samples]
        if r is None or f:
            continue
        if kk < r.count:
            rows.append(n)
            ks[n] = n % num_samples
        else:  # a pad voxel (fastpipe.ops._pad_sample): past the per-volume picks
            ks[n] = kk - r.count + num_samples
    picked = draw_rejected(reject, [n // num_samples for n in rows], sub).tolist() if rows else []
    picks = [[0] * num_samples if r is not None else None for r in reject]
    for n, p in zip(rows, picked, strict=True):
        picks[n // num_samples][n % num_samples] = p
    return picks, ks
