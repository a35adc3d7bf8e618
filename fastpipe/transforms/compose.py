"""Compose, the random/deterministic split of a chain, and the rules every transform follows.

A transform is any callable ``dict -> dict`` (or ``dict -> list[dict]`` for multi-sample
transforms). fastpipe's own random transforms set the class attribute ``random = True``;
MONAI randomizable transforms are recognised by duck typing (``set_random_state`` plus an ``R``
random state), so MONAI stays optional; any other callable can be marked with
:func:`mark_random`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

Transform = Callable[[Any], Any]


def mark_random(fn: Transform) -> Transform:
    """Mark a plain callable as random so that caches stop before it.

    Example:
        >>> jitter = mark_random(lambda d: d)
        >>> is_random(jitter)
        True
    """
    try:
        fn.random = True
    except AttributeError as err:  # builtins and slotted objects
        raise TypeError(
            f"cannot mark {fn!r} as random: it takes no attributes; wrap it in a function"
        ) from err
    return fn


def is_random(transform: Any) -> bool:
    """Whether ``transform`` draws random numbers (fastpipe ``Rand*``, MONAI randomizable, or marked)."""
    inner = getattr(transform, "inner", None)  # profiling wrappers keep the wrapped transform here
    if inner is not None and inner is not transform:
        return is_random(inner)
    if getattr(transform, "random", False):
        return True
    # MONAI's Randomizable: set_random_state() plus a numpy RandomState in .R
    return callable(getattr(transform, "set_random_state", None)) and hasattr(transform, "R")


def flatten(transforms: Any) -> list[Transform]:
    """A flat list of callables from a fastpipe/MONAI ``Compose``, a list, or one callable."""
    if transforms is None:
        return []
    if isinstance(transforms, Compose) or type(transforms).__name__ == "Compose":
        return flatten(list(transforms.transforms))
    if callable(transforms) and not isinstance(transforms, (list, tuple)):
        return [transforms]
    out: list[Transform] = []
    for t in transforms:
        out.extend(flatten(t))
    return out


def split_chain(transforms: Any) -> tuple[list[Transform], list[Transform]]:
    """Split a chain at its first random transform: ``(deterministic_prefix, rest)``."""
    flat = flatten(transforms)
    for i, t in enumerate(flat):
        if is_random(t):
            return flat[:i], flat[i:]
    return flat, []


def apply_transform(transform: Transform, data: Any) -> Any:
    """Apply one transform; a list input (multi-sample output upstream) is mapped item by item."""
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            res = transform(item)
            out.extend(res if isinstance(res, list) else [res])
        return out
    return transform(data)


class Compose:
    """Run transforms in order, MONAI-style.

    Args:
        transforms: callables (fastpipe or MONAI transforms), nested ``Compose`` objects allowed.

    Example:
        >>> from fastpipe import transforms as T
        >>> chain = T.Compose([T.ScaleIntensityRanged("image", a_min=-57, a_max=164)])
    """

    def __init__(self, transforms: Sequence[Transform] | Transform | None = None) -> None:
        self.transforms = flatten(transforms)
        self._fused: list[Transform] | None = None

    def fused(self) -> list[Transform]:
        """The chain as it runs: ``fuse_random`` then ``fuse_spatial`` (built once; copies, the originals stay as given)."""
        if self._fused is None:
            from fastpipe.transforms._fuse_random import fuse_random  # these import this module
            from fastpipe.transforms.spatial import fuse_spatial

            self._fused = fuse_spatial(fuse_random(self.transforms))
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
            if is_random(t):
                t.set_random_state(seed + i)
        self._fused = None
        return self

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Compose([{names}])"
