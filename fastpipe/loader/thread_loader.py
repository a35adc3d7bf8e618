"""``ThreadDataLoader``: batches prefetched by a background thread into a bounded queue, no processes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from fastpipe import distributed
from fastpipe.loader._ahead import RunsAhead
from fastpipe.loader._batches import batch_attributes, check_batch_sampler, check_shard, index_batches
from fastpipe.loader._checks import check_options
from fastpipe.loader._iterable import is_iterable, item_batches
from fastpipe.loader._make import BatchMaker, Job, batch_seed
from fastpipe.loader._monai_rnd import seed_monai_dataset
from fastpipe.loader._pinned_ring import DeviceCopier
from fastpipe.loader._timings import EpochClock
from fastpipe.loader._torch_kwargs import torch_options
from fastpipe.loader.collate import list_data_collate
from fastpipe.profiling import annotate
from fastpipe.profiling.report import summarize

__all__ = ["ThreadDataLoader", "batch_seed"]


class ThreadDataLoader(RunsAhead, BatchMaker):
    """Iterate batches of a map-style dataset, prefetched by a background thread.

    One producer thread per epoch fills a queue of at most ``buffer_size`` batches. A dataset with
    ``fetch_seeded(indices, seed)`` (fastpipe's caches) gets each batch's random state from
    :func:`batch_seed`, so the same ``seed`` gives the same batches whatever ``num_workers`` is (read
    through torch ``Subset`` wrappers too: a ``random_split`` of one); when
    its suffix is batched (``dataset.batched``) a batch is one call, else one call per item. Other
    datasets are read with ``__getitems__`` or ``dataset[i]``. A list result is collated with
    ``collate_fn`` (default :func:`fastpipe.loader.collate.list_data_collate`; a dict passes through it).
    A batched suffix's batch goes to a ``collate_fn`` of the user's as MONAI's loaders give it: one
    list of ``num_samples`` crops per item after a crop (``[[crop] * num_samples] * B``), in order.

    Args:
        dataset: a map-style dataset, or a ``torch.utils.data.IterableDataset`` (iterated by the
            producer; no ``shuffle`` or ``sampler``, as in torch; :mod:`fastpipe.loader._iterable`).
        batch_size: items per batch (default 1).
        shuffle: reshuffle every epoch (default ``False``).
        num_workers: pool threads fetching items (per-item path) or whole batches (batched path) in
            parallel; 0 fetches in the producer thread (default 0). With workers, a dataset that does not seed
            its reads itself (a MONAI ``Dataset``) is read through copies of its random transforms, one per
            read in flight, seeded per item, as worker processes each hold their own
            (:mod:`fastpipe.loader._thread_rnd`).
        buffer_size: batches ready ahead of the consumer (default 2).
        repeats: yield each batch this many times (MONAI semantics; default 1).
        collate_fn: turns a list of items into a batch (default ``list_data_collate``).
        generator: ``torch.Generator`` for shuffling, drawn from as torch's ``DataLoader`` does, so a
            generator seeded alike gives its order (default ``None``: seeded from ``seed`` and the epoch).
        drop_last: drop a last incomplete batch (default ``False``).
        seed: base seed of shuffling and of every batch's random state (default ``None``: drawn from
            torch's global generator when the loader is made, as MONAI's loaders seed their
            transforms, so ``torch.manual_seed``/``monai.utils.set_determinism`` decide it and two
            unseeded programs differ). A MONAI dataset's own random transforms are seeded when the
            loader is made, as MONAI's ``DataLoader`` seeds them (:mod:`fastpipe.loader._monai_rnd`).
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
            queue until the next loop or :meth:`close` (default ``False``). Over a dataset that swaps
            a window (fastpipe's ``SmartCacheDataset``) this waits until the loop has received the
            last batch: an epoch left early moves no window, whatever the step's speed. The next epoch starts
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
            (:mod:`fastpipe.loader._batches`); ``multiprocessing_context`` and ``in_order`` change
            nothing (a warning says so when not torch's default); ``pin_memory_device`` is accepted
            (pinned batches serve any device); ``worker_init_fn`` raises ``TypeError``.
            After a ``timeout`` the hung read's thread is not joined: it ends once its read returns.
            MONAI's ``buffer_timeout`` and ``use_thread_workers`` are accepted (already so here).

    Threading contract: iterate from one thread. Leaving a loop early (``break``), an exception, or
    :meth:`close` stops the producer and joins it, as does the interpreter's exit with an iterator left
    mid-epoch (:mod:`fastpipe.runtime._exit`). Producer errors re-raise in the consumer with
    their original traceback. ``timings`` gets one dict per batch: ``wait_s`` (consumer blocked),
    ``fetch_s``, ``collate_s``, ``h2d_s`` (producer side), ``batch_size``, ``num_crops``, and
    ``iter_s`` (consumer wall time from requesting this batch to requesting the next; an epoch's
    last batch also counts the wait for the epoch's end, ``epoch_end_s``, in ``wait_s``); it keeps the
    first batch's dict and the latest, ``timings_kept`` (10,000) in all, so a long training holds no more. At the end
    of each full epoch, fastpipe's ``SmartCacheDataset`` swaps its window (``loader_update_cache()``);
    with ``persistent_workers`` from the producer once the epoch's reads are all made. Another
    dataset's ``update_cache()`` (MONAI's ``SmartCacheDataset``) is left to the loop, as MONAI's
    loaders leave it.

    Example:
        >>> loader = ThreadDataLoader([{"x": torch.zeros(2)}] * 4, batch_size=2)
        >>> [b["x"].shape for b in loader]
        [torch.Size([2, 2]), torch.Size([2, 2])]
    """

    #: most entries ``timings`` holds: the first batch's and the latest (the others are dropped)
    timings_kept = 10_000

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
        check_options(dataset, batch_size, num_workers, buffer_size, repeats, shuffle, sampler)
        options = torch_options(torch_kwargs, int(buffer_size), int(num_workers), pin_memory)
        buffer_size, self.pin_memory = options.buffer_size, options.pin_memory
        self.timeout, self.batch_sampler = options.timeout, options.batch_sampler
        check_batch_sampler(dataset, self.batch_sampler, batch_size, shuffle, sampler, drop_last)
        check_shard(
            dataset, sampler if self.batch_sampler is None else getattr(self.batch_sampler, "sampler", None)
        )
        self.dataset, self.shuffle, self.num_workers = dataset, shuffle, int(num_workers)
        self.batch_size, self.drop_last, self.sampler = batch_attributes(
            dataset, self.batch_sampler, batch_size, drop_last, sampler
        )
        self.buffer_size, self.repeats = int(buffer_size), int(repeats)
        self.collate_fn = collate_fn or list_data_collate
        self.generator = generator
        # before any draw here: the seed MONAI's loader would give it
        seed_monai_dataset(dataset, generator, int(num_workers))
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        self.device = None if device is None else torch.device(device)
        self.even_batches = even_batches
        self.persistent_workers = persistent_workers
        self.epoch = 0
        self._init_runs()
        self.timings: list[dict[str, Any]] = []
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
        draws = self._rank_seed()
        return [(c, batch_seed(draws, epoch, b)) for b, c in enumerate(chunks)]

    def _rank_seed(self) -> int:
        """The seed of the batches' random draws: the loader's, mixed with this process's rank past rank 0
        (the dataset's shard, else the process group's). Ranks seeded alike (``set_determinism``, one
        ``seed=``) would otherwise flip, turn and shift the same crops of every batch alike."""
        shard = getattr(self.dataset, "shard", None)
        rank = shard.get("rank") if isinstance(shard, dict) else distributed.dist_info()[0]
        return self.seed if not rank else batch_seed(self.seed, 0, -1, rank)  # no other job uses (0, -1, r)

    @property
    def _whole_batch(self) -> bool:
        ds = self.dataset
        if is_iterable(ds):
            return False
        if hasattr(ds, "fetch_seeded"):
            return bool(getattr(ds, "batched", False))
        return callable(getattr(ds, "__getitems__", None))

    def __iter__(self) -> Iterator[Any]:
        run, clock = self._begin_epoch(), EpochClock(self)
        try:
            while True:
                clock.request()
                with annotate("wait", "wait"):
                    out = run.get()
                if out is None:
                    clock.reached_end()
                    break
                batch, timing = out
                ready = timing.pop("ready", None)
                if ready is not None:  # the copy's event: the consumer's stream waits on it, no host sync
                    self._copier.hand_over(batch, ready)
                clock.received(timing)
                if run.all_taken.is_set():  # the epoch's last batch: its SmartCache swap is due
                    self._epoch_received(run.epoch)
                for _ in range(self.repeats):
                    yield batch
        finally:
            clock.left()
            run.stop()
        if not self.persistent_workers:
            self._update_cache(run.epoch)
        clock.epoch_ended()  # the loop waited for the epoch's end too (a SmartCache swap): count it

    def stats(self) -> dict[str, Any]:
        """Summary of ``timings`` (the first batch and the latest ones): data-wait fraction, per-stage times,
        crops/s (``profiling.report.summarize``)."""
        return summarize(self.timings)

    def close(self) -> None:
        """Stop and join every running producer (idempotent)."""
        while True:  # stopping a run may start the next one (persistent_workers): repeat until none is left
            runs = self._live_runs()
            if not runs:
                break
            for run in runs:
                run.stop()
        self._next, self._deferred = None, None

    def _live_runs(self) -> list:
        """The runs not stopped yet. No lock: ``close`` also runs from ``__del__``, which may fire on a
        thread holding ``_ahead_lock``; a producer adding a run mid-copy is retried instead."""
        while True:
            try:
                return [r for r in list(getattr(self, "_runs", ())) if not r.stopped]
            except RuntimeError:  # "set changed size during iteration": a run started meanwhile
                continue

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ThreadDataLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"num_workers={self.num_workers}, buffer_size={self.buffer_size}, repeats={self.repeats})"
        )
