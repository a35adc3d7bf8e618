"""Threaded cache fill: run a per-item job over many items with a progress bar and an error policy.

Threading contract: ``job(slot)`` is called from up to ``num_workers`` pool threads at once, each slot
exactly once, each thread with ``torch.get_num_threads() // num_workers`` OpenMP threads for torch's
parallel ops (:mod:`fastpipe._openmp`; ``n`` workers of ``n`` threads each would oversubscribe ``n``
cores ``n`` times); the first error (``on_error="raise"``) cancels the jobs not yet started and is raised
in the calling thread as :class:`CacheFillError` naming the item index and file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from fastpipe import _openmp
from fastpipe._meta import item_name

log = logging.getLogger(__name__)


class CacheFillError(RuntimeError):
    """The deterministic chain failed on one item during a cache fill (the cause is chained)."""


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


def describe_failure(index: int, item: Any, err: BaseException) -> str:
    """``item 3 (/data/img3.nii.gz): ValueError: ...`` for logs and errors."""
    return f"item {index} ({item_name(item)}): {type(err).__name__}: {err}"


def run_fill(
    slots: Sequence[int],
    job: Callable[[int], None],
    items: Callable[[int], Any],
    num_workers: int | None = None,
    progress: bool = True,
    on_error: str = "raise",
    desc: str = "Loading dataset",
) -> FillReport:
    """Run ``job(slot)`` for every slot on a thread pool.

    Args:
        slots: indices of the items to fill.
        job: computes and stores one item; raises on failure.
        items: ``items(slot)`` gives the input item (used to name it in errors).
        num_workers: pool size (``None``: one thread per core).
        progress: show a tqdm bar.
        on_error: ``"raise"`` (default) stops at the first failure; ``"skip"`` logs it and goes on.
        desc: progress-bar label.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = FillReport()
    start = time.perf_counter()
    bar = tqdm(total=len(slots), desc=desc, disable=not progress)
    workers = default_workers(num_workers, len(slots))
    with ThreadPoolExecutor(
        workers,
        thread_name_prefix="fastpipe-fill",
        initializer=_openmp.set_this_thread,  # the cores shared out, not one team of all cores per worker
        initargs=(_openmp.per_worker(workers),),
    ) as pool:
        futures = {pool.submit(job, s): s for s in slots}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                bar.update(1)
                _collect(fut, futures[fut], items, on_error, report, pending)
    bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _collect(
    fut: Any, slot: int, items: Callable[[int], Any], on_error: str, report: FillReport, pending: set
) -> None:
    err = fut.exception()
    if err is None:
        report.items += 1
        return
    message = describe_failure(slot, items(slot), err)
    if on_error == "skip":
        log.warning("cache fill skipped %s", message)
        report.skipped[slot] = message
        return
    for other in pending:
        other.cancel()
    raise CacheFillError(f"cache fill failed on {message}") from err
