"""``ThreadDataLoader`` over a ``torch.utils.data.IterableDataset``: batches of the items its iterator yields.

MONAI's ``ThreadDataLoader`` (a torch ``DataLoader``) takes iterable datasets, such as MONAI's
``GridPatchDataset`` and ``PatchDataset``; the loader's producer thread iterates the dataset here, so
the items are made in the background as for a map-style dataset. torch's rules apply: no ``shuffle``
and no ``sampler`` (the dataset gives the order), and ``len()`` only when the dataset has one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def is_iterable(dataset: Any) -> bool:
    """Whether ``dataset`` is an ``IterableDataset`` (read by iterating it, not by index)."""
    return isinstance(dataset, torch.utils.data.IterableDataset)


def check_iterable(dataset: Any, shuffle: bool, sampler: Any) -> None:
    """``ValueError`` for the options torch's ``DataLoader`` refuses with an ``IterableDataset``."""
    for name, value in (("shuffle", shuffle), ("sampler", sampler)):
        if value:
            raise ValueError(
                f"ThreadDataLoader with an IterableDataset ({type(dataset).__name__}): expected no {name}, got "
                f"{name}={value!r} (the dataset's iterator gives the order, as in torch's DataLoader)"
            )


def item_batches(dataset: Any, batch_size: int, drop_last: bool) -> Iterator[tuple[list[Any], int]]:
    """Jobs of ``(items of one batch, -1)`` as the dataset's iterator yields them (run on the producer)."""
    batch: list[Any] = []
    for item in dataset:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch, -1
            batch = []
    if batch and not drop_last:
        yield batch, -1
