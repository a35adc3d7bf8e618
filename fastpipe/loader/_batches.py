"""Each epoch's batches of dataset indices for ``ThreadDataLoader``: from ``batch_sampler``, ``sampler``,
``shuffle`` or in order, as torch's ``DataLoader`` makes them.

A ``batch_sampler`` is an iterable of index lists, one per batch (``torch.utils.data.BatchSampler`` or
any object with ``__iter__`` and ``__len__``). As in torch, it excludes ``batch_size``, ``shuffle``,
``sampler``, ``drop_last`` and an ``IterableDataset``; ``len()`` is its length, and the loader's
``batch_size``, ``drop_last`` and ``sampler`` read ``None``, ``False`` and a ``SequentialSampler``, as
torch's. Each list is one batch: over fastpipe's batched datasets it goes to ``fetch_seeded`` as one call. The loader iterates a
sampler or batch sampler afresh each epoch when the loop asks for the epoch (never ahead, even with
``persistent_workers``), so a ``set_epoch`` the loop calls on it between loops takes effect.
"""

from __future__ import annotations

from typing import Any

import torch

from fastpipe.loader._iterable import is_iterable


def check_batch_sampler(
    dataset: Any, batch_sampler: Any, batch_size: int, shuffle: bool, sampler: Any, drop_last: bool
) -> None:
    """``ValueError`` with torch's messages for the options a ``batch_sampler`` excludes (none: nothing)."""
    if batch_sampler is None:
        return
    if is_iterable(dataset):
        raise ValueError(
            f"ThreadDataLoader with IterableDataset ({type(dataset).__name__}): expected unspecified "
            f"batch_sampler option, but got batch_sampler={batch_sampler!r} (as in torch's DataLoader)"
        )
    if batch_size != 1 or shuffle or sampler is not None or drop_last:
        raise ValueError(
            "ThreadDataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
            f"and drop_last (as in torch); got batch_size={batch_size}, shuffle={shuffle}, "
            f"sampler={sampler!r}, drop_last={drop_last}"
        )


def batch_attributes(
    dataset: Any, batch_sampler: Any, batch_size: int, drop_last: bool, sampler: Any
) -> tuple:
    """``(batch_size, drop_last, sampler)`` as torch's ``DataLoader`` sets them: under a ``batch_sampler``
    (which gives the batches) ``None``, ``False`` and a ``SequentialSampler`` over the dataset."""
    if batch_sampler is None:
        return int(batch_size), drop_last, sampler
    return None, False, torch.utils.data.SequentialSampler(dataset)


def check_shard(dataset: Any, sampler: Any) -> None:
    """``ValueError`` for a ``DistributedSampler`` (alone or inside a batch sampler) over a rank shard."""
    shard, replicas = getattr(dataset, "shard", None), getattr(sampler, "num_replicas", 1)
    if shard is not None and isinstance(replicas, int) and replicas > 1:
        raise ValueError(
            f"ThreadDataLoader: the dataset already holds only this rank's shard ({shard}) and the sampler "
            f"splits it again over {replicas} replicas, so each epoch would see 1/{replicas} of the data: "
            "drop the DistributedSampler (shuffle=True shuffles the shard), or build the dataset with "
            "world_size=1 to keep every item on every rank"
        )


def index_batches(loader: Any, shuffle_seed: int) -> list[list[int]]:
    """One epoch's batches of indices of ``loader.dataset`` (map-style); ``shuffle_seed`` seeds a shuffle
    without the loader's ``generator``. A ``generator`` is drawn from as torch's ``DataLoader`` does."""
    n, size, gen = len(loader.dataset), loader.batch_size, loader.generator
    if gen is not None:  # torch's DataLoader draws its base seed from it first, every epoch
        torch.empty((), dtype=torch.int64).random_(generator=gen)
    if loader.batch_sampler is not None:  # its lists are the batches
        return sampled_batches(loader.batch_sampler, n)
    if loader.sampler is not None:
        order = [int(i) for i in loader.sampler]
    elif loader.shuffle:
        own = gen if gen is not None else torch.Generator().manual_seed(shuffle_seed)
        order = torch.randperm(n, generator=own).tolist()
        if gen is not None:  # torch's RandomSampler draws a second, empty slice at its end
            torch.randperm(n, generator=gen)
    else:
        order = list(range(n))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if loader.drop_last and chunks and len(chunks[-1]) < size:
        chunks.pop()
    return chunks


def sampled_batches(batch_sampler: Any, n: int) -> list[list[int]]:
    """This epoch's batches from ``batch_sampler``, each checked against the dataset's length ``n``."""
    chunks = []
    for b, batch in enumerate(batch_sampler):
        chunk = [int(i) for i in batch]
        bad = [i for i in chunk if not -n <= i < n]
        if bad or not chunk:
            what = f"indices {bad} out of range for a dataset of {n} items" if bad else "an empty batch"
            raise ValueError(f"ThreadDataLoader: the batch_sampler gave {what} (batch {b}: {chunk})")
        chunks.append(chunk)
    return chunks
