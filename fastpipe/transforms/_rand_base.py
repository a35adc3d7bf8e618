"""Shared machinery of the batched dictionary random transforms (``RandFlipd``, ``RandShiftIntensityd``, ...).

Every such transform draws its parameters for ``n`` crops as one tensor (:meth:`RandDictTransform.draw`,
from a CPU ``torch.Generator``), then applies them deterministically (:meth:`RandDictTransform.apply`
per item; fused into ``RandCropByPosNegLabeld``'s gather by ``fastpipe.transforms._fuse_random``).
Calling the transform on one item is ``apply(item, draw(1), 0)``: the per-item path and the fused
batched path draw from the same distribution.
"""

from __future__ import annotations

import copy
import functools
import math
import secrets
from collections.abc import Hashable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from fastpipe.transforms._dict import ensure_keys, present_keys


def seeded_generator(seed: int | None = None, state: Any = None) -> torch.Generator:
    """``state`` itself when given, else a new CPU ``torch.Generator`` seeded with ``seed``.

    ``seed=None`` seeds from the OS's entropy, as MONAI's ``set_random_state()`` does, and leaves
    torch's global generator alone (``torch.seed()`` would reseed it under the user's feet). Any int
    is a seed (taken modulo 2**64, as MONAI takes its own modulo 2**32). A MONAI-style
    ``numpy.random.RandomState`` ``state`` seeds a new generator with one draw from it.

    Raises:
        TypeError: ``state`` is neither a CPU ``torch.Generator`` nor a ``numpy.random.RandomState``.
    """
    if isinstance(state, np.random.RandomState):
        return torch.Generator().manual_seed(int(state.randint(2**63 - 1, dtype=np.int64)))
    if state is not None:
        if not isinstance(state, torch.Generator) or state.device.type != "cpu":
            raise TypeError(
                f"set_random_state: state must be a CPU torch.Generator or a numpy.random.RandomState, got {state!r}"
            )
        return state
    return torch.Generator().manual_seed(int(seed if seed is not None else secrets.randbits(63)) % 2**64)


def worker_seed() -> int | None:
    """The seed torch gives this ``DataLoader`` worker process, ``None`` outside one."""
    info = get_worker_info()
    return None if info is None else int(info.seed)


def worker_stream(owner: Any) -> torch.Generator:
    """``owner.generator``, first reseeded when ``owner`` runs in a ``DataLoader`` worker it was not seeded in.

    Worker processes start with copies of the transforms, so without this every worker would draw
    the same parameters: MONAI's ``DataLoader`` reseeds only MONAI's own transforms (a MONAI
    ``Compose`` skips the others), torch's none. The new seed mixes the worker's seed (new per worker
    and epoch) with a draw from the copy's generator (different per transform), so runs stay
    reproducible. A transform seeded in the worker (``set_random_state`` there, as fastpipe's
    datasets do) keeps its stream.
    """
    ws = worker_seed()
    if ws != getattr(owner, "_seeded_in", None):
        own = int(torch.randint(0, 2**62, (1,), generator=owner.generator))
        owner.generator = torch.Generator().manual_seed(hash((ws, own)) % 2**63)
        owner._seeded_in = ws
    return owner.generator


def generator_state(gen: torch.Generator) -> bytes:
    """``gen``'s state as bytes, for pickling: a state tensor would travel to a spawned ``DataLoader``
    worker as shared memory, whose file is gone by the time the worker opens it ("unable to resize
    file ... Invalid argument")."""
    return gen.get_state().numpy().tobytes()


def generator_from_state(state: torch.Tensor | bytes) -> torch.Generator:
    """A new CPU ``torch.Generator`` set to ``state`` (:func:`generator_state`'s bytes or ``get_state()``'s
    tensor): how pickled copies restore one."""
    if isinstance(state, (bytes, bytearray)):
        state = torch.frombuffer(bytearray(state), dtype=torch.uint8)
    gen = torch.Generator()
    gen.set_state(state)
    return gen


