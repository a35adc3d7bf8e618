"""A thread pool of daemon threads: ``ThreadDataLoader``'s fetch threads.

``concurrent.futures.ThreadPoolExecutor`` threads are not daemon threads: the interpreter joins
every one of them when it exits. A read that hangs (the loader's ``timeout=`` gave up on it) kept
the script from ever exiting. These threads are daemon threads; the loader joins them itself, when
it stops a run and at the interpreter's exit within a bound (:mod:`fastpipe.runtime._exit`), and
leaves a thread abandoned after a timeout to its read.

Threading contract: :meth:`DaemonPool.submit`, :meth:`DaemonPool.map` and :meth:`DaemonPool.shutdown`
from any thread; the interface is the part of ``ThreadPoolExecutor``'s the loader uses.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any


class DaemonPool:
    """``num_workers`` daemon threads running submitted calls in order of submission.

    Args:
        num_workers: threads (>= 1), started at once.
        thread_name_prefix: threads are named ``{prefix}_{i}``.
        initializer: called with ``initargs`` in each thread before its first job (default ``None``).
        initargs: arguments of ``initializer`` (default ``()``).

    Example:
        >>> pool = DaemonPool(2, "doc")
        >>> list(pool.map(lambda x: x * x, [1, 2, 3]))
        [1, 4, 9]
        >>> pool.shutdown(wait=True)
    """

    def __init__(
        self,
        num_workers: int,
        thread_name_prefix: str,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
    ) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        # a pool dropped without shutdown() (as ThreadPoolExecutor's): its threads are told to end; they
        # hold the weak reference so that its callback fires
        jobs = self._jobs
        gone = weakref.ref(self, lambda _: [jobs.put(None) for _ in range(num_workers)])
        self._threads = [
            threading.Thread(
                target=_work,
                args=(jobs, initializer, initargs, gone),
                name=f"{thread_name_prefix}_{i}",
                daemon=True,
            )
            for i in range(num_workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on a pool thread; its ``Future``. ``RuntimeError`` after :meth:`shutdown`."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future = Future()
            self._jobs.put((future, fn, args))
        return future

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn`` of each item, all submitted now, results in order; leaving early cancels those not started."""
        futures = [self.submit(fn, item) for item in items]

        def results() -> Iterator[Any]:
            try:
                for f in futures:
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no new job; with ``cancel_futures`` cancel those not started; with ``wait`` join the threads."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[0].cancel()
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            self.join()

    def join(self, deadline: float | None = None) -> None:
        """Join the threads (after :meth:`shutdown`), by ``deadline`` (``time.monotonic()``) if given."""
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _work(
    jobs: queue.SimpleQueue, initializer: Callable[..., Any] | None, initargs: tuple, _pool: weakref.ref
) -> None:
    broken: BaseException | None = None
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as err:  # noqa: BLE001 - every job this thread takes fails with it (nothing waits for ever)
        broken = err
    while (job := jobs.get()) is not None:
        future, fn, args = job
        if not future.set_running_or_notify_cancel():
            continue
        try:
            if broken is not None:
                raise RuntimeError("DaemonPool: the thread's initializer failed") from broken
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(err)
        del job, future, fn, args  # a finished job's arguments and result are not kept alive here
