"""SmartCache replacement workers: the thread pool that computes the next round's entries.

:class:`Replacer` runs ``compute(index)`` for the items of the next round on worker threads, outside
every lock a reader takes, and stores each result as soon as it is ready; :meth:`Replacer.collect` is
the consumer side: it waits only for the items still missing and re-raises a worker's exception
naming the item. :func:`release` stops the pool and frees the cache (shutdown or garbage
collection). The window's order is in ``_rotation.py``, the entry store in ``_slots.py``.

Threading contract: worker loops are plain functions that receive their queues and stop event;
queues are bounded; ``submit``/``collect``/``stop`` are called from one consumer thread at a time.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastpipe.cache._item_errors import failure
from fastpipe.cache.errors import ReplacementError
from fastpipe.runtime import _exit, _openmp
from fastpipe.runtime._queues import POLL_S, drain, put_until_stopped
from fastpipe.runtime._thread_device import creator_device, use_device

log = logging.getLogger(__name__)


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
    done: Callable[[], None] = lambda: None,
) -> None:
    """One replacement worker: take an index, ``compute`` it (no lock held), ``store`` it, report it.

    Reports ``(index, None)`` or ``(index, exception)`` on ``results``, then calls ``done()``; checks
    ``stop`` between items.
    """
    while not stop.is_set():
        try:
            index = jobs.get(timeout=POLL_S)
        except queue.Empty:
            continue
        try:
            store(index, compute(index))
            outcome = (index, None)
        except Exception as err:  # noqa: BLE001 - re-raised in the consumer by Replacer.collect
            outcome = (index, err)
        put_until_stopped(results, outcome, stop)
        done()


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
        retry: queue a failed item again, so that the next :meth:`collect` retries it (default
            ``True``); ``False`` when the caller drops failed items instead.
        name_of: ``index -> the item's index in the user's data list``, for errors (default: the
            index itself; a rank's shard maps its positions back).

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
        retry: bool = True,
        name_of: Callable[[int], int] | None = None,
    ) -> None:
        self._compute, self._store, self._items = compute, store, items
        self._name_of = name_of or (lambda index: index)
        self.retry = retry
        self.num_workers = num_workers
        self.nice = nice
        self._capacity = capacity
        self._jobs: queue.Queue = queue.Queue(maxsize=capacity)
        self._results: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._stop.set()  # not started
        self.store_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # workers a stop() did not join in time, still finishing an item (joined at interpreter exit)
        self._left: list[threading.Thread] = []
        self._done: set[int] = set()
        self._busy = 0  # items submitted and not yet reported; any thread may wait for 0 (wait_idle)
        self._idle = threading.Condition()
        _exit.stop_at_exit(self)

    def _guarded_store(self, stop: threading.Event, index: int, entry: Any) -> None:
        with self.store_lock:
            if not stop.is_set():  # after stop() nothing new may enter the cache
                self._store(index, entry)

    def _done_unless_stopped(self, stop: threading.Event) -> None:
        if not stop.is_set():  # a worker of an earlier start must not count for this one
            self._one_done()

    def start(self) -> None:
        """Start the worker threads (no-op while they run); after :meth:`stop`, a new set of them.

        Each start has its own stop event and queues: a worker of an earlier start still finishing
        its item (stop's join timed out) discards it and reports nowhere the new workers read.
        """
        if self.alive:
            return
        stop = self._stop = threading.Event()
        self._jobs = queue.Queue(maxsize=self._capacity)
        self._results = queue.Queue(maxsize=self._capacity)
        store = functools.partial(self._guarded_store, stop)
        done = functools.partial(self._done_unless_stopped, stop)
        args = (self._jobs, self._results, stop, self._compute, store, done)
        self._threads = [
            threading.Thread(
                target=_worker,
                args=(self.nice, _openmp.per_worker(self.num_workers), creator_device(), *args),
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
            with self._idle:
                self._busy += 1
            if not put_until_stopped(self._jobs, index, self._stop):
                self._one_done()
                return

    def _one_done(self) -> None:
        with self._idle:
            self._busy = max(0, self._busy - 1)  # a worker finishing after stop() reset the count
            if self._busy == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> float:
        """Wait until every submitted item has been computed and reported (or the workers stop, or
        ``timeout`` seconds pass); returns the seconds waited. Safe from any thread: it only waits."""
        t0 = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy > 0 and not self._stop.is_set() and self.alive:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if left <= 0:
                    break
                self._idle.wait(left)
        return time.perf_counter() - t0

    def missing(self, indices: Sequence[int]) -> int:
        """How many of ``indices`` have not been reported done yet (drains finished reports first)."""
        self._drain(block=False)
        return sum(1 for i in indices if i not in self._done)

    def collect(self, indices: Sequence[int]) -> float:
        """Wait until every index in ``indices`` is done; returns the seconds waited.

        Raises:
            ReplacementError: a worker failed on one of them (naming the item index and file; its
                ``index`` attribute holds the data index, ``slot`` the index given here); with
                ``retry`` the failed index is queued again so that a later call retries it.
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
                index, err = self._results.get(timeout=POLL_S) if block else self._results.get_nowait()
            except queue.Empty:
                return
            block = False
            if err is not None:
                if self.retry:
                    self.submit([index])
                error = failure(
                    ReplacementError,
                    "SmartCache replacement failed on",
                    self._name_of(index),
                    self._items(index),
                    err,
                )
                error.slot = index  # what the rotation calls it (``index`` is the data list's)
                raise error from err
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
        self._threads = []  # a worker left computing discards its item and exits: not this pool's any more
        self._left = [t for t in (*self._left, *left) if t.is_alive()]  # joined at interpreter exit
        drain(self._jobs)
        drain(self._results)
        self._done.clear()
        with self._idle:
            self._busy = 0
            self._idle.notify_all()
        return left

    #: replacement workers stop after the loader runs at interpreter exit (a producer may start a round)
    exit_order = 1

    def stop_at_exit(self, deadline: float) -> None:
        """At interpreter exit (:mod:`fastpipe.runtime._exit`): stop, and join every worker of this pool,
        those an earlier :meth:`stop` left finishing an item too, by ``deadline`` (``time.monotonic()``)."""
        self._stop.set()
        for t in (*self._threads, *self._left):
            t.join(max(0.0, deadline - time.monotonic()))


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


def _worker(nice: int | None, omp_threads: int, device: int | None, *args: Any) -> None:
    lower_priority(nice)
    _openmp.set_this_thread(omp_threads)  # the workers share the cores (see fastpipe.runtime._openmp)
    use_device(device)  # a "cuda" in the chain is the rank's GPU, not cuda:0 (a new thread's device)
    replace_loop(*args)
