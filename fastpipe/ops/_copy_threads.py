"""Many CPU window copies of one batch, shared between the calling thread and helper threads.

torch runs one big copy on an OpenMP team. From the main thread that is fast. From a loader thread
it is not, once the main thread has a team of its own (any parallel torch op there): libgomp then
counts more threads than CPUs, cuts its spin-waits short, and each of the batch's small parallel
regions (one per crop and key) pays futex wake-ups. Measured on a 2-core VM: 16 crop copies took
1.5x longer from a loader thread than from the main thread.

Here a batch's copies are split into ``k`` chunks instead. The calling thread runs one and helper
threads run the rest, each copy with OpenMP set to one thread. ``omp_set_num_threads`` is a per-thread
setting, so torch's global thread count (``torch.get_num_threads()`` in other threads) is untouched.
``k`` is the caller's ``torch.get_num_threads()``, so a user who asked for one thread gets no split.

When the OpenMP runtime torch uses cannot be found, or does not behave as probed once on first use,
nothing is split: the copies run one after the other in the calling thread, as torch would run them.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

MAX_THREADS = 8  # memory bandwidth, not cores, bounds a copy: more threads than this only add overhead
MIN_SPLIT_BYTES = 1 << 20  # below this the hand-off costs more than it saves

_OMP_LIB = re.compile(r"\S*/lib(gomp|iomp5|omp)[^/\s]*\.(so[.\d]*|dylib)")


def _find_omp() -> Any | None:
    """The OpenMP runtime loaded in this process (torch's), or ``None``."""
    try:
        with open("/proc/self/maps") as f:
            found = _OMP_LIB.search(f.read())
    except OSError:
        return None
    if found is None:
        return None
    try:
        lib = ctypes.CDLL(found.group(0))
        lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        lib.omp_get_max_threads.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


def _probe(lib: Any) -> bool:
    """Whether setting one OpenMP thread in a helper thread reaches torch there and nowhere else."""
    seen: list[int] = []

    def helper() -> None:
        torch.get_num_threads()  # torch's lazy per-thread init first, or it would undo the setting
        lib.omp_set_num_threads(1)
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    t = threading.Thread(target=helper, name="fastpipe-omp-probe")
    t.start()
    t.join()
    return seen == [1] and torch.get_num_threads() == before


class _State:
    """The process's helper pool (made on first use, made again in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = -1
        self.omp: Any | None = None
        self.checked = False
        self.pool: ThreadPoolExecutor | None = None

    def get(self) -> tuple[Any | None, ThreadPoolExecutor | None]:
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked child: the parent's threads are not here
                self.pid, self.pool = os.getpid(), None
            if not self.checked:
                lib = _find_omp()
                self.omp = lib if lib is not None and _probe(lib) else None
                self.checked = True
            if self.omp is not None and self.pool is None:
                self.pool = ThreadPoolExecutor(
                    MAX_THREADS - 1, thread_name_prefix="fastpipe-copy", initializer=self._single_thread
                )
            return self.omp, self.pool

    def _single_thread(self) -> None:
        torch.get_num_threads()
        self.omp.omp_set_num_threads(1)

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()


_state = _State()


def _run(jobs: Sequence[Callable[[], Any]]) -> None:
    for job in jobs:
        job()


def run_copies(jobs: Sequence[Callable[[], Any]], nbytes: int) -> None:
    """Run ``jobs`` (CPU copies writing disjoint memory; ``nbytes`` in all) split over threads.

    Returns when every job has finished; the first error raised by a job is raised here, after all
    chunks have stopped.
    """
    k = min(torch.get_num_threads(), len(jobs), MAX_THREADS)
    if k <= 1 or nbytes < MIN_SPLIT_BYTES:
        _run(jobs)
        return
    omp, pool = _state.get()
    if omp is None or pool is None:
        _run(jobs)
        return
    chunks = [jobs[i::k] for i in range(k)]
    futures = [pool.submit(_run, c) for c in chunks[1:]]
    before = omp.omp_get_max_threads()
    omp.omp_set_num_threads(1)
    try:
        _run(chunks[0])
    finally:
        omp.omp_set_num_threads(before)
        errors = [f.exception() for f in futures]  # waits for every chunk
    for err in errors:
        if err is not None:
            raise err


def available() -> bool:
    """Whether copies are split over threads in this process (the OpenMP runtime was found and probed)."""
    return _state.get()[0] is not None


def _renew_after_fork() -> None:
    _state._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)
