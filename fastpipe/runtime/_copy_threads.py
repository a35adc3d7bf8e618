"""Many CPU window copies of one batch, shared between the calling thread and helper threads.

torch runs one big copy on an OpenMP team. From the main thread that is fast. From a loader thread
it is not, once the main thread has a team of its own (any parallel torch op there): libgomp then
counts more threads than CPUs, cuts its spin-waits short, and each of the batch's small parallel
regions (one per crop and key) pays futex wake-ups, so the same copies take longer from a loader
thread than from the main thread.

Here a batch's copies are shared between ``k`` threads instead: the calling thread and helper
threads each take the next copy as they get free, each copy with OpenMP set to one thread for that
thread only (:mod:`fastpipe.runtime._openmp`). ``k`` is the caller's ``torch.get_num_threads()``, so a user who asked for
one thread gets no split; ``FASTPIPE_COPY_THREADS=n`` caps it (0 or 1 turn the split off).

``benchmarks.copy_threads`` measures both (a batch made on a loader thread, in a process whose main
thread has a team and in one whose has not; figures in ``benchmarks/results/copy-threads-cpu.json``):
the split wins in the first case (1.13-1.32x over this round's two runs) and breaks even in the second
(1.00x), so it is kept in both.

On the main thread itself nothing is split: its team is the one libgomp keeps warm, and its workers
still spin for a while after each parallel region, taking the cores the helpers would need
(``benchmarks.crop_speed`` calls the crop on the main thread and was slower with the split there;
``benchmarks/results/crop-speed-cpu.json`` holds its current figures).

Where per-thread OpenMP counts are not available, nothing is split: the copies run one after the
other in the calling thread, as torch would run them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from fastpipe.runtime import _env, _openmp
from fastpipe.runtime._fork import renew_locks_after_fork

MAX_THREADS = 8  # memory bandwidth, not cores, bounds a copy: more threads than this only add overhead
MIN_SPLIT_BYTES = 1 << 20  # below this the hand-off costs more than it saves
ENV = _env.COPY_THREADS


class _Helpers:
    """The process's helper pool (made on first use, made again in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = -1
        self.pool: ThreadPoolExecutor | None = None
        renew_locks_after_fork(self)

    def get(self) -> ThreadPoolExecutor:
        with self.lock:
            # a forked child has none of the parent's threads: it makes its own pool
            if self.pool is None or self.pid != os.getpid():
                self.pid = os.getpid()
                self.pool = ThreadPoolExecutor(
                    MAX_THREADS - 1,
                    thread_name_prefix="fastpipe-copy",
                    initializer=_openmp.set_this_thread,
                    initargs=(1,),
                )
            return self.pool

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()


_helpers = _Helpers()


def _run(jobs: Sequence[Callable[[], Any]]) -> None:
    for job in jobs:
        job()


class _Queue:
    """Jobs handed out one at a time to whichever thread is free (a batch's crops differ in cost: a
    flipped or turned crop takes longer, so fixed halves would leave one thread idle at the end).
    After the first error no further job is handed out."""

    def __init__(self, jobs: Sequence[Callable[[], Any]]) -> None:
        self._jobs = iter(jobs)
        self._lock = threading.Lock()
        self.failed = False

    def drain(self) -> None:
        while True:
            with self._lock:
                job = None if self.failed else next(self._jobs, None)
            if job is None:
                return
            try:
                job()
            except BaseException:
                self.failed = True
                raise


def run_copies(jobs: Sequence[Callable[[], Any]], nbytes: int) -> None:
    """Run ``jobs`` (CPU copies writing disjoint memory; ``nbytes`` in all), shared between threads off the main thread.

    The calling thread and ``k - 1`` helpers take jobs in order, each the next one as it gets free.
    Returns when every thread has stopped; the first error raised by a job is raised here, and no job
    starts after it.
    """
    k = min(torch.get_num_threads(), len(jobs), MAX_THREADS, _env.copy_threads_limit(MAX_THREADS))
    on_main = threading.current_thread() is threading.main_thread()
    if k <= 1 or nbytes < MIN_SPLIT_BYTES or on_main or not _openmp.available():
        _run(jobs)
        return
    queue = _Queue(jobs)
    futures = [_helpers.get().submit(queue.drain) for _ in range(k - 1)]
    before = _openmp.set_this_thread(1)
    error: BaseException | None = None
    try:
        queue.drain()
    except BaseException as err:  # noqa: BLE001 - raised below, once every helper has stopped
        error = err
    finally:
        _openmp.set_this_thread(before)
        errors = [f.exception() for f in futures]  # waits for every helper
    for err in [error, *errors]:
        if err is not None:
            raise err
