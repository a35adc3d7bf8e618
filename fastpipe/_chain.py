"""What makes a chain: the transform type, the random/deterministic test and flattening.

Kept apart from ``fastpipe.transforms`` so that modules below the transforms (profiling, the
cache core) can read a chain without importing every transform. ``fastpipe.transforms`` re-exports
these names.

A transform is any callable ``dict -> dict`` (or ``dict -> list[dict]`` for multi-sample
transforms). fastpipe's own random transforms set the class attribute ``random = True``;
MONAI's randomizable transforms are recognised by duck typing (``RandomizableTrait`` among the
class's bases, or ``set_random_state`` plus an ``R`` random state), so MONAI stays optional; any
other callable can be marked with :func:`mark_random` or :func:`mark_deterministic`. An unmarked
plain callable (:func:`is_plain_callable`) counts as random in a chain holding MONAI transforms, as
MONAI's ``CacheDataset`` counts it, and as deterministic in a chain of fastpipe transforms.
"""

from __future__ import annotations

import functools
import types
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
    return _flag(fn, True, "random")


def mark_deterministic(fn: Transform) -> Transform:
    """Mark a plain callable as deterministic, so that a cache may keep its output (a plain callable
    is otherwise run on every read, as MONAI's ``CacheDataset`` runs it).

    Example:
        >>> to_float = mark_deterministic(lambda d: {**d, "image": d["image"].float()})
        >>> is_random(to_float), is_plain_callable(to_float)
        (False, False)
    """
    return _flag(fn, False, "deterministic")


def _flag(fn: Transform, random: bool, word: str) -> Transform:
    try:
        fn.random = random
    except AttributeError as err:  # builtins and slotted objects
        raise TypeError(
            f"cannot mark {fn!r} as {word}: it takes no attributes; wrap it in a function"
        ) from err
    return fn


def is_random(transform: Any) -> bool:
    """Whether ``transform`` draws random numbers: a ``random`` flag says so first (fastpipe's ``Rand*``
    classes, :func:`mark_random`, or ``fn.random = False`` for a callable known to be deterministic);
    then a wrapper's ``inner`` transform; then MONAI's randomizable classes (``RandomizableTrait``
    anywhere in the class's bases, as MONAI's ``CacheDataset`` tests it, or ``set_random_state`` plus
    a numpy ``R``)."""
    flag = getattr(transform, "random", None)
    if isinstance(flag, bool):
        return flag
    inner = getattr(transform, "inner", None)  # profiling wrappers keep the wrapped transform here
    if inner is not None and inner is not transform:
        return is_random(inner)
    if any(k.__name__ == "RandomizableTrait" for k in type(transform).__mro__):  # MONAI's own test
        return True
    return callable(getattr(transform, "set_random_state", None)) and hasattr(transform, "R")


def is_plain_callable(transform: Any) -> bool:
    """A step that is neither fastpipe's nor MONAI's and has no ``random`` flag: a function, a
    ``partial``, another library's transform. MONAI's ``CacheDataset`` treats such a step as random
    (it runs it on every read); fastpipe does so in a chain that holds MONAI transforms."""
    if isinstance(getattr(transform, "random", None), bool):
        return False
    inner = getattr(transform, "inner", None)
    if inner is not None and inner is not transform:
        return is_plain_callable(inner)
    fn = transform.func if isinstance(transform, functools.partial) else transform
    if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return _package(getattr(fn, "__module__", None) or "") not in ("fastpipe", "monai")
    return not (built_on(fn, "fastpipe") or built_on(fn, "monai"))


def _package(module: str) -> str:
    return module.split(".")[0]


def built_on(obj: Any, package: str) -> bool:
    """Whether ``obj``'s class, or a class it derives from, comes from ``package`` (a user's subclass of
    a MONAI transform is MONAI's kind of step)."""
    return any(_package(k.__module__) == package for k in type(obj).__mro__ if k is not object)


def inlined(compose: Any) -> bool:
    """Whether a ``Compose`` may be replaced by its transforms: fastpipe's, or MONAI's at its default
    ``map_items``/``unpack_items``/``lazy`` (MONAI inlines only those too; another keeps its own call).
    ``lazy=None`` lets each transform's own ``lazy`` decide: with a ``lazy=True`` transform in it, MONAI
    accumulates the resampling, so its ``Compose`` runs it."""
    if getattr(compose, "is_fastpipe_compose", False):
        return True
    if type(compose).__name__ != "Compose":
        return False
    lazy = getattr(compose, "lazy", False)
    if lazy is None and any(getattr(t, "lazy", None) is True for t in getattr(compose, "transforms", ())):
        return False
    return (
        getattr(compose, "map_items", True) in (True, 1)
        and not getattr(compose, "unpack_items", False)
        and lazy is not True
    )


def unwrapped(transform: Any) -> Any:
    """The transform inside a profiling wrapper (a class with ``profiling_wrapper = True``, such as
    ``fastpipe.profiling.ProfiledTransform``), else ``transform`` itself: a chain is planned on the
    transforms themselves, so wrapping it for NVTX ranges changes nothing of what runs."""
    return transform.inner if getattr(type(transform), "profiling_wrapper", False) else transform


def flatten(transforms: Any) -> list[Transform]:
    """A flat list of callables from a fastpipe/MONAI ``Compose``, a list, or one callable (a MONAI
    ``Compose`` with other settings than its defaults stays one step: see :func:`inlined`)."""
    if transforms is None:
        return []
    if inlined(transforms):
        return flatten(list(transforms.transforms))
    if callable(transforms) and not isinstance(transforms, (list, tuple)):
        return [transforms]
    out: list[Transform] = []
    for t in transforms:
        out.extend(flatten(t))
    return out
