"""One epoch of ``ThreadDataLoader``: a producer thread, an optional fetch pool, a bounded queue.

The producer is a plain loop function (:func:`producer_loop`) that receives its queue, stop event
and an iterator of finished batches, in the style of torchdata's nodes. It ends the queue with an
end marker, or with the exception that stopped it, which :meth:`LoaderRun.get` re-raises in the
consumer with its original traceback. With a ``timeout`` (torch's ``DataLoader(timeout=)``) the
consumer waits that long for each batch, then raises ``RuntimeError`` and abandons the run: a thread
cannot be killed, so a hung read keeps its thread until it returns, then the thread sees the stop
and ends; the next epoch starts a new run.

Threading contract: :meth:`LoaderRun.get` from one consumer thread; :meth:`LoaderRun.stop` from any
thread, any number of times; after it returns no thread of the run is alive (called from one of the
run's own threads, it only tells them to end).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from fastpipe.runtime import _exit, _openmp
from fastpipe.runtime._daemon_pool import DaemonPool
from fastpipe.runtime._queues import POLL_S, drain, put_until_stopped
from fastpipe.runtime._thread_device import creator_device, use_device

_END = "end"
_ITEM = "item"
_ERROR = "error"


def producer_loop(
    q: queue.Queue, stop: threading.Event, produce: Iterator[Any], device: int | None = None
) -> None:
    """Move everything ``produce`` yields into ``q``, then an end marker or the error that stopped it;
    ``device``: the CUDA device of the thread that started this one (:mod:`fastpipe.runtime._thread_device`)."""
    try:
        use_device(device)
        for out in produce:
            if not put_until_stopped(q, (_ITEM, out), stop):
                return
        put_until_stopped(q, (_END, None), stop)
    except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
        put_until_stopped(q, (_ERROR, err), stop)


def _fetch_pool(num_workers: int) -> DaemonPool:
    """The fetch threads of one run, sharing the cores (see :mod:`fastpipe.runtime._openmp`); daemon
    threads, so that a read left hung after a ``timeout`` does not hold the interpreter's exit."""
    return DaemonPool(
        num_workers,
        thread_name_prefix="fastpipe-fetch",
        initializer=_fetch_thread,
        initargs=(_openmp.per_worker(num_workers), creator_device()),
    )


def _fetch_thread(omp_threads: int, device: int | None) -> None:
    _openmp.set_this_thread(omp_threads)
    use_device(device)  # reads that run a "cuda" step do it on the loop's GPU, not cuda:0