def stream_copy(t: Any) -> Any:
    """A deep copy of ``t`` that draws from ``t``'s own generator object, not a copy of it.

    The chain rewrites (``fuse_random``, ``compact_chain``) run copies of a chain's crop; sharing the
    generator keeps them one random stream with the transform the user holds, so a ``Compose`` that
    rebuilds its rewritten chain after a ``set_random_state`` continues (or restarts) that stream
    instead of replaying the crop's draws from where the copy was made.
    """
    out = copy.deepcopy(t)
    if isinstance(getattr(t, "generator", None), torch.Generator):
        out.generator = t.generator
    return out


def check_prob(who: str, prob: Any) -> float:
    """``prob`` as a float in ``[0, 1]``, else ``ValueError`` naming the transform and the value."""
    try:
        p = float(prob)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: prob must be a number in [0, 1], got {prob!r}") from err
    if not 0.0 <= p <= 1.0:  # also False for NaN
        raise ValueError(f"{who}: prob must be in [0, 1], got {prob!r}")
    return p


def check_lazy(who: str, lazy: Any) -> None:
    """MONAI's ``lazy`` argument: ``False`` (its default) is accepted; ``True`` raises ``ValueError`` naming ``who``."""
    if lazy:
        raise ValueError(
            f"{who}: lazy={lazy!r} (MONAI's lazy resampling) is not reproduced; fastpipe applies the "
            "transform at once (leave lazy at False)"
        )


def check_range(who: str, name: str, value: Any) -> tuple[float, float]:
    """MONAI's range argument: a number ``v`` means ``(-|v|, |v|)`` (MONAI's ``(min(-v, v), max(-v, v))``,
    so ``-0.1`` is ``(-0.1, 0.1)``), a pair ``(lo, hi)`` is sorted; no NaN, no infinity."""
    if isinstance(value, (int, float)):
        v = float(value)
        if not math.isfinite(v):  # inf: U(-inf, inf) draws NaN (MONAI's numpy refuses the range)
            raise ValueError(
                f"{who}: {name} must be a finite number (range (-{name}, {name})) or a pair, got {value!r}"
            )
        return -abs(v), abs(v)
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: {name} must be a number or a pair (low, high), got {value!r}") from err
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{who}: {name} must be finite, got {value!r}")
    return min(lo, hi), max(lo, hi)


def check_axis(who: str, name: str, axis: Any, ndim: int = 3) -> int:
    """A spatial axis (any integer but a bool) in ``[-ndim, ndim)`` as a non-negative int, else
    ``ValueError`` naming the value."""
    if isinstance(axis, bool) or not isinstance(axis, Integral) or not -ndim <= axis < ndim:
        raise ValueError(
            f"{who}: {name} must hold spatial axes in [-{ndim}, {ndim - 1}] of the volume, got {axis!r}"
        )
    return int(axis) % ndim


