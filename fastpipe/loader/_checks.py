"""The argument checks of ``ThreadDataLoader`` that need no DataLoader keyword (those: ``_torch_kwargs``)."""

from __future__ import annotations

import numbers
from typing import Any

from fastpipe.loader._iterable import check_iterable, is_iterable


def check_options(
    dataset: Any,
    batch_size: int,
    num_workers: int,
    buffer_size: int,
    repeats: int,
    shuffle: bool,
    sampler: Any,
) -> None:
    """``ValueError`` naming the option: a count out of range, or an order option that does not fit;
    ``TypeError`` for a count that is not an integer (``batch_size=None``: torch's unbatched mode)."""
    if batch_size is None:
        raise TypeError(
            "ThreadDataLoader: batch_size=None (torch's DataLoader without automatic batching) is not "
            "supported; use batch_size=1, or a batch_sampler= that gives the batches"
        )
    counts = (("batch_size", batch_size, 1), ("num_workers", num_workers, 0))
    for name, value, low in (*counts, ("buffer_size", buffer_size, 1), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"ThreadDataLoader: {name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"ThreadDataLoader: {name} must be >= {low}, got {value}")
    if is_iterable(dataset):
        check_iterable(dataset, shuffle, sampler)
    if sampler is not None and shuffle:
        raise ValueError("ThreadDataLoader: sampler= and shuffle=True exclude each other (as in torch)")