class LoaderRun:
    """Produce the batches of one epoch in the background.

    Args:
        jobs: one job per batch, in order.
        make: ``make(job, pool) -> batch`` (``pool`` is the fetch pool for per-item parallelism, or ``None``).
        num_workers: pool threads, each with ``torch.get_num_threads() // num_workers`` OpenMP threads;
            0 makes every batch in the producer thread.
        whole_batch: with workers, make whole batches in parallel (in order) instead of items of a batch.
        buffer_size: most batches waiting in the queue.
        prefetch_hook: called with the indices of the next batch before a batch is made (default ``None``).
        on_done: called in the producer thread once the last batch is made and queued (with
            ``done_when_taken``: once the consumer has received it too), unless the run
            was stopped first (default ``None``); an error it raises reaches the consumer.
        timeout: seconds :meth:`get` waits for one batch before ``RuntimeError``; 0 waits for ever (default 0).
        done_when_taken: ``on_done`` waits until :meth:`get` has handed out every batch, so a consumer
            that leaves the epoch early never sees it run, however fast the producer was (default ``False``).
    """

    def __init__(
        self,
        jobs: list[Any],
        make: Callable,
        num_workers: int,
        whole_batch: bool,
        buffer_size: int,
        prefetch_hook: Callable[[list[int]], None] | None = None,
        on_done: Callable[[], None] | None = None,
        timeout: float = 0,
        done_when_taken: bool = False,
    ) -> None:
        self.jobs, self.make, self.on_done = jobs, make, on_done
        self.timeout, self.taken = timeout, 0  # batches the consumer has received
        self.all_taken = threading.Event()  # set by get() once the consumer has received every batch
        self.done_when_taken = done_when_taken and isinstance(jobs, list)
        if isinstance(jobs, list) and not jobs:
            self.all_taken.set()
        self.whole_batch = whole_batch
        self.num_workers = num_workers
        self.prefetch_hook = prefetch_hook
        self.queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self.stop_event = threading.Event()
        self.pool = _fetch_pool(num_workers) if num_workers else None
        self.thread = threading.Thread(
            target=producer_loop,
            args=(self.queue, self.stop_event, self._produce(), creator_device()),
            name="fastpipe-loader",
            daemon=True,
        )
        self._stopped = self._abandoned = False  # abandoned: left to a hung read after a timeout
        self._lock = threading.Lock()
        _exit.stop_at_exit(self)
        self.thread.start()

    def _produce(self) -> Iterator[Any]:
        if self.pool is not None and self.whole_batch:
            yield from self._produce_parallel_batches()
        else:
            for k, job in enumerate(self.jobs):
                if self.stop_event.is_set():
                    return
                self._prefetch(k + 1)
                yield self.make(job, self.pool)
        if self.on_done is None or self.stop_event.is_set():
            return
        while self.done_when_taken and not self.all_taken.wait(POLL_S):
            if self.stop_event.is_set():  # the consumer left the epoch early
                return
        if not self.stop_event.is_set():
            self.on_done()

    def _produce_parallel_batches(self) -> Iterator[Any]:
        pending: deque = deque()
        nxt = 0
        while nxt < len(self.jobs) or pending:
            while nxt < len(self.jobs) and len(pending) < self.num_workers and not self.stop_event.is_set():
                self._prefetch(nxt + 1)
                pending.append(self.pool.submit(self.make, self.jobs[nxt], None))
                nxt += 1
            if self.stop_event.is_set():
                return
            yield pending.popleft().result()

    def _prefetch(self, k: int) -> None:
        if self.prefetch_hook is not None and k < len(self.jobs):
            self.prefetch_hook(self.jobs[k][0])

    def get(self) -> Any | None:
        """The next batch, ``None`` at the end of the epoch; re-raises a producer error.

        Raises:
            RuntimeError: no batch came within ``timeout`` seconds (the run is then abandoned).
        """
        # the clock runs while a batch is due: not for the end marker after the last one, which waits
        # on the epoch's end work (persistent_workers: the SmartCache swap), no batch of the user's
        due = not isinstance(self.jobs, list) or self.taken < len(self.jobs)
        deadline = time.monotonic() + self.timeout if self.timeout > 0 and due else None
        while True:
            try:
                kind, payload = self.queue.get(timeout=POLL_S)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    raise RuntimeError("ThreadDataLoader: producer thread ended without a result") from None
                if deadline is not None and time.monotonic() >= deadline:
                    self._time_out()
        if kind == _ERROR:
            self.stop()
            raise payload
        if kind == _ITEM:
            self.taken += 1
            if isinstance(self.jobs, list) and self.taken >= len(self.jobs):
                self.all_taken.set()
        return None if kind == _END else payload

    def _time_out(self) -> None:
        """Abandon the run (a hung read cannot be interrupted, so nothing is joined) and raise."""
        with self._lock:
            self._stopped = self._abandoned = True
        self.stop_event.set()
        self._let_go()
        jobs = self.jobs if isinstance(self.jobs, list) else None  # an IterableDataset's are made as read
        which = f"batch {self.taken}"
        if jobs is not None and self.taken < len(jobs):
            which += f" (dataset indices {list(jobs[self.taken][0])})"
        raise RuntimeError(
            f"ThreadDataLoader timed out after {self.timeout} seconds waiting for {which} (DataLoader "
            "timeout=); the read still running is left to finish in the background, and the next loop "
            "over the loader starts afresh"
        )

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    def stop(self) -> None:
        """Stop the producer, drain the queue, join the thread and the pool (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.stop_event.set()
        if self._on_own_thread():  # e.g. the loader's __del__ when its producer dropped the last reference
            self._let_go()
            return
        self._join()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    #: loader runs stop first at interpreter exit: their producers may start SmartCache rounds
    exit_order = 0

    def stop_at_exit(self, deadline: float) -> None:
        """At interpreter exit (:mod:`fastpipe.runtime._exit`): stop, and join the producer by ``deadline``
        (``time.monotonic()``); the pool takes no new job. A run abandoned after a ``timeout`` is not
        waited for: its read was found hung, and the exit would wait for it until the deadline."""
        with self._lock:
            self._stopped = True
        self.stop_event.set()
        if self._abandoned:
            return
        self._join(deadline)
        if self.pool is not None:  # daemon threads: joined here, or a read in a torch op would abort the exit
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool.join(deadline)

    def _join(self, deadline: float | None = None) -> None:
        """Join the producer (by ``deadline``, if given), draining the queue so that it never blocks on it."""
        while self.thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            drain(self.queue)
            self.thread.join(timeout=POLL_S)
        drain(self.queue)

    def _let_go(self) -> None:
        """After the stop event, without joining: a producer blocked on the full queue moves on, sees the
        stop and ends; the pool takes no new job and its threads exit once their read returns."""
        drain(self.queue)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _on_own_thread(self) -> bool:
        """Whether the caller is this run's producer or one of its pool threads (which cannot join themselves)."""
        me = threading.current_thread()
        return me is self.thread or (self.pool is not None and me in getattr(self.pool, "_threads", ()))
