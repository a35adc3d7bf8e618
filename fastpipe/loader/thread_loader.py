"""``ThreadDataLoader``: batches prefetched by a background thread into a bounded queue, no processes."""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from fastpipe import distributed
from fastpipe._tensors import map_tensors
from fastpipe.loader._batches import check_batch_sampler, check_shard, index_batches
from fastpipe.loader._iterable import check_iterable, is_iterable, item_batches
from fastpipe.loader._pinned_ring import DeviceCopier
from fastpipe.loader._run import LoaderRun
from fastpipe.loader._torch_kwargs import torch_options
from fastpipe.loader.collate import list_data_collate, lists_collated
from fastpipe.profiling import annotate
from fastpipe.profiling.report import summarize
from fastpipe.transforms._per_crop import as_item_list

Job = tuple[list[int], int]  # (dataset indices of one batch, the batch's seed)


def batch_seed(seed: int, epoch: int, batch: int, position: int = -1) -> int:
    """A seed in ``[0, 2**31)`` that depends only on its arguments (never on threads or timing)."""
    entropy = [seed % 2**32, epoch, batch + 1, position + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**31)


class ThreadDataLoader:
    """Iterate batches of a map-style dataset, prefetched by a background thread.

    One producer thread per epoch fills a queue of at most ``buffer_size`` batches. A dataset with
    ``fetch_seeded(indices, seed)`` (fastpipe's caches) gets each batch's random state from
    :func:`batch_seed`, so the same ``seed`` gives the same batches whatever ``num_workers`` is; when
    its suffix is batched (``dataset.batched``) a batch is one call, else one call per item. Other
    datasets are read with ``__getitems__`` or ``dataset[i]``. A list result is collated with
    ``collate_fn`` (default :func:`fastpipe.loader.collate.list_data_collate`; a dict passes through it).
    A batched suffix's batch goes to a ``collate_fn`` of the user's as its list of crops
    (a ``CollatedBatch``, as torch's and MONAI's loaders give it).

    Args:
        dataset: a map-style dataset, or a ``torch.utils.data.IterableDataset`` (iterated by the
            producer; no ``shuffle`` or ``sampler``, as in torch; :mod:`fastpipe.loader._iterable`).
        batch_size: items per batch (default 1).
        shuffle: reshuffle every epoch (default ``False``).
        num_workers: pool threads fetching items (per-item path) or whole batches (batched path) in
            parallel; 0 fetches in the producer thread (default 0).
        buffer_size: batches ready ahead of the consumer (default 2).
        repeats: yield each batch this many times (MONAI semantics; default 1).
        collate_fn: turns a list of items into a batch (default ``list_data_collate``).
        generator: ``torch.Generator`` for shuffling, drawn from as torch's ``DataLoader`` does, so a
            generator seeded alike gives its order (default ``None``: seeded from ``seed`` and the epoch).
        drop_last: drop a last incomplete batch (default ``False``).
        seed: base seed of shuffling and of every batch's random state (default ``None``: drawn from
            torch's global generator when the loader is made, as MONAI's loaders seed their
            transforms, so ``torch.manual_seed``/``monai.utils.set_determinism`` decide it and two
            unseeded programs differ).
        device: move each batch there in the producer, timed as ``h2d_s`` (default ``None``). To a GPU the
            copy goes through pinned ring buffers on a side stream (:mod:`fastpipe.loader._pinned_ring`), so it
            overlaps the training step; the batch is ready on the consumer's current CUDA stream when
            the loop receives it (train on another stream: iterate inside ``with torch.cuda.stream(s)``).
        even_batches: yield as many batches on every rank, the fewest any rank has (an all-reduce per
            epoch, :func:`fastpipe.distributed.loader_batches`); default ``None``: when the dataset is a
            rank shard (its ``shard`` is set). ``len()`` stays this rank's own count.
        persistent_workers: as soon as the producer has made an epoch's last batch, call
            ``update_cache()`` and start the next epoch's producer, so its first batches are made
            while the consumer still works on the last ones; that producer then waits on its bounded
            queue until the next loop or :meth:`close` (default ``False``). The next epoch starts
            early only when the loader alone decides its order and length: with a ``sampler`` or a
            ``generator`` (which the loop may change between epochs, ``set_epoch``) or an
            ``even_batches`` all-reduce (a collective must not run beside the training's), or over a
            dataset the loop changes with ``update_cache()``/``set_data()`` (MONAI's), it starts when
            the next loop asks for it. A run made ahead over data that ``set_data`` replaced since
            (fastpipe's ``data_version``) is dropped and the epoch made afresh.
        sampler: an iterable of dataset indices giving each epoch's order (default ``None``; excludes
            ``shuffle=True``, as in torch). Not a ``DistributedSampler`` over a dataset that is
            already a rank shard (``ValueError``: it would split the shard again).
        pin_memory: return CPU batches in page-locked memory where CUDA is available (default ``False``;
            with ``device="cuda"`` the pinned ring does this already).
        **torch_kwargs: the other ``torch.utils.data.DataLoader`` keywords: ``prefetch_factor`` raises
            ``buffer_size`` to ``prefetch_factor * max(1, num_workers)``; ``timeout`` (seconds the loop
            waits for a batch, then ``RuntimeError``: :mod:`fastpipe.loader._run`); ``batch_sampler``
            (:mod:`fastpipe.loader._batches`); ``multiprocessing_context``, ``in_order`` and
            ``pin_memory_device`` change nothing (a warning says so); ``worker_init_fn`` raises ``TypeError``.
            After a ``timeout`` the hung read's thread is not joined: it ends once its read returns.
            MONAI's ``buffer_timeout`` and ``use_thread_workers`` are accepted (already so here).

    Threading contract: iterate from one thread. Leaving a loop early (``break``), an exception, or
    :meth:`close` stops the producer and joins it. Producer errors re-raise in the consumer with
    their original traceback. ``timings`` gets one dict per batch: ``wait_s`` (consumer blocked),
    ``fetch_s``, ``collate_s``, ``h2d_s`` (producer side), ``batch_size``, ``num_crops``, and
    ``iter_s`` (consumer wall time from requesting this batch to requesting the next; an epoch's
    last batch also counts the wait for the epoch's end, ``epoch_end_s``, in ``wait_s``). At the end
    of each full epoch, fastpipe's ``SmartCacheDataset`` swaps its window (``loader_update_cache()``);
    with ``persistent_workers`` from the producer once the epoch's reads are all made. Another
    dataset's ``update_cache()`` (MONAI's ``SmartCacheDataset``) is left to the loop, as MONAI's
    loaders leave it.

    Example:
        >>> loader = ThreadDataLoader([{"x": torch.zeros(2)}] * 4, batch_size=2)
        >>> [b["x"].shape for b in loader]
        [torch.Size([2, 2]), torch.Size([2, 2])]
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        num_workers: int = 0,
        buffer_size: int = 2,
        repeats: int = 1,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        seed: int | None = None,
        device: str | torch.device | None = None,
        even_batches: bool | None = None,
        persistent_workers: bool = False,
        sampler: Any = None,
        pin_memory: bool = False,
        **torch_kwargs: Any,
    ) -> None:
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
        options = torch_options(torch_kwargs, int(buffer_size), int(num_workers), pin_memory)
        buffer_size, self.pin_memory, self.sampler = options.buffer_size, options.pin_memory, sampler
        self.timeout, self.batch_sampler = options.timeout, options.batch_sampler
        check_batch_sampler(dataset, self.batch_sampler, batch_size, shuffle, sampler, drop_last)
        check_shard(
            dataset, sampler if self.batch_sampler is None else getattr(self.batch_sampler, "sampler", None)
        )
        self.dataset = dataset
        self.batch_size, self.shuffle, self.num_workers = int(batch_size), shuffle, int(num_workers)
        self.buffer_size, self.repeats, self.drop_last = int(buffer_size), int(repeats), drop_last
        self.collate_fn = collate_fn or list_data_collate
        self.generator = generator
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        self.device = None if device is None else torch.device(device)
        self.even_batches = even_batches
        self.persistent_workers = persistent_workers
        self.epoch = 0
        self._next: tuple[int, LoaderRun] | None = None  # the next epoch's run, started ahead
        self._deferred: int | None = None  # the epoch to start ahead once the consumer takes the next run
        self._ahead_lock = threading.Lock()
        self._gen = 0  # runs of an older generation were dropped as stale: their end starts nothing
        self.timings: list[dict[str, Any]] = []
        self._runs: weakref.WeakSet[LoaderRun] = weakref.WeakSet()
        self._copier: DeviceCopier | None = None  # ring slots: queued + in the making + held by the consumer
        if self.device is not None and self.device.type == "cuda" and torch.cuda.is_available():
            self._copier = DeviceCopier(self.device, self.buffer_size + self.num_workers + 2)

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _jobs(self, epoch: int) -> list[Job] | Iterator[Job]:
        if is_iterable(self.dataset):  # iterated on the producer thread
            return item_batches(self.dataset, self.batch_size, self.drop_last)
        chunks = index_batches(self, batch_seed(self.seed, epoch, -1))
        chunks = chunks[: distributed.loader_batches(self.dataset, len(chunks), self.even_batches)]
        return [(c, batch_seed(self.seed, epoch, b)) for b, c in enumerate(chunks)]

    @property
    def _whole_batch(self) -> bool:
        ds = self.dataset
        if is_iterable(ds):
            return False
        if hasattr(ds, "fetch_seeded"):
            return bool(getattr(ds, "batched", False))
        return callable(getattr(ds, "__getitems__", None))

    def __iter__(self) -> Iterator[Any]:
        with self._ahead_lock:
            epoch, self.epoch = self.epoch, self.epoch + 1
            run, stale = self._take_next(epoch)
            run = run or self._start(epoch)
            if self._deferred == epoch + 1:  # the run taken had finished ahead: now go one further
                self._deferred = None
                self._next = (epoch + 1, self._start(epoch + 1))
        if stale is not None:  # joined outside the lock: its producer may be waiting for it (on_done)
            stale.stop()
        last: tuple[dict[str, Any], float] | None = None  # previous timing and when it was requested
        end: tuple[dict[str, Any], float] | None = None  # the last batch's timing, when the end was asked
        try:
            while True:
                start = time.perf_counter()
                if last is not None:  # consumer time per batch: wait + its step (+ repeats)
                    last[0]["iter_s"] = start - last[1]
                with annotate("wait", "wait"):
                    out = run.get()
                if out is None:
                    end, last = (last[0], start) if last is not None else None, None
                    break
                batch, timing = out
                ready = timing.pop("ready", None)
                if ready is not None:  # the copy's event: the consumer's stream waits on it, no host sync
                    self._copier.hand_over(batch, ready)
                timing["wait_s"] = time.perf_counter() - start
                self.timings.append(timing)
                last = (timing, start)
                for _ in range(self.repeats):
                    yield batch
        finally:
            if last is not None:  # left early: close the last batch's interval now
                last[0]["iter_s"] = time.perf_counter() - last[1]
            run.stop()
        if not self.persistent_workers:
            self._update_cache()
        if end is not None:  # the loop waited for the epoch's end too (a SmartCache swap): count it
            extra = time.perf_counter() - end[1]
            end[0].update(
                wait_s=end[0]["wait_s"] + extra, iter_s=end[0].get("iter_s", 0.0) + extra, epoch_end_s=extra
            )

    def _update_cache(self) -> None:
        # fastpipe's SmartCacheDataset only: it then skips a user's own update_cache() right after this
        # one. A dataset with only update_cache() (MONAI's SmartCacheDataset) is left to the loop's own
        # call, as MONAI's loaders leave it: calling it here too would move its window twice per epoch.
        swap = getattr(self.dataset, "loader_update_cache", None)
        if callable(swap):
            swap()

    def _start(self, epoch: int) -> LoaderRun:
        hook = None if is_iterable(self.dataset) else getattr(self.dataset, "prefetch", None)
        # the run's threads hold the loader weakly: a loader dropped by its user is collected, and its
        # __del__ stops the run (a run made ahead would else keep it, and itself, alive for good)
        ref, gen = weakref.ref(self), self._gen
        on_done = partial(_call_loader, ref, "_epoch_made", epoch, gen) if self.persistent_workers else None
        run = LoaderRun(
            self._jobs(epoch),
            partial(_call_loader, ref, "_make"),
            self.num_workers,
            self._whole_batch,
            self.buffer_size,
            hook,
            on_done,
            self.timeout,
        )
        run.data_version = self._data_version()
        self._runs.add(run)
        return run

    def _data_version(self) -> Any:
        """The dataset's ``data_version`` (fastpipe's caches count their ``set_data`` calls), or ``None``."""
        return getattr(self.dataset, "data_version", None)

    @property
    def _may_run_ahead(self) -> bool:
        """Whether the next epoch's jobs may be made on the producer's thread before the loop asks: not
        when a sampler or generator gives the order (the loop may set its epoch or reseed it first),
        nor when they take an all-reduce (it would run beside the training step's collectives), nor
        over an iterable dataset or one whose data the loop changes unseen (MONAI's ``update_cache``)."""
        if any(o is not None for o in (self.sampler, self.batch_sampler, self.generator)):
            return False
        if is_iterable(self.dataset):
            return False
        ds = self.dataset  # a loop's update_cache() / set_data() we cannot see would leave a run ahead stale
        if not hasattr(ds, "data_version") and any(
            callable(getattr(ds, name, None)) for name in ("update_cache", "set_data")
        ):
            return False
        return self.even_batches is False or (
            self.even_batches is None and getattr(self.dataset, "shard", None) is None
        )

    def _epoch_made(self, epoch: int, gen: int) -> None:
        """Producer thread, ``persistent_workers``: every read of ``epoch`` is done; swap, start the next.
        Nothing for a run of an older generation (dropped as stale: its reads do not count)."""
        if gen != self._gen:
            return
        self._update_cache()
        if not self._may_run_ahead:
            return
        with self._ahead_lock:
            if gen != self._gen:
                return
            if self.epoch == epoch + 1:  # the consumer is in ``epoch``: start the next, one run ahead at most
                if self._next is None:
                    self._next = (epoch + 1, self._start(epoch + 1))
            elif self.epoch <= epoch:  # this run itself was ahead and is done: the next starts when taken
                self._deferred = epoch + 1
            # else a later epoch is already iterated (nested loops): a run for epoch + 1 would be stale

    def _take_next(self, epoch: int) -> tuple[LoaderRun | None, LoaderRun | None]:
        """``(run started ahead for epoch, stale run to stop)``; under ``_ahead_lock``.

        A run made ahead is stale when it is for another epoch or the dataset's data changed since it
        started (``set_data``): it is dropped, with whatever its end would start (a new generation).
        """
        ahead, self._next = self._next, None
        if ahead is None:
            return None, None
        if ahead[0] == epoch and ahead[1].data_version == self._data_version():
            return ahead[1], None
        self._gen, self._deferred = self._gen + 1, None
        return None, ahead[1]

    def _make(self, job: Job, pool: Any) -> tuple[Any, dict[str, Any]]:
        indices, seed = job
        t0 = time.perf_counter()
        with annotate("fetch", "loader"):  # an IterableDataset's job holds its items already
            try:
                data = indices if is_iterable(self.dataset) else self._fetch(indices, seed, pool)
            except Exception as err:  # the dataset's own error, with the batch's items named in a note
                note = f"ThreadDataLoader: raised reading items {indices} of {type(self.dataset).__name__}"
                if note not in getattr(err, "__notes__", ()):  # an error object raised again (cached)
                    err.add_note(note)
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
        ds = self.dataset
        if hasattr(ds, "fetch_seeded"):
            if getattr(ds, "batched", False):
                if self.collate_fn is not list_data_collate:  # the user's, on the crops (as other loaders do)
                    return as_item_list(ds.fetch_seeded(indices, seed))
                return lists_collated(ds.fetch_seeded(indices, seed))  # per-crop lists as list_data_collate

            def one(pos: int) -> Any:
                return ds.fetch_seeded([indices[pos]], batch_seed(seed, 0, 0, pos))[0]

        elif callable(getattr(ds, "__getitems__", None)):
            return ds.__getitems__(indices)
        else:

            def one(pos: int) -> Any:
                return ds[indices[pos]]

        positions = range(len(indices))
        return list(pool.map(one, positions)) if pool is not None else [one(p) for p in positions]

    def stats(self) -> dict[str, Any]:
        """Summary of ``timings``: data-wait fraction, per-stage times, crops/s (``profiling.report.summarize``)."""
        return summarize(self.timings)

    def close(self) -> None:
        """Stop and join every running producer (idempotent)."""
        while True:  # stopping a run may start the next one (persistent_workers): repeat until none is left
            runs = [r for r in list(getattr(self, "_runs", ())) if not r.stopped]
            if not runs:
                break
            for run in runs:
                run.stop()
        self._next, self._deferred = None, None

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ThreadDataLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"num_workers={self.num_workers}, buffer_size={self.buffer_size}, repeats={self.repeats})"
        )


def _call_loader(ref: weakref.ref, method: str, *args: Any) -> Any:
    """``loader.method(*args)`` through a weak reference (a run's threads must not keep the loader alive)."""
    loader = ref()
    if loader is None:
        raise RuntimeError("ThreadDataLoader was garbage-collected while its producer ran")
    return getattr(loader, method)(*args)


def _leading_dim(batch: Any, default: int) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    return default
