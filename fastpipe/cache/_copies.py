"""Copies on the read path: a cached entry deep-copied for ``copy_cache``, and the random suffix copied
per thread and seeded (:class:`~fastpipe.cache._reads.CachedReads`)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from fastpipe._chain import is_random, unwrapped


def transform_seed(seed: int, j: int) -> int:
    """The seed of random transform ``j`` of a suffix seeded with ``seed``: a hash of both, in
    ``[0, 2**31)``. Not ``seed + j``: torch gives DataLoader worker ``w`` the seed ``base + w``, so
    worker 1's first transform would replay worker 0's second."""
    return int(np.random.SeedSequence([seed % 2**64, j]).generate_state(1)[0] % 2**31)


def seed_suffix(suffix: list[Any], seed: int, keep: frozenset[int] = frozenset()) -> None:
    """Seed random transform ``j`` of ``suffix`` with :func:`transform_seed` of ``(seed, j)``, except those
    whose (unwrapped) ``id`` is in ``keep``: transforms a ``set_data`` finds in the new chain go on with
    their random state."""
    for j, t in enumerate(suffix):
        if id(unwrapped(t)) in keep:
            continue
        if is_random(t) and callable(getattr(t, "set_random_state", None)):
            t.set_random_state(transform_seed(seed, j))


def thread_copy(transform: Any) -> Any:
    """A copy of a suffix transform for one thread: deep, or shallow when it holds locks and such.

    A shallow copy is independent once reseeded only if ``set_random_state`` installs a new random
    state object (fastpipe's ``torch.Generator``, MONAI's ``RandomState``) rather than reseeding it in place.
    """
    try:
        return copy.deepcopy(transform)
    except (TypeError, copy.Error):
        return copy.copy(transform)


def deep_copy(entry: Any) -> Any:
    """``copy.deepcopy(entry)`` with each MONAI ``MetaTensor``'s metadata arrays copied too: MONAI's deep
    copy shares them (it copies the meta dict shallow), and its spatial transforms write ``meta["pixdim"]``
    in place, so the cached entry's pixdim would change under a MONAI step of the random part."""
    out = copy.deepcopy(entry)
    for v in out.values() if isinstance(out, dict) else ():
        meta = getattr(v, "meta", None)
        if isinstance(v, torch.Tensor) and isinstance(meta, dict):
            v.meta = {k: m.copy() if isinstance(m, np.ndarray) else m for k, m in meta.items()}
    return out
