"""``ThreadDataLoader``'s runs: starting an epoch's ``LoaderRun``, and the next one ahead (``persistent_workers``).

:class:`RunsAhead` is a mixin of ``ThreadDataLoader``: its methods read and set the loader's ``_next``,
``_deferred``, ``_gen``, ``_ahead_lock``, ``epoch`` and ``_runs``. ``_epoch_made`` runs on a producer
thread; the rest on the consumer's, under ``_ahead_lock`` where they touch the run made ahead.
"""

from __future__ import annotations

import threading
import weakref
from functools import partial
from typing import Any

import torch

from fastpipe.loader._iterable import is_iterable
from fastpipe.loader._run import LoaderRun
from fastpipe.loader._thread_rnd import ThreadCopies, thread_copies


class RunsAhead:
    """Start an epoch's run; with ``persistent_workers``, the next epoch's as soon as this one is made."""

    def _init_runs(self) -> None:
        self._next: tuple[int, LoaderRun] | None = None  # the next epoch's run, started ahead
        self._deferred: int | None = None  # the epoch to start ahead once the consumer takes the next run
        self._ahead_lock = threading.Lock()
        self._gen = 0  # runs of an older generation were dropped as stale: their end starts nothing
        self._runs: weakref.WeakSet[LoaderRun] = weakref.WeakSet()
        self._rnd_copies: ThreadCopies | None = None  # the fetch threads' copies of the random transforms

    def _begin_epoch(self) -> LoaderRun:
        """The run of the epoch the loop starts now: the one made ahead if it is still good, else a new one."""
        with self._ahead_lock:
            epoch, self.epoch = self.epoch, self.epoch + 1
            run, stale = self._take_next(epoch)
            run = run or self._start(epoch)
            if self._deferred == epoch + 1:  # the run taken had finished ahead: now go one further
                self._deferred = None
                self._next = (epoch + 1, self._start(epoch + 1))
        if stale is not None:  # joined outside the lock: its producer may be waiting for it (on_done)
            stale.stop()
        return run

    def _update_cache(self, epoch: int) -> None:
        # fastpipe's SmartCacheDataset only: it then skips a user's own update_cache() right after this
        # one (or this one, after a user's call once the loop had the epoch's last batch). A dataset with
        # only update_cache() (MONAI's SmartCacheDataset) is left to the loop's own call, as MONAI's
        # loaders leave it: calling it here too would move its window twice per epoch.
        swap = getattr(self.dataset, "loader_update_cache", None)
        if callable(swap):
            swap((id(self), epoch))

    def _epoch_received(self, epoch: int) -> None:
        """The loop has every batch of ``epoch``: a fastpipe SmartCache's swap for it is now due."""
        mark = getattr(self.dataset, "loader_epoch_received", None)
        if callable(mark):
            mark((id(self), epoch))

    def _start(self, epoch: int) -> LoaderRun:
        hook = None if is_iterable(self.dataset) else getattr(self.dataset, "prefetch", None)
        # copies made afresh each epoch, as worker processes copy the dataset: a later set_data is seen
        self._rnd_copies = thread_copies(self.dataset, self.num_workers)
        # the run's threads hold the loader weakly: a loader dropped by its user is collected, and its
        # __del__ stops the run (a run made ahead would else keep it, and itself, alive for good)
        ref, gen = weakref.ref(self), self._gen
        version = self._data_version()  # before the first read: a set_data from now on makes the run stale
        on_done = (
            partial(_call_loader, ref, "_epoch_made", epoch, gen, version)
            if self.persistent_workers
            else None
        )
        run = LoaderRun(
            self._jobs(epoch),
            partial(_call_loader, ref, "_make"),
            self.num_workers,
            self._whole_batch,
            self.buffer_size,
            hook,
            on_done,
            self.timeout,
            # a window swap (SmartCache) waits for the loop to receive the epoch's last batch: an epoch
            # left early (a steps-per-epoch break) never moves it, whatever the speed of the loop's step
            done_when_taken=callable(getattr(self.dataset, "loader_update_cache", None)),
        )
        run.data_version, run.epoch = version, epoch
        self._runs.add(run)
        return run

    def _data_version(self) -> Any:
        """The ``data_version`` of the dataset, or of each one under torch ``Subset``/``ConcatDataset``
        wrappers (fastpipe's caches count their ``set_data`` calls; ``None`` for another)."""
        return tuple(getattr(ds, "data_version", None) for ds in wrapped_datasets(self.dataset))

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
        # a loop's update_cache() / set_data() we cannot see would leave a run ahead stale
        for ds in wrapped_datasets(self.dataset):
            if not hasattr(ds, "data_version") and any(
                callable(getattr(ds, name, None)) for name in ("update_cache", "set_data")
            ):
                return False
        return self.even_batches is False or (
            self.even_batches is None and getattr(self.dataset, "shard", None) is None
        )

    def _epoch_made(self, epoch: int, gen: int, version: Any = None) -> None:
        """Producer thread, ``persistent_workers``: every read of ``epoch`` is done; swap, start the next.
        Nothing for a run of an older generation, or one that read data ``set_data`` has replaced since it
        started (``version``, the dataset's ``data_version`` then): it is stale, its reads do not count,
        and a swap now would move the new data's window before its first epoch."""
        if gen != self._gen or version != self._data_version():
            return
        self._update_cache(epoch)
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


def wrapped_datasets(ds: Any) -> list[Any]:
    """``[ds]``, or the datasets under torch's ``Subset`` (``random_split``) and ``ConcatDataset`` wrappers,
    whose ``set_data`` changes what the wrapper reads."""
    if isinstance(ds, torch.utils.data.Subset):
        return wrapped_datasets(ds.dataset)
    if isinstance(ds, torch.utils.data.ConcatDataset):
        return [d for inner in ds.datasets for d in wrapped_datasets(inner)]
    return [ds]


def _call_loader(ref: weakref.ref, method: str, *args: Any) -> Any:
    """``loader.method(*args)`` through a weak reference (a run's threads must not keep the loader alive)."""
    loader = ref()
    if loader is None:
        raise RuntimeError("ThreadDataLoader was garbage-collected while its producer ran")
    return getattr(loader, method)(*args)
