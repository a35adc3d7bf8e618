"""Threaded cache fill: run a per-item job over many items with a progress bar and an error policy.

Threading contract: ``job(slot)`` is called exactly once per slot. With one worker every job runs in the
calling thread, one after the other, on that thread's own OpenMP team. With ``n > 1`` workers the jobs
run on ``n`` pool threads at once, each with ``torch.get_num_threads() // n`` OpenMP threads for torch's
parallel ops (:mod:`fastpipe.runtime._openmp`; ``n`` workers of ``n`` threads each would oversubscribe ``n``
cores ``n`` times). The first error (``on_error="raise"``) cancels the jobs not yet started and is raised
in the calling thread as :class:`~fastpipe.cache.errors.CacheFillError` naming the item index and the file
that failed; it is also an instance of the cause's type (``except ValueError`` keeps working). A job
that raises a ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) stops
the fill and is raised as it is, whatever ``on_error`` says, with one worker or several.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from fastpipe.cache._core import FAILED_STEP
from fastpipe.cache._item_errors import describe_failure, failure
from fastpipe.cache.errors import CacheFillError
from fastpipe.runtime import _openmp, _rendezvous
from fastpipe.runtime._thread_device import creator_device, use_device

log = logging.getLogger(__name__)


@dataclass
class FillReport:
    """What a fill did: seconds, items stored, items skipped (index -> message)."""

    seconds: float = 0.0
    items: int = 0
    skipped: dict[int, str] = field(default_factory=dict)


def default_workers(num_workers: int | None, n_items: int) -> int:
    """``num_workers`` or, when ``None``, one thread per core; at least 1 and at most ``n_items``."""
    n = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    if n < 0:
        raise ValueError(f"num_workers must be >= 0 or None, got {num_workers}")
    return max(1, min(n, max(1, n_items)))


def run_fill(
    slots: Sequence[int],
    job: Callable[[int], None],
    items: Callable[[int], Any],
    num_workers: int | None = None,
    progress: bool = True,
    on_error: str = "raise",
    desc: str = "Loading dataset",
    index_of: Callable[[int], int] | None = None,
) -> FillReport:
    """Run ``job(slot)`` for every slot: on a thread pool, or in the calling thread for one worker.

    Args:
        slots: indices of the items to fill.
        job: computes and stores one item; raises on failure.
        items: ``items(slot)`` gives the input item (used to name it in errors).
        num_workers: pool size (``None``: one thread per core; 1: no pool, the calling thread).
        progress: show a tqdm bar.
        on_error: ``"raise"`` (default) stops at the first failure; ``"skip"`` logs it and goes on.
        desc: progress-bar label.
        index_of: the item's index in the user's data list, for messages (default: the slot itself;
            a rank's shard maps its positions back).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = FillReport()
    start = time.perf_counter()
    bar = tqdm(total=len(slots), desc=desc, disable=not progress)
    workers = default_workers(num_workers, len(slots))
    outcomes = _run_inline(slots, job) if workers == 1 else _run_pooled(slots, job, workers)
    try:
        _tally(outcomes, bar, items, on_error, report, index_of)
    finally:
        outcomes.close()  # a raise stops the pool: jobs not yet started are cancelled first
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _tally(
    outcomes: Iterator[tuple[int, BaseException | None]],
    bar: Any,
    items: Callable[[int], Any],
    on_error: str,
    report: FillReport,
    index_of: Callable[[int], int] | None,
) -> None:
    """Count each finished job in ``report`` and apply the error policy: one policy and one count,
    however the jobs ran."""
    for slot, err in outcomes:
        _rendezvous.stop_if_failed()  # another rank's fill failed: stop now, not after this whole shard
        bar.update(1)
        if err is None:
            report.items += 1
        else:
            _failed(err, slot, items, on_error, report, index_of)


def _run_inline(
    slots: Sequence[int], job: Callable[[int], None]
) -> Iterator[tuple[int, BaseException | None]]:
    """One worker: the calling thread runs every job, yielding ``(slot, error or None)``.

    Not a one-thread pool: a pool thread's OpenMP team comes on top of the calling thread's, and once
    libgomp counts more threads than cores it cuts its spin-waits short (see
    :mod:`fastpipe.runtime._copy_threads`); interleaved fills ran faster and steadier in the calling
    thread. ``benchmarks.cached_epoch`` records the one-worker fill time per volume (``fill_scaling``
    in ``benchmarks/results/cached-epoch-cpu.json``).
    """
    for slot in slots:
        try:
            job(slot)
        except Exception as err:  # noqa: BLE001 - handed to the caller's error policy
            yield slot, err
        else:
            yield slot, None


def _fill_thread(omp_threads: int, device: int | None) -> None:
    _openmp.set_this_thread(omp_threads)
    use_device(device)  # a "cuda" in the chain is the filling rank's GPU, not cuda:0


def _run_pooled(
    slots: Sequence[int], job: Callable[[int], None], workers: int
) -> Iterator[tuple[int, BaseException | None]]:
    """``workers`` pool threads run the jobs, each on its share of the cores; yields ``(slot, error or None)`` as they finish."""
    with ThreadPoolExecutor(
        workers,
        thread_name_prefix="fastpipe-fill",
        initializer=_fill_thread,  # the cores shared out, not one team of all cores per worker
        initargs=(_openmp.per_worker(workers), creator_device()),
    ) as pool:
        futures = {pool.submit(job, s): s for s in slots}
        try:
            for fut in as_completed(futures):
                err = fut.exception()
                if err is not None and not isinstance(err, Exception):
                    raise err  # KeyboardInterrupt, SystemExit: not an item error, as in the calling thread
                yield futures[fut], err
        finally:  # closed early (an error raised): jobs not yet started never start
            for fut in futures:
                fut.cancel()


def _failed(
    err: BaseException,
    slot: int,
    items: Callable[[int], Any],
    on_error: str,
    report: FillReport,
    index_of: Callable[[int], int] | None = None,
) -> None:
    """Raise :class:`CacheFillError` naming the item (``on_error="raise"``), or log it and record the skip
    (under its slot, named by its index in the data list)."""
    index = index_of(slot) if index_of is not None else slot
    message = describe_failure(index, items(slot), err)
    if on_error == "skip":
        log.warning("cache fill skipped %s", message)
        report.skipped[slot] = message
        return
    step = getattr(err, FAILED_STEP, None)  # the prefix transform that raised it (CacheCore._apply)
    where = f"cache fill failed in {step} on" if step else "cache fill failed on"
    error = failure(CacheFillError, where, index, items(slot), err)
    error.transform = step
    raise error from err