def as_axes(value: Any) -> Any:
    """Axis arguments as MONAI takes them, numpy integers (and a numpy array of axes) included, with
    each integer as a Python ``int``; ``None`` and anything else (a bool, a string: refused later by
    :func:`check_axis`) are left as they are."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        out = [as_axes(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    return value


def is_meta_tensor(x: Any) -> bool:
    """Whether ``x`` is a MONAI ``MetaTensor`` (checked by name: MONAI is not imported for it)."""
    return any(c.__name__ == "MetaTensor" and c.__module__.startswith("monai.") for c in type(x).__mro__)


def write_rows(x: torch.Tensor, changed: dict[int, torch.Tensor]) -> torch.Tensor:
    """``x`` (a batch ``(N, ...)``) with row ``i`` replaced by ``changed[i]``, in place where the dtype allows.

    ``x`` is first converted as a whole to the dtype stacking those crops would give: the changed rows'
    alone when every row changed (all scaled to float16, say), else promoted with the rows kept in
    ``x``'s dtype. Returns ``x`` or its converted copy.
    """
    kept = len(changed) < x.shape[0]
    dtypes = [v.dtype for v in changed.values()] + ([x.dtype] if kept else [])
    dtype = functools.reduce(torch.promote_types, dtypes)
    if dtype != x.dtype:
        x = x.to(dtype)
    for i, v in changed.items():
        x[i].copy_(v)
    return x


class RandDictTransform:
    """Base of the batched random transforms: keys, ``prob``, a CPU ``torch.Generator``, draw/apply.

    Subclasses implement ``draw(n, generator) -> dict[str, Tensor]`` and ``apply_one(img, params, i)``.
    Threading: one transform object is not thread-safe (its generator advances); ``CacheDataset``
    gives each loader thread a copy.
    """

    random = True

    def __init__(self, keys: str | Sequence[str], prob: float, allow_missing_keys: bool) -> None:
        self.keys = ensure_keys(keys)
        self.prob = check_prob(type(self).__name__, prob)
        self.allow_missing_keys = bool(allow_missing_keys)
        self.set_random_state(int(torch.randint(0, 2**62, (1,))))

    def set_random_state(
        self, seed: int | None = None, state: torch.Generator | np.random.RandomState | None = None
    ) -> RandDictTransform:
        """Reseed with a new CPU ``torch.Generator`` (or adopt ``state``; see :func:`seeded_generator`); returns ``self``."""
        self.generator, self._seeded_in = seeded_generator(seed, state), worker_seed()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["generator"] = generator_state(self.generator)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, generator=generator_from_state(state["generator"]))

    def stream(self) -> torch.Generator:
        """This transform's generator (reseeded once in a new ``DataLoader`` worker: :func:`worker_stream`)."""
        return worker_stream(self)

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The parameters of ``n`` crops (host tensors with a leading ``n``), from ``generator`` or this transform's own."""
        raise NotImplementedError

    def draw_batch(self, batch: dict[Hashable, Any], n: int) -> dict[str, torch.Tensor]:
        """The parameters of the ``n`` crops of a stacked batch (:meth:`apply_batch`); ``draw(n)`` unless
        a draw depends on the data (one value per channel, say)."""
        return self.draw(n)

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        """Apply crop ``i``'s parameters to one channel-first tensor."""
        raise NotImplementedError

    def apply(
        self, data: dict[Hashable, Any], params: dict[str, torch.Tensor], i: int = 0
    ) -> dict[Hashable, Any]:
        """A new dict with the transform's keys replaced by ``apply_one`` results (other values shared)."""
        d = dict(data)
        for j in present_keys(d, self.keys, self.allow_missing_keys, type(self).__name__):
            key = self.keys[j]
            d[key] = self.apply_one(torch.as_tensor(d[key]), params, i)
        return d

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """MONAI's per-item call: one draw, applied to every key."""
        return self.apply(data, self.draw(1))

    def apply_row_(self, row: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> bool:
        """Apply crop ``i``'s parameters to ``row`` in place where that gives ``apply_one``'s values bit
        for bit; ``False`` (the default) leaves it to :meth:`apply_one` and a copy into the row."""
        return False

    def keeps_shape(self, spatial_size: Sequence[int]) -> bool:
        """Whether every draw keeps a ``spatial_size`` crop's shape (so it can run on a stacked batch)."""
        return True

    def apply_batch(self, batch: dict[Hashable, Any], params: dict[str, torch.Tensor]) -> dict[Hashable, Any]:
        """Apply crop ``i``'s parameters to row ``i`` of each key of a collated batch, in place.

        ``batch`` holds tensors with a leading ``N`` (a batched crop's fresh output); only the rows whose
        draw changes them are written, so a batch costs what its fired crops cost, and no crop is split
        out or stacked again. A key whose changed rows come back in another dtype (an integer image
        scaled to float32, say) is converted as a whole first to the dtype stacking those crops would
        give (the changed rows' own when every row changed).

        Raises:
            ValueError: a changed row came back in another shape (see :meth:`keeps_shape`).
        """
        who = type(self).__name__
        for j in present_keys(batch, self.keys, self.allow_missing_keys, who):
            key = self.keys[j]
            x = batch[key]
            changed = {}
            for i in range(x.shape[0]):
                row = x[i]
                if self.apply_row_(row, params, i):
                    continue
                out = self.apply_one(row, params, i)
                if out is not row:
                    changed[i] = out
            if not changed:
                continue
            shapes = {tuple(v.shape) for v in changed.values()}
            if shapes != {tuple(x.shape[1:])}:
                raise ValueError(
                    f"{who}: {key!r} crops changed shape {tuple(x.shape[1:])} -> {sorted(shapes)}"
                )
            batch[key] = write_rows(x, changed)
        return batch

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={list(self.keys)}, prob={self.prob}{self._repr_args()})"
