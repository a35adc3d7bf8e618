"""DaemonPool: the loader's fetch threads (daemon threads, ThreadPoolExecutor's interface as used)."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from fastpipe.runtime._daemon_pool import DaemonPool


def _threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.timeout(20)
def test_map_keeps_order_an_error_cancels_the_rest_and_shutdown_joins():
    pool = DaemonPool(2, "tp-a", initializer=lambda: setattr(threading.current_thread(), "ready", True))
    assert all(t.daemon for t in pool._threads)
    assert list(pool.map(lambda v: (v, threading.current_thread().ready), range(4))) == [
        (v, True) for v in range(4)
    ]
    started = []

    def job(v):
        started.append(v)
        if v == 1:
            raise ValueError("item 1")
        time.sleep(0.05)
        return v

    with pytest.raises(ValueError, match="item 1"):
        list(pool.map(job, range(40)))
    pool.shutdown(wait=True, cancel_futures=True)
    assert len(started) < 40 and _threads("tp-a") == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(job, 0)


@pytest.mark.timeout(20)
def test_a_pool_dropped_without_shutdown_ends_its_threads():
    pool = DaemonPool(3, "tp-b")
    assert pool.submit(lambda: 7).result() == 7
    del pool
    gc.collect()
    deadline = time.monotonic() + 5
    while _threads("tp-b") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _threads("tp-b") == []


@pytest.mark.timeout(20)
def test_a_failing_initializer_fails_the_jobs_instead_of_hanging_them():
    def bad_init():
        raise OSError("no OpenMP here")

    pool = DaemonPool(2, "tp-c", initializer=bad_init)
    with pytest.raises(RuntimeError, match="initializer failed") as info:
        pool.submit(lambda: 1).result(timeout=10)
    assert isinstance(info.value.__cause__, OSError)
    pool.shutdown(wait=True)
