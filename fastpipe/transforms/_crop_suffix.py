"""The random suffix fused into ``RandCropByPosNegLabeld``: draws for a batch, then per-key op arguments.

``fastpipe.transforms._fuse_random`` hands the crop a run of ``RandFlipd``/``RandRotate90d``/
``RandScaleIntensityd``/``RandShiftIntensityd`` (in chain order) and, optionally, the pad of an
absorbed ``SpatialPadd``. Each transform draws once per crop from the crop's generator, in chain
order; a key then gets the orientation composed of the spatial transforms that name it and the
``scale``/``shift`` of the intensity transforms that name it (at most one of each, scale first:
the fusion guarantees that). A key whose volumes are not float32 gets its intensity steps per crop
after the gather instead (:func:`apply_intensity_per_crop`), with MONAI's dtype rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastpipe.ops._pad_sample import VirtualPad
from fastpipe.ops.rand_params import Orientation
from fastpipe.transforms._dict import pixdim_after
from fastpipe.transforms._rand_base import write_rows
from fastpipe.transforms.pad import pad_width


def virtual_pads(
    shapes: Sequence[Sequence[int]], pad: tuple[tuple[int, ...], str, bool] | None
) -> list[VirtualPad] | None:
    """One :class:`VirtualPad` per volume for the pad ``(spatial_size, method, pad_is_bg)``, or ``None``."""
    if pad is None:
        return None
    size, method, pad_is_bg = pad
    out = []
    for shape in shapes:
        width = pad_width(shape, size, method)
        padded = tuple(s + a + b for s, (a, b) in zip(shape, width, strict=True))
        out.append(VirtualPad(tuple(a for a, _ in width), tuple(shape), padded, pad_is_bg))
    return out


def draw_suffix(augs: Sequence[Any], n: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Every fused transform's parameters for ``n`` crops, in chain order, from one generator."""
    return [t.draw(n, generator) for t in augs]


def key_terms(
    augs: Sequence[Any],
    draws: list[dict[str, torch.Tensor]],
    key: str,
    n: int,
    orientations: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor] | None],
) -> dict[str, Any]:
    """Host tensors for :func:`fastpipe.ops.crop_batch` of ``key``: ``axes``/``flips``/``scale``/``shift`` or ``None``.

    ``orientations`` keeps the composed orientation's ``(axes, flips)`` tensors per set of spatial
    transforms (``None`` for the identity), so keys that the same flips and turns name (an image and its label) compose it once.
    """
    terms: dict[str, Any] = {"scale": None, "shift": None}
    names, spatial = [], []
    for i, (t, p) in enumerate(zip(augs, draws, strict=True)):
        if key not in t.keys:
            continue
        if hasattr(t, "orient"):
            spatial.append(i)
        else:
            terms["scale" if hasattr(t, "factors") else "shift"] = t.fused_term(p)
            names.append(type(t).__name__)
    sig = tuple(spatial)
    if sig not in orientations:
        o = Orientation.identity(n)
        for i in spatial:
            o = augs[i].orient(o, draws[i])
        orientations[sig] = None if o.is_identity() else o.tensors()
    axes, flips = (None, None) if orientations[sig] is None else orientations[sig]
    return {"axes": axes, "flips": flips, **terms, "names": names}


def to_op_args(terms: dict[str, Any]) -> dict[str, torch.Tensor | None]:
    """The op arguments of ``terms``, left on the host: the CUDA launcher packs them, with every key's
    volume table and error flag, into one pinned buffer and one host-to-device copy per batch
    (``fastpipe.ops._crop_tables``); the torch path reads them as host lists."""
    return {k: terms[k] for k in ("axes", "flips", "scale", "shift")}


class KeyPlans:
    """Per-key terms and op arguments of one batch, made once per set of transforms naming the key.

    Keys that the same transforms name (``image`` and ``label`` under a flip of both) share them.
    """

    def __init__(self, augs: Sequence[Any], draws: list[dict[str, torch.Tensor]], n: int) -> None:
        self.augs, self.draws, self.n = augs, draws, n
        self._made: dict[tuple[int, ...], tuple[dict, dict]] = {}
        self._orientations: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor] | None] = {}

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor | None]]:
        """``(terms, op_args)`` of ``key`` (see :func:`key_terms`, :func:`to_op_args`), host tensors."""
        sig = tuple(i for i, t in enumerate(self.augs) if key in t.keys)
        if sig not in self._made:
            terms = key_terms(self.augs, self.draws, key, self.n, self._orientations)
            self._made[sig] = (terms, to_op_args(terms))
        return self._made[sig]


