"""Making one batch of ``ThreadDataLoader`` (fetch, collate, pin, move to ``device``) and its seed.

:class:`BatchMaker` is a mixin of ``ThreadDataLoader``: its methods read the loader's ``dataset``,
``collate_fn``, ``pin_memory``, ``device`` and ``_copier``. They run on the producer thread or on
a fetch pool thread (:mod:`fastpipe.loader._run`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fastpipe._tensors import map_tensors
from fastpipe.loader._ahead import wrapped_datasets
from fastpipe.loader._iterable import is_iterable
from fastpipe.loader.collate import list_data_collate, lists_collated
from fastpipe.profiling import annotate
from fastpipe.transforms._per_crop import as_item_samples, samples_per_item

Job = tuple[list[int], int]  # (dataset indices of one batch, the batch's seed)


def batch_seed(seed: int, epoch: int, batch: int, position: int = -1) -> int:
    """A seed in ``[0, 2**31)`` that depends only on its arguments (never on threads or timing)."""
    entropy = [seed % 2**32, epoch, batch + 1, position + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**31)


class BatchMaker:
    """``ThreadDataLoader``'s batch making: ``_make(job, pool)`` -> ``(batch, timing)``."""

    def _make(self, job: Job, pool: Any) -> tuple[Any, dict[str, Any]]:
        indices, seed = job
        t0 = time.perf_counter()
        with annotate("fetch", "loader"):  # an IterableDataset's job holds its items already
            try:
                data = indices if is_iterable(self.dataset) else self._fetch(indices, seed, pool)
            except Exception as err:  # the dataset's own error, with the batch's items named in a note
                _note(
                    err, f"ThreadDataLoader: raised reading items {indices} of {type(self.dataset).__name__}"
                )
                raise
        t1 = time.perf_counter()
        with annotate("collate", "loader"):
            batch = (
                data
                if isinstance(data, dict) and self.collate_fn is list_data_collate
                else self.collate_fn(data)
            )
        if self.pin_memory and self.device is None:
            batch = map_tensors(batch, lambda t: t.pin_memory() if t.device.type == "cpu" else t)
        t2 = time.perf_counter()
        ready = None
        if self.device is not None:
            with annotate("h2d", "h2d"):
                batch, ready = self._to_device(batch)
        t3 = time.perf_counter()
        timing = {"fetch_s": t1 - t0, "collate_s": t2 - t1, "h2d_s": t3 - t2, "batch_size": len(indices)}
        if ready is not None:
            timing["ready"] = ready
        timing["num_crops"] = _leading_dim(batch, len(indices))
        return batch, timing

    def _to_device(self, batch: Any) -> tuple[Any, Any]:
        """``(batch on self.device, ready event or None)``: a GPU through the pinned ring, else ``.to``."""
        if self._copier is not None:
            return self._copier.copy(batch)
        # to the host: a non-blocking copy from a GPU returns before its bytes land, and the loop reads them
        host = self.device.type == "cpu"
        return map_tensors(batch, lambda t: t.to(self.device, non_blocking=not host)), None

    def _fetch(self, indices: list[int], seed: int, pool: Any) -> Any:
        ds, indices = seeded_base(self.dataset, indices)
        if hasattr(ds, "fetch_seeded"):
            if getattr(ds, "batched", False):
                if self.collate_fn is not list_data_collate:  # the user's: what MONAI's loader gives it,
                    # a list of crops per item ([[crop] * num_samples] * B), not the batch's crops flat
                    step = (getattr(ds, "suffix", None) or [None])[0]
                    return as_item_samples(
                        ds.fetch_seeded(indices, seed), len(indices), samples_per_item(step)
                    )
                return lists_collated(ds.fetch_seeded(indices, seed))  # per-crop lists as list_data_collate

            def one(pos: int) -> Any:
                return ds.fetch_seeded([indices[pos]], batch_seed(seed, 0, 0, pos))[0]

        elif isinstance(ds, (torch.utils.data.ConcatDataset, torch.utils.data.Subset)) and all(
            hasattr(d, "fetch_seeded") for d in wrapped_datasets(ds)
        ):  # fastpipe datasets joined: each item read from its own, seeded as the dataset reads it

            def one(pos: int) -> Any:
                with _naming(ds, indices, pos):
                    return seeded_item(ds, indices[pos], batch_seed(seed, 0, 0, pos))

        elif (copies := self._rnd_copies) is not None:  # fetch threads, random transforms: a copy per read
            if callable(getattr(ds, "__getitems__", None)):
                with copies.use(seed) as own:
                    return copies.restored(own, own.__getitems__(indices))

            def one(pos: int) -> Any:
                with copies.use(batch_seed(seed, 0, 0, pos)) as own, _naming(ds, indices, pos):
                    return copies.restored(own, own[indices[pos]])

        elif callable(getattr(ds, "__getitems__", None)):
            return ds.__getitems__(indices)
        else:

            def one(pos: int) -> Any:
                with _naming(ds, indices, pos):
                    return ds[indices[pos]]

        positions = range(len(indices))
        return list(pool.map(one, positions)) if pool is not None else [one(p) for p in positions]


def seeded_base(ds: Any, indices: list[int]) -> tuple[Any, list[int]]:
    """``(dataset, indices)`` to read: under torch ``Subset`` wrappers (``random_split``) a fastpipe dataset
    that seeds each batch itself (``fetch_seeded``) and the indices into it, so a split reads as the
    dataset does (its draws from the loader's seed, whatever the threads); else ``ds`` and ``indices``."""
    base, mapped = ds, list(indices)
    while isinstance(base, torch.utils.data.Subset):
        mapped = [base.indices[i] for i in mapped]
        base = base.dataset
    return (base, mapped) if base is not ds and hasattr(base, "fetch_seeded") else (ds, indices)


def seeded_item(ds: Any, index: int, seed: int) -> Any:
    """Item ``index`` of ``ds`` (under ``Subset``/``ConcatDataset`` wrappers, a fastpipe dataset at the bottom)
    read with ``fetch_seeded``: a batched suffix's one item as MONAI's dataset gives it (its list of
    ``num_samples`` crops, or its dict)."""
    while isinstance(ds, (torch.utils.data.Subset, torch.utils.data.ConcatDataset)):
        if isinstance(ds, torch.utils.data.Subset):
            index, ds = ds.indices[index], ds.dataset
            continue
        index = index + len(ds) if index < 0 else index
        k = bisect.bisect_right(ds.cumulative_sizes, index)
        index, ds = index - (ds.cumulative_sizes[k - 1] if k else 0), ds.datasets[k]
    out = ds.fetch_seeded([index], seed)
    if not isinstance(out, dict):
        return out[0]
    samples = samples_per_item((getattr(ds, "suffix", None) or [None])[0])
    crops = as_item_samples(out, 1, samples)
    return crops[0] if samples is None else list(crops[0])


def _note(err: BaseException, note: str) -> None:
    """Add ``note`` to ``err`` unless a loader note is there already (an item's, or an error object
    raised again: a cached one)."""
    if not any(n.startswith("ThreadDataLoader: raised reading") for n in getattr(err, "__notes__", ())):
        err.add_note(note)


@contextmanager
def _naming(ds: Any, indices: list[int], pos: int) -> Iterator[None]:
    """Name the item read (and its batch) in a note of the error it raises."""
    try:
        yield
    except Exception as err:
        _note(
            err,
            f"ThreadDataLoader: raised reading item {indices[pos]}, of items {indices} of {type(ds).__name__}",
        )
        raise


def _leading_dim(batch: Any, default: int) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    return default
