"""NVTX ranges around fastpipe stages, coloured per kind; a real no-op while disabled.

Every stage of fastpipe calls :func:`annotate` (``with annotate("fetch", "loader"):``). While
NVTX is disabled (the default) that returns one shared null context: no allocation, no call
into ``nvtx``. :func:`enable_nvtx` switches every range on at once.

Transforms get their ranges from :func:`profiled` / :func:`wrap_chain`: each call of a wrapped
transform is one range named after the transform, coloured ``transform`` (deterministic) or
``random``. While NVTX is disabled :func:`wrap_chain` returns the transforms unwrapped, so a
disabled run carries no wrapper at all.

The environment variable ``FASTPIPE_NVTX=1`` (read once, at import, by ``fastpipe.runtime._env``)
starts a process with ranges enabled, so Nsight sessions can switch them on in programs that never call
:func:`enable_nvtx` (``profiling/nsys_spleen.sh`` does).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import nvtx

from fastpipe._chain import flatten, is_random
from fastpipe.runtime import _env

DOMAIN = "fastpipe"
#: ARGB colours per kind of range, so a timeline reads at a glance.
COLORS = {
    "transform": 0xFF4C72B0,
    "random": 0xFFDD8452,
    "loader": 0xFF55A868,
    "cache": 0xFFC44E52,
    "smartcache": 0xFF8172B3,
    "kernel": 0xFF937860,
    "h2d": 0xFFDA8BC3,
    "wait": 0xFF8C8C8C,
}
_OTHER_COLOR = 0xFF999999
_MAX_CACHED_RANGES = 4096

_NULL = contextlib.nullcontext()
_enabled = _env.nvtx_enabled()
# (name, kind) -> a reusable nvtx.annotate: its attributes (registered string, colour,
# category) are built once; entering it is one push, leaving it one pop.
_ranges: dict[tuple[str, str], Any] = {}


def enable_nvtx(enabled: bool = True) -> None:
    """Switch fastpipe's NVTX ranges on (or off with ``enabled=False``) process-wide."""
    global _enabled
    _enabled = bool(enabled)


def disable_nvtx() -> None:
    """Switch fastpipe's NVTX ranges off."""
    enable_nvtx(False)


def nvtx_enabled() -> bool:
    """Whether fastpipe emits NVTX ranges now."""
    return _enabled


def _range(name: str, kind: str) -> Any:
    rng = _ranges.get((name, kind))
    if rng is None:
        rng = nvtx.annotate(message=name, color=COLORS.get(kind, _OTHER_COLOR), domain=DOMAIN, category=kind)
        if len(_ranges) < _MAX_CACHED_RANGES:  # dynamic names must not grow this without bound
            _ranges[(name, kind)] = rng
    return rng


def annotate(name: str, kind: str = "transform") -> contextlib.AbstractContextManager:
    """A context manager that marks ``name`` as an NVTX range of ``kind`` while enabled.

    Args:
        name: the range's message, e.g. ``"fetch"`` or a transform's class name.
        kind: one of :data:`COLORS` (``transform``, ``random``, ``loader``, ``cache``,
            ``smartcache``, ``kernel``, ``h2d``, ``wait``); it picks the colour and the NVTX
            category. Default ``"transform"``.

    Example:
        >>> with annotate("collate", "loader"):
        ...     pass

    Thread safety: ranges are per thread (NVTX push/pop), so any thread may call this.
    """
    if not _enabled:
        return _NULL
    return _range(name, kind)


def transform_name(transform: Any) -> str:
    """The range name of a transform: its class name, or a function's ``__name__``."""
    if isinstance(transform, ProfiledTransform):
        return transform_name(transform.inner)
    name = getattr(transform, "__name__", None)
    return name if isinstance(name, str) else type(transform).__name__


class ProfiledTransform:
    """A transform whose every call is one NVTX range named after it.

    The wrapped transform stays at ``.inner``; ``is_random`` looks through it, and attribute
    access (``random``, ``keys``, ``set_random_state``, ``batch_call``, ...) is forwarded, so the
    chain split and the batched path see the same transform. ``batch_call`` (when the inner
    transform has one) runs in a range ``"<Name>.batch_call"``. While NVTX is disabled a call
    costs one check of a global on top of the inner call.

    Args:
        transform: any callable of a chain (fastpipe or MONAI transform, plain function).

    Example:
        >>> from fastpipe.profiling import ProfiledTransform
        >>> wrapped = ProfiledTransform(lambda d: d)
        >>> wrapped({"x": 1})
        {'x': 1}
    """

    profiling_wrapper = True  # fastpipe._chain.unwrapped: caches plan the chain on ``.inner``

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        if isinstance(transform, ProfiledTransform):
            transform = transform.inner
        self.inner = transform
        self.range_name = transform_name(transform)
        self.range_kind = "random" if is_random(transform) else "transform"

    def __call__(self, data: Any) -> Any:
        if not _enabled:
            return self.inner(data)
        with _range(self.range_name, self.range_kind):
            return self.inner(data)

    def __getattr__(self, name: str) -> Any:
        # only reached for names not found on the wrapper itself
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)  # e.g. during unpickling, before .inner exists
        attr = getattr(self.inner, name)
        if name == "batch_call" and callable(attr):
            return _ranged(attr, f"{self.range_name}.batch_call", self.range_kind)
        if name == "set_random_state" and callable(attr):
            return self._seeding(attr)
        return attr

    def _seeding(self, set_random_state: Callable[..., Any]) -> Callable[..., Any]:
        def seed(*args: Any, **kwargs: Any) -> Any:
            out = set_random_state(*args, **kwargs)
            return self if out is self.inner else out  # keep `t.set_random_state(0)(data)` ranged

        return seed

    def __copy__(self) -> ProfiledTransform:
        # a copy of the wrapper is a copy of the transform: a shallow copy sharing ``inner`` would share
        # its random state (a cache's per-thread copies of a transform that cannot be deep-copied)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.inner = copy.copy(self.inner)
        return new

    def __repr__(self) -> str:
        return f"profiled({self.inner!r})"


def _ranged(fn: Callable[..., Any], name: str, kind: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if not _enabled:
            return fn(*args, **kwargs)
        with _range(name, kind):
            return fn(*args, **kwargs)

    call.__name__ = name
    return call


def profiled(transform: Callable[[Any], Any]) -> ProfiledTransform:
    """Wrap one transform so that each call is an NVTX range named after it (see :class:`ProfiledTransform`).

    A transform that is wrapped already comes back as it is (one range per call, never two)."""
    return transform if isinstance(transform, ProfiledTransform) else ProfiledTransform(transform)


def unwrap(transform: Any) -> Any:
    """The transform inside a :class:`ProfiledTransform` (anything else is returned as is)."""
    return transform.inner if isinstance(transform, ProfiledTransform) else transform


def wrap_chain(transforms: Any, force: bool = False) -> list[Any]:
    """A flat list of the chain's transforms, each wrapped in an NVTX range while NVTX is enabled.

    Args:
        transforms: a list, a fastpipe/MONAI ``Compose`` or one callable (flattened).
        force: wrap even while NVTX is disabled (the wrappers then cost one global check per
            call and start emitting as soon as :func:`enable_nvtx` is called). Default ``False``:
            while disabled the transforms come back unwrapped, so there is no wrapper at all.

    Example:
        >>> from fastpipe.transforms import split_chain
        >>> enable_nvtx()
        >>> cached, rest = split_chain(wrap_chain(chain))  # same split as split_chain(chain)
    """
    flat = flatten(transforms)
    if not (_enabled or force):
        return flat
    return [profiled(t) for t in flat]