def crop_metas(
    metas: list[Any],
    starts: list[list[int]],
    size: Sequence[int],
    terms: dict[str, Any],
    extra: list[dict[str, Any]] | None = None,
) -> list[Any]:
    """Each crop's ``{key}_meta_dict``: its item's, with the affine (and ``pixdim``) of the crop as it
    comes out of the op, as MONAI's crop, flips and turns leave it: output voxel ``o`` is source voxel
    ``starts[n] + s`` where ``s[axes[a]] = o[a]``, or ``size - 1 - o[a]`` where the axis is flipped.

    ``metas``: one per crop (an item's dict, shared by its crops); ``starts``: ``(N, 3)`` in the
    unpadded volume's voxels; ``terms``: :func:`key_terms` of the key; ``extra``: per crop, fields to
    add (MONAI's ``patch_index`` and ``crop_center``).
    """
    if extra is not None:
        metas = [{**m, **e} if isinstance(m, dict) else m for m, e in zip(metas, extra, strict=True)]
    on = [i for i, m in enumerate(metas) if isinstance(m, dict) and m.get("affine") is not None]
    if not on:
        return metas
    n = len(metas)
    axes = np.asarray(terms["axes"]) if terms["axes"] is not None else np.tile(np.arange(3), (n, 1))
    flips = np.asarray(terms["flips"], dtype=bool) if terms["flips"] is not None else np.zeros((n, 3), bool)
    rows, cols = np.arange(n)[:, None], np.arange(3)[None, :]
    to_source = np.zeros((n, 4, 4))
    to_source[:, 3, 3] = 1.0
    to_source[rows, axes, cols] = np.where(flips, -1.0, 1.0)
    flipped_source = np.zeros((n, 3), dtype=bool)
    flipped_source[rows, axes] = flips
    to_source[:, :3, 3] = np.asarray(starts, dtype=np.float64) + np.where(
        flipped_source, np.asarray(size, dtype=np.float64) - 1.0, 0.0
    )
    read: dict[int, np.ndarray] = {}  # an item's dict is shared by its crops: read its affine once
    for i in on:
        if id(metas[i]) not in read:
            read[id(metas[i])] = np.asarray(torch.as_tensor(metas[i]["affine"]).cpu(), dtype=np.float64)
    affines = np.stack([read[id(metas[i])] for i in on])
    affines = affines @ to_source[on]
    out = list(metas)
    for j, i in enumerate(on):  # pixdim as MONAI updates it: the header's values, or the spacing
        pixdim = pixdim_after(metas[i].get("pixdim"), affines[j])
        out[i] = {**metas[i], "affine": torch.from_numpy(affines[j]), "pixdim": pixdim}
    return out


def check_turned_size(terms: dict[str, Any], size: tuple[int, int, int], key: str) -> None:
    """All crops must keep ``size`` under their orientation (a turn in a plane of unequal sides cannot stack)."""
    if terms["axes"] is None or len(set(size)) == 1:  # a cube keeps its size under any turn
        return
    turned = torch.tensor(size)[terms["axes"]]
    if not bool((turned == torch.tensor(size)).all()):
        raise ValueError(
            f"RandCropByPosNegLabeld: the fused RandRotate90d turns {key!r} crops of size {size} in a plane "
            "whose two sides differ, so the crops of a batch would differ in shape; crop a size with equal "
            "sides in the plane (or pad, so allow_smaller never shrinks them)"
        )


def intensity_per_crop(terms: dict[str, Any], dtype: torch.dtype) -> bool:
    """Whether a key's fused intensity steps run per crop after the gather instead of in it.

    The op computes ``x * scale + shift`` in float32, which is MONAI's result for float32 volumes
    only: MONAI computes a float16/bfloat16 crop in its own dtype, an integer one in float32 cast back
    (shift) or to float32 (scale), a float64 one in float64.
    """
    return bool(terms["names"]) and dtype != torch.float32


def apply_intensity_per_crop(
    x: torch.Tensor, augs: Sequence[Any], draws: list[dict[str, torch.Tensor]], key: str
) -> torch.Tensor:
    """``key``'s crops ``x`` after its fused intensity steps, each crop through them as MONAI runs them.

    Every crop goes through the steps in chain order (``apply_one``: MONAI's dtype rules); the crops
    that changed are written back, the batch first converted to the dtype that stacking MONAI's crops
    gives (float32 when a scale fired on any crop of a float16 key, say).

    Shape:
        ``x``: ``(N, C, *size)``; the result has the same shape.
    """
    steps = [(t, p) for t, p in zip(augs, draws, strict=True) if key in t.keys and hasattr(t, "fused_term")]
    changed = {}
    for i in range(x.shape[0]):
        row = v = x[i]
        for t, p in steps:
            v = t.apply_one(v, p, i)
        if v is not row:
            changed[i] = v
    if not changed:
        return x
    return write_rows(x, changed)
