"""What makes a chain: the transform type, the random/deterministic test and flattening.

Kept apart from ``fastpipe.transforms`` so that modules below the transforms (profiling, the
cache core) can read a chain without importing every transform. ``fastpipe.transforms`` re-exports
these names.

A transform is any callable ``dict -> dict`` (or ``dict -> list[dict]`` for multi-sample
transforms). fastpipe's own random transforms set the class attribute ``random = True``;
MONAI randomizable transforms are recognised by duck typing (``set_random_state`` plus an ``R``
random state), so MONAI stays optional; any other callable can be marked with
:func:`mark_random`.
"""

from __future__ import annotations

from collections.abc import Callable
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
    if getattr(transforms, "is_fastpipe_compose", False) or type(transforms).__name__ == "Compose":
        return flatten(list(transforms.transforms))
    if callable(transforms) and not isinstance(transforms, (list, tuple)):
        return [transforms]
    out: list[Transform] = []
    for t in transforms:
        out.extend(flatten(t))
    return out
