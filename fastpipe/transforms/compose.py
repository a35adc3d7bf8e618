"""Compose and the random/deterministic split of a chain.

The rules every transform follows (``Transform``, ``is_random``, ``mark_random``, ``flatten``)
live in ``fastpipe._chain``, below the transforms, and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastpipe._chain import (
    Transform,
    built_on,
    flatten,
    is_plain_callable,
    is_random,
    mark_deterministic,
    mark_random,
)
from fastpipe.transforms._fuse_random import fuse_random
from fastpipe.transforms.spatial import fuse_spatial

__all__ = [
    "Compose",
    "Transform",
    "apply_transform",
    "flatten",
    "is_random",
    "mark_deterministic",
    "mark_random",
    "split_chain",
]


def split_chain(transforms: Any, plain_is_random: bool = False) -> tuple[list[Transform], list[Transform]]:
    """Split a chain at its first random transform: ``(deterministic_prefix, rest)``.

    ``plain_is_random``: a plain callable (:func:`~fastpipe._chain.is_plain_callable`: not fastpipe's,
    not MONAI's, no ``random`` flag) counts as random, as MONAI's ``CacheDataset`` counts it; datasets
    do so for a chain that holds MONAI transforms (default False: fastpipe's rule, a plain callable is
    deterministic unless :func:`mark_random` says otherwise).
    """
    flat = flatten(transforms)
    for i, t in enumerate(flat):
        if is_random(t) or (plain_is_random and is_plain_callable(t)):
            return flat[:i], flat[i:]
    return flat, []


def _takes_lists(transform: Any) -> bool:
    """MONAI hands a list whole to a nested ``Compose`` (it maps by its own ``map_items``) and to a
    ``ReduceTrait`` transform, instead of mapping them over the items."""
    t = getattr(transform, "inner", transform)
    return any(k.__name__ in ("Compose", "ReduceTrait") for k in type(t).__mro__) and not getattr(
        t, "is_fastpipe_compose", False
    )


def _call(transform: Transform, data: Any) -> Any:
    """``transform(data)``; a MONAI transform made with ``lazy=True`` runs eagerly, as MONAI's ``Compose``
    (``lazy=False``, its default, which every chain it inlines has) runs it: called alone it would only
    queue its resampling on the ``MetaTensor``, and the voxels would come out untouched."""
    if getattr(transform, "lazy", None) is True and built_on(transform, "monai"):
        return transform(data, lazy=False)
    return transform(data)


def apply_transform(transform: Transform, data: Any) -> Any:
    """Apply one transform; a list input (multi-sample output upstream) is mapped item by item
    (handed whole to a MONAI ``Compose`` or ``ReduceTrait`` transform, as MONAI does)."""
    if isinstance(data, list) and not _takes_lists(transform):
        out: list[Any] = []
        for item in data:
            res = _call(transform, item)
            out.extend(res if isinstance(res, list) else [res])
        return out
    return _call(transform, data)


class Compose:
    """Run transforms in order, MONAI-style.

    Args:
        transforms: callables (fastpipe or MONAI transforms), nested ``Compose`` objects allowed.

    Example:
        >>> from fastpipe import transforms as T
        >>> chain = T.Compose([T.ScaleIntensityRanged("image", a_min=-57, a_max=164)])
    """

    is_fastpipe_compose = True  # read by ``flatten``, which lives below the transforms

    def __init__(self, transforms: Sequence[Transform] | Transform | None = None) -> None:
        self.transforms = flatten(transforms)
        self._fused: list[Transform] | None = None
        self._fused_generators: list[Any] = []  # the transforms' generators when ``_fused`` was built

    def _generators(self) -> list[Any]:
        return [getattr(t, "generator", None) for t in self.transforms]

    def fused(self) -> list[Transform]:
        """The chain as it runs: ``fuse_random`` then ``fuse_spatial`` (copies, the originals stay as given).

        Built once, and again after a transform of the chain was reseeded (``set_random_state``
        installs a new generator), so that reseeding a crop replays its draws as in MONAI; the copies
        draw from the originals' generators, so the others' streams go on where they were.
        """
        gens = self._generators()
        stale = len(gens) != len(self._fused_generators) or any(
            a is not b for a, b in zip(gens, self._fused_generators, strict=False)
        )
        if self._fused is None or stale:
            self._fused, self._fused_generators = fuse_spatial(fuse_random(self.transforms)), gens
        return self._fused

    def __call__(self, data: Any) -> Any:
        for t in self.fused():
            data = apply_transform(t, data)
        return data

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterable[Transform]:
        return iter(self.transforms)

    def __getitem__(self, i: int | slice) -> Transform | Compose:
        if isinstance(i, slice):
            return Compose(self.transforms[i])
        return self.transforms[i]

    def set_random_state(self, seed: int) -> Compose:
        """Seed every random transform in the chain (each gets ``seed + position``).

        The fused chain is rebuilt from the reseeded transforms on the next call.
        """
        for i, t in enumerate(self.transforms):
            if is_random(t) and callable(getattr(t, "set_random_state", None)):  # a marked callable has none
                t.set_random_state(seed + i)
        self._fused = None
        return self

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Compose([{names}])"
