"""The argument checks of ``ThreadDataLoader`` that need no DataLoader keyword (those: ``_torch_kwargs``)."""

from __future__ import annotations

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
    """``ValueError`` naming the option: a count out of range, or an order option that does not fit."""
    for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if int(value) < low:
            raise ValueError(f"ThreadDataLoader: {name} must be >= {low}, got {value}")
    for name, value in (("buffer_size", buffer_size), ("repeats", repeats)):
        if int(value) < 1:
            raise ValueError(f"ThreadDataLoader: {name} must be >= 1, got {value}")
    if is_iterable(dataset):
        check_iterable(dataset, shuffle, sampler)
    if sampler is not None and shuffle:
        raise ValueError("ThreadDataLoader: sampler= and shuffle=True exclude each other (as in torch)")
