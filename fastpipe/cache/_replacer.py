"""SmartCache machinery: the window's rotation order, the replacement worker pool, the entry store.

:class:`Rotation` is MONAI's running window over the (optionally shuffled) data list. :class:`Replacer`
runs ``compute(index)`` for the items of the next round on worker threads, outside every lock a
reader takes, and stores each result as soon as it is ready; :meth:`Replacer.collect` is the
consumer side: it waits only for the items still missing and re-raises a worker's exception naming
the item. :class:`SlotStore` puts entries into the shared ``CacheCore`` and tracks the peak of
cached bytes; :func:`release` stops the pool and frees the cache (shutdown or garbage collection).

Threading contract: worker loops are plain functions that receive their queues and stop event;
queues are bounded; ``submit``/``collect``/``stop`` are called from one consumer thread at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fastpipe.cache._fill import describe_failure
from fastpipe.runtime import _openmp

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often blocked workers and the consumer look at the stop event


class ReplacementError(RuntimeError):
    """The deterministic chain failed on an item prepared for the next SmartCache round (cause chained)."""


class Rotation:
    """MONAI's running window: ``order[start : start + cache_num]`` (cyclic), then the next ``replace_num``.

    Args:
        n: number of data items.
        cache_num: items in the window.
        replace_num: items replaced per round.
        shuffle: permute the data order once with ``numpy.random.RandomState(seed)`` (MONAI's draw).
        seed: seed of that permutation (default 0).

    Example:
        >>> r = Rotation(5, cache_num=4, replace_num=1, shuffle=False)
        >>> r.window(), r.incoming(), r.outgoing()
        ([0, 1, 2, 3], [4], [0])
    """

    def __init__(self, n: int, cache_num: int, replace_num: int, shuffle: bool, seed: int = 0) -> None:
        self.order = list(range(n))
        if shuffle:
            np.random.RandomState(seed).shuffle(self.order)
        self.n, self.cache_num, self.replace_num = n, cache_num, replace_num
        self.start = 0

    def _take(self, offset: int, count: int) -> list[int]:
        return [self.order[(self.start + offset + i) % self.n] for i in range(count)]

    def window(self) -> list[int]:
        """Data indices of the current window, oldest first."""
        return self._take(0, self.cache_num)

    def incoming(self) -> list[int]:
        """Data indices that enter at the next round."""
        return self._take(self.cache_num, self.replace_num)

    def outgoing(self) -> list[int]:
        """Data indices that leave at the next round (the oldest of the window)."""
        return self._take(0, self.replace_num)

    def advance(self) -> None:
        """Move the window by one round."""
        self.start = (self.start + self.replace_num) % self.n


def lower_priority(nice: int | None) -> None:
    """Raise the calling thread's niceness by ``nice`` (Linux only, where niceness is per thread; else no-op).

    Threads it starts afterwards (e.g. torch's intra-op pool) inherit the lower priority.
    """
    if not nice or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(nice)))
    except OSError as err:  # e.g. a sandbox forbidding it: run at normal priority
        log.debug("could not lower SmartCache worker priority: %s", err)


def replace_loop(
    jobs: queue.Queue,
    results: queue.Queue,
    stop: threading.Event,
    compute: Callable[[int], Any],
    store: Callable[[int, Any], None],
) -> None:
    """One replacement worker: take an index, ``compute`` it (no lock held), ``store`` it, report it.

    Reports ``(index, None)`` or ``(index, exception)`` on ``results``; checks ``stop`` between items.
    """
    while not stop.is_set():
        try:
            index = jobs.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        try:
            store(index, compute(index))
            outcome = (index, None)
        except Exception as err:  # noqa: BLE001 - re-raised in the consumer by Replacer.collect
            outcome = (index, err)
        while not stop.is_set():
            try:
                results.put(outcome, timeout=_POLL_S)
                break
            except queue.Full:
                continue


class Replacer:
    """A pool of replacement threads fed round by round.

    Args:
        compute: ``index -> entry``, run on a worker thread without any lock held.
        store: ``(index, entry) -> None``, called by the worker under the store lock unless stopped.
        items: ``index -> input item``, used to name a failed item.
        num_workers: worker threads.
        capacity: most items of one round (bounds both queues).
        nice: niceness added to each worker thread (default 10; ``None``/0: normal priority), so that
            the loader's reads win the CPU over replacements when both want it.

    Threading contract: one consumer thread calls :meth:`submit`, :meth:`collect` and :meth:`stop`.
    """

    def __init__(
        self,
        compute: Callable[[int], Any],
        store: Callable[[int, Any], None],
        items: Callable[[int], Any],
        num_workers: int,
        capacity: int,
        nice: int | None = 10,
    ) -> None:
        self._compute, self._store, self._items = compute, store, items
        self.num_workers = num_workers
        self.nice = nice
        self._jobs: queue.Queue = queue.Queue(maxsize=capacity)
        self._results: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self.store_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._done: set[int] = set()

    def _guarded_store(self, index: int, entry: Any) -> None:
        with self.store_lock:
            if not self._stop.is_set():  # after stop() nothing new may enter the cache
                self._store(index, entry)

    def start(self) -> None:
        """Start the worker threads (no-op while they run)."""
        if self.alive:
            return
        self._stop.clear()
        args = (self._jobs, self._results, self._stop, self._compute, self._guarded_store)
        self._threads = [
            threading.Thread(
                target=_worker,
                args=(self.nice, _openmp.per_worker(self.num_workers), *args),
                name=f"fastpipe-smartcache-{i}",
                daemon=True,
            )
            for i in range(self.num_workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def alive(self) -> bool:
        """Whether any worker thread is running."""
        return any(t.is_alive() for t in self._threads)

    def submit(self, indices: Sequence[int]) -> None:
        """Queue ``indices`` for computation (the queue holds a whole round, so this never blocks long)."""
        for index in indices:
            while True:
                if self._stop.is_set():
                    return
                try:
                    self._jobs.put(index, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue

    def missing(self, indices: Sequence[int]) -> int:
        """How many of ``indices`` have not been reported done yet (drains finished reports first)."""
        self._drain(block=False)
        return sum(1 for i in indices if i not in self._done)

    def collect(self, indices: Sequence[int]) -> float:
        """Wait until every index in ``indices`` is done; returns the seconds waited.

        Raises:
            ReplacementError: a worker failed on one of them (naming the item index and file); the
                failed index is queued again so that a later call retries it.
            RuntimeError: the workers were stopped.
        """
        t0 = time.perf_counter()
        wanted = set(indices)
        while not wanted <= self._done:
            if not self.alive:
                raise RuntimeError("SmartCache replacement workers are not running (shut down?)")
            self._drain(block=True)
        self._done -= wanted
        return time.perf_counter() - t0

    def _drain(self, block: bool) -> None:
        while True:
            try:
                index, err = self._results.get(timeout=_POLL_S) if block else self._results.get_nowait()
            except queue.Empty:
                return
            block = False
            if err is not None:
                message = describe_failure(index, self._items(index), err)
                self.submit([index])
                raise ReplacementError(f"SmartCache replacement failed on {message}") from err
            self._done.add(index)

    def stop(self, timeout: float = 1.0) -> list[threading.Thread]:
        """Stop the workers and join them within ``timeout`` seconds overall; returns threads still alive.

        A worker busy computing one item finishes it and then discards the result (idempotent).
        """
        self._stop.set()
        with self.store_lock:  # a worker inside store() finishes before we return
            pass
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = [t for t in self._threads if t.is_alive()]
        self._threads = left
        _clear(self._jobs)
        _clear(self._results)
        self._done.clear()
        return left


def _clear(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def check_args(cache_num: Any, replace_rate: Any, cache_rate: Any) -> None:
    """Validate ``SmartCacheDataset``'s sizes: ``TypeError``/``ValueError`` with the value received."""
    if cache_num is None:  # MONAI's default: the window is int(len(data) * cache_rate)
        pass
    elif isinstance(cache_num, bool) or not isinstance(cache_num, int):
        raise TypeError(f"cache_num must be an int, got {type(cache_num).__name__} {cache_num!r}")
    elif cache_num <= 0:
        raise ValueError(f"cache_num must be > 0, got {cache_num} (None: int(len(data) * cache_rate))")
    if not 0.0 < float(replace_rate) <= 1.0:
        raise ValueError(f"replace_rate must be in (0, 1], got {replace_rate}")
    if not 0.0 < float(cache_rate) <= 1.0:
        raise ValueError(f"cache_rate must be in (0, 1], got {cache_rate}")


class SlotStore:
    """Puts an entry into the core, counting entries with no room and the peak of cached bytes."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.no_room = 0
        self.peak_nbytes = 0
        self._lock = threading.Lock()

    def __call__(self, slot: int, entry: Any) -> None:
        placed = self.core.put(slot, entry)
        nbytes = self.core.nbytes
        with self._lock:
            self.no_room += placed is None
            self.peak_nbytes = max(self.peak_nbytes, nbytes)


def release(replacer: Replacer, core: Any) -> None:
    """Stop the workers and free the cache; runs once (shutdown or garbage collection)."""
    left = replacer.stop(timeout=1.0)
    if left:
        warnings.warn(
            f"{len(left)} SmartCache replacement thread(s) still computing an item after 1 s; "
            "they discard their result when done",
            RuntimeWarning,
            stacklevel=2,
        )
    core.close()
    if torch.cuda.is_available() and core.device.type == "cuda":
        torch.cuda.empty_cache()


def _worker(nice: int | None, omp_threads: int, *args: Any) -> None:
    lower_priority(nice)
    _openmp.set_this_thread(omp_threads)  # the workers share the cores (see fastpipe.runtime._openmp)
    replace_loop(*args)
